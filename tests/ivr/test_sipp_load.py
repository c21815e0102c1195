"""ivr.sipp.load: the load scenario, the injection CSV, the log read back (no SIPp needed)."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from ivr.sipp.load import (
    LoadCall,
    LoadProcess,
    TypeAheadScript,
    injection_csv,
    parse_load_log,
    plan_processes,
    render_load_scenario,
)
from ivr.sipp.rtp import PCAP_DST_PORT

CALLERS = [f"0377{i:06d}" for i in range(1, 8)]


def _rtp_packets(pcap: bytes) -> list[tuple[int, int, int, bool]]:
    """(sequence, timestamp, event code, end) of every RFC 4733 packet in a pcap from ivr.sipp.rtp."""
    packets = []
    offset = 24
    while offset < len(pcap):
        _s, _us, length, _orig = struct.unpack_from("<IIII", pcap, offset)
        frame = pcap[offset + 16 : offset + 16 + length]
        offset += 16 + length
        udp = frame[14 + 20 :]
        assert struct.unpack_from("!H", udp, 2)[0] == PCAP_DST_PORT
        rtp = udp[8:]
        _vpt, _m, sequence, timestamp, _ssrc = struct.unpack_from("!BBHII", rtp)
        code, flags, _duration = struct.unpack_from("!BBH", rtp, 12)
        packets.append((sequence, timestamp, code, bool(flags & 0x80)))
    return packets


def test_plan_shares_callers_and_gives_rfc4733_processes_variants() -> None:
    plans = plan_processes(
        CALLERS, mode="rfc4733", processes=2, variants=3, rate=10, limit=7, sip_port_base=5300,
        media_port_base=20000,
    )  # fmt: skip
    assert [len(p.calls) for p in plans] == [4, 3]
    assert sorted(c.caller_id for p in plans for c in p.calls) == CALLERS
    for plan in plans:
        assert len(plan.variants) == 3
        assert all(len(v) == 8 and v.isdigit() for v in plan.variants)
        assert all(call.password == plan.variants[call.variant] for call in plan.calls)
    assert {p.sip_port for p in plans} == {5300, 5301}
    assert sum(p.rate for p in plans) == pytest.approx(10)


def test_info_plan_gives_every_call_its_own_password() -> None:
    (plan,) = plan_processes(
        CALLERS, mode="info", processes=1, variants=1, rate=5, limit=7, sip_port_base=5300,
        media_port_base=20000,
    )  # fmt: skip
    passwords = [c.password for c in plan.calls]
    assert len(set(passwords)) == len(passwords)
    assert plan.variants == []


def test_password_is_not_in_repr() -> None:
    call = LoadCall("0377000001", "40719352")
    assert "40719352" not in repr(call)
    process = LoadProcess("p", "rfc4733", [LoadCall("0377000001", "40719352")], variants=["40719352"])
    assert "40719352" not in repr(process)


def test_rfc4733_call_must_play_its_variant() -> None:
    with pytest.raises(ValueError, match="variant"):
        LoadProcess("p", "rfc4733", [LoadCall("0377000001", "11112222", 0)], variants=["33334444"])


def test_injection_csv_info_spreads_digits_over_fields() -> None:
    process = LoadProcess("p", "info", [LoadCall("0377000001", "40719352")])
    lines = injection_csv(process).splitlines()
    assert lines == ["SEQUENTIAL", "0377000001;0;4;0;7;1;9;3;5;2;"]


def test_injection_csv_rfc4733_holds_no_password() -> None:
    process = LoadProcess(
        "p", "rfc4733", [LoadCall("0377000001", "40719352", 1)], variants=["1" * 8, "40719352"]
    )
    text = injection_csv(process)
    assert text.splitlines() == ["SEQUENTIAL", "0377000001;1;"]
    assert "40719352" not in text


def test_info_scenario_types_ahead_from_csv_fields(tmp_path: Path) -> None:
    process = LoadProcess("p", "info", [LoadCall("0377000001", "40719352")])
    xml, pcaps = render_load_scenario(process, TypeAheadScript(), tmp_path)
    assert pcaps == {}
    assert "40719352" not in xml
    assert "[field0]" in xml and "CALLERFIELD0" not in xml
    assert "P-Asserted-Identity: <sip:[field0]@[local_ip]>" in xml
    # unit key, then the password twice, each key its own INFO, no "#"
    assert xml.count("Signal=1\n") == 1
    for field_number in range(2, 10):
        assert xml.count(f"Signal=[field{field_number}]") == 2
    assert "Signal=#" not in xml
    assert xml.index("KEYS unit") < xml.index("KEYS password") < xml.index("KEYS confirm")
    assert '<log message="L [call_number] [field0] CLOCK' in xml


def test_rfc4733_scenario_branches_on_the_variant_and_times_keys_fresh(tmp_path: Path) -> None:
    variants = ["11223344", "11223344", "90817263"]
    calls = [LoadCall(CALLERS[i], variants[i % 3], i % 3) for i in range(3)]
    process = LoadProcess("p", "rfc4733", calls, variants=variants)
    xml, pcaps = render_load_scenario(process, TypeAheadScript(), tmp_path)
    assert set(pcaps) == {f"v{k}-{e}.pcap" for k in range(3) for e in ("unit", "password", "confirm")}
    assert '<assignstr assign_to="variant_s" value="[field1]"/>' in xml
    assert '<nop next="variant_1" test="is_v1"/>' in xml and '<nop next="variant_2" test="is_v2"/>' in xml
    assert "m=audio [auto_media_port]" in xml
    for k, password in enumerate(variants):
        unit = _rtp_packets(pcaps[f"v{k}-unit.pcap"])
        first = _rtp_packets(pcaps[f"v{k}-password.pcap"])
        again = _rtp_packets(pcaps[f"v{k}-confirm.pcap"])
        # the keys typed: one event per key, in order
        for packets, keys in ((unit, "1"), (first, password), (again, password)):
            events = {ts for _seq, ts, _c, _e in packets}
            assert len(events) == len(keys)
            assert [c for (_s, ts, c, end) in packets if end][::3] == [int(key) for key in keys]
        # the confirmation repeats the digits with new timestamps and sequence numbers running on
        timestamps = [ts for packets in (unit, first, again) for _s, ts, _c, _e in packets]
        assert timestamps == sorted(timestamps)
        assert not {ts for _s, ts, _c, _e in first} & {ts for _s, ts, _c, _e in again}
        sequences = [seq for packets in (unit, first, again) for seq, _t, _c, _e in packets]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(sequences))
    # variants of one process are separate RTP streams
    assert _rtp_packets(pcaps["v0-password.pcap"])[0][1] != _rtp_packets(pcaps["v1-password.pcap"])[0][1]


def test_autodialler_keys_are_120_ms_apart() -> None:
    script = TypeAheadScript.autodialler()
    assert script.tone + script.gap == pytest.approx(0.12)
    assert script.last_key_offset(8, "info") == pytest.approx(7 * 0.12)
    assert script.last_key_offset(8, "rfc4733") == pytest.approx(7 * 0.12 + 0.06)


def test_parse_load_log_splits_calls_and_maps_ticks_to_wall_time() -> None:
    script = TypeAheadScript()
    process = LoadProcess(
        "p", "info", [LoadCall("0377000001", "40719352"), LoadCall("0377000002", "11112222")]
    )
    log = "\n".join(
        [
            "L 1 0377000001 EVENT invite - 1000",
            "L 1 0377000001 SIP 100 1004",
            "L 2 0377000002 EVENT invite - 1100",
            "L 1 0377000001 SIP 200 1010",
            "L 1 0377000001 EVENT answered - 1012",
            "L 1 0377000001 CLOCK 1012 1796355555.000000 500000.000000",
            "L 2 0377000002 SIP 486 1110",
            "L 2 0377000002 EVENT rejected - 1110",
            "L 2 0377000002 EVENT done - 1110",
            "L 1 0377000001 KEYS unit 2512",
            "L 1 0377000001 KEYS password 4312",
            "L 1 0377000001 KEYS confirm 8212",
            "L 1 0377000001 EVENT remote_bye - 30012",
            "L 1 0377000001 EVENT done - 30016",
            "unrelated line",
        ]
    )
    first, second = parse_load_log(log, process, script)
    assert (first.caller_id, first.call_number, second.caller_id) == ("0377000001", 1, "0377000002")
    assert first.completed and not second.completed
    assert second.result.error == "call rejected (486)"
    assert first.answered_at == pytest.approx(1796355555.5)
    assert first.invite_at == pytest.approx(1796355555.5 - 0.012)
    assert first.entry_sent_at["unit"] == pytest.approx(1796355555.5 + 1.5)
    assert first.entry_sent_at["password"] == pytest.approx(1796355555.5 + 3.3 + 7 * 0.3)
    assert first.result.duration == pytest.approx(29.004)


def test_script_rejects_bad_timing() -> None:
    with pytest.raises(ValueError):
        TypeAheadScript(gap=0.01)
    with pytest.raises(ValueError):
        TypeAheadScript(password_after=0)
