"""SIPp calls through the real Asterisk lab, to a stub FastAGI server.

Proves the lab's plumbing: caller ID and DTMF (RFC 4733 and SIP INFO) reach FastAGI intact, an
untrusted source's caller ID is not carried, a withheld one arrives as withheld, a missing daemon
means an apology and a hangup, the second daemon address is used when the first is down, and
`down` leaves nothing running.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from ivr.lab import Lab
from ivr.sipp import Caller, ExpectHangup, HangUp, SendDigits, Wait, arun_call
from stack.settings import Settings
from tests.lab.agi_stub import StubAgiServer
from tests.support import async_eventually

pytestmark = pytest.mark.lab

PASSWORD_LIKE = "11223344#*0"
CONTRACT_LINE = "0300001111"


def _caller(lab_settings: Settings, **kwargs: object) -> Caller:
    kwargs.setdefault("dialled", lab_settings.lab.service_number)
    return Caller(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtmf_mode", ["rfc4733", "info"])
async def test_caller_id_and_digits_reach_fastagi(lab: Lab, lab_settings: Settings, dtmf_mode: str) -> None:
    mark = lab.log_offset()
    caller = _caller(
        lab_settings,
        caller_id=CONTRACT_LINE,
        dtmf_mode=dtmf_mode,
        steps=[Wait(1.5), SendDigits(PASSWORD_LIKE, gap=0.25), ExpectHangup(within=15)],
    )
    async with StubAgiServer(port=lab_settings.agi.port, idle_ms=3000) as stub:
        result = await arun_call(caller, lab_settings)
    assert result.error is None, result.error
    assert result.answered and 200 in result.sip_codes
    assert result.hung_up_by == "remote"
    assert len(stub.calls) == 1
    call = stub.calls[0]
    assert call.digits == PASSWORD_LIKE
    assert call.env["agi_callerid"] == CONTRACT_LINE
    assert call.env["agi_dnid"] == lab_settings.lab.service_number
    assert call.env["agi_extension"] == lab_settings.lab.service_number
    assert call.env["agi_network_script"] == "temp-password"
    assert call.variables["IVR_CALLER_ID_STATUS"] == "presented"
    # Asterisk's log never records the keys pressed; the call record has the call, not the keys.
    assert "11223344" not in lab.messages(mark)
    uniqueid = call.env["agi_uniqueid"]
    record = await async_eventually(
        lambda: next((line for line in lab.cdr_path.read_text().splitlines() if uniqueid in line), ""),
        5,
        interval=0.1,
        what="the CDR line",
    )
    assert f'"{lab_settings.lab.service_number}"' in record and f'"{CONTRACT_LINE}"' in record
    assert "11223344" not in record


async def test_untrusted_source_caller_id_is_not_carried(lab: Lab, lab_settings: Settings) -> None:
    caller = _caller(
        lab_settings,
        caller_id=CONTRACT_LINE,
        source_ip="127.0.0.2",
        steps=[Wait(1.0), SendDigits("1"), ExpectHangup(10)],
    )
    async with StubAgiServer(port=lab_settings.agi.port, idle_ms=1500) as stub:
        result = await arun_call(caller, lab_settings)
    assert result.answered, result.error
    assert len(stub.calls) == 1
    call = stub.calls[0]
    assert CONTRACT_LINE not in call.env["agi_callerid"]
    assert call.env["agi_callerid"] in ("", "unknown")
    assert call.variables["IVR_CALLER_ID_STATUS"] == "untrusted"


@pytest.mark.parametrize("privacy", [False, True], ids=["anonymous-from", "pai-with-privacy-id"])
async def test_withheld_caller_id_arrives_as_anonymous(
    lab: Lab, lab_settings: Settings, privacy: bool
) -> None:
    caller = _caller(
        lab_settings,
        caller_id=CONTRACT_LINE if privacy else None,
        privacy=privacy,
        steps=[Wait(1.0), SendDigits("1"), ExpectHangup(10)],
    )
    async with StubAgiServer(port=lab_settings.agi.port, idle_ms=1500) as stub:
        result = await arun_call(caller, lab_settings)
    assert result.answered, result.error
    call = stub.calls[0]
    assert call.env["agi_callerid"] == "anonymous"
    assert call.variables["IVR_CALLER_ID_STATUS"] == "withheld"


async def test_no_daemon_means_apology_then_hangup(lab: Lab, lab_settings: Settings) -> None:
    mark = lab.log_offset()
    caller = _caller(lab_settings, caller_id=CONTRACT_LINE, steps=[ExpectHangup(within=20)])
    result = await arun_call(caller, lab_settings)
    assert result.answered and result.hung_up_by == "remote", result
    assert not result.expectations_failed
    played = lab.played_prompts(mark)
    assert played == ["ivr/system-error"]
    # the apology itself lasts about 8 s; the call ends as soon as it has played
    assert result.remote_hangup_after is not None and result.remote_hangup_after < 12.0


async def test_daemon_dying_mid_call_means_apology(lab: Lab, lab_settings: Settings) -> None:
    mark = lab.log_offset()
    caller = _caller(
        lab_settings, caller_id=CONTRACT_LINE, steps=[Wait(1.0), SendDigits("12"), ExpectHangup(20)]
    )
    # the stub reads two digits and closes the connection without setting IVR_RESULT
    async with StubAgiServer(port=lab_settings.agi.port, max_digits=2, set_result=False) as stub:
        result = await arun_call(caller, lab_settings)
    assert stub.calls and stub.calls[0].digits == "12"
    assert result.hung_up_by == "remote", result
    assert lab.played_prompts(mark) == ["ivr/system-error"]


async def test_second_daemon_address_is_used_when_the_first_is_down(lab: Lab, lab_settings: Settings) -> None:
    caller = _caller(
        lab_settings, caller_id=CONTRACT_LINE, steps=[Wait(1.0), SendDigits("3"), ExpectHangup(15)]
    )
    async with StubAgiServer(port=lab_settings.lab.agi_fallback_port, idle_ms=1500) as stub:
        result = await arun_call(caller, lab_settings)
    assert result.hung_up_by == "remote" and result.error is None, result
    assert len(stub.calls) == 1 and stub.calls[0].digits == "3"


async def test_unknown_number_is_rejected(lab: Lab, lab_settings: Settings) -> None:
    caller = _caller(lab_settings, caller_id=CONTRACT_LINE, dialled="0312345678", steps=[HangUp()])
    result = await arun_call(caller, lab_settings)
    assert not result.answered
    assert 404 in result.sip_codes


async def test_caller_hanging_up_ends_the_agi_session(lab: Lab, lab_settings: Settings) -> None:
    caller = _caller(lab_settings, caller_id=CONTRACT_LINE, steps=[Wait(1.5), SendDigits("1"), HangUp()])
    async with StubAgiServer(port=lab_settings.agi.port, idle_ms=10000) as stub:
        result = await arun_call(caller, lab_settings)
        await asyncio.wait_for(stub.done.wait(), timeout=5)
    assert result.hung_up_by == "local"
    assert stub.calls[0].hung_up and stub.calls[0].digits == "1"


def test_down_leaves_nothing_running_and_up_again(lab: Lab, lab_settings: Settings) -> None:
    lab.down()
    assert not lab.is_running()
    assert lab.stray_processes() == []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # the SIP port is free again
        sock.bind((lab_settings.lab.sip_host, lab_settings.lab.sip_port))
    lab.up()  # leave the session's lab running for whatever test comes next
    assert lab.is_running()


async def test_absolute_timeout_ends_the_call_politely(lab_settings: Settings, tmp_path: Path) -> None:
    """A second lab (own ports) with a 4 s call limit: a daemon that never finishes is cut off
    with the goodbye prompt, not with silence."""
    settings = lab_settings.model_copy(deep=True)
    settings.lab.run_dir = tmp_path / "lab"
    settings.lab.max_call_seconds = 4
    settings.lab.sip_port += 20
    settings.lab.rtp_port_start, settings.lab.rtp_port_end = 13000, 13999
    settings.ami.port += 20
    settings.agi.port += 20
    settings.lab.agi_fallback_port += 20
    short = Lab(settings)
    short.up()
    try:
        mark = short.log_offset()
        caller = _caller(settings, caller_id=CONTRACT_LINE, steps=[ExpectHangup(20)])
        async with StubAgiServer(port=settings.agi.port, first_digit_ms=30000, idle_ms=30000) as stub:
            result = await arun_call(caller, settings)
        assert result.hung_up_by == "remote" and result.remote_hangup_after is not None
        assert 4.0 <= result.remote_hangup_after < 8.0
        assert stub.calls[0].hung_up  # the AGI session was told the call is over
        assert short.played_prompts(mark) == ["ivr/goodbye"]
    finally:
        short.down()
    assert short.stray_processes() == []
    shutil.rmtree(short.instance_dir)  # its configuration, prompts and logs inside the shared tree
