"""The inbound bounce listener: an SMTP server (aiosmtpd) for the per-mail return paths.

Every notice mail leaves with the envelope sender ``b-<delivery id>-<signature>@<return domain>``
(``rules.return_path``), so a delivery status notification (RFC 3464) that an MTA sends back is
addressed to exactly one delivery. The listener accepts only validly signed return paths (anything
else: 550), reads the ``message/delivery-status`` part, and for ``Action: failed`` marks the
delivery bounced and counts the failure toward stopping its destination. ``delayed`` is logged
only; ``delivered`` / ``relayed`` reports are logged. Mail that is not a DSN (an auto-reply) is
accepted and dropped.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP as SMTPServer
from sqlalchemy.orm import Session, sessionmaker

from notices import queue, rules

log = structlog.get_logger("notices.bounces")

MAX_DSN_BYTES = 512 * 1024


@dataclass(frozen=True)
class RecipientReport:
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None  # e.g. 5.1.1
    final_recipient: str | None
    diagnostic: str | None


def parse_dsn(data: bytes) -> list[RecipientReport] | None:
    """The per-recipient reports of an RFC 3464 DSN, or None if the mail is not one."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        return None
    if (message.get_param("report-type") or "").lower() != "delivery-status":  # type: ignore[union-attr]
        return None
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list) or len(blocks) < 2:
            return []
        reports = []
        for block in blocks[1:]:  # the first block has the per-message fields
            if not isinstance(block, Message):
                continue
            action = (block.get("Action") or "").strip().lower()
            if not action:
                continue
            status = (block.get("Status") or "").strip() or None
            reports.append(
                RecipientReport(
                    action=action,
                    status=status.split()[0] if status else None,
                    final_recipient=_address_field(block.get("Final-Recipient")),
                    diagnostic=" ".join((block.get("Diagnostic-Code") or "").split())[:300] or None,
                )
            )
        return reports
    return []


def _address_field(value: str | None) -> str | None:
    if not value:
        return None
    _, _, address = value.partition(";")
    return address.strip() or value.strip()


class BounceHandler:
    """aiosmtpd handler; database work runs in a thread, one short transaction per bounce."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        secret: bytes,
        domain: str,
        max_failures: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions, self.secret, self.domain = sessions, secret, domain
        self.max_failures, self.clock = max_failures, clock
        self.applied = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self._postmaster(address):
            # RFC 5321 4.5.1: postmaster of a domain we receive for is always accepted
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        if rules.delivery_of_return_path(address, secret=self.secret, domain=self.domain) is None:
            return "550 5.1.1 Not a return path of ours"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def _postmaster(self, address: str) -> bool:
        local, _, domain = address.strip().strip("<>").rpartition("@")
        return local.lower() == "postmaster" and domain.lower() in ("", self.domain.lower())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        if any(self._postmaster(a) for a in envelope.rcpt_tos):
            # kept out of the DSN handling (no delivery is named); logged for the operators, who read
            # the sender and size here (never the body) and answer from their own mailbox
            log.warning("postmaster_mail_received", mail_from=envelope.mail_from, size=len(data))
            if all(self._postmaster(a) for a in envelope.rcpt_tos):
                return "250 2.0.0 OK"
        reports = parse_dsn(data)
        deliveries = [
            d
            for d in (
                rules.delivery_of_return_path(a, secret=self.secret, domain=self.domain)
                for a in envelope.rcpt_tos
            )
            if d is not None
        ]
        if reports is None:
            log.info("bounce_not_a_dsn", deliveries=deliveries)
            return "250 2.0.0 OK"
        failed = [r for r in reports if r.action == "failed"]
        if not failed and any(r.action in ("delivered", "relayed") for r in reports):
            for delivery_id in deliveries:
                reset = await asyncio.to_thread(self._delivered, delivery_id)
                log.info("delivery_report", delivery_id=delivery_id, reset=reset)
        for report in reports:
            if report.action not in ("failed", "delivered", "relayed"):
                log.info("bounce_report", action=report.action, status=report.status, deliveries=deliveries)
        if failed:
            report = failed[0]
            for delivery_id in deliveries:
                result = await asyncio.to_thread(self._apply, delivery_id, report)
                log.info(
                    "bounce_applied" if result.applied else "bounce_ignored",
                    delivery_id=delivery_id,
                    destination_id=result.destination_id,
                    status=report.status,
                    stopped=result.stopped,
                )
                if result.stopped:
                    log.warning(
                        "notice_destination_stopped",
                        destination_id=result.destination_id,
                        max_failures=self.max_failures,
                    )
        return "250 2.0.0 OK"

    def _delivered(self, delivery_id: int) -> bool:
        with self.sessions() as session, session.begin():
            return queue.record_delivered(session, delivery_id=delivery_id)

    def _apply(self, delivery_id: int, report: RecipientReport) -> queue.BounceResult:
        with self.sessions() as session, session.begin():
            result: queue.BounceResult = queue.record_bounce(
                session,
                delivery_id=delivery_id,
                status=report.status,
                detail=report.diagnostic,
                now=self.clock(),
                max_failures=self.max_failures,
            )
        if result.applied:
            self.applied += 1
        return result


async def start_bounce_listener(handler: BounceHandler, *, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTPServer(handler, hostname="bounces", data_size_limit=MAX_DSN_BYTES, timeout=60),
        host=host,
        port=port,
    )
