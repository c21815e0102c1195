"""Audit records of credential events. Never pass a secret here: ``detail`` is for reason codes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import AuditEventType, Channel
from core.models import AuditEvent


def record_event(
    session: Session,
    *,
    event: AuditEventType | str,
    at: datetime,
    channel: Channel | str,
    outcome: str,
    number: str | None = None,
    contract_id: int | None = None,
    detail: str = "",
) -> AuditEvent:
    row = AuditEvent(
        at=at,
        event=str(event),
        channel=str(channel),
        number=number,
        contract_id=contract_id,
        outcome=outcome,
        detail=detail[:200],
    )
    session.add(row)
    return row


def list_events(
    session: Session,
    *,
    number: str | None = None,
    event: AuditEventType | str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if number is not None:
        query = query.where(AuditEvent.number == number)
    if event is not None:
        query = query.where(AuditEvent.event == str(event))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return list(session.scalars(query))
