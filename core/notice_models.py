"""Tables of the support site: support IDs, their notification settings and destinations, the
maintenance/outage notices, and the durable delivery queue (one row per notice × destination).

Kept beside ``core.models`` (same ``Base``; ``core.schema`` has every table). The rules that read
and write them live in ``notices/`` (pure functions of state and ``now``, and the queue's short transactions).
No secret is stored in clear: passwords are argon2id hashes, confirmation links are stored as the
SHA-256 of their token.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from core.models import Base


def _folded_login(context: Any) -> str:
    return str(context.get_current_parameters()["login_email"]).lower()


class SupportAccount(Base):
    """A support ID (お客さまサポートID): the customer's own mail address.

    ``provisional`` until the mailed link is followed and the password, name and birth date are set;
    then ``active``. The login address, the name and the birth date never change afterwards.
    Delivery days and hours are bit masks: bit 0 Monday … bit 6 Sunday; bit h the hour band
    h:00–h:59, Asia/Tokyo.
    """

    __tablename__ = "support_accounts"
    __table_args__ = (
        # one support ID per address, whatever its case (Alice@ is alice@); the IDs that differed
        # only by case before migration 0006 are marked and left to an operator (`ivr notices
        # case-conflicts`), outside the rule until resolved
        Index(
            "ux_support_accounts_login_key",
            "login_key",
            unique=True,
            sqlite_where=text("case_conflict = 0"),
            postgresql_where=text("NOT case_conflict"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    login_email: Mapped[str] = mapped_column(String(254), unique=True)  # lower-cased domain
    login_key: Mapped[str] = mapped_column(String(254), default=_folded_login)  # login_email lower-cased
    case_conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(12))  # provisional | active
    name: Mapped[str | None] = mapped_column(String(100))
    birth_date: Mapped[date | None] = mapped_column(Date)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    credential_generation: Mapped[int] = mapped_column(Integer, default=0)
    delivery_days: Mapped[int] = mapped_column(Integer, default=0x7F)  # every day
    delivery_hours: Mapped[int] = mapped_column(Integer, default=0xFFFFFF)  # every hour
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"SupportAccount(id={self.id}, state={self.state!r})"


class SupportAccountProduct(Base):
    """A product the support ID wants to be told about (none: no mail at all)."""

    __tablename__ = "support_account_products"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("support_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    product: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)


class SupportLink(Base):
    """A mailed link (registration, password reset): the SHA-256 of its token, valid 24 h, used once."""

    __tablename__ = "support_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(20))  # register | password_reset
    account_id: Mapped[int] = mapped_column(ForeignKey("support_accounts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class NoticeDestination(Base):
    """One of at most three destination addresses of a support ID.

    ``pending`` (confirmation mailed, receives nothing) → ``delivering`` (confirmed) → ``stopped``
    (配信停止: ``max_failures`` consecutive failed deliveries) → ``delivering`` again (配信再開).
    """

    __tablename__ = "notice_destinations"
    __table_args__ = (
        UniqueConstraint("account_id", "address"),
        Index("ix_notice_destinations_state_account", "state", "account_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("support_accounts.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(254))
    state: Mapped[str] = mapped_column(String(12))  # pending | delivering | stopped
    confirmation_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    confirmation_sent_at: Mapped[datetime | None]
    confirmation_expires_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    stopped_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    def __repr__(self) -> str:
        return f"NoticeDestination(id={self.id}, state={self.state!r}, failures={self.consecutive_failures})"


class Notice(Base):
    """A maintenance (工事) or outage (故障) notice. An update (e.g. 復旧) is a new notice that names
    the one it follows (``follows_id``) and is mailed again."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(12))  # maintenance | outage
    status: Mapped[str] = mapped_column(String(20))  # scheduled | in_progress | completed | recovered …
    title: Mapped[str] = mapped_column(String(200))
    area: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    public: Mapped[bool] = mapped_column(Boolean, default=True)  # False: logged-in customers only
    follows_id: Mapped[int | None] = mapped_column(ForeignKey("notices.id", ondelete="SET NULL"))
    posted_at: Mapped[datetime] = mapped_column(index=True)
    posted_by: Mapped[str] = mapped_column(String(80))
    message_token: Mapped[str] = mapped_column(String(32))  # random part of its mails' Message-IDs
    recipients: Mapped[int] = mapped_column(Integer, default=0)  # delivery rows made when posted

    def __repr__(self) -> str:
        return f"Notice(id={self.id}, kind={self.kind!r}, status={self.status!r})"


class NoticeProduct(Base):
    __tablename__ = "notice_products"

    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"), primary_key=True)
    product: Mapped[str] = mapped_column(String(40), primary_key=True)


class NoticeDelivery(Base):
    """One mail of one notice to one destination: the durable queue and its record.

    ``queued`` (due at ``next_attempt_at``) → ``sending`` (claimed by a worker until
    ``lease_until``; a lease that ran out is claimed again, same Message-ID) → ``sent`` (accepted
    by the SMTP server) | ``failed`` (5xx, or 4xx until it gave up) | ``bounced`` (a DSN came back
    for a sent mail) | ``skipped`` (the destination was stopped or removed before it went).
    """

    __tablename__ = "notice_deliveries"
    __table_args__ = (
        UniqueConstraint("notice_id", "destination_id"),
        Index("ix_notice_deliveries_due", "state", "next_attempt_at"),
        # a destination's unfinished notices, oldest first (the queue's order per destination)
        Index("ix_notice_deliveries_destination_pending", "destination_id", "state", "notice_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"))
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("notice_destinations.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(254))  # as it was when queued
    domain: Mapped[str] = mapped_column(String(254))
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    last_code: Mapped[int | None] = mapped_column(Integer)  # the SMTP reply code or DSN status class
    last_status: Mapped[str | None] = mapped_column(String(20))  # enhanced status, e.g. 5.1.1
    last_detail: Mapped[str | None] = mapped_column(String(300))  # the server's reply text, cut

    def __repr__(self) -> str:
        return f"NoticeDelivery(id={self.id}, notice_id={self.notice_id}, state={self.state!r})"


class NoticeRelayOutage(Base):
    """A time our own SMTP relay could not be used (refused, timed out, TLS or login failed, 421,
    MAIL FROM refused), as one worker saw it: from ``started_at`` to ``ended_at`` (still open:
    ``checked_at``, its last failed probe). The give-up clock of a waiting mail does not run through
    these (the union of every worker's outages is taken out of its age): a relay outage is never a
    recipient's failure."""

    __tablename__ = "notice_relay_outages"

    id: Mapped[int] = mapped_column(primary_key=True)
    worker: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(index=True)
    checked_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(80))  # an error type or an SMTP code, never a reply text


class SupportSession(Base):
    """One logged-in browser of the support site, keyed like the settings site's sessions by the
    SHA-256 of the cookie value (``core.web_sessions.session_id_hash``); it ends when idle longer
    than the idle timeout, past its absolute lifetime, or when the password changed."""

    __tablename__ = "support_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("support_accounts.id", ondelete="CASCADE"), index=True)
    credential_generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    absolute_expires_at: Mapped[datetime]
