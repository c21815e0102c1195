"""The phone line never waits for the web: a login flood on `ivr web` while SIPp callers set passwords.

The flood is what an attacker without an account does: 40 connections posting wrong logins for
numbers that exist nowhere (each still costs a dummy argon2 check, so the web is as busy as it can
be). The web process runs with the hash guard set to raise (``IVR_HASH_GUARD=raise``): a password
hash or check inside an open write transaction would fail the request with a 500. The daemon logs
how long each password save waited for the database (``store_ms``, the hash excluded); on the old
code, where the web held SQLite's write lock across each hash, saves waited up to 18.6 s.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.secrets import verify_secret
from ivr.sipp import Caller, ExpectHangup, SendDigits, Wait, run_calls
from tests.e2e.test_voice_menu import credential
from tests.fixtures.voice import CONCURRENT_LINES, PASSWORDS_USED, VoiceDaemon
from tests.fixtures.web import ivr_web

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

FLOOD_CONNECTIONS = 40
CALLS = 6
PASSWORD = "62831853"
PASSWORDS_USED.add(PASSWORD)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SAVE_WAIT_LIMIT_MS = 1000  # generous for a loaded CI machine; the old code waited up to 18,600


WEB_ENV = {
    "IVR_HASH_GUARD": "raise",  # a hash inside a write transaction fails the request
    "IVR_WEB__LOGIN_FAILURES_PER_CLIENT": "100000000",  # the flood is not throttled away
}


class Flood:
    """Wrong logins from `FLOOD_CONNECTIONS` connections until stopped, in a thread of its own."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _worker(self, index: int) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    page = await client.get("/login")
                    token = _CSRF.search(page.text)
                    data = {"number": f"0399{index:02d}{n % 10000:04d}", "password": "wrong-guess-1"}
                    if token:
                        data["csrf_token"] = token.group(1)
                    response = await client.post("/login", data=data)
                    self.statuses[response.status_code] += 1
                except httpx.HTTPError:
                    self.errors += 1

    async def _run(self) -> None:
        await asyncio.gather(*(self._worker(i) for i in range(FLOOD_CONNECTIONS)))

    def __enter__(self) -> Flood:
        self._thread.start()
        deadline = time.monotonic() + 30
        while sum(self.statuses.values()) < FLOOD_CONNECTIONS:  # the flood is on
            assert time.monotonic() < deadline, "the flood never got going"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def type_ahead(caller_id: str) -> Caller:
    return Caller(
        caller_id,
        steps=[
            Wait(1.5),
            SendDigits("1", tone=0.06, gap=0.06),
            Wait(1.5),
            SendDigits(PASSWORD, tone=0.06, gap=0.06),
            Wait(1.5),
            SendDigits(PASSWORD, tone=0.06, gap=0.06),
            ExpectHangup(within=60),
        ],
        dtmf_mode="info",
    )


@pytest.fixture
def flood_leaves_no_throttle(e2e_sessions: sessionmaker[Session]) -> Iterator[None]:
    """The flood's thousands of failed logins from 127.0.0.1 are counted in the shared e2e database
    (the per-client throttle): forget them afterwards, or later web tests on it would get 429."""
    yield
    from sqlalchemy import delete

    from core.web_models import RateCounter

    with e2e_sessions() as session, session.begin():
        session.execute(delete(RateCounter))


@pytest.mark.usefixtures("flood_leaves_no_throttle")
def test_calls_complete_while_the_web_login_is_flooded(
    voice_daemon: VoiceDaemon, e2e_database: str, e2e_sessions: sessionmaker[Session], lab: Any
) -> None:
    lines = CONCURRENT_LINES[:CALLS]
    before = {n: credential(e2e_sessions, n) for n in lines}
    offset = voice_daemon.log_offset()
    with ivr_web(e2e_database, env=WEB_ENV) as base, Flood(base) as flood:
        results = run_calls([type_ahead(n) for n in lines])
        during = sum(flood.statuses.values())
    assert all(r.error is None and r.answered for r in results), [r.error for r in results]
    assert during > 2 * FLOOD_CONNECTIONS  # the web was busy with logins all along
    assert not [s for s in flood.statuses if s >= 500], flood.statuses  # no hash inside a write lock
    for number in lines:
        after = credential(e2e_sessions, number)
        assert after is not None and after != before[number]
        assert verify_secret(after[0], PASSWORD)
    events = voice_daemon.events_once(
        offset, lambda found: sum(e.get("event") == "call_finished" for e in found) >= CALLS
    )
    stored = [e for e in events if e.get("event") == "temporary_password_stored"]
    assert len(stored) == CALLS
    assert max(e["store_ms"] for e in stored) < SAVE_WAIT_LIMIT_MS, stored
    finished = [e for e in events if e.get("event") == "call_finished"]
    assert [e["outcome"] for e in finished] == ["completed"] * CALLS
