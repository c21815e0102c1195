"""Call records off the call path: queued without a database round trip, written in batches by one
writer within 200 ms and on close, and a SIGKILLed daemon's open records closed by the next start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from core.call_records import CallFinish, CallStart
from core.db import make_engine, make_session_factory
from core.models import CallRecord
from ivr.flow.records import CallRecordWriter, attach_records_writer, default_node_id
from ivr.flow.store import SqlCallStore
from ivr.settings import AgiSettings
from tests.support import eventually, free_port, record

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(voice_db_url: str) -> Iterator[Engine]:
    engine = make_engine(voice_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def statements_on(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    return seen


def commits_on(engine: Engine) -> list[int]:
    seen: list[int] = []

    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        seen.append(1)

    return seen


def finished(call_id: str, outcome: str = "completed") -> CallFinish:
    return CallFinish(
        call_id=call_id,
        ended_at=NOW + timedelta(seconds=30),
        outcome=outcome,
        unit="line",
        target_number="0300001111",
        last_step="farewell",
        wrong_entries=0,
    )


def started(call_id: str, caller: str | None = None) -> CallStart:
    return CallStart(call_id=call_id, caller=caller, service_number=None, started_at=NOW)


def test_the_store_queues_records_without_a_database_round_trip(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    store = SqlCallStore(sessions)
    writer = attach_records_writer(store, AgiSettings(port=4999, node_id="test-node"))
    assert writer is not None and store.records is writer
    seen = statements_on(engine)
    store.start_call(call_id="c1", caller="0300001111", service_number="0363044747", started_at=NOW)
    store.finish_call(
        call_id="c1",
        ended_at=NOW + timedelta(seconds=30),
        outcome="completed",
        unit="line",
        target_number="0300001111",
        last_step="farewell",
        wrong_entries=0,
    )
    assert seen == []  # nothing touched the database on the caller's path
    writer.start(close_stale=False)
    try:
        assert writer.flush(5)
        written = record(sessions, "c1")
        assert written is not None and written.outcome == "completed" and written.node == "test-node"
    finally:
        assert writer.close()


def test_records_are_written_within_200_ms(sessions: sessionmaker[Session]) -> None:
    writer = CallRecordWriter(sessions, node="n")  # default flush interval
    writer.start(close_stale=False)
    try:
        for i in range(5):
            call_id = f"timed-{i}"
            queued = time.monotonic()
            writer.queue(started(call_id))
            eventually(lambda call_id=call_id: record(sessions, call_id) is not None, 5, interval=0.002)
            assert time.monotonic() - queued < 0.2
    finally:
        writer.close()


def test_close_writes_what_is_queued(sessions: sessionmaker[Session]) -> None:
    writer = CallRecordWriter(sessions, node="n", flush_seconds=3600)  # would linger for an hour
    writer.start(close_stale=False)
    writer.queue(started("late"))
    writer.queue(finished("late", "caller_hung_up"))
    assert writer.close(timeout=10)
    assert not writer.running
    written = record(sessions, "late")
    assert written is not None and written.outcome == "caller_hung_up"
    # after close a record is still written (at once, in the caller's thread), not lost
    writer.queue(started("after"))
    assert record(sessions, "after") is not None


def test_a_burst_of_500_records_is_one_transaction(engine: Engine, sessions: sessionmaker[Session]) -> None:
    writer = CallRecordWriter(sessions, node="n", flush_seconds=3600)
    writer.start(close_stale=False)
    commits = commits_on(engine)
    try:
        for i in range(250):
            writer.queue(started(f"b{i}", caller="0300001111"))
            writer.queue(finished(f"b{i}"))
        assert writer.flush(10)
        assert len(commits) == 1 and writer.batches == 1
        with sessions() as session:
            rows = session.scalars(select(CallRecord).where(CallRecord.call_id.like("b%"))).all()
        assert len(rows) == 250 and {r.outcome for r in rows} == {"completed"}
    finally:
        writer.close()


def test_a_failed_batch_is_kept_and_retried(sessions: sessionmaker[Session], voice_db_url: str) -> None:
    broken = make_session_factory(make_engine(voice_db_url.replace("voice.sqlite3", "missing/no.sqlite3")))
    writer = CallRecordWriter(broken, node="n", flush_seconds=0.01)
    writer.start(close_stale=False)
    writer.queue(started("kept"))
    eventually(lambda: writer.failures >= 1, interval=0.002)
    eventually(
        lambda: writer.pending == 1, interval=0.002
    )  # not dropped: back in the queue between two tries
    writer._sessions = sessions  # the database is back
    assert writer.flush(10)
    assert record(sessions, "kept") is not None
    writer.close()


def test_default_node_id() -> None:
    assert default_node_id(4573) == f"{socket.gethostname()}:4573"[:64]


# ------------------------------------------------------------------ a daemon killed mid-call

SECRET = "records-test-secret-0123456789abcdefghij"


def _environment(call_id: str) -> bytes:
    lines = [
        "agi_network: yes",
        "agi_network_script: temp-password",
        "agi_request: agi://127.0.0.1/temp-password",
        "agi_channel: PJSIP/caller-00000001",
        "agi_language: ja",
        "agi_type: PJSIP",
        f"agi_uniqueid: {call_id}",
        "agi_callerid: 0300001111",
        "agi_calleridname: unknown",
        "agi_dnid: 0363044747",
        "agi_extension: 0363044747",
    ]
    return ("\n".join(lines) + "\n\n").encode()


class Daemon:
    def __init__(self, url: str, port: int, data_dir: Path) -> None:
        self.port = port
        self.log = data_dir / f"daemon-{port}.log"
        self.env = {
            **os.environ,
            "IVR_DATABASE_URL": url,
            "IVR_DATA_DIR": str(data_dir),
            "IVR_LOG_FORMAT": "json",
            "IVR_AGI__SECRET": SECRET,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stack.cli.main", "serve", "--no-ami", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
            )

        def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        eventually(listening, 30, interval=0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)
        self.process = None


def _call_to_its_first_command(port: int, call_id: str) -> socket.socket:
    """Play Asterisk: send the environment, prove the secret, then leave the daemon waiting on its
    next command reply (mid-call). Closing the returned socket hangs up."""
    peer = socket.create_connection(("127.0.0.1", port), timeout=10)
    peer.sendall(_environment(call_id))
    with peer.makefile("rb") as reader:
        while True:
            command = reader.readline().decode().strip()
            assert command, "the daemon closed the call"
            if command.startswith("GET VARIABLE"):
                peer.sendall(f"200 result=1 ({SECRET})\n".encode())
                continue
            return peer  # the flow's first command (ANSWER or a prompt): leave it unanswered


def _call_until_the_record_is_written(
    port: int, call_id: str, sessions: sessionmaker[Session]
) -> socket.socket:
    """:func:`_call_to_its_first_command`, then wait until the call record is in the database."""
    peer = _call_to_its_first_command(port, call_id)
    eventually(lambda: record(sessions, call_id) is not None, 5, interval=0.002)
    return peer


@pytest.mark.timeout(120)
def test_a_killed_daemons_open_record_is_closed_by_the_next_start(
    voice_db_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    port = free_port()
    first = Daemon(voice_db_url, port, tmp_path)
    first.start()
    try:
        peer = _call_until_the_record_is_written(port, "1700000000.42", sessions)
        first.stop(signal.SIGKILL)
        peer.close()
    finally:
        first.stop()
    left = record(sessions, "1700000000.42")
    assert left is not None and left.outcome is None and left.ended_at is None
    assert left.node == default_node_id(port)
    # another node's open record must survive this node's restart
    with sessions() as session, session.begin():
        session.add(
            CallRecord(call_id="other-node-call", started_at=NOW, wrong_entries=0, node="elsewhere:4573")
        )

    second = Daemon(voice_db_url, port, tmp_path)
    before = datetime.now(UTC)
    second.start()
    try:

        def closed() -> bool:
            current = record(sessions, "1700000000.42")
            return current is not None and current.outcome is not None

        eventually(closed, 10, interval=0.002)
        done = record(sessions, "1700000000.42")
        assert done is not None and done.outcome == "system_error"
        assert done.ended_at is not None and done.ended_at >= before - timedelta(seconds=1)
        assert done.last_step == left.last_step
        other = record(sessions, "other-node-call")
        assert other is not None and other.outcome is None
    finally:
        second.stop()


@pytest.mark.timeout(120)
def test_sigterm_writes_the_queued_records(
    voice_db_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    port = free_port()
    daemon = Daemon(voice_db_url, port, tmp_path)
    daemon.env["IVR_AGI__CALL_RECORD_FLUSH_SECONDS"] = "3600"  # only the shutdown flush can write it
    daemon.start()
    try:
        peer = _call_to_its_first_command(port, "1700000000.77")
        peer.close()  # the caller hangs up mid-call: the flow finishes and queues its record
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(30) == 0
    finally:
        daemon.stop()
    written = record(sessions, "1700000000.77")
    assert written is not None and written.outcome is not None


def test_the_warm_up_before_listening_only_reads(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """`ivr serve` warms the store up before it listens, on the database the calls use: it reads
    and writes nothing."""
    statements = statements_on(engine)
    store = SqlCallStore(sessions)
    store.warm_up()
    assert statements
    assert not [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
