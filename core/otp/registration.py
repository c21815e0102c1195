"""Registration (仮登録 -> mailed link -> 本登録; link valid 24 h, single use, token stored hashed).

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
``release_registrations(session, *, numbers, now, ...) -> list[str]``  the admin's bulk release
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
from core.enums import AuditEventType, Channel, LinkStatus, OtpUsage
from core.mail_address import mail_address_problems
from core.models import OtpRegistration, OtpSettings, PhoneNumber
from core.otp.common import OtpNotAvailable, _phone, _settings
from core.password_rules import confirmation_id_violations, confirmation_password_violations
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import registration_link_refusal
from core.secrets import SecretHasher, default_hasher

TOKEN_BYTES = 24  # 192 bits


class OtpInputError(ValueError):
    """Registration input breaks rules; ``problems`` maps a field to its reason codes."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        self.problems = problems
        super().__init__(
            "one-time password settings refused: "
            + "; ".join(f"{k}={','.join(v)}" for k, v in problems.items())
        )


@dataclass(frozen=True)
class LinkResult:
    status: LinkStatus
    number: str | None = None
    mail_address: str | None = None


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


def _supersede_pending(session: Session, phone_id: int, *, now: datetime) -> int:
    """Every registration of the number still waiting for its link ends now; how many did."""
    result = session.execute(
        update(OtpRegistration)
        .where(
            OtpRegistration.phone_number_id == phone_id,
            OtpRegistration.consumed_at.is_(None),
            OtpRegistration.superseded_at.is_(None),
        )
        .values(superseded_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _new_registration(
    session: Session,
    *,
    phone: PhoneNumber,
    prepared: NewRegistration,
    now: datetime,
    policy: PolicyLike,
    channel: Channel | str,
) -> str:
    _supersede_pending(session, phone.id, now=now)
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
        pending = _supersede_pending(session, phone.id, now=now)
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
