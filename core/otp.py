"""One-time passwords (two-step login), per login identity (seed 003 P8–P10, P22–P27).

All synchronous, all argon2 (run in a thread from async code); the caller owns the session and
commits. Statuses are plain strings so the web can map them to messages.

Settings and state
    ``otp_state(session, *, number) -> OtpState``  status ``unchosen`` | ``off`` | ``pending`` | ``on``
    ``decline_otp(session, *, number, now)``  explicit agreement to not use it (also "switch off")
    ``choose_otp(session, *, number, now)``   the customer wants it; status ``pending`` until registered

Registration (仮登録 -> mailed link -> 本登録; link valid 24 h, single use, token stored hashed)
    ``start_registration(session, *, number, mail_address, confirmation_id, confirmation_password,
      now, policy=..., hasher=None) -> str``  the plain link token (≥128 bits random) to mail;
      raises :class:`OtpInputError` (``problems``: field -> reason codes). A newer registration
      supersedes older pending ones.
    ``start_address_change(session, *, number, mail_address, now, ...) -> str``  same, keeping the
      registered confirmation ID/password (check them first with ``check_confirmation``)
    ``complete_registration(session, *, token, now, ...) -> LinkResult``  status ``ok`` | ``expired``
      | ``used`` | ``unknown`` (superseded links are ``unknown``)

Login codes (6 digits, valid 300 s, single use, bound to the login attempt id the web chose)
    ``issue_code(session, *, number, login_attempt_id, now, ...) -> IssuedCode(code, mail_address,
      expires_at)``  sending again supersedes the previous code of that attempt; raises
      :class:`OtpNotAvailable` (``reason``: ``not_registered``, ``attempt_closed``, ``too_many_codes``)
    ``verify_code(session, *, number, login_attempt_id, code, now, ...) -> str``  ``ok`` | ``wrong`` |
      ``expired`` | ``used`` | ``too_many`` | ``none``; ``otp_code_max_failures`` wrong codes (counted
      atomically per attempt) void the attempt: the customer logs in again.

Confirmation ID / password (needed to change the receiving address)
    ``check_confirmation(session, *, number, confirmation_id, confirmation_password, now, ...) -> bool``
    ``change_confirmation_id(session, *, number, current, new, now, ...) -> list[str]``
    ``change_confirmation_password(session, *, number, current, new, now, ...) -> list[str]``
      ``[]`` when changed; else ``current_wrong``, ``same_as_current`` or the rule codes of
      ``core.password_rules``.
"""

from __future__ import annotations

import re
import secrets as _random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.audit import Audit
from core.directory import find_number
from core.enums import AuditEventType, Channel, OtpUsage
from core.models import OtpCode, OtpLoginAttempt, OtpRegistration, OtpSettings, PhoneNumber
from core.password_rules import confirmation_id_violations, confirmation_password_violations
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import is_within
from core.secrets import SecretHasher, default_hasher
from core.tries import reserve_try

CODE_DIGITS = 6
TOKEN_BYTES = 24  # 192 bits
MAX_CODES_PER_ATTEMPT = 5
_MAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


