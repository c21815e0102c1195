from __future__ import annotations

import pytest

from core.phone import InvalidPhoneNumber, format_number, is_valid_number, normalize_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0363044747", "0363044747"),
        ("03-6304-4747", "0363044747"),
        ("03 6304 4747", "0363044747"),
        ("(03)6304-4747", "0363044747"),
        ("+81363044747", "0363044747"),
        ("+81 3-6304-4747", "0363044747"),
        ("+810363044747", "0363044747"),  # a trunk that keeps the trunk prefix after +81
        ("81363044747", "0363044747"),  # a trunk that drops the plus
        ("09012345678", "09012345678"),  # 11 digits (mobile)
        ("+819012345678", "09012345678"),
        ("05012345678", "05012345678"),
    ],
)
def test_normalises_national_and_plus81(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("  - ", "empty"),
        ("anonymous", "invalid_characters"),
        ("03-6304-474a", "invalid_characters"),
        ("０３６３０４４７４７", "invalid_characters"),  # full-width digits
        ("+1 212 555 0100", "foreign_country_code"),
        ("+44 20 7946 0000", "foreign_country_code"),
        ("363044747", "not_national"),
        ("0063044747", "not_national"),  # 00 is the international prefix
        ("036304474", "wrong_length"),  # 9 digits
        ("036304474712", "wrong_length"),  # 12 digits
        ("+8136304", "wrong_length"),
        ("+81", "wrong_length"),
        ("+81abc", "invalid_characters"),
    ],
)
def test_rejects_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        normalize_number(raw)
    assert info.value.reason == reason
    assert not is_valid_number(raw)


def test_boundary_lengths_10_and_11_are_accepted() -> None:
    assert normalize_number("0" + "3" * 9) == "0333333333"
    assert normalize_number("0" + "9" * 10) == "09999999999"


def test_format_groups_digits() -> None:
    assert format_number("0363044747") == "03-6304-4747"
    assert format_number("09012345678") == "090-1234-5678"
