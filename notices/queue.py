"""The durable delivery queue: one ``notice_deliveries`` row per notice × destination.

Every function is one short unit of work inside the caller's transaction (write sessions of
``core.db``); none does I/O other than the database, none hashes a password.

- :func:`post_notice` stores a notice and, in the same transaction, queues it for every confirmed,
  delivering destination whose support ID selected one of its products and whose delivery days and
  hours include the moment it was posted (one ``INSERT … SELECT``: 100,000 rows in one statement).
- :func:`claim` hands a worker due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers on
  several machines never take the same row; SQLite's ``BEGIN IMMEDIATE`` serialises the claim),
  leased until ``lease_until``. Rows of a recipient domain the worker already has
  ``per_domain`` mails in flight for are left for later, so a slow domain holds up only itself.
- :func:`record` writes a batch of SMTP results (only rows still leased to this worker).
- :func:`release_leases` gives back rows whose lease ran out (a killed worker) and, at a worker's
  start, the rows its previous incarnation held: they go again with the same Message-ID.
- :func:`record_bounce` applies an asynchronous bounce (RFC 3464 DSN) to a sent mail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from core.models import UTCDateTime
from core.notice_models import (
    Notice,
    NoticeDelivery,
    NoticeDestination,
    NoticeProduct,
    NoticeRelayOutage,
    SupportAccount,
    SupportAccountProduct,
)
from notices import rules
from notices.rules import DeliveryState, DestinationState, FailureCount, ReplyClass, RetryPolicy

MAX_TEXT = 20_000  # characters of a notice's body, whichever way it is posted (CLI, API, page)
# what a request carrying such a body may weigh: a character is at most 12 bytes as a JSON escape
# (a surrogate pair) or in a form (%XX four times); the API and the operator page read up to this
# instead of the site's form limit, so that the three ways in take the same notices
MAX_NOTICE_REQUEST_BYTES = 12 * MAX_TEXT + 16 * 1024


class NoticeError(ValueError):
    """A notice that cannot be posted as given (the message says what to fix)."""


@dataclass(frozen=True)
class NoticeDraft:
    kind: str
    status: str
    title: str
    area: str
    body: str
    products: tuple[str, ...]
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    public: bool = True
    follows_id: int | None = None


def validate_draft(draft: NoticeDraft, catalog: Mapping[str, str]) -> None:
    """Refuse a draft that cannot be posted; ``catalog``: the products customers can choose
    (code: label, ``NoticeSettings.products``), so a typo is refused instead of reaching no one."""
    if draft.kind not in rules.KINDS:
        raise NoticeError(f"kind must be one of {', '.join(rules.KINDS)}")
    if draft.status not in rules.STATUSES:
        raise NoticeError(f"status must be one of {', '.join(rules.STATUSES)}")
    if not draft.title.strip() or len(draft.title) > 200:
        raise NoticeError("title must be 1 to 200 characters")
    if not draft.title.isprintable() or not draft.area.isprintable():
        raise NoticeError("title and area must be one line without control characters")
    if len(draft.area) > 200:
        raise NoticeError("area must be at most 200 characters")
    if not draft.body.strip() or len(draft.body) > MAX_TEXT:
        raise NoticeError(f"body must be 1 to {MAX_TEXT} characters")
    if not draft.products:
        raise NoticeError("at least one product is needed")
    for product in draft.products:
        if not product or len(product) > 40 or not product.isprintable():
            raise NoticeError(f"not a product code: {product!r}")
    unknown = sorted(set(draft.products) - set(catalog))
    if unknown:
        raise NoticeError(f"unknown product code: {', '.join(unknown)} (known: {', '.join(sorted(catalog))})")
    for moment in (draft.starts_at, draft.ends_at):
        if moment is not None and moment.tzinfo is None:
            raise NoticeError("start and end need a time zone (e.g. 2026-12-05T01:00+09:00)")
    if draft.starts_at and draft.ends_at and draft.ends_at < draft.starts_at:
        raise NoticeError("the end is before the start")


def _domain_expr(session: Session, address: Any) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        return func.lower(func.split_part(address, "@", 2))
    return func.lower(func.substr(address, func.instr(address, "@") + 1))


def post_notice(
    session: Session, draft: NoticeDraft, *, posted_by: str, now: datetime, catalog: Mapping[str, str]
) -> Notice:
    """Store the notice and queue its mails (see the module doc); returns it with ``recipients``.
    ``catalog``: the known products (:func:`validate_draft`)."""
    validate_draft(draft, catalog)
    if draft.follows_id is not None and session.get(Notice, draft.follows_id) is None:
        raise NoticeError(f"no notice {draft.follows_id} to follow")
    notice = Notice(
        kind=draft.kind,
        status=draft.status,
        title=draft.title.strip(),
        area=draft.area.strip(),
        body=draft.body,
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
        public=draft.public,
        follows_id=draft.follows_id,
        posted_at=now,
        posted_by=posted_by[:80],
        message_token=secrets.token_hex(8),
    )
    session.add(notice)
    session.flush()
    products = sorted(set(draft.products))
    session.add_all(NoticeProduct(notice_id=notice.id, product=p) for p in products)
    notice.recipients = queue_notice(session, notice_id=notice.id, products=products, posted_at=now)
    session.flush()
    return notice


def queue_notice(session: Session, *, notice_id: int, products: Sequence[str], posted_at: datetime) -> int:
    """One queued row per matching destination (module doc); returns how many."""
    dest, account, chosen = NoticeDestination, SupportAccount, SupportAccountProduct
    now_literal = literal(posted_at, UTCDateTime())
    matching = (
        select(
            literal(notice_id, Integer()),
            dest.id,
            dest.address,
            _domain_expr(session, dest.address),
            literal(DeliveryState.QUEUED.value),
            literal(0, Integer()),
            now_literal,
            now_literal,
        )
        .join(account, account.id == dest.account_id)
        .where(
            dest.state == DestinationState.DELIVERING.value,
            account.state == "active",
            account.delivery_days.op("&")(rules.day_bit(posted_at)) != 0,
            account.delivery_hours.op("&")(rules.hour_bit(posted_at)) != 0,
            exists().where(chosen.account_id == account.id, chosen.product.in_(list(products))),
        )
    )
    session.execute(
        insert(NoticeDelivery).from_select(
            [
                "notice_id",
                "destination_id",
                "address",
                "domain",
                "state",
                "attempts",
                "next_attempt_at",
                "created_at",
            ],
            matching,
        )
    )
    # (psycopg reports no row count for INSERT … SELECT through SQLAlchemy; count them, by index)
    counted = session.scalar(
        select(func.count()).select_from(NoticeDelivery).where(NoticeDelivery.notice_id == notice_id)
    )
    return int(counted or 0)


# ------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    notice_id: int
    destination_id: int
    address: str
    domain: str
    attempts: int  # including this one
    created_at: datetime


def claim(
    session: Session,
    *,
    worker: str,
    now: datetime,
    limit: int,
    lease_seconds: float,
    inflight_by_domain: Mapping[str, int] | None = None,
    per_domain: int = 50,
) -> list[Claim]:
    """Lease up to ``limit`` due rows to ``worker`` (module doc). Rows whose destination is no
    longer delivering are marked ``skipped`` instead."""
    if limit <= 0:
        return []
    busy = dict(inflight_by_domain or {})
    saturated = sorted(domain for domain, count in busy.items() if count >= per_domain)
    d, dest = NoticeDelivery, NoticeDestination
    query = (
        select(d.id, d.notice_id, d.destination_id, d.address, d.domain, d.attempts, d.created_at, dest.state)
        .join(dest, dest.id == d.destination_id)
        .where(d.state == DeliveryState.QUEUED.value, d.next_attempt_at <= now, _first_in_line(d))
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=d)
    )
    if saturated:
        query = query.where(d.domain.not_in(saturated))
    chosen: list[Claim] = []
    skipped: list[int] = []
    for row in session.execute(query):
        if row.state != DestinationState.DELIVERING.value:
            skipped.append(row.id)
            continue
        if busy.get(row.domain, 0) >= per_domain:
            continue  # left queued: this domain has enough in flight
        busy[row.domain] = busy.get(row.domain, 0) + 1
        chosen.append(
            Claim(
                row.id,
                row.notice_id,
                row.destination_id,
                row.address,
                row.domain,
                row.attempts + 1,
                row.created_at,
            )
        )
    if chosen:
        session.execute(
            update(d)
            .where(d.id.in_([c.delivery_id for c in chosen]))
            .values(
                state=DeliveryState.SENDING.value,
                lease_until=now + timedelta(seconds=lease_seconds),
                worker=worker,
                attempts=d.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
    if skipped:
        session.execute(
            update(d)
            .where(d.id.in_(skipped))
            .values(
                state=DeliveryState.SKIPPED.value, finished_at=now, last_detail="destination not delivering"
            )
            .execution_options(synchronize_session=False)
        )
    return chosen


def _first_in_line(d: Any) -> ColumnElement[bool]:
    """The row is its destination's oldest notice not yet finished: a destination gets its notices
    in the order they were posted (復旧 never before its 発生中). A later notice waits while an
    earlier one to the same destination is queued (in back-off: that mailbox is failing anyway) or
    in flight, and goes as soon as that one is delivered, failed or given up (index
    ``ix_notice_deliveries_destination_pending``)."""
    earlier = aliased(NoticeDelivery)
    return ~exists().where(
        earlier.destination_id == d.destination_id,
        earlier.state.in_([DeliveryState.QUEUED.value, DeliveryState.SENDING.value]),
        earlier.notice_id < d.notice_id,
    )


def anything_due(session: Session, *, now: datetime) -> bool:
    """Whether a claim would find a row (one indexed read; an idle worker asks this first)."""
    d = NoticeDelivery
    found = session.scalar(
        select(d.id)
        .where(d.state == DeliveryState.QUEUED.value, d.next_attempt_at <= now, _first_in_line(d))
        .limit(1)
    )
    return found is not None


def release_leases(session: Session, *, now: datetime, own_worker: str | None = None) -> int:
    """Put back rows leased past their lease (and, given ``own_worker``, every row leased to that
    worker id: called at its start, when its previous incarnation is known to be dead)."""
    d = NoticeDelivery
    condition = d.lease_until < now
    if own_worker is not None:
        condition = condition | (d.worker == own_worker)
    result = session.execute(
        update(d)
        .where(d.state == DeliveryState.SENDING.value, condition)
        .values(state=DeliveryState.QUEUED.value, lease_until=None, worker=None, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def renew_leases(session: Session, *, worker: str, now: datetime, lease_seconds: float) -> int:
    """A live worker keeps the rows it holds (a mail waiting behind a slow domain included)."""
    d = NoticeDelivery
    result = session.execute(
        update(d)
        .where(d.state == DeliveryState.SENDING.value, d.worker == worker)
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class SendResult:
    claim: Claim
    outcome: ReplyClass
    code: int | None = None
    status: str | None = None  # enhanced status code, e.g. 5.1.1
    detail: str | None = None  # the reply text (never the mail body)
    # False: a failure of the mail, not of the mailbox (the relay refused its content after DATA):
    # the delivery fails without counting toward stopping the destination
    counts: bool = True


@dataclass
class RecordSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    stale: int = 0  # no longer leased to this worker (another took it after the lease ran out)
    put_back: int = 0  # our relay failed them: queued again as they were (no attempt, no count)
    stopped: list[int] = field(default_factory=list)  # destinations stopped by these results


@dataclass(frozen=True)
class FailurePolicy:
    max_failures: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    acceptance_is_delivery: bool = True


def _cut(text: str | None, length: int = 300) -> str | None:
    if text is None:
        return None
    return " ".join(text.split())[:length]


def record(
    session: Session,
    results: Iterable[SendResult],
    *,
    worker: str,
    now: datetime,
    policy: FailurePolicy,
) -> RecordSummary:
    """Write a batch of results of ``worker``'s sends (module doc)."""
    d = NoticeDelivery
    summary = RecordSummary()
    results = list(results)
    leased = and_(d.state == DeliveryState.SENDING.value, d.worker == worker)
    delivered = [r for r in results if r.outcome is ReplyClass.DELIVERED]
    if delivered:
        done = (
            session.execute(
                update(d)
                .where(d.id.in_([r.claim.delivery_id for r in delivered]), leased)
                .values(
                    state=DeliveryState.SENT.value,
                    sent_at=now,
                    lease_until=None,
                    last_code=250,
                    last_status=None,
                    last_detail=None,
                )
                .returning(d.destination_id)
                .execution_options(synchronize_session=False)
            )
            .scalars()
            .all()
        )
        summary.sent = len(done)
        summary.stale += len(delivered) - len(done)
        if policy.acceptance_is_delivery and done:
            dest = NoticeDestination
            session.execute(
                update(dest)
                .where(dest.id.in_(sorted(set(done))), dest.consecutive_failures != 0)
                .values(consecutive_failures=0)
                .execution_options(synchronize_session=False)
            )
    relay_failed = [r.claim.delivery_id for r in results if r.outcome is ReplyClass.RELAY]
    if relay_failed:
        # our relay's failure is not the mail's: back to the queue as it was, due at once (the worker
        # claims again only when the relay answers), the attempt not counted
        put_back = session.execute(
            update(d)
            .where(d.id.in_(relay_failed), leased)
            .values(
                state=DeliveryState.QUEUED.value,
                next_attempt_at=now,
                lease_until=None,
                worker=None,
                attempts=case((d.attempts > 0, d.attempts - 1), else_=0),
            )
            .execution_options(synchronize_session=False)
        )
        summary.put_back = int(getattr(put_back, "rowcount", 0) or 0)
        summary.stale += len(relay_failed) - summary.put_back
    temporary = [r for r in results if r.outcome is ReplyClass.TEMPORARY]
    outages = (
        relay_outages(session, since=min(r.claim.created_at for r in temporary), now=now) if temporary else []
    )
    failures = (r for r in results if r.outcome in (ReplyClass.TEMPORARY, ReplyClass.PERMANENT))
    for result in sorted(failures, key=_by_destination):
        next_at: datetime | None = None
        if result.outcome is ReplyClass.TEMPORARY:
            next_at = policy.retry.next_attempt(
                attempts=result.claim.attempts,
                first_queued_at=result.claim.created_at,
                now=now,
                paused=rules.paused_within(outages, result.claim.created_at, now),
            )
        values: dict[str, Any] = {
            "lease_until": None,
            "last_code": result.code,
            "last_status": result.status,
            "last_detail": _cut(result.detail),
        }
        if next_at is not None:
            values |= {"state": DeliveryState.QUEUED.value, "next_attempt_at": next_at, "worker": None}
        else:
            values |= {"state": DeliveryState.FAILED.value, "finished_at": now}
        changed = session.execute(
            update(d)
            .where(d.id == result.claim.delivery_id, leased)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if not getattr(changed, "rowcount", 0):
            summary.stale += 1
            continue
        if next_at is not None:
            summary.retried += 1
            # the destination's later notices wait behind this one (_first_in_line): not due before
            # it, so claims do not walk over them meanwhile
            session.execute(
                update(d)
                .where(
                    d.destination_id == result.claim.destination_id,
                    d.state == DeliveryState.QUEUED.value,
                    d.notice_id > result.claim.notice_id,
                    d.next_attempt_at < next_at,
                )
                .values(next_attempt_at=next_at)
                .execution_options(synchronize_session=False)
            )
            continue
        summary.failed += 1
        if result.counts and count_failure(
            session, destination_id=result.claim.destination_id, max_failures=policy.max_failures, now=now
        ):
            summary.stopped.append(result.claim.destination_id)
    return summary


def relay_outage_started(session: Session, *, worker: str, now: datetime, reason: str) -> int:
    """Our relay stopped answering as it should (seen by ``worker``): returns the outage's id."""
    outage = NoticeRelayOutage(worker=worker[:80], started_at=now, checked_at=now, reason=reason[:80])
    session.add(outage)
    session.flush()
    return outage.id


def relay_outage_checked(session: Session, *, outage_id: int, now: datetime, ended: bool) -> None:
    """Another probe of the relay failed (``ended`` False) or succeeded (True: the outage ends)."""
    values: dict[str, Any] = {"checked_at": now}
    if ended:
        values["ended_at"] = now
    session.execute(
        update(NoticeRelayOutage)
        .where(NoticeRelayOutage.id == outage_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def relay_outages(session: Session, *, since: datetime, now: datetime) -> list[tuple[datetime, datetime]]:
    """Every worker's relay outages overlapping ``since``…``now`` (an open one up to its last probe)."""
    o = NoticeRelayOutage
    end = func.coalesce(o.ended_at, o.checked_at)
    rows = session.execute(select(o.started_at, end).where(o.started_at < now, end > since))
    return [(started, ended) for started, ended in rows]


def _by_destination(result: SendResult) -> int:
    return result.claim.destination_id  # a fixed lock order between workers


def count_failure(session: Session, *, destination_id: int, max_failures: int, now: datetime) -> bool:
    """One more failed delivery to the destination; True if that stopped it."""
    dest = session.execute(
        select(NoticeDestination).where(NoticeDestination.id == destination_id).with_for_update()
    ).scalar_one_or_none()
    if dest is None:
        return False
    before = FailureCount(dest.consecutive_failures, DestinationState(dest.state))
    after = rules.after_failure(before, max_failures=max_failures)
    dest.consecutive_failures = after.consecutive_failures
    if after.state is not before.state:
        dest.state = after.state.value
        dest.stopped_at = now
    session.flush()
    return after.state is DestinationState.STOPPED and before.state is not DestinationState.STOPPED


@dataclass(frozen=True)
class BounceResult:
    applied: bool  # False: unknown delivery, not sent, or already bounced/failed
    stopped: bool = False
    destination_id: int | None = None


def record_bounce(
    session: Session,
    *,
    delivery_id: int,
    status: str | None,
    detail: str | None,
    now: datetime,
    max_failures: int,
) -> BounceResult:
    """A DSN says a sent mail failed: the delivery becomes ``bounced`` and the failure counts.
    A second DSN for the same mail changes nothing."""
    d = NoticeDelivery
    row = session.execute(
        update(d)
        .where(d.id == delivery_id, d.state.in_([DeliveryState.SENT.value, DeliveryState.SENDING.value]))
        .values(
            state=DeliveryState.BOUNCED.value,
            finished_at=now,
            lease_until=None,
            last_code=550,
            last_status=status,
            last_detail=_cut(detail),
        )
        .returning(d.destination_id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if row is None:
        return BounceResult(False)
    stopped = count_failure(session, destination_id=row, max_failures=max_failures, now=now)
    return BounceResult(True, stopped, row)


def record_delivered(session: Session, *, delivery_id: int) -> bool:
    """A DSN says a sent mail was delivered (or relayed on): the destination's failure count resets
    (``rules.after_delivered``). True if the count was reset."""
    d, dest = NoticeDelivery, NoticeDestination
    destination_id = session.scalar(
        select(d.destination_id).where(d.id == delivery_id, d.state == DeliveryState.SENT.value)
    )
    if destination_id is None:
        return False
    row = session.execute(
        select(dest).where(dest.id == destination_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return False
    after = rules.after_delivered(FailureCount(row.consecutive_failures, DestinationState(row.state)))
    row.consecutive_failures = after.consecutive_failures
    session.flush()
    return True


def resume_destination(session: Session, *, destination_id: int, account_id: int | None = None) -> bool:
    """配信再開: a stopped destination delivers again, its failure count reset. True if it was stopped."""
    dest = session.execute(
        select(NoticeDestination).where(NoticeDestination.id == destination_id).with_for_update()
    ).scalar_one_or_none()
    if dest is None or (account_id is not None and dest.account_id != account_id):
        return False
    before = FailureCount(dest.consecutive_failures, DestinationState(dest.state))
    after = rules.after_resume(before)
    if after == before:
        return False
    dest.state = after.state.value
    dest.consecutive_failures = after.consecutive_failures
    dest.stopped_at = None
    session.flush()
    return True


FINAL_STATES = (
    DeliveryState.SENT.value,
    DeliveryState.FAILED.value,
    DeliveryState.BOUNCED.value,
    DeliveryState.SKIPPED.value,
)


def purge_deliveries(session: Session, *, before: datetime, batch: int = 10_000) -> int:
    """Delete up to ``batch`` finished delivery records created before ``before`` (retention); call
    again until it returns 0. Queued and in-flight rows are never deleted."""
    d = NoticeDelivery
    ids = list(
        session.scalars(
            select(d.id).where(d.created_at < before, d.state.in_(FINAL_STATES)).order_by(d.id).limit(batch)
        )
    )
    if ids:
        session.execute(delete(d).where(d.id.in_(ids)).execution_options(synchronize_session=False))
    return len(ids)


# -------------------------------------------------------------------------------------- reads


def delivery_counts(session: Session, *, notice_id: int | None = None) -> dict[str, int]:
    d = NoticeDelivery
    query = select(d.state, func.count()).group_by(d.state)
    if notice_id is not None:
        query = query.where(d.notice_id == notice_id)
    return {state: int(count) for state, count in session.execute(query)}


def products_of(session: Session, notice_ids: Sequence[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {i: [] for i in notice_ids}
    if not notice_ids:
        return found
    rows = session.execute(
        select(NoticeProduct.notice_id, NoticeProduct.product)
        .where(NoticeProduct.notice_id.in_(list(notice_ids)))
        .order_by(NoticeProduct.product)
    )
    for notice_id, product in rows:
        found[notice_id].append(product)
    return found
