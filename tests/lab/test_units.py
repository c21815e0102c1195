"""Lab pieces without Asterisk: mirror discovery, config rendering, RTP events, SIPp scenarios."""

from __future__ import annotations

import itertools
import re
import struct
from pathlib import Path

import pytest
from pydantic import SecretStr

from ivr.assets import ASTERISK_CONFIG_DIR, DIALPLAN_DIR, PROMPT_CATALOG
from ivr.lab.config import (
    AsteriskPaths,
    ConfigError,
    e164_without_plus,
    placeholder_values,
    render_config,
    render_text,
    template_files,
)
from ivr.lab.rootfs import RootfsError, RootfsRecipe, host_debian_mirror
from ivr.settings import AgiSettings, AmiSettings, SecretError, agi_secret, ami_secret
from ivr.sipp import Caller, ExpectHangup, HangUp, SendDigits, Wait
from ivr.sipp.rtp import RtpEventStream
from ivr.sipp.runner import parse_events
from ivr.sipp.scenario import render_scenario
from stack.settings import Settings

PATHS = AsteriskPaths(
    etc="/i/etc", data="/i/data", varlib="/i/lib", spool="/i/spool", run="/i/run", log="/i/log"
)


def test_mirror_from_deb822_sources_skips_security(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n"
    )
    assert host_debian_mirror(tmp_path / "none.list", sources) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_list(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n")
    assert host_debian_mirror(listing, tmp_path / "missing") == "http://m.example/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RootfsError, match="no Debian mirror"):
        host_debian_mirror(tmp_path / "none.list", tmp_path / "missing")


def test_recipe_key_changes_with_the_package_list() -> None:
    base = RootfsRecipe()
    assert RootfsRecipe().key == base.key
    assert RootfsRecipe(packages=(*base.packages, "tcpdump")).key != base.key


def test_repository_configuration_renders_completely(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    written = render_config(tmp_path, placeholder_values(settings, PATHS, (4573, 4574)))
    names = {p.name for p in written}
    assert {"asterisk.conf", "modules.conf", "pjsip.conf", "manager.conf", "extensions.conf"} <= names
    placeholder = re.compile(r"@[A-Z][A-Z0-9_]*@")
    for path in written:
        for line in path.read_text().splitlines():
            if not line.lstrip().startswith(";"):
                assert not placeholder.search(line), f"{path.name}: {line}"
    extensions = (tmp_path / "extensions.conf").read_text()
    assert "agi://127.0.0.1:4573/temp-password" in extensions
    assert "agi://127.0.0.1:4574/temp-password" in extensions
    assert "exten => 0363044747,1" in extensions and "exten => +81363044747,1" in extensions
    manager = (tmp_path / "manager.conf").read_text()
    section = manager.split("[ivr-daemon]", 1)[1]
    read_classes = next(line for line in section.splitlines() if line.startswith("read"))
    classes = {c.strip() for c in read_classes.split("=", 1)[1].split(",")}
    assert classes == {"system", "call"}  # no dtmf, agi, dialplan or all
    logger = (tmp_path / "logger.conf").read_text()
    assert "dtmf" not in logger.split("[logfiles]", 1)[1] and "debug" not in logger.split("[logfiles]", 1)[1]
    modules = (tmp_path / "modules.conf").read_text()
    loaded = {line.split("=>", 1)[1].strip() for line in modules.splitlines() if line.startswith("load")}
    assert "autoload = no" in modules
    # Read() and the PJSIP packet logger would write the keys a caller pressed to the log.
    assert not loaded & {"app_read.so", "res_pjsip_logger.so", "res_pjsip_history.so"}


def test_unfilled_placeholder_is_an_error() -> None:
    with pytest.raises(ConfigError, match="@NOPE@"):
        render_text("port = @NOPE@\n", {}, name="x.conf")
    assert render_text("; about @NOPE@\nport = @P@\n", {"P": "1"}) == "; about @NOPE@\nport = 1\n"
    with pytest.raises(ConfigError, match="line break"):
        render_text("secret = @S@\n", {"S": "a\nb"})


def test_e164_form_of_the_service_number() -> None:
    assert e164_without_plus("0363044747") == "81363044747"
    with pytest.raises(ConfigError):
        e164_without_plus("03-6304")


def _rtp_packets(pcap: bytes) -> list[tuple[float, int, int, int, int, bool, int]]:
    """(time, seq, timestamp, event, marker, end, duration) of each packet of our pcap."""
    out = []
    offset = 24
    while offset < len(pcap):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", pcap, offset)
        frame = pcap[offset + 16 : offset + 16 + incl]
        rtp = frame[14 + 20 + 8 :]
        _vpxcc, m_pt, seq, ts, _ssrc = struct.unpack_from("!BBHII", rtp)
        event, e_vol, duration = struct.unpack_from("!BBH", rtp, 12)
        out.append((sec + usec / 1e6, seq, ts, event, m_pt >> 7, bool(e_vol & 0x80), duration))
        offset += 16 + incl
    return out


def test_repeated_digits_get_their_own_timestamps() -> None:
    stream = RtpEventStream(ssrc=1, sequence=65530, timestamp=1000)
    packets = _rtp_packets(stream.digits_pcap("11#", tone=0.1, gap=0.2))
    starts = [p for p in packets if p[4] == 1]  # marker bit: first packet of each event
    assert [p[3] for p in starts] == [1, 1, 11]
    assert len({p[2] for p in starts}) == 3  # three distinct event timestamps
    seqs = [p[1] for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))  # wraps cleanly
    ends = [p for p in packets if p[5]]
    assert len(ends) == 9 and all(p[6] == 800 for p in ends)  # 3 end packets x 3 events, 100 ms
    times = [p[0] for p in packets]
    assert times == sorted(times) and times[-1] == pytest.approx(0.7, abs=0.01)
    later = _rtp_packets(stream.digits_pcap("1", tone=0.1, gap=0.2))
    assert later[0][2] > starts[-1][2] and later[0][1] == (seqs[-1] + 1) % 65536


def test_scenario_for_rfc4733_plays_one_pcap_per_send(tmp_path: Path) -> None:
    caller = Caller(
        "0300001111", steps=[Wait(1), SendDigits("11"), Wait(1), SendDigits("22#"), ExpectHangup(5)]
    )
    rendered = render_scenario(caller, "cid", tmp_path)
    assert sorted(rendered.pcaps) == ["dtmf-1.pcap", "dtmf-3.pcap"]
    assert rendered.xml.count("play_pcap_audio") == 2
    assert "P-Asserted-Identity: <sip:0300001111@[local_ip]>" in rendered.xml
    assert 'optional="global"' in rendered.xml
    assert "INFO" not in rendered.xml.split("<scenario", 1)[1].split("Allow:", 1)[0]


def test_scenario_for_info_sends_each_key(tmp_path: Path) -> None:
    caller = Caller(None, dtmf_mode="info", steps=[SendDigits("1#*"), HangUp()])
    xml = render_scenario(caller, "cid", tmp_path).xml
    assert xml.count("Content-Type: application/dtmf-relay") == 3
    assert "Signal=#" in xml and "Signal=*" in xml
    assert "Privacy: id" in xml and "anonymous@anonymous.invalid" in xml
    assert "P-Asserted-Identity" not in xml


def test_bad_callers_are_refused() -> None:
    with pytest.raises(ValueError):
        SendDigits("12x")
    with pytest.raises(ValueError):
        Caller("03<script>", steps=[])
    with pytest.raises(ValueError):
        Caller("0300001111", dtmf_mode="inband", steps=[])  # type: ignore[arg-type]


def test_parse_events_reads_the_call_back() -> None:
    caller = Caller("0300001111", steps=[Wait(1), SendDigits("1"), ExpectHangup(5)])
    log = "\n".join(
        [
            "EVENT invite - 1000",
            "SIP 100 1003",
            "SIP 200 1500",
            "EVENT answered - 1501",
            "EVENT step_done 0 2501",
            "EVENT step_done 1 2900",
            "EVENT remote_bye - 6501",
            "EVENT done - 6502",
        ]
    )
    result = parse_events(log, caller=caller, call_id="c", exit_code=0, fallback_duration=0)
    assert result.answered and result.sip_codes == [100, 200] and result.hung_up_by == "remote"
    assert result.duration == pytest.approx(5.001) and result.remote_hangup_after == pytest.approx(5.0)
    assert result.steps_done == 3 and result.ok
    rejected = parse_events(
        "EVENT invite - 1\nSIP 404 5\nEVENT rejected - 6\nEVENT done - 7",
        caller=caller,
        call_id="c",
        exit_code=0,
        fallback_duration=0,
    )
    assert not rejected.answered and rejected.error == "call rejected (404)"


def test_prune_removes_other_trees_but_not_the_current_one(tmp_path: Path) -> None:
    from ivr.lab import Lab

    settings = Settings()
    settings.lab.cache_dir = tmp_path
    lab = Lab(settings)
    (tmp_path / "rootfs-0000000000000000").mkdir()
    (tmp_path / "rootfs-0000000000000000.build.log").write_text("old")
    lab.root.mkdir()  # the current recipe's tree (incomplete here: kept anyway)
    (tmp_path / "prompts-old").mkdir()
    removed = {p.name for p in lab.prune()}
    assert removed == {"rootfs-0000000000000000"}  # prompts kept: without a tree, no way to tell
    assert lab.root.is_dir() and (tmp_path / "prompts-old").is_dir()
    assert not (tmp_path / "rootfs-0000000000000000.build.log").exists()


def test_the_dialplan_reaches_the_daemon_only_on_privileged_ports() -> None:
    settings = Settings()
    assert settings.agi.port < 1024 and settings.lab.agi_fallback_port < 1024


def test_the_fastagi_secret_is_only_in_asterisks_own_0600_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    secret = agi_secret(settings)
    assert agi_secret(Settings(data_dir=tmp_path / "data")) == secret  # made once, then read
    assert (tmp_path / "data" / "agi-secret").stat().st_mode & 0o777 == 0o600
    etc = tmp_path / "etc"
    written = render_config(etc, placeholder_values(settings, PATHS, (573, 574)))
    holders = [p.name for p in written if secret in p.read_text()]
    assert holders == ["ivr-agi.conf"]  # not the dialplan (globals are logged), not the AGI URL
    assert (etc / "ivr-agi.conf").stat().st_mode & 0o777 == 0o600
    assert "load => func_config.so" in (etc / "modules.conf").read_text()


def test_an_explicit_secret_wins_and_a_weak_one_is_refused(tmp_path: Path) -> None:
    strong = "x" * 40
    assert agi_secret(Settings(data_dir=tmp_path, agi=AgiSettings(secret=strong))) == strong
    assert not (tmp_path / "agi-secret").exists()
    with pytest.raises(SecretError):
        agi_secret(Settings(data_dir=tmp_path, agi=AgiSettings(secret="short")))
    with pytest.raises(SecretError):
        agi_secret(Settings(data_dir=tmp_path, agi=AgiSettings(secret="has space and ) paren " * 3)))


def test_the_ami_secret_is_made_on_first_use_and_only_in_manager_conf(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    secret = ami_secret(settings)
    assert ami_secret(Settings(data_dir=tmp_path / "data")) == secret  # made once, then read
    assert secret != agi_secret(settings)
    assert (tmp_path / "data" / "ami-secret").stat().st_mode & 0o777 == 0o600
    etc = tmp_path / "etc"
    written = render_config(etc, placeholder_values(settings, PATHS, (573, 574)))
    assert [p.name for p in written if secret in p.read_text()] == ["manager.conf"]
    account = (etc / "manager.conf").read_text().split("[ivr-daemon]", 1)[1]
    assert "read = system,call" in account
    assert not [line for line in account.splitlines() if line.replace(" ", "").startswith("write=")]


def test_a_shipped_or_weak_ami_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="shipped"):
        ami_secret(Settings(data_dir=tmp_path, ami=AmiSettings(secret=SecretStr("ivr-lab-ami-secret"))))
    with pytest.raises(SecretError):
        ami_secret(Settings(data_dir=tmp_path, ami=AmiSettings(secret=SecretStr("short"))))
    strong = "A" * 40
    assert ami_secret(Settings(data_dir=tmp_path, ami=AmiSettings(secret=SecretStr(strong)))) == strong
    assert not (tmp_path / "ami-secret").exists()


def test_the_repositorys_configuration_directories_link_to_the_package_data() -> None:
    """asterisk.conf.d/, dialplan/ and prompts/ at the top of the repository are what operators and
    the docs know; the files live in the package (ivr/assets, shipped in the wheel): one copy."""
    repo = Path(__file__).resolve().parents[2]
    for name, target in (
        ("asterisk.conf.d", Path(str(ASTERISK_CONFIG_DIR))),
        ("dialplan", Path(str(DIALPLAN_DIR))),
        ("prompts", Path(str(PROMPT_CATALOG)).parent),
    ):
        link = repo / name
        assert link.is_symlink() and not link.readlink().is_absolute(), name
        assert link.resolve() == target.resolve() == repo / "ivr" / "assets" / name
    rendered = {f.name for f in template_files()}
    assert rendered == {p.name for p in (repo / "asterisk.conf.d").glob("*.conf")} | {"extensions.conf"}
