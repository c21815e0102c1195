"""The dialogs of `benchmarks/agi.py` against a real `ivr serve` subprocess, and its Asterisk model.

One completed session (unit 1) and one short session (three wrong unit keys) end with the
``IVR_RESULT`` the benchmark expects, so the benchmark measures real calls. The model of
Asterisk's side (`benchmarks/agi_peer.py`) is checked against res_agi.c's reply shapes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


peer = _load("agi_peer")
bench = _load("agi")


def test_parse_args_follows_asterisk() -> None:
    assert peer.parse_args('GET DATA "" 5000 7') == ["GET", "DATA", "", "5000", "7"]
    assert peer.parse_args('STREAM FILE ivr/x "0123456789*#"') == ["STREAM", "FILE", "ivr/x", "0123456789*#"]
    assert peer.parse_args(r'SET VARIABLE X "a \"b\" c"') == ["SET", "VARIABLE", "X", 'a "b" c']


def test_replies_follow_res_agi() -> None:
    script = peer.CallerScript(
        [peer.Keys("1"), peer.Keys("123", barge_in=False), peer.HangUp()],
        variables={"V": "x"},
        config={"ivr-agi.conf": {"fastagi": {"secret": "s"}}},
    )
    channel = peer.AsteriskPeer(script)
    assert channel.reply("ANSWER") == ["200 result=0"]
    assert channel.reply("GET VARIABLE V") == ["200 result=1 (x)"]
    assert channel.reply("GET VARIABLE UNSET") == ["200 result=0"]
    assert channel.reply("GET VARIABLE AST_CONFIG(ivr-agi.conf,fastagi,secret)") == ["200 result=1 (s)"]
    assert channel.reply("STREAM FILE ivr/choose-unit 0123456789*#") == ["200 result=49 endpos=4000"]
    assert channel.reply('STREAM FILE ivr/next ""') == ["200 result=0 endpos=16000"]
    assert channel.reply("GET DATA ivr/enter 5000 5") == ["200 result=123 (timeout)"]
    assert channel.reply("WAIT FOR DIGIT 100") == ["200 result=0"]
    assert channel.reply("FROB") == ["510 Invalid or unknown command"]
    assert channel.reply("STREAM FILE ivr/x")[0].startswith("520-")
    assert channel.reply("SET VARIABLE IVR_RESULT done") == ["200 result=1"]
    assert channel.reply("STREAM FILE ivr/bye 0123456789*#") == [
        "200 result=-1 endpos=4000",
        "HANGUP",
        "HANGUP",
    ]
    assert channel.closed


def test_get_data_reads_up_to_max_or_hash() -> None:
    channel = peer.AsteriskPeer(peer.CallerScript([peer.Keys("12#"), peer.Keys("#"), peer.Keys("98765")]))
    assert channel.reply("GET DATA ivr/a 5000 9") == ["200 result=12"]
    assert channel.reply("GET DATA ivr/b 5000 9") == ["200 result="]
    assert channel.reply("GET DATA ivr/c 5000 3") == ["200 result=987"]
    assert channel.reply('GET DATA "" 5000 3') == ["200 result=65 (timeout)"]


def test_a_dead_channel_refuses_live_commands() -> None:
    channel = peer.AsteriskPeer(peer.CallerScript([peer.HangUp()]), exit_on_hangup=False)
    assert channel.reply("GET DATA ivr/a 5000 1") == ["200 result=-1", "HANGUP"]
    assert channel.reply("STREAM FILE ivr/x 0") == [peer.DEAD]
    assert channel.reply("SET VARIABLE IVR_RESULT caller_hung_up") == ["200 result=1"]
    assert not channel.closed


@pytest.fixture
def daemon(voice_db_url: str, tmp_path: Path) -> Iterator[Any]:
    secret = secrets.token_hex(16)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IVR_")},
        "IVR_DATABASE_URL": voice_db_url,
        "IVR_LOG_FORMAT": "json",
        "IVR_AGI__SECRET": secret,
        "IVR_DATA_DIR": str(tmp_path),
    }
    server = bench.Daemon(BENCHMARKS.parent, env, tmp_path / "daemon.log", bench.free_port())
    server.secret = secret
    yield server
    server.stop()


async def test_benchmark_dialogs_run_against_ivr_serve(daemon: Any) -> None:
    await asyncio.to_thread(daemon.wait_ready)  # returns once the daemon logged daemon_ready
    run = bench.fastagi_runner(daemon.port, daemon.secret)
    completed = await run(bench.COMPLETED[0], 0)
    short = await run(bench.WRONG_UNIT, 0)
    assert completed.result == "completed", completed.commands
    assert short.result == "too_many_wrong_unit", short.commands
    assert completed.closed_by == short.closed_by == "asterisk"  # the daemon hung up: EXEC Hangup
    assert short.first_prompt_latency() is not None
    assert daemon.secret not in daemon.log_path.read_text()
