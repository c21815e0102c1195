"""No dead air: the progress sound while the daemon waits, and the bound on the wait.

The scripted channel records the progress sound's start and stop (``EXEC StartMusicOnHold`` /
``StopMusicOnHold``); stores gated by events stand for a slow database or a burst of hashes.
A caller told 完了 always has the password stored, a caller told the apology never has.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from sqlalchemy.orm import Session, sessionmaker

from core.phone_line import CallerLine
from core.secrets import SecretHasher
from ivr.channel import ChannelError
from ivr.daemon.scripted import FakeChannel
from ivr.flow.store import SaveGuard, SqlCallStore
from ivr.flow.temporary_password import CallReport, Outcome, temporary_password_call
from ivr.metrics import DaemonMetrics
from ivr.settings import MenuSettings
from tests.ivr.test_flow import PASSWORD, all_credentials, assert_password_stored, completed_prompts
from tests.support import eventually, record_of

LINE = "0300001111"


@pytest.fixture
def waits() -> MenuSettings:
    """Short waits: the progress sound after 50 ms, the apology after 0.6 s."""
    return MenuSettings(
        first_digit_timeout_seconds=0.5,
        inter_digit_timeout_seconds=0.3,
        progress_after_seconds=0.05,
        max_wait_seconds=0.6,
    )


class GatedStore(SqlCallStore):
    """A store whose save (or lookup) waits for `release`: a locked database, a queue of hashes."""

    def __init__(self, *args: Any, gate: str = "save", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def _wait_at(self, where: str) -> None:
        if self.gate == where:
            self.entered.set()
            assert self.release.wait(10), "the test never released the store"

    def lookup_caller(self, caller_number: str) -> CallerLine | None:
        self._wait_at("lookup")
        return super().lookup_caller(caller_number)

    def save_temporary_password(self, **kwargs: Any) -> None:
        try:
            self._wait_at("save")
            guard: SaveGuard | None = kwargs.get("guard")
            if self.gate == "commit" and guard is not None:
                kwargs["guard"] = SlowCommitGuard(guard, self)
            super().save_temporary_password(**kwargs)
        finally:
            self.finished.set()


class SlowCommitGuard(SaveGuard):
    """The COMMIT begins, then takes long (the commit of a database under load)."""

    def __init__(self, inner: SaveGuard, store: GatedStore) -> None:
        super().__init__()
        self.inner, self.store = inner, store

    @property
    def abandoned(self) -> bool:
        return self.inner.abandoned

    def begin_commit(self) -> bool:
        begun = self.inner.begin_commit()
        if begun:
            self.store.entered.set()
            assert self.store.release.wait(10)
        return begun


async def run_call(
    store: SqlCallStore, menu: MenuSettings, *, during_wait: Callable[[], None] | None = None
) -> tuple[FakeChannel, CallReport]:
    channel = FakeChannel(["1", PASSWORD, PASSWORD], caller=LINE)
    call = asyncio.ensure_future(temporary_password_call(channel, store=store, menu=menu))
    if during_wait is not None:
        await asyncio.to_thread(during_wait)
    return channel, await call


def release_when_heard(store: GatedStore, channel_progress: list[str]) -> Callable[[], None]:
    """Release the store once the caller hears the progress sound."""

    def wait_then_release() -> None:
        eventually(lambda: channel_progress or None, 5, interval=0.01, what="the progress sound")
        store.release.set()

    return wait_then_release


async def test_a_quick_save_plays_no_progress_sound(
    call_store: SqlCallStore,
    waits: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    channel, report = await run_call(call_store, waits.model_copy(update={"progress_after_seconds": 5.0}))
    assert report.outcome is Outcome.COMPLETED
    assert channel.progress == []
    assert channel.prompts[-12:] == completed_prompts(LINE)
    assert_password_stored(voice_sessions, test_hasher, LINE)


async def test_a_slow_save_plays_the_progress_sound_until_it_is_stored(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    store = GatedStore(voice_sessions, hasher=test_hasher.hash)
    channel = FakeChannel(["1", PASSWORD, PASSWORD], caller=LINE)
    metrics = DaemonMetrics()
    from ivr.flow.temporary_password import TemporaryPasswordCall

    flow = TemporaryPasswordCall(channel, store=store, menu=waits, metrics=metrics)
    with structlog.testing.capture_logs() as logs:
        call = asyncio.ensure_future(flow.run())
        await asyncio.to_thread(release_when_heard(store, channel.progress))
        report = await call
    assert report.outcome is Outcome.COMPLETED
    # the sound started after the wait passed its threshold and stopped before the completion prompt
    assert channel.progress[-2:] == ["start ivr-saving", "stop"]
    assert channel.prompts[-12:] == completed_prompts(LINE)
    assert_password_stored(voice_sessions, test_hasher, LINE)
    events = [e["event"] for e in logs]
    assert events.index("progress_sound_started") < events.index("temporary_password_stored")
    assert events.index("temporary_password_stored") < events.index("progress_sound_stopped")
    assert metrics.progress_sounds.labels("save")._value.get() == 1
    assert record_of(voice_sessions, channel.call_id).outcome == "completed"


async def test_a_save_past_the_limit_is_abandoned_and_the_caller_hears_the_apology(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    store = GatedStore(voice_sessions, hasher=test_hasher.hash)
    with structlog.testing.capture_logs() as logs:
        channel, report = await run_call(store, waits)
        assert report.outcome is Outcome.SYSTEM_ERROR
        assert channel.prompts[-1] == "system-error"
        assert "completed-suffix" not in channel.prompts
        assert channel.progress[-2:] == ["start ivr-saving", "stop"]
        record = record_of(voice_sessions, channel.call_id)
        assert (record.outcome, record.last_step) == ("system_error", "save")
        # the save goes on in its thread once the database answers, and writes nothing
        store.release.set()
        await asyncio.to_thread(
            eventually,
            lambda: any(e["event"] == "temporary_password_abandoned" for e in logs) or None,
            5,
            interval=0.01,
            what="the abandoned save's end",
        )
    assert all_credentials(voice_sessions) == []
    assert any(e["event"] == "wait_too_long" and e["step"] == "save" for e in logs)


async def test_a_commit_begun_before_the_limit_is_awaited_and_the_caller_hears_completion(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    store = GatedStore(voice_sessions, hasher=test_hasher.hash, gate="commit")
    channel = FakeChannel(["1", PASSWORD, PASSWORD], caller=LINE)
    with structlog.testing.capture_logs() as logs:
        call = asyncio.ensure_future(temporary_password_call(channel, store=store, menu=waits))
        # the limit passes while the COMMIT runs: the caller keeps hearing the progress sound
        await asyncio.to_thread(
            eventually,
            lambda: any(e["event"] == "wait_past_limit_commit_begun" for e in logs) or None,
            5,
            interval=0.01,
        )
        assert not call.done()
        store.release.set()
        report = await call
    assert channel.progress[-2:] == ["start ivr-saving", "stop"]
    assert report.outcome is Outcome.COMPLETED
    assert channel.prompts[-12:] == completed_prompts(LINE)
    assert_password_stored(voice_sessions, test_hasher, LINE)


async def test_a_slow_lookup_of_the_line_plays_the_waiting_sound_then_the_menu(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    store = GatedStore(voice_sessions, hasher=test_hasher.hash, gate="lookup")
    channel = FakeChannel(["1", PASSWORD, PASSWORD], caller=LINE)
    call = asyncio.ensure_future(temporary_password_call(channel, store=store, menu=waits))
    await asyncio.to_thread(release_when_heard(store, channel.progress))
    report = await call
    assert report.outcome is Outcome.COMPLETED
    assert channel.progress[:2] == ["start ivr-waiting", "stop"]
    assert channel.prompts[0] == "choose-unit"


async def test_a_lookup_past_the_limit_is_an_apology(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    store = GatedStore(voice_sessions, hasher=test_hasher.hash, gate="lookup")
    try:
        channel, report = await run_call(store, waits)
    finally:
        store.release.set()
    assert report.outcome is Outcome.SYSTEM_ERROR
    assert channel.prompts == ["system-error"]
    assert channel.progress == ["start ivr-waiting", "stop"]
    assert record_of(voice_sessions, channel.call_id).last_step == "identify"


async def test_a_caller_who_hangs_up_while_the_save_waits_is_recorded_stored_or_not(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    """The hangup is seen when the sound starts: the save had not begun to commit, so it is
    abandoned; the record says the caller hung up at the save, and nothing is stored."""
    store = GatedStore(voice_sessions, hasher=test_hasher.hash)
    channel = HangUpAtProgress(["1", PASSWORD, PASSWORD], caller=LINE)
    try:
        report = await temporary_password_call(channel, store=store, menu=waits)
    finally:
        store.release.set()
    await asyncio.to_thread(store.finished.wait, 5)
    assert report.outcome is Outcome.CALLER_HUNG_UP
    record = record_of(voice_sessions, channel.call_id)
    assert (record.outcome, record.last_step) == ("caller_hung_up", "save")
    assert all_credentials(voice_sessions) == []


async def test_a_caller_who_hangs_up_after_the_commit_began_is_recorded_as_stored(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    store = GatedStore(voice_sessions, hasher=test_hasher.hash, gate="commit")
    channel = HangUpAtProgress(["1", PASSWORD, PASSWORD], caller=LINE, after_commit=store)
    call = asyncio.ensure_future(temporary_password_call(channel, store=store, menu=waits))
    await asyncio.to_thread(eventually, lambda: channel.caller_gone or None, 5, interval=0.01)
    assert not call.done()  # the hangup is known, the commit's result not yet
    store.release.set()
    report = await call
    assert report.outcome is Outcome.COMPLETED
    assert record_of(voice_sessions, channel.call_id).last_step == "save"
    assert_password_stored(voice_sessions, test_hasher, LINE)


class HangUpAtProgress(FakeChannel):
    """The caller is gone when the progress sound should start (optionally once the store's
    commit has begun)."""

    def __init__(self, *args: Any, after_commit: GatedStore | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_commit = after_commit

    async def _exec(self, application: str, *arguments: str) -> None:
        if application == "StartMusicOnHold":
            if self.after_commit is not None:
                await asyncio.to_thread(self.after_commit.entered.wait, 5)
            self.caller_gone = True
        await super()._exec(application, *arguments)


class FailsAtProgress(FakeChannel):
    """The channel fails (an Asterisk gone silent) when the progress sound should start."""

    async def _exec(self, application: str, *arguments: str) -> None:
        if application == "StartMusicOnHold":
            raise ChannelError("AGI command EXEC timed out")
        await super()._exec(application, *arguments)


async def test_a_channel_that_fails_while_the_save_waits_leaves_nothing_stored(
    voice_sessions: sessionmaker[Session], test_hasher: SecretHasher, waits: MenuSettings
) -> None:
    """Told nothing (the dialplan apologises), the caller must not have a password either."""
    store = GatedStore(voice_sessions, hasher=test_hasher.hash)
    channel = FailsAtProgress(["1", PASSWORD, PASSWORD], caller=LINE)
    try:
        report = await temporary_password_call(channel, store=store, menu=waits)
    finally:
        store.release.set()
    await asyncio.to_thread(store.finished.wait, 5)
    assert report.outcome is Outcome.SYSTEM_ERROR
    assert "completed-suffix" not in channel.prompts
    assert all_credentials(voice_sessions) == []
