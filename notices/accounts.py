"""Support IDs and their destinations (short units of work in the caller's transaction).

Passwords arrive here already hashed (``core.secrets``, outside any write transaction); links are
random tokens of which only the SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.notice_models import (
    NoticeDestination,
    SupportAccount,
    SupportAccountProduct,
    SupportLink,
    SupportSession,
)
from notices import rules
from notices.rules import AddOutcome, DestinationState, DestinationView


def token_hash(token: str) -> str:
    return hashlib.sha256(b"ivr-support-link\x00" + token.encode("utf-8", "replace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _by_login(address: str, *, lock: bool = False) -> Any:
    """The support ID of an address, whatever its case (one per address: ``login_key``). Among IDs
    that differed only by case before migration 0006 (``case_conflict``, until an operator resolves
    them), the one typed exactly, else the active one, else the oldest."""
    query = (
        select(SupportAccount)
        .where(SupportAccount.login_key == address.lower())
        .order_by(
            (SupportAccount.login_email != address),
            (SupportAccount.state != "active"),
            SupportAccount.id,
        )
        .limit(1)
    )
    return query.with_for_update() if lock else query


def account_by_email(session: Session, email: str) -> SupportAccount | None:
    return session.scalars(_by_login(rules.normalize_address(email))).first()


def create_active_account(
    session: Session,
    *,
    email: str,
    name: str,
    birth_date: date,
    password_hash: str,
    now: datetime,
) -> SupportAccount:
    """An active support ID in one step (operator tools, the sample, tests)."""
    account = SupportAccount(
        login_email=rules.normalize_address(email),
        state="active",
        name=name,
        birth_date=birth_date,
        password_hash=password_hash,
        created_at=now,
        activated_at=now,
    )
    session.add(account)
    session.flush()
    return account


def set_notification_settings(
    session: Session, account: SupportAccount, *, products: Iterable[str], days: int, hours: int
) -> None:
    if not 0 <= days <= rules.ALL_DAYS or not 0 <= hours <= rules.ALL_HOURS:
        raise ValueError("delivery days or hours out of range")
    account.delivery_days = days
    account.delivery_hours = hours
    session.execute(delete(SupportAccountProduct).where(SupportAccountProduct.account_id == account.id))
    session.add_all(SupportAccountProduct(account_id=account.id, product=p) for p in sorted(set(products)))
    session.flush()


def products_of_account(session: Session, account_id: int) -> list[str]:
    return list(
        session.scalars(
            select(SupportAccountProduct.product)
            .where(SupportAccountProduct.account_id == account_id)
            .order_by(SupportAccountProduct.product)
        )
    )


def destinations_of(session: Session, account_id: int) -> list[NoticeDestination]:
    return list(
        session.scalars(
            select(NoticeDestination)
            .where(NoticeDestination.account_id == account_id)
            .order_by(NoticeDestination.id)
        )
    )


@dataclass(frozen=True)
class AddResult:
    outcome: AddOutcome
    destination_id: int | None = None
    token: str | None = None  # for the confirmation mail (ADDED, RESENT)


def add_destination(
    session: Session,
    *,
    account_id: int,
    address: str,
    now: datetime,
    validity: timedelta = timedelta(hours=24),
    retry_after: timedelta = timedelta(minutes=30),
) -> AddResult:
    """Add (or re-send the confirmation of) a destination, following :func:`rules.decide_add_destination`.
    Locks the account row first, so two concurrent adds cannot make a fourth destination."""
    normalized = rules.normalize_address(address)
    session.execute(select(SupportAccount.id).where(SupportAccount.id == account_id).with_for_update()).one()
    existing = destinations_of(session, account_id)
    views = [DestinationView(d.address, DestinationState(d.state), d.confirmation_sent_at) for d in existing]
    outcome = rules.decide_add_destination(views, normalized, now, retry_after=retry_after)
    if outcome not in (AddOutcome.ADDED, AddOutcome.RESENT):
        return AddResult(outcome)
    token = new_token()
    if outcome is AddOutcome.ADDED:
        dest = NoticeDestination(
            account_id=account_id, address=normalized, state=DestinationState.PENDING.value, created_at=now
        )
        session.add(dest)
    else:
        dest = next(d for d in existing if d.address.lower() == normalized.lower())
    dest.confirmation_hash = token_hash(token)
    dest.confirmation_sent_at = now
    dest.confirmation_expires_at = now + validity
    session.flush()
    return AddResult(outcome, dest.id, token)


def confirm_destination(session: Session, *, token: str, now: datetime) -> NoticeDestination | None:
    """Follow a destination's confirmation link: it delivers from now on. None: unknown or expired."""
    dest = session.scalars(
        select(NoticeDestination)
        .where(NoticeDestination.confirmation_hash == token_hash(token))
        .with_for_update()
    ).one_or_none()
    if dest is None or dest.confirmation_expires_at is None or now >= dest.confirmation_expires_at:
        return None
    dest.state = DestinationState.DELIVERING.value
    dest.confirmed_at = now
    dest.confirmation_hash = None
    dest.confirmation_expires_at = None
    session.flush()
    return dest


