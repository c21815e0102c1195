"""Looking up contracts and numbers."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.models import Contract, PhoneNumber
from core.phone import InvalidPhoneNumber, normalize_number


def find_number(session: Session, raw_number: str) -> PhoneNumber | None:
    """The number's row (with its contract), or None when unknown or not a valid number."""
    try:
        number = normalize_number(raw_number)
    except InvalidPhoneNumber:
        return None
    return session.scalars(
        select(PhoneNumber)
        .where(PhoneNumber.number == number)
        .options(selectinload(PhoneNumber.contract), selectinload(PhoneNumber.credential))
    ).one_or_none()


def get_contract(session: Session, contract_id: int) -> Contract | None:
    return session.get(Contract, contract_id)


def find_contract_by_number(session: Session, raw_number: str) -> Contract | None:
    """The contract that ``raw_number`` (contract or additional number) belongs to."""
    row = find_number(session, raw_number)
    return None if row is None else row.contract


def contract_number_list(session: Session, contract_id: int) -> list[str]:
    """Every number of the contract, the contract number first."""
    contract = session.get(Contract, contract_id)
    if contract is None:
        return []
    numbers = list(session.scalars(select(PhoneNumber.number).where(PhoneNumber.contract_id == contract_id)))
    return sorted(numbers, key=lambda n: (n != contract.contract_number, n))


def number_row_on_contract(session: Session, contract_id: int, number: str) -> PhoneNumber | None:
    return session.scalars(
        select(PhoneNumber).where(PhoneNumber.contract_id == contract_id, PhoneNumber.number == number)
    ).one_or_none()


class InvalidSearchPattern(ValueError):
    pass


def number_matches(number: str, pattern: str) -> bool:
    """The settings site's number search: a prefix (市外局番など, 前方一致), or with ``*`` (half-width)
    as a wildcard for any run of digits, matched against the whole number (``03*1111``, ``*2222``)."""
    cleaned = pattern.replace("-", "").replace(" ", "")
    if not cleaned or any(ch not in "0123456789*" for ch in cleaned):
        raise InvalidSearchPattern("use digits and * only")
    if "*" not in cleaned:
        return number.startswith(cleaned)
    regex = "".join(r"\d*" if ch == "*" else ch for ch in cleaned)
    return re.fullmatch(regex, number) is not None


def search_numbers(session: Session, contract_id: int, pattern: str) -> list[str]:
    """Numbers of the contract matching ``pattern`` (see :func:`number_matches`), contract number first.

    Raises :class:`InvalidSearchPattern` for anything but digits, ``*`` and hyphens."""
    return [n for n in contract_number_list(session, contract_id) if number_matches(n, pattern)]
