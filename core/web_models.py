"""Tables of the web login's own state: server-side sessions, rate counters, number locks.

Kept beside ``core.models`` (same ``Base``; ``core.schema`` has every table).
No secret is stored in clear: a session row is keyed by the SHA-256 of the cookie value, and the
few secret values a session must carry (a registration draft's confirmation ID and password) are
sealed with a key derived from the cookie value, which only the browser holds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base


class LoginSession(Base):
    """One logged-in browser (an anonymous visitor has no row)."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie value
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)  # idle or absolute end, whichever first
    absolute_expires_at: Mapped[datetime]
    stage: Mapped[str] = mapped_column(String(20))
    number: Mapped[str] = mapped_column(String(11), index=True)
    contract_id: Mapped[int] = mapped_column(ForeignKey("contracts.id", ondelete="CASCADE"), index=True)
    unit: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(10))
    # what the session was opened with: a change of any of these ends it (core.web_sessions)
    credential_phone_id: Mapped[int] = mapped_column(Integer)
    credential_generation: Mapped[int] = mapped_column(Integer)
    contract_credential_generation: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON, no secret
    sealed: Mapped[str | None] = mapped_column(Text)  # secrets, sealed with the cookie-derived key

    def __repr__(self) -> str:
        return (
            f"LoginSession(id_hash='{self.id_hash[:8]}…', number={self.number!r}, stage={self.stage!r}, "
            f"expires_at={self.expires_at})"
        )


class RateCounter(Base):
    """Events counted per (scope, key) in a window that starts at the first event counted.

    Scopes: ``login_client`` (failed logins per client address), ``otp_code`` (wrong one-time codes
    per number), ``otp_mail`` (code mails per number), ``confirmation`` (wrong confirmation ID or
    password per number). One row per key; rows past ``expires_at`` are swept in batches.
    """

    __tablename__ = "rate_counters"

    scope: Mapped[str] = mapped_column(String(20), primary_key=True)
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_started_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"RateCounter(scope={self.scope!r}, key={self.key!r}, count={self.count})"


class NumberLock(Base):
    """A feature locked for one number (``otp_settings``: too many wrong confirmation tries)
    until a new temporary password is set by phone for it."""

    __tablename__ = "number_locks"

    phone_number_id: Mapped[int] = mapped_column(
        ForeignKey("phone_numbers.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    locked_at: Mapped[datetime]
    credential_generation: Mapped[int] = mapped_column(Integer)  # a phone reset moves it on

    def __repr__(self) -> str:
        return f"NumberLock(phone_number_id={self.phone_number_id}, kind={self.kind!r}, at={self.locked_at})"
