"""Our own relay's outage is never the customers' fault (issue 20, item 1): a real SMTP server
(aiosmtpd on loopback) that refuses connections for a while, and then one that refuses MAIL FROM;
the worker pauses, backs off, resumes where it stopped; no destination counts a failure, and the
give-up clock of a mail waiting on a full mailbox does not run through the outage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.notice_models import NoticeDelivery, NoticeRelayOutage
from notices import queue
from notices.settings import NoticeSettings
from notices.worker import DeliveryWorker
from tests.support import free_port

from .conftest import TOKYO_FRIDAY_1030, Customer, MailServer, async_wait_for, wait_for
from .test_delivery import CATALOG, Running, destination, draft, post, states


def relay_up(worker: DeliveryWorker) -> float | None:
    return worker.metrics.registry.get_sample_value("ivr_notices_relay_up")


def outages(sessions: sessionmaker[Session]) -> list[NoticeRelayOutage]:
    with sessions() as session:
        return list(session.scalars(select(NoticeRelayOutage).order_by(NoticeRelayOutage.id)))


async def test_a_relay_outage_spanning_three_notices_stops_no_destination(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    # give-up shortened to an hour; the relay is away for two hours of the worker's clock
    settings = notice_settings.model_copy(update={"relay_backoff_seconds": [0.05, 0.1]})
    _, (ok,) = customer("ok@example.jp", ["ok@example.jp"])
    _, (full,) = customer("full@example.jp", ["full-box@example.jp"])
    clock = [TOKYO_FRIDAY_1030]
    worker = DeliveryWorker(sessions=db_sessions, settings=settings, worker_id="w1", clock=lambda: clock[0])
    async with Running(worker):
        first = post(db_sessions, draft(title="工事 0"), now=clock[0])
        await async_wait_for(
            lambda: states(db_sessions, first) == {"ok@example.jp": "sent", "full-box@example.jp": "queued"}
        )
        assert relay_up(worker) == 1.0

        mail_server.go_away()  # connections refused from now on
        later = [post(db_sessions, draft(title=f"工事 {n}"), now=clock[0]) for n in (1, 2, 3)]
        await async_wait_for(lambda: relay_up(worker) == 0.0 and len(outages(db_sessions)) == 1)
        clock[0] += timedelta(hours=2)  # past the give-up of every waiting mail
        await async_wait_for(lambda: outages(db_sessions)[0].checked_at == clock[0])  # a failed probe
        for notice_id in later:
            assert set(states(db_sessions, notice_id).values()) == {"queued"}
        assert destination(db_sessions, ok).consecutive_failures == 0

        mail_server.listen()  # the relay is back
        await async_wait_for(
            lambda: all(states(db_sessions, n)["ok@example.jp"] == "sent" for n in later), within=20
        )
        # the full mailbox answered 452 again: retried, not given up (the outage's two hours do not
        # count); the later notices wait behind it (posting order)
        await async_wait_for(lambda: len(mail_server.refused) >= 2)
        assert relay_up(worker) == 1.0
    for notice_id in [first, *later]:
        assert states(db_sessions, notice_id)["full-box@example.jp"] == "queued"
    for dest_id in (ok, full):
        found = destination(db_sessions, dest_id)
        assert (found.state, found.consecutive_failures) == ("delivering", 0)
    (outage,) = outages(db_sessions)
    assert outage.ended_at == clock[0] and outage.started_at == TOKYO_FRIDAY_1030
    assert "ConnectionRefusedError" in outage.reason or "SMTPConnectError" in outage.reason
    with db_sessions() as session:
        attempts = dict(
            session.execute(
                select(NoticeDelivery.notice_id, NoticeDelivery.attempts).where(
                    NoticeDelivery.destination_id == ok
                )
            ).all()
        )
    assert all(attempts[n] == 1 for n in later)  # the refused connections were no attempts
    assert mail_server.message_ids().most_common(1)[0][1] == 1  # nothing twice


class RefusingSender(MailServer):
    """Our relay when it has a problem of its own: 451 to every MAIL FROM while ``refuse`` is set."""

    refuse = True

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any
    ) -> str:
        if self.refuse:
            return "451 4.3.0 Temporary local problem"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"


async def test_a_relay_refusing_mail_from_pauses_the_queue_and_blames_no_one(
    db_sessions: sessionmaker[Session], customer: Customer, notice_settings: NoticeSettings
) -> None:
    # (not the mail_server fixture's server: a relay of its own, on its own port)
    relay = RefusingSender("127.0.0.1", free_port())
    settings = notice_settings.model_copy(
        update={
            "smtp_port": relay.port,
            "relay_backoff_seconds": [0.05, 0.1],
            "max_failures": 1,
            "give_up_after_seconds": 0,
        }
    )
    ids = [customer(f"c{n}@example.jp", [f"c{n}@example.jp"])[1][0] for n in range(3)]
    relay.listen()
    try:
        worker = DeliveryWorker(sessions=db_sessions, settings=settings, worker_id="w1")
        async with Running(worker):
            notice_id = post(db_sessions, draft())
            await async_wait_for(lambda: relay_up(worker) == 0.0)
            await async_wait_for(lambda: outages(db_sessions) and outages(db_sessions)[0].reason != "")
            # even with give-up at 0 s and one failure stopping a destination, nothing failed
            assert set(states(db_sessions, notice_id).values()) <= {"queued", "sending"}
            relay.refuse = False
            await async_wait_for(lambda: set(states(db_sessions, notice_id).values()) == {"sent"})
            assert relay_up(worker) == 1.0
    finally:
        relay.go_away()
    assert outages(db_sessions)[0].reason.startswith("SMTPSenderRefused 451")
    for dest_id in ids:
        assert destination(db_sessions, dest_id).state == "delivering"
    assert len(relay.message_ids()) == 3


def test_ivr_notices_serve_exports_the_relay_down_and_up_again(
    db_url: str,
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    tmp_path: Path,
) -> None:
    """As operators run it: `ivr notices serve`, Prometheus scraping /metrics with its token; the
    log shows the SMTP reply of a refused recipient (not masked as a secret)."""
    customer("c@example.jp", ["c@example.jp"])
    customer("reject-me@example.jp", ["reject-me@example.jp"])
    web_port, token = free_port(), "metrics-test-token-0123456789"
    env = dict(
        os.environ,
        IVR_DATABASE_URL=db_url,
        IVR_DATA_DIR=str(tmp_path),
        IVR_NOTICES__SMTP_HOST=mail_server.host,
        IVR_NOTICES__SMTP_PORT=str(mail_server.port),
        IVR_NOTICES__POLL_SECONDS="0.05",
        IVR_NOTICES__RELAY_BACKOFF_SECONDS="[0.1, 0.2]",
        IVR_NOTICES__WEB_PORT=str(web_port),
        IVR_NOTICES__METRICS_TOKEN=token,
    )
    mail_server.go_away()
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stack.cli.main", "notices", "serve", "--no-bounces", "--worker-id", "w1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def relay_up() -> str | None:
            try:
                page = httpx.get(
                    f"http://127.0.0.1:{web_port}/metrics",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=2,
                )
            except httpx.TransportError:
                return None
            found = re.search(r"^ivr_notices_relay_up (\S+)$", page.text, re.MULTILINE)
            return found.group(1) if found else None

        wait_for(lambda: relay_up() == "1.0")
        assert httpx.get(f"http://127.0.0.1:{web_port}/metrics").status_code == 401
        with db_sessions() as session, session.begin():
            notice_id = queue.post_notice(
                session, draft(), posted_by="t", now=datetime.now(UTC), catalog=CATALOG
            ).id
        wait_for(lambda: relay_up() == "0.0")
        mail_server.listen()
        wait_for(lambda: relay_up() == "1.0")
        wait_for(
            lambda: (
                states(db_sessions, notice_id) == {"c@example.jp": "sent", "reject-me@example.jp": "failed"}
            )
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    logs = (tmp_path / "serve.log").read_text()
    assert "notice_relay_down" in logs and "notice_relay_up" in logs
    (line,) = [x for x in logs.splitlines() if "notice_mail_not_delivered" in x]
    assert re.search(r"smtp_reply\W+550\b", line) and "***" not in line, line
