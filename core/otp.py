"""One-time passwords (two-step login), per login identity (the operator guide P8–P10, P22–P27).

Statuses are plain strings so the web can map them to messages. No database lock is ever held
across a hash (``core.secrets``): new secrets are hashed before the transaction that stores them
(``prepare_*``), and secrets are checked with no transaction open, between a transaction that reads
(or reserves a try) and one that records the result. Functions taking a ``Session`` never hash;
those taking a session factory (``*_in_steps``) own their transactions.

Settings and state
    ``otp_state(session, *, number) -> OtpState``  status ``unchosen`` | ``off`` | ``pending`` | ``on``
    ``decline_otp(session, *, number, now)``  explicit agreement to not use it (also "switch off")
    ``choose_otp(session, *, number, now)``   the customer wants it; status ``pending`` until registered

Registration (仮登録 -> mailed link -> 本登録; link valid 24 h, single use, token stored hashed)
    ``prepare_registration(*, mail_address, confirmation_id, confirmation_password, hasher=None)``
      checks the input (raises :class:`OtpInputError`, ``problems``: field -> reason codes) and
      hashes; then ``start_registration(session, *, number, registration, now, ...) -> str`` stores
      it and returns the plain link token (≥128 bits random) to mail. A newer registration
      supersedes older pending ones.
    ``prepare_address_change(*, mail_address)`` + ``start_address_change(session, *, number,
      registration, now, ...) -> str``  same, keeping the registered confirmation ID/password
      (check them first)
    ``complete_registration_in_steps(sessions, *, token, now, ...) -> LinkResult``  status ``ok`` |
      ``expired`` | ``used`` | ``unknown`` (superseded links are ``unknown``)

Login codes (6 digits, valid 300 s, single use, bound to the login attempt id the web chose)
    ``prepare_code(hasher)`` + ``issue_code(session, *, number, login_attempt_id, code, now, ...) ->
      IssuedCode(code, mail_address, expires_at)``  sending again supersedes the previous code of
      that attempt; raises :class:`OtpNotAvailable` (``reason``: ``not_registered``,
      ``attempt_closed``, ``too_many_codes``)
    ``verify_code_in_steps(sessions, *, number, login_attempt_id, code, now, ...) -> str``  ``ok`` |
      ``wrong`` | ``expired`` | ``used`` | ``too_many`` | ``none``; ``otp_code_max_failures`` wrong
      codes (reserved atomically per attempt before the check) void the attempt: the customer logs
      in again. Its steps, for callers that count more in the same transactions (the web):
      ``reserve_code_check`` (commit), ``code_matches`` (no transaction), ``settle_code_check``.

Confirmation ID / password (needed to change the receiving address)
    ``check_confirmation_in_steps(sessions, *, number, confirmation_id, confirmation_password, now,
      ...) -> bool``; steps ``confirmation_hashes``, ``confirmation_matches``,
      ``record_confirmation_check``
    ``change_confirmation_id_in_steps`` / ``change_confirmation_password_in_steps(sessions, *,
      number, current, new, now, ...) -> list[str]``  ``[]`` when changed; else ``current_wrong``,
      ``same_as_current`` or the rule codes of ``core.password_rules``; steps
      ``prepare_confirmation_change`` (checks and hashes), ``apply_confirmation_change``.
"""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.audit import Audit
from core.db import readers_of
from core.directory import find_number
from core.enums import AuditEventType, Channel, CodeStatus, LinkStatus, OtpStatus, OtpUsage
from core.mail_address import mail_address_problems
from core.models import OtpCode, OtpLoginAttempt, OtpRegistration, OtpSettings, PhoneNumber
from core.password_rules import confirmation_id_violations, confirmation_password_violations
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import code_refusal, otp_status, registration_link_refusal
from core.secrets import SecretHasher, default_hasher
from core.tries import reserve_try

CODE_DIGITS = 6
TOKEN_BYTES = 24  # 192 bits
MAX_CODES_PER_ATTEMPT = 5


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
    status: OtpStatus
    usage: OtpUsage
    mail_address: str | None = None  # the registered (active) receiving address
    pending_mail_address: str | None = None  # waiting for its link
    has_confirmation: bool = False  # a confirmation ID and password are set

    @property
    def required_at_login(self) -> bool:
        return self.status is OtpStatus.ON


@dataclass(frozen=True)
class LinkResult:
    status: LinkStatus
    number: str | None = None
    mail_address: str | None = None


