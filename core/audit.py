"""Audit records of credential events. Never pass a secret here: ``detail`` is for reason codes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import AuditEventType, Channel
from core.models import AuditEvent, PhoneNumber


@dataclass(frozen=True)
class Audit:
    """Where one operation writes its audit records: the session, the moment, the channel, and the
    number and contract they are about (the same for every record it writes)."""

    session: Session
    at: datetime
    channel: Channel | str
    number: str | None = None
    contract_id: int | None = None

    @classmethod
    def of_phone(cls, session: Session, phone: PhoneNumber, *, at: datetime, channel: Channel | str) -> Audit:
        """Records about a number row: its number and its contract."""
        return cls(session, at, channel, phone.number, phone.contract_id)

    def record(self, event: AuditEventType | str, outcome: str, detail: str = "") -> AuditEvent:
        row = AuditEvent(
            at=self.at,
            event=str(event),
            channel=str(self.channel),
            number=self.number,
            contract_id=self.contract_id,
            outcome=outcome,
            detail=detail[:200],
        )
        self.session.add(row)
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
