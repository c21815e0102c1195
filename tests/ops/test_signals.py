"""SIGTERM, a supervisor's stop, stops every long-running command exactly as Ctrl-C does, and leaves
nothing running: the daemon (stops accepting, lets the call in progress go on for its grace period,
then cuts it without a result so the dialplan plays the apology, and writes its record), the web
process, the call-log follower and the Asterisk log follower. `ivr run` (the whole stack, on the lab)
is in tests/test_main_job.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from tests.fixtures.web import env_for, free_port
from tests.ivr.test_records import SECRET, Daemon, _environment, record
from tests.support import eventually, listening

IVR = [sys.executable, "-m", "stack.cli.main"]


@pytest.fixture
def sessions(voice_db_url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(voice_db_url))


@pytest.mark.timeout(60)
def test_sigterm_lets_the_call_go_on_for_the_grace_period_then_cuts_it_for_the_apology(
    voice_db_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    port = free_port()
    daemon = Daemon(voice_db_url, port, tmp_path)
    daemon.env["IVR_AGI__SHUTDOWN_GRACE_SECONDS"] = "1.5"
    daemon.start()
    assert daemon.process is not None
    try:
        peer = socket.create_connection(("127.0.0.1", port), timeout=10)
        peer.sendall(_environment("1700000000.91"))
        reader = peer.makefile("rb")
        assert reader.readline().startswith(b"GET VARIABLE")
        peer.sendall(f"200 result=1 ({SECRET})\n".encode())
        assert reader.readline().strip() == b"ANSWER"  # mid-call: the daemon waits for Asterisk

        daemon.process.send_signal(signal.SIGTERM)
        eventually(lambda: not listening(port), 10, interval=0.02)  # no new calls taken

        peer.sendall(b"200 result=0\n")  # the call in progress goes on during the grace period
        next_command = reader.readline()
        assert next_command and not next_command.startswith(b"SET VARIABLE IVR_RESULT"), next_command

        rest = reader.read()  # the grace period ends: the daemon cuts the call (EOF) ...
        assert b"IVR_RESULT" not in rest  # ... with no result, so the dialplan plays the apology
        peer.close()
        assert daemon.process.wait(20) == 0
    finally:
        daemon.stop()
    written = record(sessions, "1700000000.91")
    assert written is not None and written.outcome == "system_error" and written.ended_at is not None


def _web_up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ivr_web_stops_on_sigterm_like_on_ctrl_c(signum: int, voice_db_url: str, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "web.out"
    process = _started(["web"], env_for(voice_db_url, port), out)
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: process.poll() is None and _web_up(base), 30, interval=0.05)
        process.send_signal(signum)
        assert process.wait(20) == 0, out.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not _web_up(base)
    assert "Traceback" not in out.read_text()


def _env(voice_db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(
        {"IVR_DATABASE_URL": voice_db_url, "IVR_DATA_DIR": str(tmp_path), "IVR_LAB__RUN_DIR": str(tmp_path)}
    )
    return env


def _started(argv: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as sink:
        return subprocess.Popen([*IVR, *argv], env=env, stdout=sink, stderr=subprocess.STDOUT)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["calls", "--follow", "--interval", "0.1"], ["lab", "logs", "--follow"]])
def test_followers_stop_on_sigterm_like_on_ctrl_c(
    command: list[str], voice_db_url: str, tmp_path: Path
) -> None:
    from ivr.lab import Lab
    from ivr.settings import LabSettings
    from stack.settings import Settings

    log = Lab(Settings(lab=LabSettings(run_dir=tmp_path))).asterisk_log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("asterisk started\n")
    out = tmp_path / "out.txt"
    results = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        process = _started(command, _env(voice_db_url, tmp_path), out)
        eventually(lambda: out.stat().st_size > 0, 20, interval=0.02)  # following now
        process.send_signal(signum)
        results[signum] = process.wait(20)
        assert "Traceback" not in out.read_text()
    assert results == {signal.SIGINT: 0, signal.SIGTERM: 0}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(60)
def test_ivr_call_stops_its_sipp_on_sigterm(tmp_path: Path) -> None:
    """`ivr call` runs SIPp as a child: stopped, it stops SIPp too (here calling a port where no
    Asterisk answers, so the call would otherwise wait for its answer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update({"IVR_DATA_DIR": str(tmp_path), "IVR_LAB__SIP_PORT": str(free_port())})
    process = _started(["call", "--withheld"], env, tmp_path / "call.out")
    try:
        eventually(lambda: bool(_children(process.pid)), 20, interval=0.05)
        (sipp,) = _children(process.pid)
        assert "sipp" in Path(f"/proc/{sipp}/cmdline").read_bytes().decode(errors="replace")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 128 + signal.SIGTERM  # stopped, not a call that ended
        eventually(lambda: not Path(f"/proc/{sipp}").exists(), 10, interval=0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in (tmp_path / "call.out").read_text()
