"""Call records: one row per call to the temporary-password line (written by the voice area).

Operators read them with ``ivr calls``. No secret ever goes here: no digits typed for a password.

The daemon does not write them one transaction per event: ``ivr.flow.records.CallRecordWriter``
queues starts and finishes and writes each batch with :func:`write_call_record_batch` in one
transaction (group commit). Each record carries its daemon's ``node``; a daemon that starts closes
what its own node left open (:func:`close_open_call_records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from core.models import CallRecord
from core.phone import InvalidPhoneNumber, normalize_number


def start_call_record(
    session: Session,
    *,
    call_id: str,
    caller: str | None,
    service_number: str | None,
    started_at: datetime,
    node: str | None = None,
) -> None:
    """One row per call, outcome None while in progress. Idempotent for the same call id."""
    existing = session.scalars(select(CallRecord).where(CallRecord.call_id == call_id)).one_or_none()
    if existing is not None:
        return
    session.add(
        CallRecord(
            call_id=call_id,
            caller=caller,
            service_number=service_number,
            started_at=started_at,
            wrong_entries=0,
            node=node,
        )
    )
    session.flush()


def finish_call_record(
    session: Session,
    *,
    call_id: str,
    ended_at: datetime,
    outcome: str,
    unit: str | None,
    target_number: str | None,
    last_step: str | None,
    wrong_entries: int,
) -> None:
    """Complete the call's row (creates it if the start was never recorded)."""
    record = session.scalars(select(CallRecord).where(CallRecord.call_id == call_id)).one_or_none()
    if record is None:
        record = CallRecord(call_id=call_id, caller=None, service_number=None, started_at=ended_at)
        session.add(record)
    record.ended_at = ended_at
    record.outcome = outcome
    record.unit = unit
    record.target_number = target_number
    record.last_step = last_step
    record.wrong_entries = wrong_entries
    session.flush()


@dataclass(frozen=True)
class CallStart:
    call_id: str
    caller: str | None
    service_number: str | None
    started_at: datetime


@dataclass(frozen=True)
class CallFinish:
    call_id: str
    ended_at: datetime
    outcome: str
    unit: str | None
    target_number: str | None
    last_step: str | None
    wrong_entries: int


CallEvent = CallStart | CallFinish


def write_call_event(session: Session, event: CallEvent, *, node: str | None) -> None:
    """One start (:func:`start_call_record`, stamped with ``node``) or finish
    (:func:`finish_call_record`) on its own, unbatched. Does NOT commit."""
    if isinstance(event, CallStart):
        start_call_record(session, **asdict(event), node=node)
    else:
        finish_call_record(session, **asdict(event))


_ID_CHUNK = 500  # call ids per IN (...) query


def write_call_record_batch(session: Session, events: Sequence[CallEvent], *, node: str | None) -> None:
    """Apply starts and finishes in order, in the caller's transaction: at most one SELECT per 500
    calls, one multi-row INSERT, one executemany UPDATE. A start and finish of the same call in one
    batch become one inserted row; a repeated start is ignored; a finish without a start creates the
    row (as :func:`finish_call_record`). Does NOT commit."""
    rows: dict[str, dict[str, object]] = {}  # call id -> column values, in first-seen order
    finished: dict[str, CallFinish] = {}
    for item in events:
        if isinstance(item, CallStart):
            rows.setdefault(
                item.call_id,
                {
                    "call_id": item.call_id,
                    "caller": item.caller,
                    "service_number": item.service_number,
                    "started_at": item.started_at,
                    "wrong_entries": 0,
                    "node": node,
                },
            )
        else:
            rows.setdefault(
                item.call_id,
                {
                    "call_id": item.call_id,
                    "caller": None,
                    "service_number": None,
                    "started_at": item.ended_at,
                    "wrong_entries": 0,
                    "node": node,
                },
            )
            finished[item.call_id] = item
    if not rows:
        return
    ids = list(rows)
    existing: set[str] = set()
    for i in range(0, len(ids), _ID_CHUNK):
        chunk = ids[i : i + _ID_CHUNK]
        existing.update(session.scalars(select(CallRecord.call_id).where(CallRecord.call_id.in_(chunk))))

    new_rows = []
    for call_id, values in rows.items():
        if call_id in existing:
            continue
        full = {**values, **dict.fromkeys(_FINISH_COLUMNS)}
        full["wrong_entries"] = 0
        if call_id in finished:
            full.update(_finish_values(finished[call_id]))
        new_rows.append(full)
    if new_rows:
        session.execute(insert(CallRecord), new_rows)
    updates = [
        {"b_call_id": call_id, **{f"b_{k}": v for k, v in _finish_values(item).items()}}
        for call_id, item in finished.items()
        if call_id in existing
    ]
    if updates:  # Core executemany: one prepared UPDATE for every finished call
        session.connection().execute(
            update(CallRecord)
            .where(CallRecord.call_id == bindparam("b_call_id"))
            .values({name: bindparam(f"b_{name}") for name in _FINISH_COLUMNS}),
            updates,
        )


_FINISH_COLUMNS = ("ended_at", "outcome", "unit", "target_number", "last_step", "wrong_entries")


def _finish_values(item: CallFinish) -> dict[str, object]:
    return {name: getattr(item, name) for name in _FINISH_COLUMNS}


def close_open_call_records(
    session: Session, *, node: str | None, now: datetime, outcome: str, started_before: datetime | None = None
) -> int:
    """Close the records ``node`` left open (a daemon that died): ``outcome``, ended now, last step
    kept; only calls started before ``started_before`` when given. Only that node's records: other
    daemons' live calls are not touched. Returns how many. Does NOT commit."""
    query = update(CallRecord).where(CallRecord.outcome.is_(None))
    if started_before is not None:
        query = query.where(CallRecord.started_at < started_before)
    query = query.where(CallRecord.node.is_(None) if node is None else CallRecord.node == node)
    result = session.execute(
        query.values(outcome=outcome, ended_at=now).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_call_records(
    session: Session,
    *,
    since: datetime | None = None,
    number: str | None = None,
    outcome: str | None = None,
    limit: int = 200,
) -> list[CallRecord]:
    """Newest first. ``number`` matches the caller or the target number."""
    query = select(CallRecord).order_by(CallRecord.started_at.desc(), CallRecord.id.desc()).limit(limit)
    if since is not None:
        query = query.where(CallRecord.started_at >= since)
    if number is not None:
        try:
            normalised = normalize_number(number)
        except InvalidPhoneNumber:
            normalised = number
        query = query.where(
            (CallRecord.caller == normalised)
            | (CallRecord.target_number == normalised)
            | (CallRecord.caller == number)
        )
    if outcome is not None:
        query = query.where(CallRecord.outcome == outcome)
    return list(session.scalars(query))


def get_call_record(session: Session, call_id: str) -> CallRecord | None:
    return session.scalars(select(CallRecord).where(CallRecord.call_id == call_id)).one_or_none()
