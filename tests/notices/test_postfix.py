"""Through a real MTA: the worker hands the mails to a private postfix on loopback, which relays
them to the SMTP server (aiosmtpd) and returns RFC 3464 DSNs to our bounce listener: three bounced
deliveries stop a destination, 配信再開 restarts it, a mailbox full until postfix gives up counts,
a success report resets the count."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.notice_models import NoticeDestination
from notices import queue
from notices.service import run_service
from notices.settings import NoticeSettings
from stack.settings import Settings
from tests.support import free_port

from . import postfix
from .conftest import Customer, MailServer, async_wait_for
from .test_delivery import destination, draft, post, states

pytestmark = pytest.mark.skipif(postfix.usable() is not None, reason=postfix.usable() or "")


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url  # the queue runs on both backends elsewhere; here the mail path is under test


@pytest.fixture
def mta(mail_server: MailServer, notice_settings: NoticeSettings) -> Iterator[postfix.Postfix]:
    instance = postfix.start_postfix(
        port=free_port(),
        relay_port=mail_server.port,
        bounce_domain=notice_settings.return_path_domain,
        bounce_port=notice_settings.bounce_port,
    )
    try:
        yield instance
    finally:
        postfix.stop_postfix(instance)


async def test_dsns_through_postfix_stop_after_three_and_resume_restarts(
    db_url: str,
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
    mta: postfix.Postfix,
) -> None:
    _, (good, bad) = customer("hanako@example.jp", ["hanako@example.jp", "reject-me@example.jp"])
    _, (full,) = customer("full@example.jp", ["full-box@example.jp"])
    with db_sessions() as session, session.begin():
        row = session.get(NoticeDestination, good)
        assert row is not None
        row.consecutive_failures = 2  # a success report resets it
    notices = notice_settings.model_copy(update={"smtp_port": mta.port, "acceptance_is_delivery": False})
    settings = Settings(database_url=db_url, notices=notices)
    stop = asyncio.Event()
    service = asyncio.create_task(run_service(settings, db_sessions, web=False, stop=stop))
    try:
        ids = [post(db_sessions, draft(title=f"工事 {n}")) for n in range(3)]
        # postfix accepts everything: the mails are "sent"; the failures come back as DSNs
        await async_wait_for(lambda: destination(db_sessions, bad).state == "stopped", within=30)
        assert destination(db_sessions, bad).consecutive_failures == 3
        await async_wait_for(lambda: destination(db_sessions, good).consecutive_failures == 0, within=30)
        assert len(mail_server.to("hanako@example.jp")) == 3
        # 452 at every try until postfix's queue lifetime ends: a DSN with 4.2.2, counted once per mail
        await async_wait_for(lambda: destination(db_sessions, full).state == "stopped", within=40)
        for notice_id in ids:
            assert states(db_sessions, notice_id) == {
                "hanako@example.jp": "sent",
                "reject-me@example.jp": "bounced",
                "full-box@example.jp": "bounced",
            }
        with db_sessions() as session:
            from sqlalchemy import select

            from core.notice_models import NoticeDelivery

            statuses = set(
                session.scalars(select(NoticeDelivery.last_status).where(NoticeDelivery.state == "bounced"))
            )
        assert statuses == {"5.1.1", "4.2.2"}

        with db_sessions() as session, session.begin():
            assert queue.resume_destination(session, destination_id=bad)
        fourth = post(db_sessions, draft(title="工事 4"))
        await async_wait_for(
            lambda: states(db_sessions, fourth).get("reject-me@example.jp") == "bounced", within=30
        )
        assert (destination(db_sessions, bad).state, destination(db_sessions, bad).consecutive_failures) == (
            "delivering",
            1,
        )
        assert "full-box@example.jp" not in states(db_sessions, fourth)  # still stopped: not queued
    finally:
        stop.set()
        await asyncio.wait_for(service, 20)
