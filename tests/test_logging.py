"""The logging set-up: lines go to the current stderr, and secret-looking keys are masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from ivr import logging as ivr_logging
from ivr.logging import configure_logging, lines_batched_on
from stack.settings import Settings


def test_log_lines_follow_stderr_after_the_original_stream_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging(Settings())
    first.close()  # e.g. a test harness's capture that ended
    monkeypatch.setattr("sys.stderr", second)

    structlog.get_logger("t").info("call_started", caller="0300001111")
    logging.getLogger("t.stdlib").warning("stdlib line")

    lines = second.getvalue().splitlines()
    assert json.loads(lines[0])["event"] == "call_started"
    assert "stdlib line" in lines[1]


def test_configuring_twice_keeps_one_handler_and_leaves_others_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        configure_logging(Settings())
        configure_logging(Settings())
        assert [h.get_name() for h in root.handlers].count("ivr") == 1
        assert foreign in root.handlers
    finally:
        root.removeHandler(foreign)


def test_secret_looking_keys_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    configure_logging(Settings())
    structlog.get_logger("t").info("oops", password="12345678", digits="9876", digit_count=8)
    record = json.loads(out.getvalue().splitlines()[-1])
    assert record["password"] == "***"
    assert record["digits"] == "***"
    assert record["digit_count"] == 8
    assert "12345678" not in out.getvalue()


class _SinkStream(io.StringIO):
    """Counts its writes; with `blocked` set, a write waits until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.waiting = threading.Event()

    def write(self, text: str) -> int:
        if self.blocked.is_set():
            self.waiting.set()
            assert self.release.wait(10)
        self.writes += 1
        return super().write(text)


def _events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


async def _until(condition: Any, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


@pytest.fixture
def sink() -> Iterator[_SinkStream]:
    out = _SinkStream()  # given, not put in sys.stderr: pytest's capture resets that for the call
    configure_logging(Settings(), stream=out)
    yield out
    configure_logging(Settings())


async def test_lines_of_the_loop_go_out_together_in_one_write(sink: _SinkStream) -> None:
    log = structlog.get_logger("t")
    with lines_batched_on(asyncio.get_running_loop()):
        log.info("first")
        log.info("second")
        await asyncio.sleep(0)
        assert sink.getvalue() == ""  # held for a while (up to LOOP_FLUSH_SECONDS)
        await _until(lambda: len(_events(sink)) == 2)
        assert sink.writes == 1

        other = threading.Thread(target=lambda: log.info("from_a_thread"))
        other.start()
        other.join()
        log.info("last")
    # leaving the block writes what is left, in order
    assert _events(sink) == ["first", "second", "from_a_thread", "last"]
    log.info("after")
    assert _events(sink)[-1] == "after"  # and lines are written at once again


async def test_a_stalled_log_sink_does_not_hold_up_the_loop(sink: _SinkStream) -> None:
    log = structlog.get_logger("t")
    sink.blocked.set()
    with lines_batched_on(asyncio.get_running_loop()):
        log.info("stuck")
        await _until(sink.waiting.is_set)  # the writer thread is inside the stalled write
        for n in range(50):  # the loop goes on logging and running meanwhile
            log.info("meanwhile", n=n)
            await asyncio.sleep(0)
        assert sink.getvalue() == ""
        sink.release.set()
    assert _events(sink) == ["stuck"] + ["meanwhile"] * 50


async def test_lines_beyond_the_bound_are_dropped_and_counted(
    sink: _SinkStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ivr_logging._WRITER, "max_queued_bytes", 2000)
    monkeypatch.setattr(ivr_logging, "LOOP_FLUSH_SECONDS", 0.001)  # the bound is under test, not the wait
    log = structlog.get_logger("t")
    sink.blocked.set()
    with lines_batched_on(asyncio.get_running_loop()):
        log.info("stuck")
        await _until(sink.waiting.is_set)
        for n in range(100):  # ~100 bytes a line, each handed over alone: most of them do not fit
            log.info("flood", n=n)
            await _until(lambda: not ivr_logging._WRITER._batch)
        sink.blocked.clear()
        sink.release.set()
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    kept = [line for line in lines if line["event"] == "flood"]
    dropped = [line for line in lines if line["event"] == "log_lines_dropped"]
    assert 0 < len(kept) < 100
    assert [d["count"] for d in dropped] == [100 - len(kept)]
    assert [k["n"] for k in kept] == sorted(k["n"] for k in kept)


async def test_a_sink_stalled_at_shutdown_does_not_hold_up_the_exit(
    sink: _SinkStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ivr_logging._WRITER, "stop_timeout", 0.2)
    log = structlog.get_logger("t")
    sink.blocked.set()
    try:
        with lines_batched_on(asyncio.get_running_loop()):
            log.info("stuck")
            await _until(sink.waiting.is_set)
            log.info("queued")
        assert sink.getvalue() == ""  # left the block with the sink still stalled
    finally:
        sink.blocked.clear()
        sink.release.set()
    await _until(lambda: _events(sink) == ["stuck", "queued"])  # the sink back: nothing lost
