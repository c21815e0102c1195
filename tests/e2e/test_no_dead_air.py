"""No dead air through the real Asterisk: a save held up by a locked database is heard as the
progress sound (music on hold: 「ただいま設定しています…」, then a soft tone), and the completion
prompt follows its end; past the limit the caller hears the apology and nothing is stored.

The database is locked the way a busy one is: another connection holds SQLite's write lock
(``BEGIN IMMEDIATE``), so the daemon's save waits in SQLite's busy handler until it is let go.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ivr.sipp import run_call
from tests.e2e.test_voice_menu import assert_set, completion, credential, type_ahead_caller
from tests.fixtures.voice import E2E_FIRST_DIGIT_TIMEOUT, E2E_INTER_DIGIT_TIMEOUT, PASSWORDS_USED, VoiceDaemon
from tests.support import eventually, finished

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

MAX_WAIT = 4.0
SLOW = "52830617"
TOO_SLOW = "61728394"
PASSWORDS_USED.update({SLOW, TOO_SLOW})
_MOH = re.compile(r"(Started music on hold, class '(?P<cls>[^']+)'|Stopped music on hold)")


@pytest.fixture(scope="module")
def waiting_daemon(
    lab: Any, e2e_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoiceDaemon]:
    daemon = VoiceDaemon(
        e2e_database,
        tmp_path_factory.mktemp("waits") / "daemon.log",
        {
            "IVR_AGI__PORT": str(lab.settings.agi.port),
            "IVR_MENU__FIRST_DIGIT_TIMEOUT_SECONDS": str(E2E_FIRST_DIGIT_TIMEOUT),
            "IVR_MENU__INTER_DIGIT_TIMEOUT_SECONDS": str(E2E_INTER_DIGIT_TIMEOUT),
            "IVR_MENU__MAX_WAIT_SECONDS": str(MAX_WAIT),
        },
    )
    daemon.start()
    yield daemon
    daemon.stop()


class WriteLock:
    """SQLite's write lock held by another connection until `release` (or `close`)."""

    def __init__(self, database_url: str) -> None:
        path = Path(database_url.removeprefix("sqlite:///"))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("BEGIN IMMEDIATE")
        self.released = threading.Event()

    def release(self) -> None:
        if not self.released.is_set():
            self._db.execute("ROLLBACK")
            self._db.close()
            self.released.set()


def events_named(daemon: VoiceDaemon, offset: int, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events(offset) if e.get("event") == name]


def sounds_after_confirmation(lab: Any, since: int) -> list[str]:
    """What the caller heard from the confirmation on, in order: music on hold and prompts."""
    heard = []
    for line in lab.messages(since).splitlines():
        moh = _MOH.search(line)
        if moh:
            heard.append(f"moh:{moh.group('cls')}" if moh.group("cls") else "moh-stop")
        played = re.search(r"Playing '([^']+?)(?:\.(?:wav|slin|gsm|ulaw|alaw))?'", line)
        if played:
            heard.append(played.group(1))
    return heard[heard.index("ivr/confirm-password") + 1 :] if "ivr/confirm-password" in heard else heard


def test_a_save_held_up_by_the_database_plays_the_progress_sound_then_completes(
    waiting_daemon: VoiceDaemon, lab: Any, e2e_database: str, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0300001111")
    offset, asterisk_offset = waiting_daemon.log_offset(), lab.log_offset()
    lock = WriteLock(e2e_database)

    def release_once_heard() -> None:
        eventually(
            lambda: events_named(waiting_daemon, offset, "progress_sound_started") or None,
            30,
            interval=0.05,
            what="the progress sound",
        )
        lock.release()

    releaser = threading.Thread(target=release_once_heard, daemon=True)
    releaser.start()
    try:
        result = run_call(type_ahead_caller("0300001111", "1", SLOW, SLOW, dtmf_mode="rfc4733"))
    finally:
        releaser.join(35)
        lock.release()
    assert result.error is None, result.error
    started = events_named(waiting_daemon, offset, "progress_sound_started")
    assert [(e["step"], e["sound"]) for e in started] == [("save", "ivr-saving")]
    heard = sounds_after_confirmation(lab, asterisk_offset)
    # the progress sound, stopped, then the completion prompt: nothing in between
    assert heard[:2] == ["moh:ivr-saving", "moh-stop"], heard
    assert [h.removeprefix("ivr/") for h in heard[2:]] == completion("0300001111"), heard
    assert_set(e2e_sessions, "0300001111", SLOW, before)
    call_id = started[0]["call_id"]
    record = eventually(lambda: finished(e2e_sessions, call_id), 10, what="the call record")
    assert record.outcome == "completed"


def test_a_save_past_the_limit_is_an_apology_and_stores_nothing(
    waiting_daemon: VoiceDaemon, lab: Any, e2e_database: str, e2e_sessions: sessionmaker[Session]
) -> None:
    before = credential(e2e_sessions, "0300001111")
    offset, asterisk_offset = waiting_daemon.log_offset(), lab.log_offset()
    lock = WriteLock(e2e_database)
    try:
        result = run_call(type_ahead_caller("0300001111", "1", TOO_SLOW, TOO_SLOW, dtmf_mode="rfc4733"))
        assert result.error is None, result.error
        too_long = events_named(waiting_daemon, offset, "wait_too_long")
        assert [e["step"] for e in too_long] == ["save"]
        heard = sounds_after_confirmation(lab, asterisk_offset)
        assert heard == ["moh:ivr-saving", "moh-stop", "ivr/system-error"], heard
    finally:
        lock.release()
    # the save, let go by the database, rolls back: the password was never stored
    eventually(
        lambda: events_named(waiting_daemon, offset, "temporary_password_abandoned") or None,
        35,
        what="the abandoned save's end",
    )
    assert credential(e2e_sessions, "0300001111") == before
    call_id = too_long[0]["call_id"]
    record = eventually(lambda: finished(e2e_sessions, call_id), 10, what="the call record")
    assert (record.outcome, record.last_step) == ("system_error", "save")
