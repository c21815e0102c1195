"""The bounce listener over real SMTP: only signed return paths are accepted, an RFC 3464 ``failed``
report bounces the delivery and counts, a success report resets the count, anything else is
dropped."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.notice_models import NoticeDestination
from notices import queue, rules
from notices.bounces import BounceHandler, parse_dsn, start_bounce_listener
from tests.support import free_port

from .conftest import TOKYO_FRIDAY_1030, Customer
from .test_delivery import destination, draft, post, states

SECRET = b"bounce-test-secret"
DOMAIN = "bounce.support.example.jp"


def dsn(recipient: str, action: str, status: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mta.example\r\nTo: x\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mta.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} mailbox unavailable\r\n\r\n"
        "--B--\r\n"
    ).encode()


def test_parse_dsn_reads_the_per_recipient_fields() -> None:
    (report,) = parse_dsn(dsn("a@example.jp", "failed", "5.1.1")) or []
    assert (report.action, report.status, report.final_recipient) == ("failed", "5.1.1", "a@example.jp")
    assert "mailbox unavailable" in (report.diagnostic or "")
    assert parse_dsn(b"From: a@b\r\nSubject: I am on holiday\r\n\r\nback soon\r\n") is None


async def test_the_listener_over_smtp(db_sessions: sessionmaker[Session], customer: Customer) -> None:
    _, (dest_id,) = customer("c@example.jp", ["c@example.jp"])
    notice_id = post(db_sessions, draft())
    with db_sessions() as session, session.begin():
        (claim,) = queue.claim(session, worker="w", now=TOKYO_FRIDAY_1030, limit=5, lease_seconds=60)
        queue.record(
            session,
            [queue.SendResult(claim, rules.ReplyClass.DELIVERED, 250)],
            worker="w",
            now=TOKYO_FRIDAY_1030,
            policy=queue.FailurePolicy(),
        )
        row = session.get(NoticeDestination, dest_id)
        assert row is not None
        row.consecutive_failures = 1
    handler = BounceHandler(sessions=db_sessions, secret=SECRET, domain=DOMAIN, max_failures=3)
    port = free_port()
    server = await start_bounce_listener(handler, host="127.0.0.1", port=port)
    try:
        ours = rules.return_path(delivery_id=claim.delivery_id, secret=SECRET, domain=DOMAIN)
        forged = ours.replace(f"b-{claim.delivery_id}-", f"b-{claim.delivery_id + 1}-")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await aiosmtplib.send(
                dsn("c@example.jp", "failed", "5.1.1"),
                sender="MAILER-DAEMON@mta.example",
                recipients=[forged],
                hostname="127.0.0.1",
                port=port,
            )
        # a success report resets the count
        await aiosmtplib.send(
            dsn("c@example.jp", "relayed", "2.0.0"),
            sender="MAILER-DAEMON@mta.example",
            recipients=[ours],
            hostname="127.0.0.1",
            port=port,
        )
        assert destination(db_sessions, dest_id).consecutive_failures == 0
        await aiosmtplib.send(
            b"Subject: auto-reply\r\n\r\nI am away\r\n",
            sender="MAILER-DAEMON@mta.example",
            recipients=[ours],
            hostname="127.0.0.1",
            port=port,
        )
        assert destination(db_sessions, dest_id).consecutive_failures == 0
        for _ in range(2):  # the same DSN twice counts once
            await aiosmtplib.send(
                dsn("c@example.jp", "failed", "5.2.2"),
                sender="MAILER-DAEMON@mta.example",
                recipients=[ours],
                hostname="127.0.0.1",
                port=port,
            )
        assert destination(db_sessions, dest_id).consecutive_failures == 1
        assert states(db_sessions, notice_id) == {"c@example.jp": "bounced"}
        assert handler.applied == 1
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_postmaster_of_the_return_path_domain_is_accepted(
    db_sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 5321 4.5.1: mail to postmaster of a domain we receive for is accepted (and logged for
    the operators: the sender and the size, never the body); another domain's postmaster is not ours."""
    handler = BounceHandler(sessions=db_sessions, secret=SECRET, domain=DOMAIN, max_failures=3)
    port = free_port()
    server = await start_bounce_listener(handler, host="127.0.0.1", port=port)
    try:
        for postmaster in (f"postmaster@{DOMAIN}", f"Postmaster@{DOMAIN.upper()}"):
            errors, _ = await aiosmtplib.send(
                b"Subject: your mails\r\n\r\nPlease stop sending to our users.\r\n",
                sender="admin@receiver.example",
                recipients=[postmaster],
                hostname="127.0.0.1",
                port=port,
            )
            assert errors == {}
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await aiosmtplib.send(
                b"Subject: x\r\n\r\nx\r\n",
                sender="admin@receiver.example",
                recipients=["postmaster@other.example"],
                hostname="127.0.0.1",
                port=port,
            )
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
    logged = capsys.readouterr()
    assert "postmaster_mail_received" in logged.out + logged.err
    assert "Please stop sending" not in logged.out + logged.err