@dataclass(frozen=True)
class IssuedCode:
    code: str = field(repr=False)
    mail_address: str
    expires_at: datetime


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
        return OtpState(OtpStatus.UNCHOSEN, OtpUsage.UNDECIDED)
    registered = settings.registered_at is not None and settings.mail_address is not None
    status = otp_status(settings.usage, registered=registered)
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


def release_registrations(
    session: Session, *, numbers: list[str], now: datetime, channel: Channel | str = Channel.WEB
) -> list[str]:
    """The admin's bulk release (登録一括解除): each of ``numbers`` that has a one-time-password
    registration (or one waiting for its link) loses it: receiving address, confirmation ID and
    password, pending links. Its next login asks again whether to use one-time passwords (P9).
    Returns the numbers released, in the order given; numbers without a registration are left
    as they are."""
    released: list[str] = []
    for number in numbers:
        phone = find_number(session, number)
        if phone is None:
            continue
        settings = session.scalars(
            select(OtpSettings).where(OtpSettings.phone_number_id == phone.id)
        ).one_or_none()
        pending = session.execute(
            update(OtpRegistration)
            .where(
                OtpRegistration.phone_number_id == phone.id,
                OtpRegistration.consumed_at.is_(None),
                OtpRegistration.superseded_at.is_(None),
            )
            .values(superseded_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        registered = settings is not None and (
            settings.mail_address is not None or settings.confirmation_id_hash is not None
        )
        if not registered and not pending:
            continue
        if settings is not None:
            settings.usage = OtpUsage.UNDECIDED
            settings.mail_address = None
            settings.confirmation_id_hash = None
            settings.confirmation_password_hash = None
            settings.registered_at = None
            settings.declined_at = None
        Audit.of_phone(session, phone, at=now, channel=channel).record(AuditEventType.OTP_RELEASED, "ok")
        released.append(phone.number)
    session.flush()
    return released


@dataclass(frozen=True)
class NewRegistration:
    """A checked registration input with its secrets already hashed (:func:`prepare_registration`,
    :func:`prepare_address_change`): the link's secret and, for a registration, the confirmation
    ID / password hashes."""

    mail_address: str
    secret: str = field(repr=False)
    token_hash: str = field(repr=False)
    confirmation_id_hash: str | None = field(default=None, repr=False)
    confirmation_password_hash: str | None = field(default=None, repr=False)


def prepare_registration(
    *, mail_address: str, confirmation_id: str, confirmation_password: str, hasher: SecretHasher | None = None
) -> NewRegistration:
    """Check the input (raises :class:`OtpInputError`, ``problems``: field -> reason codes) and hash
    the link secret and the confirmation ID / password. Slow: call it with no transaction open,
    then pass the result to :func:`start_registration`."""
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
    secret = _random.token_urlsafe(TOKEN_BYTES)
    return NewRegistration(
        mail_address=mail_address,
        secret=secret,
        token_hash=hasher.hash(secret),
        confirmation_id_hash=hasher.hash(confirmation_id),
        confirmation_password_hash=hasher.hash(confirmation_password),
    )


def prepare_address_change(*, mail_address: str, hasher: SecretHasher | None = None) -> NewRegistration:
    """Check a new receiving address and hash its link secret (slow: no transaction open), for
    :func:`start_address_change`."""
    found = mail_address_problems(mail_address)
    if found:
        raise OtpInputError({"mail_address": found})
    secret = _random.token_urlsafe(TOKEN_BYTES)
    return NewRegistration(
        mail_address=mail_address, secret=secret, token_hash=(hasher or default_hasher()).hash(secret)
    )


def _new_registration(
    session: Session,
    *,
    phone: PhoneNumber,
    prepared: NewRegistration,
    now: datetime,
    policy: PolicyLike,
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
    registration = OtpRegistration(
        phone_number_id=phone.id,
        token_hash=prepared.token_hash,
        mail_address=prepared.mail_address,
        confirmation_id_hash=prepared.confirmation_id_hash,
        confirmation_password_hash=prepared.confirmation_password_hash,
        created_at=now,
        expires_at=now + timedelta(seconds=policy.registration_link_validity_seconds),
    )
    session.add(registration)
    session.flush()
    Audit.of_phone(session, phone, at=now, channel=channel).record(
        AuditEventType.OTP_REGISTRATION_STARTED,
        "ok",
        "address_change" if prepared.confirmation_id_hash is None else "registration",
    )
    return f"{registration.id}.{prepared.secret}"


def start_registration(
    session: Session,
    *,
    number: str,
    registration: NewRegistration,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    channel: Channel | str = Channel.WEB,
    replace_registered: bool = False,
) -> str:
    """Provisional registration of ``registration`` (from :func:`prepare_registration`; nothing
    here hashes); returns the link token to mail (only its hash is stored).

    Only for a number without a registration: a registered number changes its address with
    :func:`start_address_change` and its confirmation ID/password with their own functions (which
    need the current ones); raises :class:`OtpNotAvailable` ``already_registered``. The admin's bulk
    settings (seed P27) pass ``replace_registered=True``."""
    if registration.confirmation_id_hash is None or registration.confirmation_password_hash is None:
        raise ValueError("a registration needs its confirmation ID and password (prepare_registration)")
    phone = _phone(session, number)
    settings = _settings(session, phone)
    if settings.confirmation_id_hash is not None and not replace_registered:
        raise OtpNotAvailable("already_registered")
    settings.usage = OtpUsage.USED
    return _new_registration(
        session, phone=phone, prepared=registration, now=now, policy=policy, channel=channel
    )


def start_address_change(
    session: Session,
    *,
    number: str,
    registration: NewRegistration,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    channel: Channel | str = Channel.WEB,
) -> str:
    """A new receiving address (from :func:`prepare_address_change`) for a registered identity;
    the same link procedure applies; the registered confirmation ID/password stay."""
    if registration.confirmation_id_hash is not None or registration.confirmation_password_hash is not None:
        raise ValueError("an address change keeps the confirmation ID and password (prepare_address_change)")
    phone = _phone(session, number)
    settings = _settings(session, phone)
    if settings.confirmation_id_hash is None:
        raise OtpNotAvailable("not_registered")
    return _new_registration(
        session, phone=phone, prepared=registration, now=now, policy=policy, channel=channel
    )


def _link_registration_id(token: str) -> tuple[int | None, str]:
    registration_id, _, secret = (token or "").partition(".")
    if registration_id.isdigit() and len(registration_id) < 18 and secret:
        return int(registration_id), secret
    return None, secret


def complete_registration_in_steps(
    sessions: sessionmaker[Session],
    *,
    token: str,
    now: datetime,
    policy: PolicyLike = DEFAULT_POLICY,
    hasher: SecretHasher | None = None,
    channel: Channel | str = Channel.WEB,
) -> LinkResult:
    """Open the mailed link: valid 24 h (``now < created + 24 h``), once.

    The link's hash is read in a read-only session and checked with no transaction open; a short
    write transaction then claims the registration (single use: a conditional UPDATE on the hash
    that was checked) and stores its settings."""
    hasher = hasher or default_hasher()
    registration_id, secret = _link_registration_id(token)
    token_hash: str | None = None
    if registration_id is not None:
        with readers_of(sessions)() as session, session.begin():
            token_hash = session.scalar(
                select(OtpRegistration.token_hash).where(OtpRegistration.id == registration_id)
            )
    if token_hash is None:
        hasher.dummy_verify(secret)
        return LinkResult(LinkStatus.UNKNOWN)
    if not hasher.verify(token_hash, secret):
        return LinkResult(LinkStatus.UNKNOWN)
    with sessions() as session, session.begin():
        registration = session.get(OtpRegistration, registration_id, populate_existing=True)
        if registration is None or registration.token_hash != token_hash:
            return LinkResult(LinkStatus.UNKNOWN)
        phone = session.get(PhoneNumber, registration.phone_number_id)
        assert phone is not None
        refusal = registration_link_refusal(
            superseded=registration.superseded_at is not None,
            consumed=registration.consumed_at is not None,
            created_at=registration.created_at,
            now=now,
            validity_seconds=policy.registration_link_validity_seconds,
        )
        if refusal is not None:
            return LinkResult(refusal, number=phone.number)
        claimed = session.execute(
            update(OtpRegistration)
            .where(
                OtpRegistration.id == registration.id,
                OtpRegistration.token_hash == token_hash,
                OtpRegistration.consumed_at.is_(None),
                OtpRegistration.superseded_at.is_(None),
            )
            .values(consumed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            return LinkResult(LinkStatus.USED, number=phone.number)
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
        return LinkResult(LinkStatus.OK, number=phone.number, mail_address=registration.mail_address)


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
