"""`ivr calls`: finished and live calls, filters, JSON lines, --follow."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest

from ivr.daemon.scripted import FakeChannel
from ivr.flow.store import SqlCallStore
from ivr.flow.temporary_password import temporary_password_call
from ivr.settings import MenuSettings
from stack.cli.calls import calls, parse_since
from stack.settings import Settings
from tests.support import eventually

PASSWORD = "40719352"


def args(**overrides: object) -> argparse.Namespace:
    base = {
        "follow": False,
        "since": None,
        "number": None,
        "outcome": None,
        "json": False,
        "limit": 50,
        "interval": 0.2,
    }
    base.update(overrides)
    return argparse.Namespace(**base)


async def make_calls(store: SqlCallStore, menu: MenuSettings) -> None:
    await temporary_password_call(
        FakeChannel(["1", PASSWORD, PASSWORD], call_id="c.1"), store=store, menu=menu
    )
    await temporary_password_call(
        FakeChannel(["9", "9", "9"], call_id="c.2", caller="0300002222"), store=store, menu=menu
    )
    await temporary_password_call(FakeChannel([], call_id="c.3", caller="anonymous"), store=store, menu=menu)
    store.start_call(
        call_id="c.4", caller="0422001234", service_number="0363044747", started_at=datetime.now(UTC)
    )


def run(voice_db_url: str, **overrides: object) -> str:
    out = io.StringIO()
    assert calls(args(**overrides), Settings(database_url=voice_db_url), out=out) == 0
    return out.getvalue()


async def test_table_lists_finished_and_live_calls(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_db_url: str
) -> None:
    await make_calls(call_store, menu_settings)
    lines = run(voice_db_url).splitlines()
    assert lines[0].startswith("started")
    assert [line.split()[-1] for line in lines[1:]] == ["c.1", "c.2", "c.3", "c.4"]
    assert "completed" in lines[1] and "line" in lines[1] and "0300001111" in lines[1]
    assert "too_many_wrong_unit" in lines[2]
    assert "caller_id_withheld" in lines[3]
    assert "(in progress)" in lines[4]
    assert PASSWORD not in "\n".join(lines)


async def test_filters_and_json(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_db_url: str
) -> None:
    await make_calls(call_store, menu_settings)
    rows = [json.loads(line) for line in run(voice_db_url, json=True, outcome="completed").splitlines()]
    assert [r["call_id"] for r in rows] == ["c.1"]
    assert rows[0]["unit"] == "line" and rows[0]["status"] == "finished" and rows[0]["duration_s"] >= 0
    by_number = [json.loads(line) for line in run(voice_db_url, json=True, number="0300002222").splitlines()]
    assert [r["call_id"] for r in by_number] == ["c.2"]
    future = [
        line
        for line in run(voice_db_url, json=True, since=datetime.now(UTC) + timedelta(hours=1)).splitlines()
    ]
    assert future == []


def test_parse_since() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("2h", now=now) == now - timedelta(hours=2)
    assert parse_since("1d", now=now) == now - timedelta(days=1)
    assert parse_since("2026-11-22T09:00+09:00") == datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since("yesterday")


def test_follow_prints_calls_as_they_start_and_end(
    call_store: SqlCallStore, menu_settings: MenuSettings, voice_db_url: str
) -> None:
    env = dict(os.environ, IVR_DATABASE_URL=voice_db_url, IVR_LOG_LEVEL="warning")
    follower = subprocess.Popen(
        [sys.executable, "-m", "stack.cli.main", "calls", "--follow", "--json", "--interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        call_store.start_call(
            call_id="live.1", caller="0300001111", service_number=None, started_at=datetime.now(UTC)
        )
        eventually(lambda: any('"live.1"' in line for line in lines), 20, what="the call shown in progress")
        asyncio.run(
            temporary_password_call(
                FakeChannel(["1", PASSWORD, PASSWORD], call_id="live.1"), store=call_store, menu=menu_settings
            )
        )
        eventually(lambda: any('"finished"' in line for line in lines), 20, what="the call shown finished")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["call_id"], r["status"]) for r in rows] == [("live.1", "in_progress"), ("live.1", "finished")]
    assert rows[-1]["outcome"] == "completed"
