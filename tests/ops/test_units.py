"""The systemd unit examples (ops/systemd, docs/deploy.md) are valid: `systemd-analyze verify` with
no warning (an unknown or misspelled key is only a warning there), each long-running process has
one, and each stops with SIGTERM within a timeout longer than the daemon's grace period."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.settings import AgiSettings

UNITS = Path(__file__).resolve().parents[2] / "ops" / "systemd"
IVR_BIN = Path(sys.executable).parent / "ivr"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_systemd_analyze_verifies_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: install Debian's systemd (scripts/bootstrap does)")
    names = sorted(p.name for p in UNITS.iterdir())
    for name in names:  # the installed paths, pointed at this checkout's ivr
        text = (UNITS / name).read_text().replace("/opt/ivr/.venv/bin/ivr", str(IVR_BIN))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


def test_every_long_running_process_has_a_unit_that_stops_it_with_sigterm() -> None:
    commands = {}
    for path in UNITS.glob("*.service"):
        service = unit(path.name)["Service"]
        commands[service["ExecStart"].split("/bin/ivr ", 1)[1]] = service
    assert set(commands) == {"serve", "web", "run"}
    for service in commands.values():
        assert service["KillSignal"] == "SIGTERM"
    daemon_timeout = float(commands["serve"]["TimeoutStopSec"])
    assert daemon_timeout > AgiSettings().shutdown_grace_seconds + 5  # time for the last records
    assert float(commands["run"]["TimeoutStopSec"]) > 20  # `ivr run` stops within 20 s
    assert unit("ivr-daemon.socket")["Socket"]["ListenStream"].endswith(":573")
