"""The one rule for a mail address a customer gives us (OTP receiving addresses, bulk CSV rows,
support IDs and notice destinations): what we can deliver to, and store safely.

- ASCII, at most 254 characters, one ``@``;
- the local part: 1–64 of ``A-Z a-z 0-9 . ! # $ % & ' * + / = ? ^ _ ` { | } ~ -``, no dot at
  either end, no two dots in a row (RFC 5321's dot-string; quoted local parts are refused);
- the domain: two or more labels of 1–63 letters, digits and hyphens, no hyphen at either end;
- no leading ``= + - @`` (or tab / carriage return): valid by RFC 5322, but a spreadsheet opening a
  download would run it as a formula.
"""

from __future__ import annotations

import re

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def mail_address_problems(value: str) -> list[str]:
    """``[]`` when ``value`` is an address we accept, else the reason codes (``empty``, ``invalid``,
    ``formula``)."""
    if not value:
        return ["empty"]
    if len(value) > 254 or not value.isascii() or value.count("@") != 1:
        return ["invalid"]
    local, domain = value.split("@")
    labels = domain.split(".")
    if (
        not _LOCAL.fullmatch(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        return ["invalid"]
    if value.startswith(FORMULA_PREFIXES):
        return ["formula"]
    return []


def normalize_mail_address(value: str) -> str:
    """The address as stored and compared: trimmed, the domain lower-cased (the local part is kept
    as typed: it may be case-sensitive). Check it with `mail_address_problems` first."""
    text = value.strip()
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}" if local else text