def add_confirmed_destination(
    session: Session, *, account_id: int, address: str, now: datetime
) -> NoticeDestination:
    """A delivering destination in one step (operator tools, the sample, the benchmark, tests)."""
    dest = NoticeDestination(
        account_id=account_id,
        address=rules.normalize_address(address),
        state=DestinationState.DELIVERING.value,
        confirmed_at=now,
        created_at=now,
    )
    session.add(dest)
    session.flush()
    return dest


def remove_destination(session: Session, *, account_id: int, destination_id: int) -> bool:
    result = session.execute(
        delete(NoticeDestination).where(
            NoticeDestination.id == destination_id, NoticeDestination.account_id == account_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


# ------------------------------------------------------------------------- registration / links


def start_registration(session: Session, *, email: str, now: datetime, validity: timedelta) -> str | None:
    """Provisional registration: a provisional support ID (or the existing provisional one) and a
    new 24 h link. None if the address is already an active support ID (the page says the same
    either way, and no mail goes: nobody learns whether an address is registered)."""
    address = rules.normalize_address(email)
    account = session.scalars(_by_login(address, lock=True)).first()
    if account is not None and account.state == "active":
        return None
    if account is None:
        account = SupportAccount(login_email=address, state="provisional", created_at=now)
        session.add(account)
        session.flush()
    return _new_link(session, account_id=account.id, purpose="register", now=now, validity=validity)


def _new_link(session: Session, *, account_id: int, purpose: str, now: datetime, validity: timedelta) -> str:
    session.execute(
        delete(SupportLink).where(SupportLink.account_id == account_id, SupportLink.purpose == purpose)
    )
    token = new_token()
    session.add(
        SupportLink(
            token_hash=token_hash(token),
            purpose=purpose,
            account_id=account_id,
            created_at=now,
            expires_at=now + validity,
        )
    )
    session.flush()
    return token


def password_reset_link(session: Session, *, email: str, now: datetime, validity: timedelta) -> str | None:
    """A password reset link for an active support ID; None for any other address (same page)."""
    try:
        address = rules.normalize_address(email)
    except rules.AddressError:
        return None
    account = session.scalars(_by_login(address)).first()
    if account is None or account.state != "active":
        return None
    return _new_link(session, account_id=account.id, purpose="password_reset", now=now, validity=validity)


def link_account(session: Session, *, token: str, purpose: str, now: datetime) -> SupportAccount | None:
    """The support ID a valid, unused, unexpired link stands for (None otherwise)."""
    link = session.get(SupportLink, token_hash(token))
    if link is None or link.purpose != purpose or link.used_at is not None or now >= link.expires_at:
        return None
    return session.get(SupportAccount, link.account_id)


def use_link(session: Session, *, token: str, purpose: str, now: datetime) -> SupportAccount | None:
    """Use a link once (under its row lock): the account, or None if it was not valid any more."""
    link = session.scalars(
        select(SupportLink).where(SupportLink.token_hash == token_hash(token)).with_for_update()
    ).one_or_none()
    if link is None or link.purpose != purpose or link.used_at is not None or now >= link.expires_at:
        return None
    link.used_at = now
    session.flush()
    return session.get(SupportAccount, link.account_id)


def complete_registration(
    session: Session, *, token: str, password_hash: str, name: str, birth_date: date, now: datetime
) -> SupportAccount | None:
    account = use_link(session, token=token, purpose="register", now=now)
    if account is None or account.state != "provisional":
        return None
    account.state = "active"
    account.password_hash = password_hash
    account.name = name
    account.birth_date = birth_date
    account.activated_at = now
    account.credential_generation += 1
    session.flush()
    return account


def set_password(session: Session, *, account_id: int, password_hash: str) -> None:
    """A new password (change or reset): every open session of the support ID ends."""
    account = session.get(SupportAccount, account_id, with_for_update=True)
    if account is None:
        return
    account.password_hash = password_hash
    account.credential_generation += 1
    session.execute(delete(SupportSession).where(SupportSession.account_id == account_id))
    session.flush()


# ------------------------------------------------------------------------------------ sessions


def open_session(
    session: Session, *, id_hash: str, account: SupportAccount, now: datetime, idle: int, lifetime: int
) -> None:
    absolute = now + timedelta(seconds=lifetime)
    session.add(
        SupportSession(
            id_hash=id_hash,
            account_id=account.id,
            credential_generation=account.credential_generation,
            created_at=now,
            last_seen_at=now,
            expires_at=min(absolute, now + timedelta(seconds=idle)),
            absolute_expires_at=absolute,
        )
    )
    session.execute(delete(SupportSession).where(SupportSession.expires_at < now))  # sweep (indexed)
    session.flush()


def load_session(session: Session, *, id_hash: str, now: datetime, idle: int) -> SupportAccount | None:
    """The logged-in support ID, touching the session; an ended session is deleted (idle, past its
    lifetime, or the password changed since)."""
    row = session.get(SupportSession, id_hash, with_for_update=True)
    if row is None:
        return None
    account = session.get(SupportAccount, row.account_id)
    ended = (
        account is None
        or account.state != "active"
        or now >= row.absolute_expires_at
        or now - row.last_seen_at > timedelta(seconds=idle)
        or account.credential_generation != row.credential_generation
    )
    if ended:
        session.delete(row)
        session.flush()
        return None
    row.last_seen_at = now
    row.expires_at = min(row.absolute_expires_at, now + timedelta(seconds=idle))
    session.flush()
    return account


def end_session(session: Session, *, id_hash: str) -> None:
    session.execute(delete(SupportSession).where(SupportSession.id_hash == id_hash))


def sweep_expired(session: Session, *, now: datetime, batch: int = 500) -> int:
    """Housekeeping in bounded batches (the notices process runs it every lease/4 seconds): links
    expired or used more than a day ago, and provisional support IDs without a live link that are
    older than seven days (the address can register again any time). Returns rows deleted."""
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    links = list(
        session.scalars(select(SupportLink.token_hash).where(SupportLink.expires_at < day_ago).limit(batch))
    )
    if links:
        session.execute(delete(SupportLink).where(SupportLink.token_hash.in_(links)))
    live = select(SupportLink.account_id).where(SupportLink.expires_at >= now, SupportLink.used_at.is_(None))
    stale = list(
        session.scalars(
            select(SupportAccount.id)
            .where(
                SupportAccount.state == "provisional",
                SupportAccount.created_at < week_ago,
                SupportAccount.id.not_in(live),
            )
            .limit(batch)
        )
    )
    if stale:
        session.execute(delete(SupportAccount).where(SupportAccount.id.in_(stale)))
    return len(links) + len(stale)


# ------------------------------------------------------------------------------ case conflicts


def case_conflicts(session: Session) -> list[list[SupportAccount]]:
    """Support IDs that differed only by case when migration 0006 made one ID per address; each
    group shares one address (compared case-insensitively), oldest first."""
    rows = session.scalars(
        select(SupportAccount)
        .where(SupportAccount.case_conflict.is_(True))
        .order_by(SupportAccount.login_key, SupportAccount.id)
    )
    groups: dict[str, list[SupportAccount]] = {}
    for account in rows:
        groups.setdefault(account.login_key, []).append(account)
    return list(groups.values())


def resolve_case_conflict(session: Session, *, keep_id: int) -> list[int] | None:
    """An operator's choice: ``keep_id`` stays the address's one support ID; the others of its group
    are deleted (their destinations, links and sessions with them). Returns the deleted ids; None
    when ``keep_id`` is not in a case conflict."""
    keep = session.get(SupportAccount, keep_id, with_for_update=True)
    if keep is None or not keep.case_conflict:
        return None
    others = list(
        session.scalars(
            select(SupportAccount.id).where(
                SupportAccount.login_key == keep.login_key, SupportAccount.id != keep.id
            )
        )
    )
    if others:
        session.execute(delete(SupportAccount).where(SupportAccount.id.in_(others)))
    keep.case_conflict = False
    session.flush()
    return others
