"""What operators watch: the AMI view of live channels across an Asterisk restart, and `ivr calls`."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ivr.sipp import Caller, ExpectHangup, HangUp, SendDigits, Wait, run_call
from tests.fixtures.voice import PASSWORDS_USED, VoiceDaemon
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

PASSWORD = "73920561"
PASSWORDS_USED.add(PASSWORD)


def _count(daemon: VoiceDaemon, event: str, since: int = 0) -> int:
    return sum(1 for e in daemon.events(since) if e.get("event") == event)


def _wait_for(condition: Any, within: float = 30.0) -> None:
    eventually(condition, within, interval=0.2)


def _completed_call(caller_id: str) -> Caller:
    return Caller(
        caller_id,
        steps=[Wait(1.0), SendDigits("1"), Wait(1.0), SendDigits(PASSWORD + "#"), Wait(1.0),
               SendDigits(PASSWORD + "#"), ExpectHangup(within=60)],
    )  # fmt: skip


def test_ami_follows_channels_and_reconnects_when_asterisk_restarts(
    voice_daemon: VoiceDaemon, lab: Any
) -> None:
    _wait_for(lambda: _count(voice_daemon, "ami_logged_in") >= 1)
    offset = voice_daemon.log_offset()
    assert run_call(_completed_call("0300001111")).hung_up_by == "remote"
    _wait_for(lambda: _count(voice_daemon, "ami_channel_hangup", offset) >= 1)
    new = next(e for e in voice_daemon.events(offset) if e.get("event") == "ami_channel_new")
    started = next(e for e in voice_daemon.events(offset) if e.get("event") == "call_started")
    assert new["ami_uniqueid"] == started["call_id"]  # the AMI view and the call log name the same call
    assert new["caller"] == "0300001111"

    logins = _count(voice_daemon, "ami_logged_in")
    lab.down()
    _wait_for(lambda: _count(voice_daemon, "ami_disconnected", offset) >= 1)
    lab.up()
    _wait_for(lambda: _count(voice_daemon, "ami_logged_in") > logins)

    after = voice_daemon.log_offset()
    assert run_call(_completed_call("0300002222")).hung_up_by == "remote"
    _wait_for(lambda: _count(voice_daemon, "ami_channel_hangup", after) >= 1)
    events = voice_daemon.events_once(
        after, lambda found: any(e.get("event") == "call_finished" for e in found)
    )
    outcomes = [e["outcome"] for e in events if e.get("event") == "call_finished"]
    assert outcomes == ["completed"]


def test_ivr_calls_shows_the_calls_with_filters(voice_daemon: VoiceDaemon) -> None:
    def calls(*args: str) -> list[dict[str, Any]]:
        output = subprocess.run(
            [sys.executable, "-m", "stack.cli.main", "calls", "--json", "--limit", "1000", *args],
            env=voice_daemon.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [json.loads(line) for line in output.splitlines()]

    assert run_call(Caller(None, steps=[ExpectHangup(within=40)])).hung_up_by == "remote"
    assert run_call(Caller("0300002222", steps=[Wait(1.0), SendDigits("1"), Wait(1.5), HangUp()])).answered

    def both_recorded() -> list[dict[str, Any]] | None:
        rows = calls()  # records are written off the call path
        return rows if {"caller_id_withheld", "caller_hung_up"} <= {r["outcome"] for r in rows} else None

    everything = eventually(both_recorded, 10, interval=0.2, what="both calls recorded")
    assert everything and all(row["status"] == "finished" for row in everything)
    outcomes = {row["outcome"] for row in everything}
    assert {"caller_id_withheld", "caller_hung_up"} <= outcomes
    mine = calls("--number", "0300002222", "--since", "1h")
    assert mine and all("0300002222" in (row["caller"], row["target_number"]) for row in mine)
    hung_up = calls("--outcome", "caller_hung_up")
    assert hung_up and {row["last_step"] for row in hung_up} <= {"password", "confirm"}
    table = subprocess.run(
        [sys.executable, "-m", "stack.cli.main", "calls", "--limit", "5"],
        env=voice_daemon.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert table[0].startswith("started") and len(table) == 1 + min(5, len(everything))
