"""What the voice menu needs from the core (the operator guide P4–P6), and the call records.

Synchronous; the caller owns the session and the transaction. Nothing here hashes: the voice
flow hashes the confirmed digits off the event loop (``core.secrets.hash_secret`` in a thread) and
passes the hash to :func:`set_temporary_password`. :func:`lookup_caller_line` and
:func:`number_on_contract` only read (one query each): give them a read-only session
(``core.db.make_read_session_factory``), or a read-only connection (``core.db.read_only_engine``,
the daemon's answer path: a third of the ORM session's CPU), so the answer path never waits for the
write lock. Their statements are built once, with bound parameters (no statement construction or
cache-key work per call).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, exists, select
from sqlalchemy.orm import Session

from core.audit import Audit
from core.call_records import (  # the voice menu's call records, re-exported
    finish_call_record,
    get_call_record,
    list_call_records,
    start_call_record,
)
from core.directory import number_row_on_contract
from core.enums import AuditEventType, AuthUnit, CredentialKind
from core.models import Contract, Credential, PhoneNumber, ServiceSubscription
from core.password_rules import has_repeated_run, has_sequential_run
from core.phone import InvalidPhoneNumber, normalize_number
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import temporary_expiry

TEMPORARY_PASSWORD_LENGTH = 8

__all__ = [
    "CallerLine",
    "NotOnContract",
    "finish_call_record",
    "get_call_record",
    "list_call_records",
    "lookup_caller_line",
    "needs_number_entry",
    "number_on_contract",
    "set_temporary_password",
    "start_call_record",
    "target_number_for",
    "temporary_password_problem",
]


@dataclass(frozen=True)
class CallerLine:
    contract_id: int
    caller_number: str  # normalised caller ID
    contract_number: str  # the contract's customer number
    is_contract_number: bool  # caller is the contract number (else an additional number)


class NotOnContract(ValueError):
    """The target number is not a number of this contract (or not allowed for the unit)."""


@cache
def _caller_line_query() -> Any:
    return (
        select(PhoneNumber.contract_id, PhoneNumber.number, Contract.contract_number)
        .join(Contract, Contract.id == PhoneNumber.contract_id)
        .where(PhoneNumber.number == bindparam("number"))
    )


@cache
def _number_on_contract_query() -> Any:
    return select(
        exists().where(
            PhoneNumber.contract_id == bindparam("contract_id"),
            PhoneNumber.number == bindparam("number"),
            ServiceSubscription.phone_number_id == PhoneNumber.id,
        )
    )


def lookup_caller_line(session: Session | Connection, caller_number: str) -> CallerLine | None:
    """The contract line a caller ID belongs to; None when withheld, invalid or on no contract.

    One SELECT (number joined to its contract); reads only.
    """
    try:
        number = normalize_number(caller_number)
    except InvalidPhoneNumber:
        return None
    row = session.execute(_caller_line_query(), {"number": number}).one_or_none()
    if row is None:
        return None
    contract_id, found, contract_number = row
    return CallerLine(
        contract_id=contract_id,
        caller_number=found,
        contract_number=contract_number,
        is_contract_number=found == contract_number,
    )


def number_on_contract(session: Session | Connection, contract_id: int, number: str) -> bool:
    """Is ``number`` (digits as entered) a number of this contract that subscribes to a service?

    "本サービスを契約している電話番号以外" is a wrong entry, so a number without any service
    does not count. One SELECT; reads only.
    """
    try:
        normalised = normalize_number(number)
    except InvalidPhoneNumber:
        return False
    found = session.execute(
        _number_on_contract_query(), {"contract_id": contract_id, "number": normalised}
    ).scalar()
    return bool(found)


def temporary_password_problem(digits: str) -> str | None:
    """None if ``digits`` is exactly 8 digits, else a reason code.

    Reasons: ``empty``, ``not_digits``, ``too_short``, ``too_long``.
    """
    if not digits:
        return "empty"
    if not (digits.isascii() and digits.isdigit()):
        return "not_digits"
    if len(digits) < TEMPORARY_PASSWORD_LENGTH:
        return "too_short"
    if len(digits) > TEMPORARY_PASSWORD_LENGTH:
        return "too_long"
    return None


def guessable_temporary_password(digits: str, own_numbers: Iterable[str] = ()) -> str | None:
    """Why a well-formed temporary password is too easy to guess, or None.

    Whoever knows a customer's number gets 3 tries at the web login: ``12345678``, ``00000000``,
    ``11112222`` or the line's own number would be the first. Reasons: ``repeated_run`` (4 identical
    digits in a row), ``sequential_run`` (4 ascending or descending: 1234, 4321), ``own_number``
    (the last 8 digits of one of ``own_numbers``).
    """
    if has_repeated_run(digits):
        return "repeated_run"
    if has_sequential_run(digits):
        return "sequential_run"
    for number in own_numbers:
        national = "".join(ch for ch in number if ch.isdigit())
        if len(national) >= TEMPORARY_PASSWORD_LENGTH and digits == national[-TEMPORARY_PASSWORD_LENGTH:]:
            return "own_number"
    return None


def needs_number_entry(unit: AuthUnit, line: CallerLine) -> bool:
    """Does the menu ask for a number? Unit 2 always; unit 3 only from the contract number."""
    return unit is AuthUnit.NUMBER or (unit is AuthUnit.ADMIN_USER and line.is_contract_number)


def target_number_for(unit: AuthUnit, line: CallerLine, entered_number: str | None) -> str:
    """LINE -> contract number; NUMBER -> entered; ADMIN_USER -> entered if the caller is the
    contract number, else the caller's own number. ValueError if a needed number is missing/invalid.
    """
    if unit is AuthUnit.LINE:
        return line.contract_number
    if unit is AuthUnit.ADMIN_USER and not line.is_contract_number:
        return line.caller_number
    if entered_number is None:
        raise ValueError("this unit needs the number entered by the caller")
    return normalize_number(entered_number)


def set_temporary_password(
    session: Session,
    *,
    contract_id: int,
    unit: AuthUnit,
    target_number: str,
    password_hash: str,
    now: datetime,
    channel: str = "phone",
    policy: PolicyLike = DEFAULT_POLICY,
) -> None:
    """Replace the identity's credential with a temporary one (valid 24 h), reset its failures,
    set the contract's unit, and write audit events. Does NOT commit.

    Raises :class:`NotOnContract` if the number is not on the contract, or (line unit) is not the
    contract number.
    """
    contract = session.get(Contract, contract_id)
    if contract is None:
        raise NotOnContract("no such contract")
    number = normalize_number(target_number)
    row = number_row_on_contract(session, contract_id, number)
    if row is None:
        raise NotOnContract("the number is not on this contract")
    if unit is AuthUnit.LINE and number != contract.contract_number:
        raise NotOnContract("line unit sets the contract number's password")
    if not password_hash.startswith("$argon2"):
        raise ValueError("set_temporary_password takes an argon2 hash, not digits")

    credential = session.scalars(select(Credential).where(Credential.phone_number_id == row.id)).one_or_none()
    if credential is None:
        credential = Credential(phone_number_id=row.id, generation=0, failures=0)
        session.add(credential)
    credential.replace_secret(
        kind=CredentialKind.TEMPORARY,
        secret_hash=password_hash,
        set_at=now,
        expires_at=temporary_expiry(now, policy),
        channel=channel,
    )
    credential.last_success_at = None

    audit = Audit(session, now, channel, number, contract_id)
    previous_unit = contract.auth_unit
    if previous_unit != unit:
        contract.auth_unit = unit
        contract.unit_changed_at = now
        audit.record(AuditEventType.UNIT_CHANGED, "ok", f"{previous_unit}->{unit}")
    audit.record(AuditEventType.TEMPORARY_SET, "ok", f"unit={unit}")
    session.flush()