class OtpInputError(ValueError):
    """Registration input breaks rules; ``problems`` maps a field to its reason codes."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems
        super().__init__(
            "one-time password settings refused: "
            + "; ".join(f"{k}={','.join(v)}" for k, v in problems.items())
        )


class OtpNotAvailable(RuntimeError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"one-time password not available: {reason}")


class UnknownNumber(LookupError):
    pass


@dataclass(frozen=True)
class OtpState:
    status: str  # "unchosen" | "off" | "pending" | "on"
    usage: OtpUsage
    mail_address: str | None = None  # the registered (active) receiving address
    pending_mail_address: str | None = None  # waiting for its link
    has_confirmation: bool = False

    @property
    def required_at_login(self) -> bool:
        return self.status == "on"


@dataclass(frozen=True)
class LinkResult:
    status: str  # "ok" | "expired" | "used" | "unknown"
    number: str | None = None
    mail_address: str | None = None


@dataclass(frozen=True)
class IssuedCode:
    code: str = field(repr=False)
    mail_address: str
    expires_at: datetime


#: A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def mail_address_problems(value: str) -> list[str]:
    if not value:
        return ["empty"]
    if len(value) > 254 or not value.isascii() or not _MAIL.fullmatch(value):
        return ["invalid"]
    if value.startswith(FORMULA_PREFIXES):
        return ["formula"]  # valid by RFC 5322, but a spreadsheet would run it from a download
    return []


def _phone(session: Session, number: str) -> PhoneNumber:
    row = find_number(session, number)
    if row is None:
        raise UnknownNumber("the number is on no contract")
    return row


def _settings(session: Session, phone: PhoneNumber) -> OtpSettings:
    settings = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
    ).one_or_none()
    if settings is None:
        settings = OtpSettings(phone_number_id=phone.id, usage=OtpUsage.UNDECIDED)
        session.add(settings)
        session.flush()
    return settings


def _pending(session: Session, phone_id: int, now: datetime) -> OtpRegistration | None:
    return session.scalars(
        select(OtpRegistration)
        .where(
            OtpRegistration.phone_number_id == phone_id,
            OtpRegistration.consumed_at.is_(None),
            OtpRegistration.superseded_at.is_(None),
            OtpRegistration.expires_at > now,
        )
        .order_by(OtpRegistration.id.desc())
    ).first()


def otp_state(session: Session, *, number: str, now: datetime | None = None) -> OtpState:
    phone = _phone(session, number)
    settings = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
    ).one_or_none()
    pending = _pending(session, phone.id, now) if now is not None else None
    if settings is None:
        return OtpState("unchosen", OtpUsage.UNDECIDED)
    registered = settings.registered_at is not None and settings.mail_address is not None
    status = {
        OtpUsage.UNDECIDED: "unchosen",
        OtpUsage.NOT_USED: "off",
        OtpUsage.USED: "on" if registered else "pending",
    }[settings.usage]
    return OtpState(
        status=status,
        usage=settings.usage,
        mail_address=settings.mail_address if registered else None,
        pending_mail_address=pending.mail_address if pending else None,
        has_confirmation=settings.confirmation_id_hash is not None,
    )


def decline_otp(
    session: Session, *, number: str, now: datetime, channel: Channel | str = Channel.WEB
) -> None:
    """The customer agreed to not use one-time passwords (first login, or switching off)."""
    phone = _phone(session, number)
    settings = _settings(session, phone)
    previous = settings.usage
    settings.usage = OtpUsage.NOT_USED
    settings.declined_at = now
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_DECLINED, "ok", f"from={previous}"
    )
    session.flush()


def choose_otp(session: Session, *, number: str, now: datetime, channel: Channel | str = Channel.WEB) -> None:
    """The customer wants one-time passwords: ``on`` again if an address is registered, else ``pending``."""
    phone = _phone(session, number)
    settings = _settings(session, phone)
    previous = settings.usage
    settings.usage = OtpUsage.USED
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_USAGE_CHANGED, "ok", f"{previous}->used"
    )
    session.flush()


def _new_registration(
    session: Session,
    *,
    phone: PhoneNumber,
    mail_address: str,
    confirmation_id_hash: str | None,
    confirmation_password_hash: str | None,
    now: datetime,
    policy: PolicyLike,
    hasher: SecretHasher,
    channel: Channel | str,
) -> str:
    session.execute(
        update(OtpRegistration)
        .where(
            OtpRegistration.phone_number_id == phone.id,
            OtpRegistration.consumed_at.is_(None),
            OtpRegistration.superseded_at.is_(None),
        )
        .values(superseded_at=now)
        .execution_options(synchronize_session=False)
    )
    secret = _random.token_urlsafe(TOKEN_BYTES)
    registration = OtpRegistration(
        phone_number_id=phone.id,
        token_hash=hasher.hash(secret),
        mail_address=mail_address,
        confirmation_id_hash=confirmation_id_hash,
        confirmation_password_hash=confirmation_password_hash,
        created_at=now,
        expires_at=now + timedelta(seconds=policy.registration_link_validity_seconds),
    )
    session.add(registration)
    session.flush()
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_REGISTRATION_STARTED,
        "ok",
        "address_change" if confirmation_id_hash is None else "registration",
    )
    return f"{registration.id}.{secret}"


def start_registration(
    session: Session,
    *,
    number: str,
    mail_address: str,
    confirmation_id: str,
    confirmation_password: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
    replace_registered: bool = False,
) -> str:
    """Provisional registration; returns the link token to mail (only its hash is stored).

    Only for a number without a registration: a registered number changes its address with
    :func:`start_address_change` and its confirmation ID/password with their own functions (which
    need the current ones); raises :class:`OtpNotAvailable` ``already_registered``. The admin's bulk
    settings (seed P27) pass ``replace_registered=True``."""
    hasher = hasher or default_hasher()
    problems: dict[str, list[str]] = {}
    for name, found in (
        ("mail_address", mail_address_problems(mail_address)),
        ("confirmation_id", confirmation_id_violations(confirmation_id)),
        ("confirmation_password", confirmation_password_violations(confirmation_password)),
    ):
        if found:
            problems[name] = found
    if problems:
        raise OtpInputError(problems)
    phone = _phone(session, number)
    settings = _settings(session, phone)
    if settings.confirmation_id_hash is not None and not replace_registered:
        raise OtpNotAvailable("already_registered")
    settings.usage = OtpUsage.USED
    return _new_registration(
        session,
        phone=phone,
        mail_address=mail_address,
        confirmation_id_hash=hasher.hash(confirmation_id),
        confirmation_password_hash=hasher.hash(confirmation_password),
        now=now,
        policy=policy,
        hasher=hasher,
        channel=channel,
    )


def start_address_change(
    session: Session,
    *,
    number: str,
    mail_address: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> str:
    """A new receiving address for a registered identity; the same link procedure applies."""
    hasher = hasher or default_hasher()
    found = mail_address_problems(mail_address)
    if found:
        raise OtpInputError({"mail_address": found})
    phone = _phone(session, number)
    settings = _settings(session, phone)
    if settings.confirmation_id_hash is None:
        raise OtpNotAvailable("not_registered")
    return _new_registration(
        session,
        phone=phone,
        mail_address=mail_address,
        confirmation_id_hash=None,
        confirmation_password_hash=None,
        now=now,
        policy=policy,
        hasher=hasher,
        channel=channel,
    )


def complete_registration(
    session: Session,
    *,
    token: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> LinkResult:
    """Open the mailed link: valid 24 h (``now < created + 24 h``), once."""
    hasher = hasher or default_hasher()
    registration_id, _, secret = (token or "").partition(".")
    registration = (
        session.get(OtpRegistration, int(registration_id), populate_existing=True)
        if registration_id.isdigit() and len(registration_id) < 18 and secret
        else None
    )
    if registration is None or not hasher.verify(registration.token_hash, secret):
        if registration is None:
            hasher.dummy_verify(secret)
        return LinkResult("unknown")
    phone = session.get(PhoneNumber, registration.phone_number_id)
    assert phone is not None
    if registration.superseded_at is not None:
        return LinkResult("unknown", number=phone.number)
    if registration.consumed_at is not None:
        return LinkResult("used", number=phone.number)
    if not is_within(registration.created_at, now, policy.registration_link_validity_seconds):
        return LinkResult("expired", number=phone.number)
    claimed = session.execute(
        update(OtpRegistration)
        .where(
            OtpRegistration.id == registration.id,
            OtpRegistration.consumed_at.is_(None),
            OtpRegistration.superseded_at.is_(None),
        )
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        return LinkResult("used", number=phone.number)
    settings = _settings(session, phone)
    settings.mail_address = registration.mail_address
    if registration.confirmation_id_hash is not None:
        settings.confirmation_id_hash = registration.confirmation_id_hash
    if registration.confirmation_password_hash is not None:
        settings.confirmation_password_hash = registration.confirmation_password_hash
    settings.registered_at = now
    settings.usage = OtpUsage.USED
    Audit.of_phone(session, phone, at=now, channel=channel).record(AuditEventType.OTP_REGISTERED, "ok")
    session.flush()
    return LinkResult("ok", number=phone.number, mail_address=registration.mail_address)


def _attempt(session: Session, attempt_id: str) -> OtpLoginAttempt | None:
    return session.get(OtpLoginAttempt, attempt_id, populate_existing=True)


def issue_code(
    session: Session,
    *,
    number: str,
    login_attempt_id: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> IssuedCode:
    """A new code for this login attempt (supersedes the attempt's earlier codes). Mail it."""
    hasher = hasher or default_hasher()
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
    code = f"{_random.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    expires_at = now + timedelta(seconds=policy.otp_code_validity_seconds)
    session.add(
        OtpCode(attempt_id=attempt.id, code_hash=hasher.hash(code), created_at=now, expires_at=expires_at)
    )
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_CODE_ISSUED, "ok", f"n={len(issued) + 1}"
    )
    session.flush()
    return IssuedCode(code=code, mail_address=settings.mail_address, expires_at=expires_at)


