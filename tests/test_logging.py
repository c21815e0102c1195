"""The logging set-up: lines go to the current stderr, and secret-looking keys are masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import pytest
import structlog

from ivr.logging import configure_logging, lines_batched_on
from ivr.settings import Settings


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


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


async def test_lines_of_one_loop_iteration_go_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _CountingStream()
    monkeypatch.setattr("sys.stderr", out)
    configure_logging(Settings())
    log = structlog.get_logger("t")
    with lines_batched_on(asyncio.get_running_loop()):
        log.info("first")
        log.info("second")
        assert out.getvalue() == ""  # held until the iteration ends

        other = threading.Thread(target=lambda: log.info("from_a_thread"))
        other.start()
        other.join()
        assert _events(out) == ["from_a_thread"]  # other threads write at once

        for _ in range(5):  # the batch is written after one loop iteration
            if len(_events(out)) == 3:
                break
            await asyncio.sleep(0)
        assert _events(out) == ["from_a_thread", "first", "second"]
        assert out.writes == 2

        log.info("last")
    assert _events(out)[-1] == "last"  # leaving the block writes what is left
    log.info("after")
    assert _events(out)[-1] == "after"  # and lines go out at once again
