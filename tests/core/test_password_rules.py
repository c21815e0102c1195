from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.password_rules import (
    confirmation_id_violations,
    confirmation_password_violations,
    has_repeated_run,
    has_sequential_run,
    password_rule_violations,
)
from core.secrets import FAST_TEST_PARAMETERS, SecretHasher

NUMBERS = ["0300001111", "0300002222"]
HASHER = SecretHasher(FAST_TEST_PARAMETERS)


def violations(password: str, current_hash: str | None = None) -> list[str]:
    return password_rule_violations(
        password, current_hash=current_hash, customer_numbers=NUMBERS, verify=HASHER.verify
    )


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("a1b2c3d", False),  # 7
        ("a1b2c3d5", True),  # 8
        ("a1b2c3d5e7f", True),  # 11
        ("a1b2c3d5e7f9", True),  # 12
        ("a1b2c3d5e7f9g", False),  # 13
    ],
)
def test_length_boundaries(password: str, ok: bool) -> None:
    assert ("length" not in violations(password)) is ok


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("abcxyzpq", "letters_and_digits"),  # letters only
        ("73916285", "letters_and_digits"),  # digits only
        ("a1b2c3d!", "charset"),  # symbol
        ("a1b2c3ｄ5", "charset"),  # full-width letter
        ("ａ1b2c3d5", "charset"),
        ("a1b2 c3d", "charset"),
        ("x0000k9m", "repeated_characters"),
        ("9kaaaa3m", "repeated_characters"),
        ("9kAaAa3m", "repeated_characters"),  # case-insensitive
        ("x1234k9m", "sequential_run"),
        ("x9abcd3m", "sequential_run"),
        ("x4321k9m", "sequential_run"),
        ("x9dcba3m", "sequential_run"),
        ("x9aBcD3m", "sequential_run"),
        ("x6789k0m", "sequential_run"),
        ("a0300001111", "contains_phone_number"),  # the contract number
        ("b0300002222", "contains_phone_number"),  # an additional number of the contract
        ("z300001111", "contains_phone_number"),  # without the leading 0
    ],
)
def test_each_forbidden_pattern_has_its_own_reason(password: str, reason: str) -> None:
    assert reason in violations(password)


@pytest.mark.parametrize(
    "password",
    ["x123k9mq", "9kaaa3mq", "x7890k2m", "zyx1q2w3", "a1b2c3d5", "k7m2p9q4z", "Passw0rdX", "0300k1121"],
)
def test_near_misses_are_allowed(password: str) -> None:
    """Three-long runs, 7890 (no wrap-around), a broken number: all fine."""
    assert violations(password) == []


def test_same_as_current_needs_the_current_hash() -> None:
    current = HASHER.hash("k7m2p9q4z")
    assert violations("k7m2p9q4z", current) == ["same_as_current"]
    assert violations("k7m2p9q4y", current) == []


def test_several_reasons_at_once() -> None:
    assert violations("aaaa") == ["length", "letters_and_digits", "repeated_characters"]
    assert violations("") == ["length", "letters_and_digits"]


@pytest.mark.parametrize(
    ("value", "reasons"),
    [
        ("abc12345", []),
        ("ABCdefgh", []),
        ("Abc1234", ["length"]),
        ("Abc123456789", []),
        ("Abc1234567890", ["length"]),
        ("12345678", ["digits_only"]),
        ("ABCDEFGH", ["upper_only"]),
        ("abcdefgh", ["lower_only"]),
        ("abc-1234", ["charset"]),
    ],
)
def test_confirmation_id_rules(value: str, reasons: list[str]) -> None:
    assert confirmation_id_violations(value) == reasons


@pytest.mark.parametrize(
    ("value", "reasons"),
    [
        ("baiyo4qx", []),
        ("baiyo4q", ["length"]),
        ("baiyo4qxxyz1", []),
        ("baiyo4qxxyz12", ["length"]),
        ("123456789", ["letters_and_digits"]),  # the seed's example screen shows this; the rule forbids it
        ("abcdefgh", ["letters_and_digits"]),
        ("baiyo!4q", ["charset"]),  # the seed's example has a symbol: not half-width alnum
    ],
)
def test_confirmation_password_rules(value: str, reasons: list[str]) -> None:
    assert confirmation_password_violations(value) == reasons


# --- properties --------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits


def _reference_sequential(value: str) -> bool:
    folded = value.lower()
    for i in range(len(folded) - 3):
        window = folded[i : i + 4]
        if all(c.isdigit() for c in window) or all(c in string.ascii_lowercase for c in window):
            steps = {ord(b) - ord(a) for a, b in itertools.pairwise(window)}
            if steps in ({1}, {-1}):
                return True
    return False


@given(st.text(alphabet=ALNUM, min_size=0, max_size=16))
def test_sequential_matches_a_window_reference(value: str) -> None:
    assert has_sequential_run(value) == _reference_sequential(value)


@given(st.text(alphabet=ALNUM, min_size=0, max_size=16))
def test_repeated_matches_a_window_reference(value: str) -> None:
    folded = value.lower()
    expected = any(len(set(folded[i : i + 4])) == 1 for i in range(len(folded) - 3))
    assert has_repeated_run(value) == expected


@given(st.text(min_size=0, max_size=20))
def test_accepted_passwords_satisfy_every_rule(value: str) -> None:
    if violations(value) == []:
        assert 8 <= len(value) <= 12
        assert all(c in ALNUM for c in value)
        assert any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
        assert not has_repeated_run(value) and not has_sequential_run(value)
        assert all(n not in value and n[1:] not in value for n in NUMBERS)


@given(
    st.text(alphabet=ALNUM, min_size=8, max_size=12),
    st.sampled_from(["0000", "aaaa", "1234", "dcba", "ZZZZ"]),
)
def test_inserting_a_forbidden_run_is_always_refused(value: str, run: str) -> None:
    candidate = (value[:4] + run + value[4:])[:12]
    reasons = violations(candidate)
    assert {"repeated_characters", "sequential_run"} & set(reasons)


@given(st.text(alphabet=ALNUM, min_size=0, max_size=2), st.sampled_from(NUMBERS))
def test_containing_a_customer_number_is_always_refused(prefix: str, number: str) -> None:
    assert "contains_phone_number" in violations(prefix + number)


@given(st.text(min_size=0, max_size=20))
def test_violations_are_deterministic_and_known_codes(value: str) -> None:
    first = violations(value)
    assert first == violations(value)
    assert set(first) <= {
        "length",
        "charset",
        "letters_and_digits",
        "same_as_current",
        "repeated_characters",
        "sequential_run",
        "contains_phone_number",
    }


@given(st.text(alphabet=ALNUM, min_size=8, max_size=12))
def test_confirmation_id_property(value: str) -> None:
    reasons = confirmation_id_violations(value)
    assert ("digits_only" in reasons) == value.isdigit()
    assert ("upper_only" in reasons) == (value.isalpha() and value.isupper())
    assert ("lower_only" in reasons) == (value.isalpha() and value.islower())
