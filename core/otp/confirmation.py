"""Confirmation ID / password (needed to change the receiving address).

``check_confirmation_in_steps(sessions, *, number, confirmation_id, confirmation_password, now,
  ...) -> bool``; steps ``confirmation_hashes``, ``confirmation_matches``,
  ``record_confirmation_check``
``change_confirmation_id_in_steps`` / ``change_confirmation_password_in_steps(sessions, *,
  number, current, new, now, ...) -> list[str]``  ``[]`` when changed; else ``current_wrong``,
  ``same_as_current`` or the rule codes of ``core.password_rules``; steps
  ``prepare_confirmation_change`` (checks and hashes), ``apply_confirmation_change``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.audit import Audit
from core.db import readers_of
from core.enums import AuditEventType, Channel
from core.models import OtpSettings, PhoneNumber
from core.otp.common import _phone
from core.password_rules import confirmation_id_violations, confirmation_password_violations
from core.secrets import SecretHasher, default_hasher


@dataclass(frozen=True)
class ConfirmationHashes:
    """The stored confirmation ID / password hashes of a number's identity (None: not set)."""

    phone_number_id: int
    id_hash: str | None = field(repr=False)
    password_hash: str | None = field(repr=False)


def confirmation_hashes(session: Session, *, number: str) -> ConfirmationHashes:
    """Read the hashes to check against (raises :class:`UnknownNumber`); nothing is checked here."""
    phone = _phone(session, number)
    settings = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
    ).one_or_none()
    return ConfirmationHashes(
        phone.id,
        settings.confirmation_id_hash if settings else None,
        settings.confirmation_password_hash if settings else None,
    )


def confirmation_matches(
    hashes: ConfirmationHashes,
    *,
    confirmation_id: str,
    confirmation_password: str,
    hasher: SecretHasher | None = None,
) -> bool:
    """Both the confirmation ID and password match (both are always checked: same timing). Slow:
    run it with no transaction open."""
    hasher = hasher or default_hasher()
    id_ok = hasher.verify(hashes.id_hash or "", confirmation_id)
    password_ok = hasher.verify(hashes.password_hash or "", confirmation_password)
    return id_ok and password_ok


def record_confirmation_check(
    session: Session,
    hashes: ConfirmationHashes,
    *,
    ok: bool,
    now: datetime,
    channel: Channel | str = Channel.WEB,
) -> None:
    phone = session.get(PhoneNumber, hashes.phone_number_id)
    assert phone is not None
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_CONFIRMATION_CHECKED, "ok" if ok else "wrong"
    )


def check_confirmation_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    confirmation_id: str,
    confirmation_password: str,
    now: datetime,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> bool:
    """Both the confirmation ID and password match: the hashes are read in a read-only session,
    checked with no transaction open, and the check is audited in a short write transaction.
    (The count of wrong checks is the web's, see ``web_stub.core_backend``.)"""
    with readers_of(sessions)() as session, session.begin():
        hashes = confirmation_hashes(session, number=number)
    ok = confirmation_matches(
        hashes, confirmation_id=confirmation_id, confirmation_password=confirmation_password, hasher=hasher
    )
    with sessions() as session, session.begin():
        record_confirmation_check(session, hashes, ok=ok, now=now, channel=channel)
    return ok


@dataclass(frozen=True)
class ConfirmationChange:
    """A checked change of the confirmation ID or password (:func:`prepare_confirmation_change`):
    ``reasons`` empty means the new value is hashed and may be stored."""

    hashes: ConfirmationHashes
    which: str  # "id" | "password"
    reasons: list[str]
    new_hash: str | None = field(default=None, repr=False)

    @property
    def stored_hash(self) -> str | None:
        return self.hashes.id_hash if self.which == "id" else self.hashes.password_hash


def prepare_confirmation_change(
    hashes: ConfirmationHashes, *, which: str, current: str, new: str, hasher: SecretHasher | None = None
) -> ConfirmationChange:
    """Check ``current``, the rules and ``new`` against the stored value, and hash ``new``. Slow:
    run it with no transaction open, then store it with :func:`apply_confirmation_change`."""
    hasher = hasher or default_hasher()
    stored = hashes.id_hash if which == "id" else hashes.password_hash
    if not hasher.verify(stored or "", current):
        reasons = ["current_wrong"]
    else:
        rules = confirmation_id_violations if which == "id" else confirmation_password_violations
        reasons = rules(new)
        if not reasons and hasher.verify(stored or "", new):
            reasons = ["same_as_current"]
    return ConfirmationChange(hashes, which, reasons, None if reasons else hasher.hash(new))


def apply_confirmation_change(
    session: Session, change: ConfirmationChange, *, now: datetime, channel: Channel | str = Channel.WEB
) -> list[str]:
    """Store a prepared change, only over the value it was checked against (a concurrent change
    makes this one ``current_wrong``), and audit it. Returns the reasons (``[]``: changed)."""
    reasons = list(change.reasons)
    column = (
        OtpSettings.confirmation_id_hash if change.which == "id" else OtpSettings.confirmation_password_hash
    )
    if not reasons:
        stored = change.stored_hash
        assert stored is not None and change.new_hash is not None
        changed = session.execute(
            update(OtpSettings)
            .where(OtpSettings.phone_number_id == change.hashes.phone_number_id, column == stored)
            .values({column: change.new_hash})
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if changed != 1:
            reasons = ["current_wrong"]
    phone = session.get(PhoneNumber, change.hashes.phone_number_id)
    assert phone is not None
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_CONFIRMATION_CHANGED,
        "ok" if not reasons else "rejected",
        f"{change.which} " + ",".join(reasons),
    )
    session.flush()
    return reasons


def _change_confirmation_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    current: str,
    new: str,
    now: datetime,
    hasher: SecretHasher | None,
    channel: Channel | str,
    which: str,
) -> list[str]:
    with readers_of(sessions)() as session, session.begin():
        hashes = confirmation_hashes(session, number=number)
    change = prepare_confirmation_change(hashes, which=which, current=current, new=new, hasher=hasher)
    with sessions() as session, session.begin():
        return apply_confirmation_change(session, change, now=now, channel=channel)


def change_confirmation_id_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    current: str,
    new: str,
    now: datetime,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> list[str]:
    """``[]`` when changed; else ``current_wrong``, ``same_as_current`` or the rule codes. The
    checks and the new hash run with no transaction open."""
    return _change_confirmation_in_steps(
        sessions, number=number, current=current, new=new, now=now, hasher=hasher, channel=channel, which="id"
    )


def change_confirmation_password_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    current: str,
    new: str,
    now: datetime,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> list[str]:
    """As :func:`change_confirmation_id_in_steps`, for the confirmation password."""
    return _change_confirmation_in_steps(
        sessions,
        number=number,
        current=current,
        new=new,
        now=now,
        hasher=hasher,
        channel=channel,
        which="password",
    )
