"""Server-side web sessions in the credential database (shared by every web process).

A row exists only for a logged-in browser; it is keyed by the SHA-256 of the cookie value (the
value itself is never stored). A session records what it was opened with: the credential it logged
in with (by generation), the contract's unit and the contract number's credential. It ends when:

- it was idle longer than the idle timeout, or is older than its absolute lifetime;
- its credential was replaced (password change elsewhere, a new temporary password by phone, a
  unit change copying passwords) or invalidated (too many wrong tries);
- the contract's unit changed after it was opened;
- a new temporary password was set by phone for the contract number after it was opened.

:func:`verdict` decides from a row and the current :class:`Standing` (a pure function of state and
``now``); :func:`load_session` applies it, deleting a session that ended. The caller owns the
database session and the transaction. Expired rows are swept in bounded batches when a session
is opened.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.auth import identity_for
from core.directory import number_row_on_contract
from core.enums import AuditEventType
from core.models import AuditEvent, Contract, Credential
from core.web_models import LoginSession

SWEEP_BATCH = 200


def session_id_hash(cookie_value: str) -> str:
    """The row key of a session: SHA-256 of the cookie value (256 random bits; no salt needed)."""
    return hashlib.sha256(b"ivr-web-session\x00" + cookie_value.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class SessionTimes:
    idle_seconds: int
    lifetime_seconds: int

    @property
    def touch_seconds(self) -> int:
        """Activity younger than this does not rewrite ``last_seen_at`` (fewer writes)."""
        return max(1, min(60, self.idle_seconds // 30))


class Verdict(StrEnum):
    OK = "ok"
    IDLE = "idle"
    LIFETIME = "lifetime"
    CREDENTIAL_REPLACED = "credential_replaced"
    CREDENTIAL_INVALIDATED = "credential_invalidated"
    CONTRACT_CHANGED = "contract_changed"
    CONTRACT_RESET = "contract_reset"


@dataclass(frozen=True)
class Standing:
    """What the credential store says now about what a session was opened with."""

    credential_generation: int | None  # None: the credential is gone
    credential_invalidated: bool
    contract_unit: str | None  # None: the contract is gone
    contract_unit_changed_at: datetime | None
    contract_credential_generation: int | None
    contract_number_reset: bool  # a temporary password set by phone for the contract number since


def verdict(row: LoginSession, standing: Standing, now: datetime, times: SessionTimes) -> Verdict:
    if now >= row.absolute_expires_at:
        return Verdict.LIFETIME
    if now - row.last_seen_at > timedelta(seconds=times.idle_seconds):
        return Verdict.IDLE
    if standing.credential_generation != row.credential_generation:
        return Verdict.CREDENTIAL_REPLACED
    if standing.credential_invalidated:
        return Verdict.CREDENTIAL_INVALIDATED
    if standing.contract_unit != row.unit or (
        standing.contract_unit_changed_at is not None and standing.contract_unit_changed_at > row.created_at
    ):
        return Verdict.CONTRACT_CHANGED
    if standing.contract_number_reset:
        return Verdict.CONTRACT_RESET
    return Verdict.OK


def _credential(session: Session, phone_id: int) -> Credential | None:
    return session.scalars(
        select(Credential)
        .where(Credential.phone_number_id == phone_id)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _contract_credential_generation(session: Session, contract: Contract) -> int | None:
    phone = number_row_on_contract(session, contract.id, contract.contract_number)
    credential = _credential(session, phone.id) if phone is not None else None
    return credential.generation if credential is not None else None


def phone_reset_since(session: Session, *, number: str, since: datetime) -> bool:
    """Was a new temporary password set by phone for ``number`` at or after ``since``? (audit trail;
    callers ask only once the credential's generation moved, so the same instant counts)"""
    found = session.scalar(
        select(AuditEvent.id)
        .where(
            AuditEvent.number == number,
            AuditEvent.event == str(AuditEventType.TEMPORARY_SET),
            AuditEvent.outcome == "ok",
            AuditEvent.at >= since,
        )
        .limit(1)
    )
    return found is not None


def standing_of(session: Session, row: LoginSession) -> Standing:
    credential = _credential(session, row.credential_phone_id)
    contract = session.get(Contract, row.contract_id, populate_existing=True)
    contract_generation = _contract_credential_generation(session, contract) if contract else None
    reset = False
    if contract is not None and contract_generation != row.contract_credential_generation:
        reset = phone_reset_since(session, number=contract.contract_number, since=row.created_at)
    return Standing(
        credential_generation=credential.generation if credential else None,
        credential_invalidated=bool(credential and credential.invalidated_at is not None),
        contract_unit=str(contract.auth_unit) if contract else None,
        contract_unit_changed_at=contract.unit_changed_at if contract else None,
        contract_credential_generation=contract_generation,
        contract_number_reset=reset,
    )


def _expiry(created_at: datetime, last_seen_at: datetime, times: SessionTimes) -> tuple[datetime, datetime]:
    absolute = created_at + timedelta(seconds=times.lifetime_seconds)
    return min(absolute, last_seen_at + timedelta(seconds=times.idle_seconds)), absolute


class NoIdentity(LookupError):
    """The number has no login identity (or no credential) any more."""


def open_session(
    session: Session,
    *,
    id_hash: str,
    now: datetime,
    times: SessionTimes,
    stage: str,
    number: str,
    data: str,
    sealed: str | None = None,
) -> LoginSession:
    """A new row for a login that just passed the password check of ``number``."""
    sweep_sessions(session, now=now)
    identity = identity_for(session, number)
    credential = _credential(session, identity.phone.id) if identity else None
    if identity is None or credential is None:
        raise NoIdentity("no login identity for this number")
    contract = identity.contract
    expires_at, absolute = _expiry(now, now, times)
    row = LoginSession(
        id_hash=id_hash,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
        absolute_expires_at=absolute,
        stage=stage,
        number=identity.login_number,
        contract_id=contract.id,
        unit=str(contract.auth_unit),
        role=_role(contract, identity.login_number),
        credential_phone_id=identity.phone.id,
        credential_generation=credential.generation,
        contract_credential_generation=_contract_credential_generation(session, contract),
        data=data,
        sealed=sealed,
    )
    session.add(row)
    session.flush()
    return row


def _role(contract: Contract, login_number: str) -> str:
    from core.rules import role_for

    return role_for(contract.auth_unit, contract.contract_number, login_number)


def load_session(
    session: Session, *, id_hash: str, now: datetime, times: SessionTimes
) -> tuple[LoginSession | None, Verdict | None]:
    """The live session (touched) or ``(None, why it ended)``; ``(None, None)`` for no such row."""
    row = session.get(LoginSession, id_hash, populate_existing=True)
    if row is None:
        return None, None
    standing = standing_of(session, row)
    found = verdict(row, standing, now, times)
    if found is not Verdict.OK:
        session.delete(row)
        session.flush()
        return None, found
    if standing.contract_credential_generation != row.contract_credential_generation:
        row.contract_credential_generation = standing.contract_credential_generation  # not a reset
    if now - row.last_seen_at >= timedelta(seconds=times.touch_seconds):
        row.last_seen_at = now
        row.expires_at, _ = _expiry(row.created_at, now, times)
    session.flush()
    return row, Verdict.OK


def save_session(
    session: Session,
    *,
    id_hash: str,
    now: datetime,
    times: SessionTimes,
    stage: str,
    data: str,
    sealed: str | None,
    new_id_hash: str | None = None,
    resnapshot: bool = False,
) -> None:
    """Store a session's state; ``new_id_hash`` gives it a new key (a new cookie value);
    ``resnapshot`` adopts its credential's current generation (this session changed it)."""
    row = session.get(LoginSession, id_hash, populate_existing=True)
    if row is None:
        return
    row.stage = stage
    row.data = data
    row.sealed = sealed
    row.last_seen_at = now
    row.expires_at, _ = _expiry(row.created_at, now, times)
    if resnapshot:
        credential = _credential(session, row.credential_phone_id)
        if credential is not None:
            row.credential_generation = credential.generation
        contract = session.get(Contract, row.contract_id)
        if contract is not None:
            row.contract_credential_generation = _contract_credential_generation(session, contract)
    session.flush()
    if new_id_hash is not None and new_id_hash != id_hash:
        session.execute(
            update(LoginSession)
            .where(LoginSession.id_hash == id_hash)
            .values(id_hash=new_id_hash)
            .execution_options(synchronize_session=False)
        )
        session.expunge(row)


def delete_session(session: Session, *, id_hash: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.id_hash == id_hash))


def sweep_sessions(session: Session, *, now: datetime, batch: int = SWEEP_BATCH) -> int:
    """Delete at most ``batch`` sessions past their idle or absolute end."""
    ids = session.scalars(
        select(LoginSession.id_hash).where(LoginSession.expires_at <= now).limit(batch)
    ).all()
    if ids:
        session.execute(delete(LoginSession).where(LoginSession.id_hash.in_(ids)))
    return len(ids)


def count_sessions(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(LoginSession)) or 0)