def verify_code(
    session: Session,
    *,
    number: str,
    login_attempt_id: str,
    code: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> str:
    """``ok`` | ``wrong`` | ``expired`` | ``used`` | ``too_many`` | ``none`` (no code for this attempt)."""
    hasher = hasher or default_hasher()
    row = find_number(session, number)
    attempt = (
        _attempt(session, login_attempt_id) if login_attempt_id and len(login_attempt_id) <= 64 else None
    )
    if row is None or attempt is None or attempt.phone_number_id != row.id:
        hasher.dummy_verify(code)
        return "none"
    audit = Audit.of_phone(session, row, at=now, channel=channel)
    if attempt.voided_at is not None:
        return "too_many"
    if attempt.completed_at is not None:
        return "used"
    latest = session.scalars(
        select(OtpCode)
        .where(OtpCode.attempt_id == attempt.id, OtpCode.superseded_at.is_(None))
        .order_by(OtpCode.id.desc())
        .execution_options(populate_existing=True)
    ).first()
    if latest is None:
        return "none"
    if latest.consumed_at is not None:
        return "used"
    if not is_within(latest.created_at, now, policy.otp_code_validity_seconds):
        return "expired"
    limit = policy.otp_code_max_failures
    reserved = reserve_try(
        session,
        OtpLoginAttempt.failures,
        OtpLoginAttempt.id == attempt.id,
        OtpLoginAttempt.voided_at.is_(None),
        OtpLoginAttempt.completed_at.is_(None),
        limit=limit,
    )
    if reserved is None:
        return "too_many"
    cleaned = (code or "").strip()
    if cleaned.isascii() and cleaned.isdigit() and hasher.verify(latest.code_hash, cleaned):
        consumed = session.execute(
            update(OtpCode)
            .where(OtpCode.id == latest.id, OtpCode.consumed_at.is_(None))
            .values(consumed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if consumed != 1:
            return "used"
        session.execute(
            update(OtpLoginAttempt)
            .where(OtpLoginAttempt.id == attempt.id)
            .values(completed_at=now, failures=OtpLoginAttempt.failures - 1)
            .execution_options(synchronize_session=False)
        )
        audit.record(AuditEventType.OTP_CODE_ACCEPTED, "ok")
        session.expire(attempt)
        return "ok"
    if reserved >= limit:
        session.execute(
            update(OtpLoginAttempt)
            .where(OtpLoginAttempt.id == attempt.id, OtpLoginAttempt.voided_at.is_(None))
            .values(voided_at=now)
            .execution_options(synchronize_session=False)
        )
        audit.record(AuditEventType.OTP_ATTEMPT_VOIDED, "too_many")
        session.expire(attempt)
        return "too_many"
    audit.record(AuditEventType.OTP_CODE_REJECTED, "wrong", f"remaining={limit - reserved}")
    session.expire(attempt)
    return "wrong"


def check_confirmation(
    session: Session,
    *,
    number: str,
    confirmation_id: str,
    confirmation_password: str,
    now: datetime,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> bool:
    """Both the confirmation ID and password match (both are always checked: same timing)."""
    hasher = hasher or default_hasher()
    phone = _phone(session, number)
    settings = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
    ).one_or_none()
    id_hash = settings.confirmation_id_hash if settings else None
    password_hash = settings.confirmation_password_hash if settings else None
    id_ok = hasher.verify(id_hash or "", confirmation_id)
    password_ok = hasher.verify(password_hash or "", confirmation_password)
    ok = id_ok and password_ok
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_CONFIRMATION_CHECKED, "ok" if ok else "wrong"
    )
    return ok


def _change_confirmation(
    session: Session,
    *,
    number: str,
    current: str,
    new: str,
    now: datetime,
    hasher: SecretHasher | None,
    channel: Channel | str,
    which: str,
) -> list[str]:
    hasher = hasher or default_hasher()
    phone = _phone(session, number)
    settings = session.scalars(
        select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
    ).one_or_none()
    attribute = f"confirmation_{which}_hash"
    stored = getattr(settings, attribute) if settings else None
    if not hasher.verify(stored or "", current):
        reasons = ["current_wrong"]
    else:
        rules = confirmation_id_violations if which == "id" else confirmation_password_violations
        reasons = rules(new)
        if not reasons and hasher.verify(stored or "", new):
            reasons = ["same_as_current"]
    if not reasons:
        assert settings is not None
        setattr(settings, attribute, hasher.hash(new))
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_CONFIRMATION_CHANGED,
        "ok" if not reasons else "rejected",
        f"{which} " + ",".join(reasons),
    )
    session.flush()
    return reasons


def change_confirmation_id(
    session: Session,
    *,
    number: str,
    current: str,
    new: str,
    now: datetime,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> list[str]:
    return _change_confirmation(
        session, number=number, current=current, new=new, now=now, hasher=hasher, channel=channel, which="id"
    )


def change_confirmation_password(
    session: Session,
    *,
    number: str,
    current: str,
    new: str,
    now: datetime,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> list[str]:
    return _change_confirmation(
        session,
        number=number,
        current=current,
        new=new,
        now=now,
        hasher=hasher,
        channel=channel,
        which="password",
    )
