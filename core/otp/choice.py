"""Settings and state of a number's one-time passwords.

``otp_state(session, *, number) -> OtpState``  status ``unchosen`` | ``off`` | ``pending`` | ``on``
``decline_otp(session, *, number, now)``  explicit agreement to not use it (also "switch off")
``choose_otp(session, *, number, now)``   the customer wants it; status ``pending`` until registered
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import Audit
from core.enums import AuditEventType, Channel, OtpStatus, OtpUsage
from core.models import OtpRegistration, OtpSettings
from core.otp.common import _phone, _settings
from core.rules import otp_status


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
