"""Rules for passwords and the one-time-password confirmation ID/password (the operator guide).

Pure functions; each failed rule yields its own reason code, so the web says exactly what is wrong.
Comparisons for runs are case-insensitive: ``aAaA`` is a run of identical letters and ``aBcD`` an
ascending run, which is what a person reading the rule would expect.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Iterable
from enum import StrEnum

MIN_LENGTH = 8
MAX_LENGTH = 12
RUN_LENGTH = 4
_HALF_WIDTH_ALNUM = frozenset(string.ascii_letters + string.digits)


class PasswordRule(StrEnum):
    LENGTH = "length"  # 8–12 characters
    CHARSET = "charset"  # half-width letters and digits only
    LETTERS_AND_DIGITS = "letters_and_digits"  # both letters and digits
    SAME_AS_CURRENT = "same_as_current"  # equal to the current password
    REPEATED_CHARACTERS = "repeated_characters"  # 0000, aaaa
    SEQUENTIAL_RUN = "sequential_run"  # 1234, abcd, 4321, dcba
    CONTAINS_PHONE_NUMBER = "contains_phone_number"  # the customer's phone number


class ConfirmationIdRule(StrEnum):
    LENGTH = "length"
    CHARSET = "charset"
    DIGITS_ONLY = "digits_only"
    UPPER_ONLY = "upper_only"
    LOWER_ONLY = "lower_only"


class ConfirmationPasswordRule(StrEnum):
    LENGTH = "length"
    CHARSET = "charset"
    LETTERS_AND_DIGITS = "letters_and_digits"


def is_half_width_alnum(value: str) -> bool:
    return all(ch in _HALF_WIDTH_ALNUM for ch in value)


def has_letter(value: str) -> bool:
    return any(ch in string.ascii_letters for ch in value)


def has_digit(value: str) -> bool:
    return any(ch in string.digits for ch in value)


def has_repeated_run(value: str, run: int = RUN_LENGTH) -> bool:
    """``run`` identical characters in a row (case-insensitive)."""
    folded = value.lower()
    count = 1
    for previous, current in itertools.pairwise(folded):
        count = count + 1 if current == previous else 1
        if count >= run:
            return True
    return run <= 1 and bool(value)


def _same_class(a: str, b: str) -> bool:
    return (a.isdigit() and b.isdigit()) or (a in string.ascii_letters and b in string.ascii_letters)


def has_sequential_run(value: str, run: int = RUN_LENGTH) -> bool:
    """``run`` letters or digits ascending or descending by one (1234, abcd, 4321, dcba).

    Only within one class (digits or ASCII letters, case-insensitive); no wrap-around (7890 is not
    a run).
    """
    folded = value.lower()
    for step in (1, -1):
        count = 1
        for previous, current in itertools.pairwise(folded):
            if (
                _same_class(previous, current)
                and (previous.isdigit() or previous in string.ascii_letters)
                and ord(current) - ord(previous) == step
            ):
                count += 1
            else:
                count = 1
            if count >= run:
                return True
    return False


def phone_number_forms(number: str) -> list[str]:
    """The forms of a number a password must not contain: national (0…) and without the 0."""
    forms = [number]
    if number.startswith("0") and len(number) > 1:
        forms.append(number[1:])
    return forms


def contains_phone_number(value: str, customer_numbers: Iterable[str]) -> bool:
    return any(form and form in value for n in customer_numbers for form in phone_number_forms(n))


def password_rule_violations(
    new: str,
    *,
    current_hash: str | None,
    customer_numbers: list[str],
    verify: Callable[[str, str], bool] | None = None,
) -> list[str]:
    """Reason codes (:class:`PasswordRule` values) the new password breaks; ``[]`` if it is fine.

    ``current_hash`` (the identity's stored hash) is checked with ``verify`` (default
    ``core.secrets.verify_secret``), which costs one argon2 check.
    """
    reasons: list[str] = []
    if not MIN_LENGTH <= len(new) <= MAX_LENGTH:
        reasons.append(PasswordRule.LENGTH)
    if not is_half_width_alnum(new):
        reasons.append(PasswordRule.CHARSET)
    if not (has_letter(new) and has_digit(new)):
        reasons.append(PasswordRule.LETTERS_AND_DIGITS)
    if has_repeated_run(new):
        reasons.append(PasswordRule.REPEATED_CHARACTERS)
    if has_sequential_run(new):
        reasons.append(PasswordRule.SEQUENTIAL_RUN)
    if contains_phone_number(new, customer_numbers):
        reasons.append(PasswordRule.CONTAINS_PHONE_NUMBER)
    if current_hash:
        if verify is None:
            from core.secrets import verify_secret

            verify = verify_secret
        if verify(current_hash, new):
            reasons.append(PasswordRule.SAME_AS_CURRENT)
    return [str(r) for r in reasons]


def confirmation_id_violations(value: str) -> list[str]:
    """8–12 half-width letters/digits; not digits only, not only upper-case, not only lower-case."""
    reasons: list[str] = []
    if not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        reasons.append(ConfirmationIdRule.LENGTH)
    if not is_half_width_alnum(value):
        reasons.append(ConfirmationIdRule.CHARSET)
    if value and value.isascii() and value.isdigit():
        reasons.append(ConfirmationIdRule.DIGITS_ONLY)
    if value and all(ch in string.ascii_uppercase for ch in value):
        reasons.append(ConfirmationIdRule.UPPER_ONLY)
    if value and all(ch in string.ascii_lowercase for ch in value):
        reasons.append(ConfirmationIdRule.LOWER_ONLY)
    return [str(r) for r in reasons]


def confirmation_password_violations(value: str) -> list[str]:
    """8–12 half-width letters/digits with both letters and digits."""
    reasons: list[str] = []
    if not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        reasons.append(ConfirmationPasswordRule.LENGTH)
    if not is_half_width_alnum(value):
        reasons.append(ConfirmationPasswordRule.CHARSET)
    if not (has_letter(value) and has_digit(value)):
        reasons.append(ConfirmationPasswordRule.LETTERS_AND_DIGITS)
    return [str(r) for r in reasons]
