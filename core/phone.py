"""Japanese phone numbers: national digits with the leading 0 (10 or 11 digits)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-().]")
_NATIONAL = re.compile(r"0[1-9][0-9]{8,9}")


class InvalidPhoneNumber(ValueError):
    """A phone number that cannot be used; ``reason`` is a short machine-readable code.

    Reasons: ``empty``, ``invalid_characters``, ``foreign_country_code``, ``not_national``,
    ``wrong_length``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid phone number: {reason}")


def normalize_number(raw: str) -> str:
    """``"+81363044747"`` / ``"03-6304-4747"`` / ``"81363044747"`` -> ``"0363044747"``.

    Hyphens, spaces, dots and parentheses are ignored; ``+81`` (or ``81`` from a SIP trunk that drops
    the plus) becomes the leading 0. Anything that is not 10 or 11 national digits starting with a
    single 0 raises :class:`InvalidPhoneNumber`.
    """
    text = _SEPARATORS.sub("", raw or "")
    if not text:
        raise InvalidPhoneNumber("empty")
    if text.startswith("+"):
        if not text[1:].isascii() or not text[1:].isdigit():
            raise InvalidPhoneNumber("invalid_characters")
        if not text.startswith("+81"):
            raise InvalidPhoneNumber("foreign_country_code")
        text = "0" + text[3:].removeprefix("0")
    elif not (text.isascii() and text.isdigit()):
        raise InvalidPhoneNumber("invalid_characters")
    elif text.startswith("81") and len(text) in (11, 12):
        text = "0" + text[2:]
    if not text.startswith("0") or text.startswith("00"):
        raise InvalidPhoneNumber("not_national")
    if len(text) not in (10, 11):
        raise InvalidPhoneNumber("wrong_length")
    if not _NATIONAL.fullmatch(text):
        raise InvalidPhoneNumber("not_national")
    return text


def is_valid_number(raw: str) -> bool:
    try:
        normalize_number(raw)
    except InvalidPhoneNumber:
        return False
    return True


def format_number(number: str) -> str:
    """Digits grouped for people (not a full numbering-plan formatter): 03-6304-4747."""
    if len(number) == 10 and number[:2] in {"03", "06"}:
        return f"{number[:2]}-{number[2:6]}-{number[6:]}"
    if len(number) == 11:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    return f"{number[:3]}-{number[3:6]}-{number[6:]}"
