"""The daemon's operations port: /metrics (the issue's metrics, no phone number in any label),
/healthz, and /readyz (database reachable, schema current, not stopping)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from core.db import make_engine
from tests.fixtures.web import free_port
from tests.ivr.test_records import SECRET, Daemon, _environment
from tests.ops import agi_peer
from tests.support import eventually

pytestmark = pytest.mark.timeout(90)


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = httpx.get(f"{base}/metrics", timeout=5).text
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


class MeteredDaemon(Daemon):
    """`ivr serve` with its operations port on ``metrics_port``."""

    def __init__(self, url: str, port: int, data_dir: Path) -> None:
        super().__init__(url, port, data_dir)
        self.metrics_port = free_port()
        self.env["IVR_AGI__METRICS_PORT"] = str(self.metrics_port)


@pytest.fixture
def daemon(voice_db_url: str, tmp_path: Path) -> Iterator[MeteredDaemon]:
    the_daemon = MeteredDaemon(voice_db_url, free_port(), tmp_path)
    the_daemon.env["IVR_AGI__SHUTDOWN_GRACE_SECONDS"] = "30"
    the_daemon.env["IVR_MENU__FIRST_DIGIT_TIMEOUT_SECONDS"] = "0.5"
    the_daemon.env["IVR_MENU__INTER_DIGIT_TIMEOUT_SECONDS"] = "0.5"
    the_daemon.start()
    yield the_daemon
    the_daemon.stop()


def test_calls_steps_agi_commands_and_rejections_are_counted_without_numbers(daemon: MeteredDaemon) -> None:
    base = f"http://127.0.0.1:{daemon.metrics_port}"
    assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz", timeout=5).json() == {"status": "ready"}
    before = samples(base)
    assert value(before, "ivr_calls_total", outcome="system_error") == 0  # every outcome from 0
    assert value(before, "ivr_daemon_ready") == 1

    # one caller types a unit that does not exist (9), twice a wrong one, then hangs up
    commands = agi_peer.call(daemon.port, "1700000001.1", ["9", "8"])
    assert any(c.startswith("GET DATA") for c in commands), commands
    # one peer with the wrong secret
    agi_peer.call(daemon.port, "1700000001.2", [], secret="not-the-secret-0123456789abcdefghijkl")

    def counted() -> bool:
        return value(samples(base), "ivr_calls_total", outcome="caller_hung_up") == 1

    eventually(counted, 10, interval=0.05)
    after = samples(base)
    assert value(after, "ivr_wrong_entries_total", step="unit") == 2
    assert value(after, "ivr_step_duration_seconds_count", step="unit") == 2
    assert value(after, "ivr_agi_command_seconds_count", command="ANSWER") == 1
    assert value(after, "ivr_agi_command_seconds_count", command="GET DATA") >= 2
    assert value(after, "ivr_agi_connections_rejected_total", reason="secret_mismatch") == 1
    assert value(after, "ivr_calls_in_progress") == 0
    assert value(after, "ivr_call_duration_seconds_count") == 1
    assert value(after, "ivr_ami_connected") == 0  # --no-ami
    assert ("ivr_password_hash_queue", ()) in after and ("ivr_database_errors_total", ()) in after

    body = httpx.get(f"{base}/metrics", timeout=5).text
    assert "0300001111" not in body and "0363044747" not in body and "1700000001" not in body
    assert SECRET not in body and "@" not in body
    assert httpx.get(f"{base}/nothing", timeout=5).status_code == 404


def test_readyz_follows_the_schema_and_says_stopping_during_the_grace_period(
    daemon: MeteredDaemon, voice_db_url: str
) -> None:
    base = f"http://127.0.0.1:{daemon.metrics_port}"
    engine = make_engine(voice_db_url)
    with engine.begin() as connection:
        (revision,) = connection.execute(text("SELECT version_num FROM alembic_version")).one()
        connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    try:
        answer = httpx.get(f"{base}/readyz", timeout=5)
        assert answer.status_code == 503
        assert answer.json() == {"status": "not_ready", "reason": "schema_not_current"}
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # alive all the same
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
        engine.dispose()
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

    # a call in progress keeps the daemon up through its grace period: not ready meanwhile
    peer = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    reader = peer.makefile("rb")
    peer.sendall(_environment("1700000001.3"))
    assert reader.readline().startswith(b"GET VARIABLE")
    peer.sendall(f"200 result=1 ({SECRET})\n".encode())
    assert reader.readline().strip() == b"ANSWER"
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)

    def stopping() -> bool:
        answer = httpx.get(f"{base}/readyz", timeout=5)
        return answer.status_code == 503 and answer.json()["reason"] == "stopping"

    eventually(stopping, 10, interval=0.05)
    assert value(samples(base), "ivr_daemon_ready") == 0
    assert value(samples(base), "ivr_calls_in_progress") == 1
    reader.close()
    peer.close()  # the caller hangs up: the daemon ends at once, and its port with it
    assert daemon.process.wait(20) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=2)


def test_a_database_it_cannot_reach_is_unreachable_not_unmigrated(tmp_path: Path) -> None:
    from core.db import database_readiness

    unreachable = make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'ivr.sqlite3'}")
    assert database_readiness(unreachable) == "database_unreachable"
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert database_readiness(empty) == "schema_not_current"


def test_a_metrics_port_in_use_is_a_clear_error_at_start(voice_db_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        daemon = Daemon(voice_db_url, free_port(), tmp_path)
        daemon.env["IVR_AGI__METRICS_PORT"] = str(taken.getsockname()[1])
        process = subprocess.Popen(
            [sys.executable, "-m", "stack.cli.main", "serve", "--no-ami", "--port", str(daemon.port)],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert b'"fastagi_cannot_listen"' in output and b'"what": "metrics"' in output


def test_idle_connections_on_the_ops_port_do_not_keep_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The security round held 600 idle connections open: 607 threads, forever. Now each idle one
    ends after the idle time, and no more than MAX_CONNECTIONS are served at once."""
    import socket
    import threading

    from prometheus_client import CollectorRegistry

    from ivr.daemon import health

    monkeypatch.setattr(health._QuietHandler, "timeout", 3.0)
    ops = health.OpsServer(
        "127.0.0.1",
        free_port(),
        health.ops_app(CollectorRegistry(), alive=lambda: True, readiness=lambda: None),
    )
    ops.start()
    base = f"http://127.0.0.1:{ops.port}"
    try:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        eventually(lambda: threading.active_count() <= 2 or None, 5, what="the first request's thread ending")
        threads_before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", ops.port)) for _ in range(200)]
        eventually(
            lambda: threading.active_count() >= threads_before + 10 or None,
            5,
            what="threads for the idle ones",
        )
        assert threading.active_count() <= threads_before + health.MAX_CONNECTIONS
        # idle past the idle time: every thread ends, and the port serves again
        eventually(lambda: threading.active_count() <= threads_before or None, 10, what="idle threads ending")
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        for sock in idle:
            sock.close()
    finally:
        ops.stop()
