"""A connection flood on the FastAGI port, as the security round sent it: from a second loopback
address outside the allow-list, thousands of connections a second, while real calls go on; and an
allowed peer over its accept budget."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker

from ivr.daemon.server import AcceptBudget, FastAgiServer
from ivr.flow.store import SqlCallStore
from ivr.settings import AgiSettings, MenuSettings
from tests.ivr.test_fastagi import PASSWORD, PAUSE, SECRET, FakeAsterisk, environment, wait_for_record

FLOODER = r"""
import socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
done, deadline = 0, time.monotonic() + seconds
while done < count and time.monotonic() < deadline:
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"agi_network: yes\n")
    except OSError:
        pass
    finally:
        s.close()
    done += 1
print(done)
"""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_a_flood_from_outside_the_allow_list_costs_the_calls_nothing(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_sessions: sessionmaker[Session]
) -> None:
    agi = AgiSettings(host="127.0.0.1", port=0, reject_log_interval_seconds=10)
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    rss_before = rss_kib()
    try:
        with structlog.testing.capture_logs() as logs:
            flood = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FLOODER, str(srv.port), "20000", "8",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            started = time.monotonic()
            calls = 0
            while flood.returncode is None and time.monotonic() - started < 8:
                # a real call from our Asterisk, during the flood: it completes
                asterisk = FakeAsterisk(keys=["1", *PASSWORD, PAUSE, *PASSWORD, PAUSE])
                await asterisk.call(srv.port, environment(uniqueid=f"flooded.{calls}"))
                rec = await wait_for_record(voice_sessions, f"flooded.{calls}")
                assert rec.outcome == "completed"
                calls += 1
                peak_tasks = len(srv._tasks)
                assert peak_tasks <= 2  # a refused connection gets no task
            out, _ = await flood.communicate()
        flooded = int(out)
        assert calls >= 3 and flooded >= 1000, (calls, flooded)
        refused = srv.rejected["peer_not_allowed"]
        assert refused >= flooded * 0.9  # all of it, but for connections still in the backlog
        lines = [e for e in logs if e["event"] == "agi_connection_rejected"]
        assert 1 <= len(lines) <= 2  # one line per 10 s interval, not one per connection
        assert lines[0]["reason"] == "peer_not_allowed" and "127.0.0.2" in lines[0]["peer"]
        # memory comes back: nothing of the refused connections is kept
        assert rss_kib() - rss_before < 20 * 1024
    finally:
        await srv.stop(grace_seconds=0.5)


async def test_an_allowed_peer_beyond_its_accept_budget_is_closed_at_once(
    call_store: SqlCallStore, menu_settings: MenuSettings
) -> None:
    agi = AgiSettings(host="127.0.0.1", port=0, accept_burst=20, accept_per_second=1)
    srv = FastAgiServer(agi, menu_settings, call_store, secret=SECRET)
    await srv.start()
    try:
        answered, reset = [], 0
        for _ in range(50):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                writer.write(environment())
                answered.append((reader, writer, await asyncio.wait_for(reader.readline(), timeout=2)))
            except ConnectionResetError:  # closed at accept, with a reset: nothing was asked
                reset += 1
        # the first 20 are asked for the secret; the 30 beyond the burst are reset before anything
        assert [line.startswith(b"GET VARIABLE") for _r, _w, line in answered] == [True] * 20
        assert reset == 30
        assert srv.rejected["peer_over_accept_budget"] == 30
        for _reader, writer, _line in answered:
            writer.close()
    finally:
        await srv.stop(grace_seconds=0.5)


def test_the_accept_budget_refills_at_its_rate() -> None:
    now = [0.0]
    budget = AcceptBudget(per_second=60, burst=300, clock=lambda: now[0])
    assert all(budget.take("127.0.0.1") for _ in range(300))  # Asterisk reconnecting: 300 at once
    assert not budget.take("127.0.0.1")
    assert budget.take("127.0.0.9")  # another peer has its own budget
    now[0] = 1.0
    assert sum(budget.take("127.0.0.1") for _ in range(100)) == 60
    now[0] = 1000.0
    assert sum(budget.take("127.0.0.1") for _ in range(400)) == 300  # never more than the burst


def test_no_blocking_subprocess_left() -> None:
    # the flooder is a plain Python script: a syntax error in it would pass the flood test vacuously
    subprocess.run([sys.executable, "-c", "import ast,sys; ast.parse(sys.argv[1])", FLOODER], check=True)
