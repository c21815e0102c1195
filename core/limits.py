"""Per-number limits on guessing the one-time-password secrets, counted across logins.

- Wrong one-time codes: at most ``limit`` in a window per number (default 10 in 24 h); the one
  that reaches it invalidates the number's password, recovered the seed's way (a new temporary
  password by phone). The count belongs to the credential's generation, so a new password starts
  a new count.
- Code mails: at most ``limit`` per number per window (default 10 per hour).
- Wrong confirmation ID / password (address check, ID and password changes): at most ``limit`` in
  a window (default 5 in 24 h); the one that reaches it locks the number's one-time-password
  settings pages until a new temporary password is set for it by phone.

Counters live in ``rate_counters`` (``core.throttle``), locks in ``number_locks``. The caller owns
the session and the transaction; nothing here hashes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.audit import Audit
from core.auth import identity_for
from core.enums import AuditEventType, Channel
from core.models import AuditEvent, Credential, PhoneNumber
from core.throttle import Budget, Taken, forget, take
from core.web_models import NumberLock
from core.web_sessions import phone_reset_since

OTP_CODE_SCOPE = "otp_code"
OTP_MAIL_SCOPE = "otp_mail"
CONFIRMATION_SCOPE = "confirmation"
OTP_SETTINGS_LOCK = "otp_settings"


def _identity_phone(session: Session, number: str) -> PhoneNumber | None:
    identity = identity_for(session, number)
    return identity.phone if identity else None


def _generation(session: Session, phone: PhoneNumber) -> int:
    generation = session.scalar(select(Credential.generation).where(Credential.phone_number_id == phone.id))
    return int(generation or 0)


def credential_key(session: Session, number: str) -> str:
    """``number:generation`` of the identity's credential (a new password starts a new count)."""
    phone = _identity_phone(session, number)
    if phone is None:
        return f"{number}:-"
    return f"{phone.number}:{_generation(session, phone)}"


def confirmation_key(session: Session, number: str) -> str:
    """``number:reset`` for the wrong-confirmation count: ``reset`` is the last temporary password
    set by phone for the identity (its audit event's id). Only that recovery starts a new count;
    a password change on the web does not (it did: a session could change its password to get 5
    more guesses at the confirmation ID and password each time)."""
    phone = _identity_phone(session, number)
    if phone is None:
        return f"{number}:-"
    reset = session.scalar(
        select(func.max(AuditEvent.id)).where(
            AuditEvent.number == phone.number,
            AuditEvent.event == str(AuditEventType.TEMPORARY_SET),
            AuditEvent.outcome == "ok",
        )
    )
    return f"{phone.number}:{reset or 0}"


def take_code_check(session: Session, *, number: str, now: datetime, budget: Budget) -> Taken:
    return take(session, scope=OTP_CODE_SCOPE, key=credential_key(session, number), now=now, budget=budget)


def take_code_mail(session: Session, *, number: str, now: datetime, budget: Budget) -> Taken:
    return take(session, scope=OTP_MAIL_SCOPE, key=number, now=now, budget=budget)


def take_confirmation_check(session: Session, *, number: str, now: datetime, budget: Budget) -> Taken:
    return take(
        session, scope=CONFIRMATION_SCOPE, key=confirmation_key(session, number), now=now, budget=budget
    )


def invalidate_password(
    session: Session, *, number: str, now: datetime, reason: str, channel: Channel | str = Channel.WEB
) -> None:
    """Invalidate the identity's credential (as 10 wrong passwords would)."""
    phone = _identity_phone(session, number)
    if phone is None:
        return
    session.execute(
        update(Credential)
        .where(Credential.phone_number_id == phone.id, Credential.invalidated_at.is_(None))
        .values(invalidated_at=now)
        .execution_options(synchronize_session=False)
    )
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.LOCKED, "locked", f"reason={reason}"
    )


def lock_otp_settings(
    session: Session, *, number: str, now: datetime, channel: Channel | str = Channel.WEB
) -> None:
    phone = _identity_phone(session, number)
    if phone is None:
        return
    # One statement, so that concurrent last wrong tries cannot both insert (PostgreSQL raised a
    # unique violation here): a lock left from before a phone reset is renewed, not kept stale.
    values = {
        "phone_number_id": phone.id,
        "kind": OTP_SETTINGS_LOCK,
        "locked_at": now,
        "credential_generation": _generation(session, phone),
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
    statement = upsert(NumberLock).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["phone_number_id", "kind"],
        set_={"locked_at": now, "credential_generation": values["credential_generation"]},
    )
    session.execute(statement)
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.LOCKED, "locked", "otp_settings confirmation_failures"
    )
    session.flush()


def otp_settings_locked(session: Session, *, number: str) -> bool:
    """Locked, unless a new temporary password was set by phone since (which lifts the lock)."""
    phone = _identity_phone(session, number)
    if phone is None:
        return False
    lock = session.get(NumberLock, (phone.id, OTP_SETTINGS_LOCK), populate_existing=True)
    if lock is None:
        return False
    if _generation(session, phone) == lock.credential_generation or not phone_reset_since(
        session, number=phone.number, since=lock.locked_at
    ):
        return True
    session.execute(
        delete(NumberLock).where(NumberLock.phone_number_id == phone.id, NumberLock.kind == OTP_SETTINGS_LOCK)
    )
    forget(session, scope=CONFIRMATION_SCOPE, key=confirmation_key(session, number))
    return False
