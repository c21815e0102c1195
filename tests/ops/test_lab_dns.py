"""The lab's hagi:// pieces without Asterisk: the rendered dialplan and asterisk.conf, the dnsmasq
command line (SRV records in priority order, nothing forwarded), and the root filesystem's
resolv.conf (the lab's server first, the host's kept, idempotent). tests/lab/test_hagi.py runs
them with the real Asterisk."""

from __future__ import annotations

from pathlib import Path

from ivr.lab import dns
from ivr.lab.config import placeholder_values, render_config
from ivr.settings import LabSettings
from stack.settings import Settings
from tests.lab.test_units import PATHS


def rendered(tmp_path: Path, **lab: object) -> dict[str, str]:
    settings = Settings(data_dir=tmp_path / "data", lab=LabSettings(**lab))  # type: ignore[arg-type]
    written = render_config(tmp_path / "etc", placeholder_values(settings, PATHS, (4573, 4574)))
    return {path.name: path.read_text() for path in written}


def test_the_two_address_form_stays_the_default_and_hagi_replaces_the_first(tmp_path: Path) -> None:
    default = rendered(tmp_path)
    assert "IVR_AGI_PRIMARY = agi://127.0.0.1:4573/temp-password" in default["extensions.conf"]
    assert "\nsystemname" not in default["asterisk.conf"]
    hagi = rendered(tmp_path, agi_srv_domain="agi.ivr.lab", system_name="node-a")
    assert "IVR_AGI_PRIMARY = hagi://agi.ivr.lab/temp-password" in hagi["extensions.conf"]
    assert "IVR_AGI_SECONDARY = agi://127.0.0.1:4574/temp-password" in hagi["extensions.conf"]
    assert "\nsystemname = node-a\n" in hagi["asterisk.conf"]


def test_dnsmasq_serves_the_srv_records_in_priority_order_and_forwards_nothing() -> None:
    argv = dns.dnsmasq_argv(address="127.0.0.153", domain="agi.ivr.lab", host="127.0.0.1", ports=[573, 574])
    assert "--listen-address=127.0.0.153" in argv and "--port=53" in argv and "--bind-interfaces" in argv
    assert "--no-resolv" in argv and "--local=/agi.ivr.lab/" in argv
    assert [a for a in argv if a.startswith("--srv-host=")] == [
        "--srv-host=_agi._tcp.agi.ivr.lab,agi-0.agi.ivr.lab,573,10,0",
        "--srv-host=_agi._tcp.agi.ivr.lab,agi-1.agi.ivr.lab,574,20,0",
    ]
    assert "--host-record=agi-0.agi.ivr.lab,127.0.0.1" in argv


def test_resolv_conf_puts_the_lab_server_first_and_keeps_the_hosts(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    resolv = tmp_path / "etc" / "resolv.conf"
    resolv.write_text("nameserver 10.255.255.53\nsearch example\n")
    dns.point_resolv_conf_at(tmp_path, "127.0.0.153")
    first = resolv.read_text()
    assert first.splitlines()[1:] == ["nameserver 127.0.0.153", "nameserver 10.255.255.53", "search example"]
    dns.point_resolv_conf_at(tmp_path, "127.0.0.153")
    assert resolv.read_text() == first  # every lab writes the same
