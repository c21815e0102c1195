"""SQLAlchemy 2.0 models of the credential core.

A contract has numbers (its contract number first), each with its services. Credentials, OTP
settings and OTP registrations belong to a number: in ``line`` unit only the contract number's
credential is used; in ``number`` and ``admin_user`` units each number has its own. No secret is
ever stored in clear: every ``*_hash`` column is an argon2id hash, and reprs mask them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from core.enums import AuthUnit, CredentialKind, OtpUsage, Service


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _enum(cls: Any, name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(Base):
    __tablename__ = "contracts"

    id: Mapped[int] = mapped_column(primary_key=True)
    contract_number: Mapped[str] = mapped_column(String(11), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(20), default="residential")  # residential | business
    auth_unit: Mapped[AuthUnit] = mapped_column(_enum(AuthUnit, "auth_unit"), default=AuthUnit.LINE)
    unit_changed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    numbers: Mapped[list[PhoneNumber]] = relationship(
        back_populates="contract", cascade="all, delete-orphan", order_by="PhoneNumber.number"
    )

    def __repr__(self) -> str:
        return f"Contract(id={self.id}, contract_number={self.contract_number!r}, unit={self.auth_unit})"


class PhoneNumber(Base):
    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(11), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    contract: Mapped[Contract] = relationship(back_populates="numbers")
    services: Mapped[list[ServiceSubscription]] = relationship(
        back_populates="phone_number", cascade="all, delete-orphan", order_by="ServiceSubscription.service"
    )
    credential: Mapped[Credential | None] = relationship(
        back_populates="phone_number", cascade="all, delete-orphan", uselist=False
    )
    otp_settings: Mapped[OtpSettings | None] = relationship(
        back_populates="phone_number", cascade="all, delete-orphan", uselist=False
    )

    @property
    def is_contract_number(self) -> bool:
        return self.number == self.contract.contract_number

    @property
    def service_codes(self) -> list[Service]:
        return sorted((s.service for s in self.services), key=list(Service).index)

    def __repr__(self) -> str:
        return f"PhoneNumber(id={self.id}, number={self.number!r}, contract_id={self.contract_id})"


class ServiceSubscription(Base):
    __tablename__ = "service_subscriptions"
    __table_args__ = (UniqueConstraint("phone_number_id", "service"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_number_id: Mapped[int] = mapped_column(ForeignKey("phone_numbers.id", ondelete="CASCADE"))
    service: Mapped[Service] = mapped_column(_enum(Service, "service"))

    phone_number: Mapped[PhoneNumber] = relationship(back_populates="services")

    def __repr__(self) -> str:
        return f"ServiceSubscription(phone_number_id={self.phone_number_id}, service={self.service})"


class Credential(Base):
    """The login secret of one identity (a number). No row: no credential.

    ``failures`` counts consecutive wrong attempts; it is reserved atomically before each check
    (see core.auth). ``generation`` grows each time the secret is replaced, so a check that raced
    with a replacement never charges or clears the new secret's counter.
    """

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_number_id: Mapped[int] = mapped_column(
        ForeignKey("phone_numbers.id", ondelete="CASCADE"), unique=True
    )
    kind: Mapped[CredentialKind] = mapped_column(_enum(CredentialKind, "credential_kind"))
    secret_hash: Mapped[str] = mapped_column(String(255))
    set_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    invalidated_at: Mapped[datetime | None]
    generation: Mapped[int] = mapped_column(Integer, default=1)
    set_channel: Mapped[str] = mapped_column(String(10), default="phone")
    last_success_at: Mapped[datetime | None]

    phone_number: Mapped[PhoneNumber] = relationship(back_populates="credential")

    def replace_secret(
        self,
        *,
        kind: CredentialKind,
        secret_hash: str,
        set_at: datetime,
        expires_at: datetime | None,
        channel: str,
    ) -> None:
        """Store a new secret: a fresh failure count, valid again, and the next generation."""
        self.kind = kind
        self.secret_hash = secret_hash
        self.set_at = set_at
        self.expires_at = expires_at
        self.failures = 0
        self.invalidated_at = None
        self.generation = (self.generation or 0) + 1
        self.set_channel = str(channel)

    def __repr__(self) -> str:
        return (
            f"Credential(id={self.id}, phone_number_id={self.phone_number_id}, kind={self.kind}, "
            f"secret_hash='***', set_at={self.set_at}, expires_at={self.expires_at}, "
            f"failures={self.failures}, invalidated_at={self.invalidated_at})"
        )


class OtpSettings(Base):
    """One-time-password settings of one identity (a number)."""

    __tablename__ = "otp_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_number_id: Mapped[int] = mapped_column(
        ForeignKey("phone_numbers.id", ondelete="CASCADE"), unique=True
    )
    usage: Mapped[OtpUsage] = mapped_column(_enum(OtpUsage, "otp_usage"), default=OtpUsage.UNDECIDED)
    mail_address: Mapped[str | None] = mapped_column(String(254))
    confirmation_id_hash: Mapped[str | None] = mapped_column(String(255))
    confirmation_password_hash: Mapped[str | None] = mapped_column(String(255))
    registered_at: Mapped[datetime | None]  # a receiving address is fully registered
    declined_at: Mapped[datetime | None]  # explicit agreement to not use it
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow, onupdate=_utcnow)

    phone_number: Mapped[PhoneNumber] = relationship(back_populates="otp_settings")

    def __repr__(self) -> str:
        return (
            f"OtpSettings(phone_number_id={self.phone_number_id}, usage={self.usage}, "
            f"mail_address={self.mail_address!r}, confirmation_id_hash='***', "
            f"confirmation_password_hash='***', registered_at={self.registered_at})"
        )


class OtpRegistration(Base):
    """A provisional registration (仮登録) waiting for its mailed link (24 h, single use)."""

    __tablename__ = "otp_registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_number_id: Mapped[int] = mapped_column(
        ForeignKey("phone_numbers.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(255))
    mail_address: Mapped[str] = mapped_column(String(254))
    confirmation_id_hash: Mapped[str | None] = mapped_column(String(255))
    confirmation_password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"OtpRegistration(id={self.id}, phone_number_id={self.phone_number_id}, token_hash='***', "
            f"mail_address={self.mail_address!r}, expires_at={self.expires_at}, "
            f"consumed_at={self.consumed_at})"
        )


class OtpLoginAttempt(Base):
    """One login waiting for its one-time code; too many wrong codes void it."""

    __tablename__ = "otp_login_attempts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone_number_id: Mapped[int] = mapped_column(
        ForeignKey("phone_numbers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    voided_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"OtpLoginAttempt(id={self.id[:6]}…, phone_number_id={self.phone_number_id}, "
            f"failures={self.failures}, voided_at={self.voided_at}, completed_at={self.completed_at})"
        )


class OtpCode(Base):
    """A mailed one-time code (300 s, single use), bound to a login attempt."""

    __tablename__ = "otp_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[str] = mapped_column(
        ForeignKey("otp_login_attempts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"OtpCode(id={self.id}, code_hash='***', expires_at={self.expires_at}, "
            f"consumed_at={self.consumed_at}, superseded_at={self.superseded_at})"
        )


class AuditEvent(Base):
    """Every credential event: when, which number, which channel, outcome. Never a secret."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(40), index=True)
    channel: Mapped[str] = mapped_column(String(10))
    number: Mapped[str | None] = mapped_column(String(11), index=True)
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contracts.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(200), default="")

    def __repr__(self) -> str:
        return (
            f"AuditEvent(at={self.at}, event={self.event!r}, channel={self.channel!r}, "
            f"number={self.number!r}, outcome={self.outcome!r}, detail={self.detail!r})"
        )


class CallRecord(Base):
    """One phone call to the temporary-password line (outcome None while it is in progress)."""

    __tablename__ = "call_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), unique=True)
    caller: Mapped[str | None] = mapped_column(String(64), index=True)
    service_number: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    unit: Mapped[str | None] = mapped_column(String(20))
    target_number: Mapped[str | None] = mapped_column(String(11), index=True)
    last_step: Mapped[str | None] = mapped_column(String(40))
    wrong_entries: Mapped[int] = mapped_column(Integer, default=0)
    # the daemon that took the call (agi.node_id): a daemon that starts closes its own open records
    node: Mapped[str | None] = mapped_column(String(64), index=True)

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller": self.caller,
            "service_number": self.service_number,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration_seconds": self.duration_seconds,
            "outcome": self.outcome,
            "unit": self.unit,
            "target_number": self.target_number,
            "last_step": self.last_step,
            "wrong_entries": self.wrong_entries,
            "node": self.node,
        }

    def __repr__(self) -> str:
        return (
            f"CallRecord(call_id={self.call_id!r}, caller={self.caller!r}, outcome={self.outcome!r}, "
            f"unit={self.unit!r}, target_number={self.target_number!r})"
        )
