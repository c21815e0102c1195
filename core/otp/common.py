"""What the one-time-password modules share: the errors more than one raises and the lookups of a
number's row and its ``otp_settings`` row (created on first use). The ``_`` helpers are for
``core.otp`` only."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.directory import find_number
from core.enums import OtpUsage
from core.models import OtpSettings, PhoneNumber


class OtpNotAvailable(RuntimeError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"one-time password not available: {reason}")


class UnknownNumber(LookupError):
    pass


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
