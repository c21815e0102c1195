"""Who may use the lab's Asterisk, and what they see: the AMI user, the softphone, extra processes."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from ivr.lab import Lab, ProcessSpec
from ivr.settings import agi_secret, ami_secret
from ivr.sipp import Caller, ExpectHangup, HangUp, SendDigits, Wait, arun_call
from stack.settings import Settings
from tests.lab.agi_stub import StubAgiServer
from tests.support import async_eventually

pytestmark = pytest.mark.lab


class Ami:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, settings: Settings) -> Ami:
        reader, writer = await asyncio.open_connection(settings.ami.host, settings.ami.port)
        banner = await asyncio.wait_for(reader.readline(), 5)
        assert banner.startswith(b"Asterisk Call Manager")
        return cls(reader, writer)

    async def send(self, **fields: str) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n")
        await self.writer.drain()

    async def message(self, wait: float = 5) -> dict[str, str]:
        fields: dict[str, str] = {}
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), wait)).decode().rstrip("\r\n")
            if not line:
                if fields:
                    return fields
                continue
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()

    async def response(self, action_id: str) -> dict[str, str]:
        while True:
            msg = await self.message()
            if msg.get("ActionID") == action_id and "Response" in msg:
                return msg

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_ami_user_logs_in_and_has_only_what_it_needs(lab: Lab, lab_settings: Settings) -> None:
    ami = await Ami.connect(lab_settings)
    try:
        await ami.send(Action="Login", ActionID="1", Username="nobody", Secret="wrong")
        assert (await ami.response("1"))["Response"] == "Error"
        await ami.close()
        ami = await Ami.connect(lab_settings)
        secret = ami_secret(lab_settings)
        await ami.send(Action="Login", ActionID="2", Username=lab_settings.ami.username, Secret=secret)
        assert (await ami.response("2"))["Response"] == "Success"
        await ami.send(Action="Ping", ActionID="3")
        assert (await ami.response("3"))["Response"] == "Success"
        # The attack of the security round: Getvar evaluates AST_CONFIG(), which reads any file
        # Asterisk can (the FastAGI secret, the softphone's password, the AMI secret itself).
        # The account has no write class, so every action that needs one is refused.
        for action_id, action in enumerate(
            [
                {"Action": "Getvar", "Variable": "AST_CONFIG(ivr-agi.conf,fastagi,secret)"},
                {"Action": "Getvar", "Variable": "AST_CONFIG(manager.conf,general,port)"},
                {"Action": "CoreShowChannels"},
                {"Action": "GetConfig", "Filename": "ivr-agi.conf"},
                {"Action": "Setvar", "Variable": "GLOBAL_X", "Value": "1"},
            ],
            start=10,
        ):
            await ami.send(ActionID=str(action_id), **action)
            denied = await ami.response(str(action_id))
            assert denied["Response"] == "Error" and "ermission" in denied.get("Message", ""), (
                action,
                denied,
            )
            assert agi_secret(lab_settings) not in repr(denied)
        # placing calls or running CLI commands: not allowed
        await ami.send(Action="Originate", ActionID="4", Channel="PJSIP/x", Application="Playback", Data="x")
        denied = await ami.response("4")
        assert denied["Response"] == "Error" and "ermission" in denied.get("Message", "")
        await ami.send(Action="Command", ActionID="5", Command="core show version")
        assert (await ami.response("5"))["Response"] == "Error"

        # During a call with keys pressed, the daemon's AMI session sees the call but not the keys.
        events: list[dict[str, str]] = []

        async def collect() -> None:
            while True:
                events.append(await ami.message(wait=60))

        collector = asyncio.create_task(collect())
        caller = Caller(
            "0300001111",
            dialled=lab_settings.lab.service_number,
            steps=[Wait(1.5), SendDigits("97531"), ExpectHangup(10)],
        )
        async with StubAgiServer(port=lab_settings.agi.port, idle_ms=1500) as stub:
            result = await arun_call(caller, lab_settings)
        await async_eventually(
            lambda: any(e.get("Event") == "Hangup" for e in events), what="the Hangup event"
        )
        collector.cancel()
        assert stub.calls[0].digits == "97531" and result.hung_up_by == "remote"
        kinds = {e.get("Event") for e in events}
        assert {"Newchannel", "Hangup"} <= kinds
        assert not {k for k in kinds if k and (k.startswith("DTMF") or k.startswith("AGI") or k == "VarSet")}
        assert not any("97531" in value for event in events for value in event.values())
    finally:
        await ami.close()


async def test_softphone_must_authenticate(lab: Lab, lab_settings: Settings) -> None:
    # A request naming the softphone is challenged (it cannot borrow the softphone's caller ID).
    caller = Caller("softphone", dialled=lab_settings.lab.service_number, steps=[HangUp()])
    result = await arun_call(caller, lab_settings)
    assert not result.answered
    assert 401 in result.sip_codes


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_extra_processes_start_after_asterisk_and_stop_with_down(
    lab: Lab, lab_settings: Settings, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child_pid_file = tmp_path / "child.pid"
    # a process with a child of its own: down stops both
    script = (
        f"sleep 300 & echo $! > {child_pid_file}; "
        f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    )
    extra = ProcessSpec(name="http-probe", argv=["sh", "-c", script], ready=lambda: _port_open(port))
    lab.down()
    lab.up(extra=[extra])
    try:
        status = lab.status()
        assert [p.name for p in status.processes] == ["asterisk", "http-probe"]
        assert all(p.running for p in status.processes)
        assert _port_open(port)
    finally:
        stopped = lab.down()
    assert any(s.startswith("http-probe") for s in stopped) and any(s.startswith("asterisk") for s in stopped)
    assert not _port_open(port)
    child = int(child_pid_file.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert lab.stray_processes() == []
    lab.up()


async def test_softphone_with_its_password_calls_as_the_lab_line(lab: Lab, lab_settings: Settings) -> None:
    password = lab_settings.lab.softphone_password.get_secret_value()
    caller = Caller(
        "softphone",
        dialled=lab_settings.lab.service_number,
        auth_password=password,
        steps=[Wait(1.0), SendDigits("42"), ExpectHangup(10)],
    )
    async with StubAgiServer(port=lab_settings.agi.port, idle_ms=1500) as stub:
        result = await arun_call(caller, lab_settings)
    assert result.answered, result
    assert stub.calls[0].env["agi_callerid"] == lab_settings.lab.softphone_caller_id
    assert stub.calls[0].digits == "42"
    wrong = Caller(
        "softphone", dialled=lab_settings.lab.service_number, auth_password="wrong", steps=[HangUp()]
    )
    refused = await arun_call(wrong, lab_settings)
    assert not refused.answered and refused.sip_codes.count(401) >= 2


def test_cli_down_refuses_while_a_test_session_holds_the_lab(
    lab: Lab, lab_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from stack.cli.main import main

    assert lab.reserved_by() is not None  # this session's `lab` fixture holds it
    assert main(["lab", "down"]) == 1
    assert "test session" in capsys.readouterr().err
    assert lab.is_running()
