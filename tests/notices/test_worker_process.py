"""The delivery process as operators run it (`ivr notices serve`): killed with SIGKILL mid-run and
restarted it delivers every mail, duplicates only for mails in flight (counted at the SMTP server
by Message-ID, at most the window); two workers share one queue without sending anything twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from notices import queue
from notices.bulk import make_destinations

from .conftest import MailServer, wait_for
from .test_delivery import CATALOG, draft

WINDOW = 100


def many_destinations(sessions: sessionmaker[Session], count: int) -> None:
    with sessions() as session, session.begin():
        make_destinations(session, count=count, now=datetime.now(UTC))


def start_worker(db_url: str, tmp_path: Path, server: MailServer, worker_id: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        IVR_DATABASE_URL=db_url,
        IVR_DATA_DIR=str(tmp_path),
        IVR_NOTICES__SMTP_HOST=server.host,
        IVR_NOTICES__SMTP_PORT=str(server.port),
        IVR_NOTICES__SMTP_CONNECTIONS="8",
        IVR_NOTICES__WINDOW=str(WINDOW),
        IVR_NOTICES__CLAIM_BATCH="50",
        IVR_NOTICES__POLL_SECONDS="0.05",
    )
    command = ["notices", "serve", "--no-web", "--no-bounces", "--worker-id", worker_id]
    with open(tmp_path / f"{worker_id}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stack.cli.main", *command], env=env, stdout=log, stderr=subprocess.STDOUT
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def counts(sessions: sessionmaker[Session], notice_id: int) -> dict[str, int]:
    with sessions() as session:
        return queue.delivery_counts(session, notice_id=notice_id)


def test_sigkill_mid_run_and_restart_delivers_every_mail_with_duplicates_only_in_flight(
    db_url: str,
    db_sessions: sessionmaker[Session],
    mail_server: MailServer,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    total = 1500
    mail_server.data_delay = 0.01  # ~800 mails/s over 8 sessions: the kill lands mid-run
    many_destinations(db_sessions, total)
    with db_sessions() as session, session.begin():
        notice_id = queue.post_notice(
            session, draft(), posted_by="t", now=datetime.now(UTC), catalog=CATALOG
        ).id
    first = start_worker(db_url, tmp_path, mail_server, "w1")
    processes.append(first)
    wait_for(lambda: mail_server.count() >= 400, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = mail_server.count()
    assert at_kill < total, "the run finished before the kill"
    restarted = start_worker(db_url, tmp_path, mail_server, "w1")  # same id: takes back its rows at once
    processes.append(restarted)
    wait_for(lambda: counts(db_sessions, notice_id) == {"sent": total}, timeout=90)
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(20) == 0
    ids = mail_server.message_ids()
    assert len(ids) == total  # every mail arrived
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= WINDOW  # only what was in flight at the kill
    assert max(ids.values()) <= 2
    print(f"killed after {at_kill} mails; {duplicates} duplicate(s) (bound {WINDOW})")
    logs = (tmp_path / "w1.log").read_text()
    assert "notice_worker_started" in logs and "ひかり電話がご利用しづらい状況が発生" not in logs  # no body


@pytest.mark.postgres
def test_two_workers_share_one_postgresql_queue_without_duplicates(
    postgres_url: str, mail_server: MailServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    from core.db import make_engine, make_session_factory

    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    total = 1200
    many_destinations(sessions, total)
    with sessions() as session, session.begin():
        notice_id = queue.post_notice(
            session, draft(), posted_by="t", now=datetime.now(UTC), catalog=CATALOG
        ).id
    processes.append(start_worker(postgres_url, tmp_path, mail_server, "a"))
    processes.append(start_worker(postgres_url, tmp_path, mail_server, "b"))
    wait_for(lambda: counts(sessions, notice_id) == {"sent": total}, timeout=90)
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    ids = mail_server.message_ids()
    assert len(ids) == total and max(ids.values()) == 1
    from sqlalchemy import func, select

    from core.notice_models import NoticeDelivery

    with sessions() as session:
        by_worker = dict(
            session.execute(select(NoticeDelivery.worker, func.count()).group_by(NoticeDelivery.worker)).all()
        )
    assert set(by_worker) == {"a", "b"}  # both took part
    engine.dispose()
