"""Call records: one row per call to the temporary-password line (written by the voice area).

Operators read them with ``ivr calls``. No secret ever goes here: no digits typed for a password.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
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
