"""Login codes (6 digits, valid 300 s, single use, bound to the login attempt id the web chose).

``prepare_code(hasher)`` + ``issue_code(session, *, number, login_attempt_id, code, now, ...) ->
  IssuedCode(code, mail_address, expires_at)``  sending again supersedes the previous code of
  that attempt; raises :class:`~core.otp.common.OtpNotAvailable` (``reason``: ``not_registered``,
  ``attempt_closed``, ``too_many_codes``)
``verify_code_in_steps(sessions, *, number, login_attempt_id, code, now, ...) -> CodeStatus``
  ``ok`` | ``wrong`` | ``expired`` | ``used`` | ``too_many`` | ``none``; ``otp_code_max_failures``
  wrong codes (reserved atomically per attempt before the check) void the attempt: the customer
  logs in again. Its steps, for callers that count more in the same transactions (the web):
  ``reserve_code_check`` (commit), ``code_matches`` (no transaction), ``settle_code_check``.
"""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.audit import Audit
from core.directory import find_number
from core.enums import AuditEventType, Channel, CodeStatus
from core.models import OtpCode, OtpLoginAttempt, OtpSettings, PhoneNumber
from core.otp.common import OtpNotAvailable, _phone
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import code_refusal
from core.secrets import SecretHasher, default_hasher
from core.tries import reserve_try

CODE_DIGITS = 6
MAX_CODES_PER_ATTEMPT = 5


@dataclass(frozen=True)
class IssuedCode:
    code: str = field(repr=False)
    mail_address: str
    expires_at: datetime


def _attempt(session: Session, attempt_id: str) -> OtpLoginAttempt | None:
    return session.get(OtpLoginAttempt, attempt_id, populate_existing=True)


@dataclass(frozen=True)
class NewCode:
    """A fresh one-time code and its hash, made by :func:`prepare_code` before any transaction."""

    code: str = field(repr=False)
    code_hash: str = field(repr=False)


def prepare_code(hasher: SecretHasher | None = None) -> NewCode:
    """A new 6-digit code and its argon2 hash. Slow: call it with no transaction open, then pass
    it to :func:`issue_code`."""
    code = f"{_random.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    return NewCode(code=code, code_hash=(hasher or default_hasher()).hash(code))


def issue_code(
    session: Session,
    *,
    number: str,
    login_attempt_id: str,
    code: NewCode,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    channel: Channel | str = Channel.WEB,
) -> IssuedCode:
    """Store ``code`` (from :func:`prepare_code`) as this login attempt's code, superseding the
    attempt's earlier codes; nothing here hashes. Mail it."""
    if not login_attempt_id or len(login_attempt_id) > 64:
        raise OtpNotAvailable("attempt_closed")
    phone = _phone(session, number)
    settings = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
    ).one_or_none()
    if settings is None or settings.registered_at is None or settings.mail_address is None:
        raise OtpNotAvailable("not_registered")
    attempt = _attempt(session, login_attempt_id)
    if attempt is None:
        attempt = OtpLoginAttempt(id=login_attempt_id, phone_number_id=phone.id, created_at=now, failures=0)
        session.add(attempt)
        session.flush()
    elif (
        attempt.phone_number_id != phone.id
        or attempt.voided_at is not None
        or attempt.completed_at is not None
    ):
        raise OtpNotAvailable("attempt_closed")
    issued = session.scalars(select(OtpCode.id).where(OtpCode.attempt_id == attempt.id)).all()
    if len(issued) >= MAX_CODES_PER_ATTEMPT:
        raise OtpNotAvailable("too_many_codes")
    session.execute(
        update(OtpCode)
        .where(
            OtpCode.attempt_id == attempt.id, OtpCode.consumed_at.is_(None), OtpCode.superseded_at.is_(None)
        )
        .values(superseded_at=now)
        .execution_options(synchronize_session=False)
    )
    expires_at = now + timedelta(seconds=policy.otp_code_validity_seconds)
    session.add(
        OtpCode(attempt_id=attempt.id, code_hash=code.code_hash, created_at=now, expires_at=expires_at)
    )
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_CODE_ISSUED, "ok", f"n={len(issued) + 1}"
    )
    session.flush()
    return IssuedCode(code=code.code, mail_address=settings.mail_address, expires_at=expires_at)


@dataclass(frozen=True)
class CodeTicket:
    """A reserved code check (the try is already counted), for :func:`code_matches` and
    :func:`settle_code_check`; holds no ORM object."""

    attempt_id: str
    code_id: int
    code_hash: str = field(repr=False)
    phone_number_id: int
    limit: int
    reserved: int  # the failure count this try holds (1..limit)


