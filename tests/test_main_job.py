"""The main job (`scripts/run` → `ivr run`): the whole stack comes up, takes a call, shows it in the
call log, serves the login page, and stops everything it started.

It runs on its own lab instance and ports, so it never meets the `lab` fixture's Asterisk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ivr.lab import Lab
from ivr.settings import LabSettings
from stack.settings import Settings
from tests.support import command_lines, eventually

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

PORTS = {
    "IVR_LAB__SIP_PORT": "5460",
    "IVR_LAB__RTP_PORT_START": "18000",
    "IVR_LAB__RTP_PORT_END": "18999",
    "IVR_AGI__PORT": "5073",
    "IVR_LAB__AGI_FALLBACK_PORT": "5074",
    "IVR_AMI__PORT": "5438",
    "IVR_WEB__PORT": "8480",
    "IVR_WEB__BASE_URL": "http://127.0.0.1:8480",
    "IVR_SMTP__PORT": "8425",
    "IVR_NOTICES__WEB_PORT": "8481",
    "IVR_NOTICES__BASE_URL": "http://127.0.0.1:8481",
    "IVR_NOTICES__BOUNCE_PORT": "8426",
}


def _read_until(stream_path: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stream_path.read_text(errors="replace") if stream_path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} not seen within {timeout} s:\n{text[-3000:]}")


def test_ivr_run_brings_up_the_stack_takes_a_call_and_cleans_up(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(PORTS)
    env["IVR_DATA_DIR"] = str(tmp_path / "data")
    env["IVR_LAB__RUN_DIR"] = str(tmp_path / "lab")
    env.pop("IVR_DATABASE_URL", None)
    out_path = tmp_path / "run.out"
    with open(out_path, "wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "stack.cli.main", "run", "--exit-after", "240"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _read_until(out_path, "Following the call log", 90)

        login = httpx.get(f"{PORTS['IVR_WEB__BASE_URL']}/login", timeout=10)
        assert login.status_code == 200
        assert "パスワード" in login.text
        support = httpx.get(f"{PORTS['IVR_NOTICES__BASE_URL']}/support/notices", timeout=10)
        assert support.status_code == 200 and "工事・故障情報" in support.text

        call = subprocess.run(
            [sys.executable, "-m", "stack.cli.main", "call", "--withheld"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "answered: yes" in call.stdout, call.stdout + call.stderr
        assert "caller-id-withheld" in call.stdout

        assert len(_processes_started_with(str(tmp_path))) >= 4  # run, mail sink, daemon, web, follower
        text = _read_until(out_path, "caller_id_withheld", 30)
        assert "withheld" in text
        daemon_log = (tmp_path / "data" / "logs" / "daemon.jsonl").read_text()
        assert '"event": "call_finished"' in daemon_log
        assert "agi_connection_rejected" not in daemon_log  # readiness checks never poke the daemon
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            code = stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
            raise
    assert code == 0, out_path.read_text()[-3000:]

    lab = Lab(Settings(lab=LabSettings(run_dir=tmp_path / "lab")))
    assert not lab.is_running()
    assert lab.stray_processes() == [], "Asterisk left running"
    _assert_stack_gone(str(tmp_path))


def _assert_stack_gone(marker: str) -> None:
    """No process of the stack is left. One may take a moment to notice its parent is gone
    (Asterisk's astcanary checks every few seconds): wait for that, and name what stays."""
    try:
        eventually(lambda: not _processes_started_with(marker), 20, interval=0.2)
    except AssertionError:
        left = command_lines(_processes_started_with(marker))
        raise AssertionError(f"processes of the stack left running: {left}") from None


def _processes_started_with(marker: str) -> list[int]:
    """Pids whose environment mentions ``marker`` (every process `ivr run` starts inherits it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            pids.append(int(entry.name))
    return pids


#: other ports than the test above, so the two never meet
SIGTERM_PORTS = {
    "IVR_LAB__SIP_PORT": "5462",
    "IVR_LAB__RTP_PORT_START": "19000",
    "IVR_LAB__RTP_PORT_END": "19499",
    "IVR_AGI__PORT": "5075",
    "IVR_LAB__AGI_FALLBACK_PORT": "5076",
    "IVR_AMI__PORT": "5440",
    "IVR_WEB__PORT": "8482",
    "IVR_WEB__BASE_URL": "http://127.0.0.1:8482",
    "IVR_SMTP__PORT": "8427",
}


def test_ivr_run_stops_everything_on_a_supervisors_sigterm(tmp_path: Path) -> None:
    """A supervisor stops `ivr run` with SIGTERM (to it alone, not its process group): Asterisk, the
    daemon, the web process, the mail sink and the call-log follower all stop, as on Ctrl-C."""
    env = dict(os.environ)
    env.update(SIGTERM_PORTS)
    env["IVR_DATA_DIR"] = str(tmp_path / "data")
    env["IVR_LAB__RUN_DIR"] = str(tmp_path / "lab")
    env.pop("IVR_DATABASE_URL", None)
    out_path = tmp_path / "run.out"
    with open(out_path, "wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "stack.cli.main", "run", "--exit-after", "240"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # as under a supervisor: no terminal to send the group a Ctrl-C
        )
    try:
        _read_until(out_path, "Following the call log", 90)
        started = _processes_started_with(str(tmp_path))
        assert len(started) >= 5, started  # run, mail sink, daemon, web, follower (and Asterisk)
        lab = Lab(Settings(lab=LabSettings(run_dir=tmp_path / "lab")))
        assert lab.is_running()
        stack.send_signal(signal.SIGTERM)
        code = stack.wait(timeout=60)
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
    assert code == 0, out_path.read_text()[-3000:]
    assert not lab.is_running()
    assert lab.stray_processes() == [], "Asterisk left running"
    _assert_stack_gone(str(tmp_path))
