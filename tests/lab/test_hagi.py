"""hagi:// in the lab: the dialplan finds the FastAGI daemons by DNS SRV (_agi._tcp.<domain>,
served by Debian's dnsmasq on 127.0.0.153:53, the root filesystem's resolv.conf pointing at it) and
fails over in priority order; the two-address form stays the default (tests/e2e, test_multinode).

The dialplan's second address is a port nobody listens on, so a call served by the second daemon
was found through its SRV record, not through the two-address fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from ivr.lab import Lab, dns
from ivr.settings import AgiSettings, AmiSettings, LabSettings
from ivr.sipp import Caller, ExpectHangup, HangUp, Wait, run_call
from stack.processes import stop_processes
from stack.settings import Settings
from tests.fixtures.web import free_port

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

SECRET = "hagi-test-agi-secret-0123456789abcdefghij"
DOMAIN = "agi.ivr.lab"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


class Daemon:
    def __init__(self, url: str, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
        self.env.update({"IVR_DATABASE_URL": url, "IVR_AGI__SECRET": SECRET, "IVR_LOG_FORMAT": "json"})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stack.cli.main", "serve", "--no-ami", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=out,
            )
        wait_until(lambda: "fastagi_listening" in self.log.read_text(), 30, f"daemon on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process], timeout=20)
            self.process = None

    def calls(self) -> int:
        return self.log.read_text().count('"event": "call_started"') if self.log.exists() else 0


@pytest.fixture
def hagi_lab(tmp_path: Path, voice_db_url: str) -> Iterator[tuple[Lab, Daemon, Daemon]]:
    first, second, nobody = free_port(), free_port(), free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        agi=AgiSettings(port=first, secret=SecretStr(SECRET)),
        ami=AmiSettings(enabled=False, port=free_port()),
        lab=LabSettings(
            run_dir=tmp_path / "lab",
            sip_port=5486,
            rtp_port_start=16000,
            rtp_port_end=16499,
            agi_fallback_port=nobody,
            agi_srv_domain=DOMAIN,
            agi_srv_ports=[first, second],
        ),
    )
    if not dns.address_free(settings.lab.dns_address):
        pytest.fail(f"{settings.lab.dns_address}:53 is taken: another lab's DNS server is running")
    daemons = (
        Daemon(voice_db_url, first, tmp_path / "a.log"),
        Daemon(voice_db_url, second, tmp_path / "b.log"),
    )
    lab = Lab(settings)
    lab.build()
    lab.up(agi_ports=(first, nobody))
    try:
        for daemon in daemons:
            daemon.start()
        yield lab, *daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        lab.down()
        assert not lab.stray_processes()
    assert dns.address_free(settings.lab.dns_address), "dnsmasq left running"


def short_call(lab: Lab) -> Caller:
    """A caller who hangs up once the menu has started."""
    return Caller("0300001111", steps=[Wait(2.0), HangUp()])


def test_hagi_finds_the_daemons_by_srv_and_fails_over_in_priority_order(
    hagi_lab: tuple[Lab, Daemon, Daemon],
) -> None:
    lab, first, second = hagi_lab
    dialplan = (lab.host_path(lab.paths.etc) / "extensions.conf").read_text()
    assert f"IVR_AGI_PRIMARY = hagi://{DOMAIN}/temp-password" in dialplan
    resolv = (lab.root / "etc" / "resolv.conf").read_text().splitlines()
    assert f"nameserver {lab.settings.lab.dns_address}" in resolv[:2]

    mark = lab.log_offset()
    assert run_call(short_call(lab), lab.settings).answered
    wait_until(lambda: first.calls() == 1, 10, "the call served by the priority-10 daemon")
    assert second.calls() == 0
    dns_log = (lab.run_dir / "logs" / "dnsmasq.log").read_text()
    assert f"_agi._tcp.{DOMAIN}" in dns_log  # Asterisk asked the lab's DNS server

    first.stop()  # the priority-10 daemon is gone: Asterisk tries the priority-20 one itself
    assert run_call(short_call(lab), lab.settings).answered
    wait_until(lambda: second.calls() == 1, 10, "the call served by the priority-20 daemon")
    assert "unreachable - trying" not in lab.messages(mark)  # not the two-address fallback

    second.stop()  # none left: the apology, never dead air
    mark = lab.log_offset()
    result = run_call(Caller("0300001111", steps=[ExpectHangup(within=30)]), lab.settings)
    assert result.answered and result.hung_up_by == "remote", result
    assert "ivr/system-error" in lab.played_prompts(mark)
