"""The one mail-address rule (core.mail_address), used by the OTP pages, the bulk CSV and notices."""

from __future__ import annotations

import pytest

from core.mail_address import mail_address_problems, normalize_mail_address


@pytest.mark.parametrize(
    "address",
    ["abc@def.co.jp", "a.b+tag@example.jp", "o'brien@mail.example.com", "x@a-b.example", "1@2.jp"],
)
def test_addresses_we_deliver_to(address: str) -> None:
    assert mail_address_problems(address) == []


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", "empty"),
        ("abc", "invalid"),
        ("a@b", "invalid"),  # one label: not a domain we can deliver to
        ("a@@b.jp", "invalid"),
        (".a@b.jp", "invalid"),
        ("a.@b.jp", "invalid"),
        ("a..b@c.jp", "invalid"),
        ("a@-b.jp", "invalid"),
        ("a@b-.jp", "invalid"),
        ("a@b..jp", "invalid"),
        ("あ@b.jp", "invalid"),  # not ASCII (also full-width input)
        ("ａ@b.jp", "invalid"),
        ('"a b"@c.jp', "invalid"),  # quoted local parts are refused
        ("a" * 65 + "@b.jp", "invalid"),
        ("a@" + "b" * 64 + ".jp", "invalid"),
        ("a@" + ("b" * 60 + ".") * 5 + "jp", "invalid"),  # over 254 characters
        ("=cmd@b.jp", "formula"),
        ("+a@b.jp", "formula"),
        ("-a@b.jp", "formula"),
    ],
)
def test_addresses_refused_with_a_reason(address: str, problem: str) -> None:
    assert mail_address_problems(address) == [problem]


def test_stored_with_the_domain_lower_cased_and_the_local_part_as_typed() -> None:
    assert normalize_mail_address("  Taro.Yamada@Example.CO.JP ") == "Taro.Yamada@example.co.jp"