def reserve_code_check(
    session: Session,
    *,
    number: str,
    login_attempt_id: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
) -> CodeTicket | CodeStatus:
    """Count one try of the attempt's latest code before it is checked (one ``UPDATE …
    RETURNING``, so ``otp_code_max_failures`` stays exact under concurrent tries), or answer
    without spending one: ``none`` (no such attempt or code; spend a dummy check's time),
    ``too_many``, ``used``, ``expired``. Commit before :func:`code_matches`."""
    row = find_number(session, number)
    attempt = (
        _attempt(session, login_attempt_id) if login_attempt_id and len(login_attempt_id) <= 64 else None
    )
    if row is None or attempt is None or attempt.phone_number_id != row.id:
        return CodeStatus.NONE
    latest = session.scalars(
        select(OtpCode)
        .where(OtpCode.attempt_id == attempt.id, OtpCode.superseded_at.is_(None))
        .order_by(OtpCode.id.desc())
        .execution_options(populate_existing=True)
    ).first()
    refusal = code_refusal(
        attempt_voided=attempt.voided_at is not None,
        attempt_completed=attempt.completed_at is not None,
        code_consumed=None if latest is None else latest.consumed_at is not None,
        code_created_at=None if latest is None else latest.created_at,
        now=now,
        validity_seconds=policy.otp_code_validity_seconds,
    )
    if refusal is not None:
        return refusal
    assert latest is not None
    limit = policy.otp_code_max_failures
    reserved = reserve_try(
        session,
        OtpLoginAttempt.failures,
        OtpLoginAttempt.id == attempt.id,
        OtpLoginAttempt.voided_at.is_(None),
        OtpLoginAttempt.completed_at.is_(None),
        limit=limit,
    )
    session.expire(attempt)
    if reserved is None:
        return CodeStatus.TOO_MANY
    return CodeTicket(attempt.id, latest.id, latest.code_hash, row.id, limit, reserved)


def code_matches(ticket: CodeTicket | None, code: str, hasher: SecretHasher | None = None) -> bool:
    """The argon2 check of a reserved try (``None``: a dummy check, same time). Slow: run it with
    no transaction open."""
    hasher = hasher or default_hasher()
    cleaned = (code or "").strip()
    if ticket is None:
        hasher.dummy_verify(cleaned)
        return False
    return cleaned.isascii() and cleaned.isdigit() and hasher.verify(ticket.code_hash, cleaned)


def settle_code_check(
    session: Session, ticket: CodeTicket, *, ok: bool, now: datetime, channel: Channel | str = Channel.WEB
) -> CodeStatus:
    """Record a checked try: ``ok`` (the code consumed, the attempt completed, the try given back),
    ``used`` (a concurrent try consumed it first), ``too_many`` (the last try was wrong: the
    attempt is void; or a concurrent try voided it first) or ``wrong``."""
    phone = session.get(PhoneNumber, ticket.phone_number_id)
    assert phone is not None
    audit = Audit.of_phone(session, phone, at=now, channel=channel)
    if ok:
        completed = session.execute(
            update(OtpLoginAttempt)
            .where(
                OtpLoginAttempt.id == ticket.attempt_id,
                OtpLoginAttempt.voided_at.is_(None),
                OtpLoginAttempt.completed_at.is_(None),
            )
            .values(completed_at=now, failures=OtpLoginAttempt.failures - 1)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if completed != 1:
            voided = session.scalar(
                select(OtpLoginAttempt.voided_at).where(OtpLoginAttempt.id == ticket.attempt_id)
            )
            return CodeStatus.TOO_MANY if voided is not None else CodeStatus.USED
        consumed = session.execute(
            update(OtpCode)
            .where(OtpCode.id == ticket.code_id, OtpCode.consumed_at.is_(None))
            .values(consumed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if consumed != 1:  # cannot happen while the attempt was open; keep the code single use
            return CodeStatus.USED
        audit.record(AuditEventType.OTP_CODE_ACCEPTED, "ok")
        return CodeStatus.OK
    if ticket.reserved >= ticket.limit:
        session.execute(
            update(OtpLoginAttempt)
            .where(OtpLoginAttempt.id == ticket.attempt_id, OtpLoginAttempt.voided_at.is_(None))
            .values(voided_at=now)
            .execution_options(synchronize_session=False)
        )
        audit.record(AuditEventType.OTP_ATTEMPT_VOIDED, "too_many")
        return CodeStatus.TOO_MANY
    audit.record(AuditEventType.OTP_CODE_REJECTED, "wrong", f"remaining={ticket.limit - ticket.reserved}")
    return CodeStatus.WRONG


def verify_code_in_steps(
    sessions: sessionmaker[Session],
    *,
    number: str,
    login_attempt_id: str,
    code: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> CodeStatus:
    """``ok`` | ``wrong`` | ``expired`` | ``used`` | ``too_many`` | ``none`` (no code for this
    attempt), with no lock held across the hash: a write transaction reserves the try
    (:func:`reserve_code_check`) and commits, the code is checked with none open
    (:func:`code_matches`), a second one records the result (:func:`settle_code_check`). A process
    that dies in between leaves the try counted as wrong (fail safe)."""
    with sessions() as session, session.begin():
        ticket = reserve_code_check(
            session, number=number, login_attempt_id=login_attempt_id, now=now, policy=policy
        )
    if isinstance(ticket, str):
        if ticket == "none":
            code_matches(None, code, hasher)
        return ticket
    ok = code_matches(ticket, code, hasher)
    with sessions() as session, session.begin():
        return settle_code_check(session, ticket, ok=ok, now=now, channel=channel)
