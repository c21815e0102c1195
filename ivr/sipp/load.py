"""Load the way SIPp is built for: one SIPp process runs many calls (``-r`` rate, ``-l`` limit, ``-m``
total), each call taking its caller ID (and, for SIP INFO, its password) from an injection CSV.

The callers type ahead without ``#``: the unit key, then ~1.5 s later the 8-digit password (while
the read-back plays), then ~1.5 s after that the same 8 digits again, then they wait for the IVR to
hang up.

- SIP INFO callers take every key from the CSV (``[field2]`` ... ``[field9]``), so each call has its
  own password.
- RFC 4733 callers play pcaps, and SIPp loads pcaps with the scenario: every call of one process
  plays the same files. One process therefore holds a small set of *variants* (a password each,
  with its own SSRC, sequence numbers and timestamps; the CSV's ``[field1]`` picks the variant of a
  call), and a run uses a few processes for variety. Within a call, the unit key, the password and
  the confirmation are separate pcaps whose timestamps run on, so the same digits typed twice
  arrive as new key presses (see ``ivr.sipp.rtp``). Every call of a process replays the same RTP
  timestamps, which is harmless: each call is its own RTP session in Asterisk.

Every ``<log>`` line carries ``[call_number]`` and the caller ID, so one log file holds all calls;
``parse_load_log`` splits it and reuses ``ivr.sipp.runner.parse_events`` per call. A ``CLOCK`` line
per call (SIPp's ``gettimeofday``) maps SIPp's ``[clock_tick]`` onto the wall clock, so the moment
each entry's last key was sent can be compared with Asterisk's log ("Playing ..."). The CSV (which
holds SIP INFO passwords) lives in a private temporary directory that is removed afterwards; no
message trace is written.
"""

from __future__ import annotations

import contextlib
import random
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from core.phone_line import guessable_temporary_password
from ivr.sipp.model import Caller, CallResult, DtmfMode, ExpectHangup, SendDigits
from ivr.sipp.rtp import PACKET_SECONDS, RtpEventStream
from ivr.sipp.runner import SippError, Target, parse_events, read_log, run_sipp, write_scenario
from ivr.sipp.scenario import _Builder, _cdata

CALLER_PLACEHOLDER = "CALLERFIELD0"  # a valid SIP user part, replaced by [field0] in the XML
ENTRIES = ("unit", "password", "confirm")
_LINE = re.compile(r"^L (\d+) (\S+) (.*)$")
_CLOCK = re.compile(r"^CLOCK (\d+) ([\d.]+) ([\d.]+)\s*$")  # SIPp prints variables as 123.000000
_KEYS = re.compile(r"^KEYS (\w+) (\d+)\s*$")


@dataclass(frozen=True)
class TypeAheadScript:
    """When a caller presses what (seconds). ``tone + gap`` is the key period: 0.3 s for a person,
    0.12 s for an autodialler (``TypeAheadScript.autodialler()``)."""

    unit_key: str = "1"
    unit_after: float = 1.5  # after the answer (choose-unit is playing by then)
    password_after: float = 1.5  # after the unit key
    confirm_after: float = 1.5  # after the password's last key
    tone: float = 0.1
    gap: float = 0.2
    hangup_within: float = 60.0  # after the confirmation: the completion prompt, then BYE
    answer_timeout: float = 30.0
    dialled: str = "0363044747"

    @classmethod
    def autodialler(cls, **overrides: float | str) -> TypeAheadScript:
        values: dict[str, float | str] = {"tone": 0.06, "gap": 0.06}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        SendDigits(self.unit_key, gap=self.gap, tone=self.tone)  # validates the key and the timing
        if min(self.unit_after, self.password_after, self.confirm_after) < 0.05:
            raise ValueError("TypeAheadScript: pauses must be >= 0.05 s")

    def last_key_offset(self, digits: int, mode: DtmfMode) -> float:
        """Seconds from the start of an entry to the moment its last key reaches the far end:
        the first end packet of the last event (RFC 4733), or the last INFO being sent."""
        period = self.tone + self.gap
        if mode == "info":
            return (digits - 1) * period
        return (digits - 1) * period + max(1, round(self.tone / PACKET_SECONDS)) * PACKET_SECONDS

    def planned_seconds(self, password_digits: int = 8) -> float:
        period = self.tone + self.gap
        return (
            self.answer_timeout
            + self.unit_after
            + self.password_after
            + self.confirm_after
            + (1 + 2 * password_digits) * period
            + self.hangup_within
        )


@dataclass(frozen=True)
class LoadCall:
    """One call of a load run: who calls, and what they type (never shown)."""

    caller_id: str
    password: str = field(repr=False)
    variant: int = 0  # RFC 4733: which of the process's pcap sets the call plays

    def __post_init__(self) -> None:
        if not self.caller_id.isdigit():
            raise ValueError("LoadCall: caller_id must be digits")
        if not self.password.isdigit():
            raise ValueError("LoadCall: the password must be digits")


@dataclass
class LoadProcess:
    """One SIPp process: its calls, its mode, its pace."""

    name: str
    mode: DtmfMode
    calls: list[LoadCall]
    variants: list[str] = field(default_factory=list, repr=False)  # RFC 4733: password per variant
    rate: float = 10.0  # new calls per second
    limit: int = 100  # calls at once at most
    sip_port: int = 0  # 0: chosen by the runner
    media_port: int = 0

    def __post_init__(self) -> None:
        if self.mode == "rfc4733":
            if not self.variants:
                raise ValueError("LoadProcess: RFC 4733 callers need at least one variant")
            for call in self.calls:
                if not 0 <= call.variant < len(self.variants) or call.password != self.variants[call.variant]:
                    raise ValueError("LoadProcess: a call's password is not its variant's password")


@dataclass
class LoadCallResult:
    """What happened on one call of a load run, with wall-clock times (seconds since the epoch)."""

    caller_id: str
    call_number: int
    result: CallResult
    invite_at: float | None = None
    answered_at: float | None = None
    entry_sent_at: dict[str, float] = field(default_factory=dict)  # entry -> its last key's time

    @property
    def completed(self) -> bool:
        """Answered, no expectation failed, and the IVR hung up (after the completion prompt)."""
        return self.result.ok and self.result.hung_up_by == "remote"


@dataclass
class LoadResult:
    process: str
    calls: list[LoadCallResult]
    exit_code: int
    seconds: float
    errors: str = ""  # SIPp's error file (tail), when it wrote one
    stderr: str = ""


# ------------------------------------------------------------------------------------------ CSV


def injection_csv(process: LoadProcess) -> str:
    """SIPp's injection file: ``caller;variant`` (RFC 4733) or ``caller;0;d1;...;d8`` (SIP INFO)."""
    lines = ["SEQUENTIAL"]
    for call in process.calls:
        fields = [call.caller_id, str(call.variant)]
        if process.mode == "info":
            fields += list(call.password)
        lines.append(";".join(fields) + ";")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ scenario


class _LoadBuilder(_Builder):
    def __init__(self, process: LoadProcess, script: TypeAheadScript, directory: Path) -> None:
        caller = Caller(
            CALLER_PLACEHOLDER,
            dialled=script.dialled,
            dtmf_mode=process.mode,
            answer_timeout=script.answer_timeout,
            name=process.name,
        )
        super().__init__(caller, call_id="", directory=directory)
        self.process = process
        self.script = script

    def clock(self) -> None:
        self.parts.append(
            '<nop><action><gettimeofday assign_to="clk_s,clk_us"/>'
            '<log message="CLOCK [clock_tick] [$clk_s] [$clk_us]"/></action></nop>\n'
        )

    def pause(self, seconds: float) -> None:
        self.parts.append(f'<pause milliseconds="{max(1, round(seconds * 1000))}"/>\n')

    def variant_switch(self) -> None:
        count = len(self.process.variants)
        if self.process.mode != "rfc4733" or count <= 1:
            return
        tests = "".join(
            f'<test assign_to="is_v{k}" variable="variant" compare="equal" value="{k}"/>'
            for k in range(1, count)
        )
        self.parts.append(
            '<nop><action><assignstr assign_to="variant_s" value="[field1]"/>'
            f'<todouble assign_to="variant" variable="variant_s"/>{tests}</action></nop>\n'
        )
        for k in range(1, count):
            self.parts.append(f'<nop next="variant_{k}" test="is_v{k}"/>\n')

    def keys_info(self, entry: str, digits: Sequence[str]) -> None:
        """``digits``: the keys, or CSV keywords (``[field2]``) standing for them."""
        script = self.script
        self.parts.append(f'<nop><action><log message="KEYS {entry} [clock_tick]"/></action></nop>\n')
        for key in digits:
            body = f"Signal={key}\nDuration={round(script.tone * 1000)}\n"
            self.parts.append(
                f"<send>{_cdata(self.in_dialog('INFO', body, 'application/dtmf-relay'))}</send>\n"
            )
            self.parts.append('<recv response="200"/>\n')
            self.pause(script.tone + script.gap)

    def keys_rtp(self, entry: str, digits: str, stream: RtpEventStream, variant: int) -> None:
        script = self.script
        name = f"v{variant}-{entry}.pcap"
        self.pcaps[name] = stream.digits_pcap(digits, tone=script.tone, gap=script.gap)
        path = quoteattr(str(self.directory / name))
        self.parts.append(
            '<nop><action><log message="KEYS ' + entry + ' [clock_tick]"/>'
            f"<exec play_pcap_audio={path}/></action></nop>\n"
        )
        self.pause(len(digits) * (script.tone + script.gap) + 0.02)

    def typing(self) -> None:
        script = self.script
        if self.process.mode == "info":
            self.pause(script.unit_after)
            self.keys_info("unit", script.unit_key)
            self.pause(script.password_after)
            password_fields = [f"[field{2 + i}]" for i in range(self._password_length())]
            self.keys_info("password", password_fields)
            self.pause(script.confirm_after)
            self.keys_info("confirm", password_fields)
            return
        for k, password in enumerate(self.process.variants):
            if k:
                self.parts.append(f'<label id="variant_{k}"/>\n')
            stream = RtpEventStream(
                ssrc=random.getrandbits(32), sequence=random.getrandbits(15), timestamp=random.getrandbits(31)
            )
            stream.advance(script.unit_after)
            self.pause(script.unit_after)
            self.keys_rtp("unit", script.unit_key, stream, k)
            stream.advance(script.password_after)
            self.pause(script.password_after)
            self.keys_rtp("password", password, stream, k)
            stream.advance(script.confirm_after)
            self.pause(script.confirm_after)
            self.keys_rtp("confirm", password, stream, k)
            self.parts.append('<nop next="listen"/>\n')
        self.parts.append('<label id="listen"/>\n')

    def _password_length(self) -> int:
        lengths = {len(call.password) for call in self.process.calls}
        if len(lengths) != 1:
            raise ValueError("LoadProcess: SIP INFO calls of one process type passwords of one length")
        return lengths.pop()

    def expect_hangup(self) -> None:
        ms = max(1, round(self.script.hangup_within * 1000))
        self.parts.append(
            f'<recv request="BYE" timeout="{ms}" ontimeout="expect_failed_0" next="remote_bye"/>\n'
        )


def render_load_scenario(
    process: LoadProcess, script: TypeAheadScript, directory: Path
) -> tuple[str, dict[str, bytes]]:
    """The scenario XML of ``process`` and the pcap files it plays (to be written into ``directory``)."""
    builder = _LoadBuilder(process, script, directory)
    builder.invite()
    builder.clock()
    builder.variant_switch()
    builder.typing()
    builder.expect_hangup()
    builder.endings([ExpectHangup(script.hangup_within)])
    body = "".join(builder.parts)
    body = body.replace(CALLER_PLACEHOLDER, "[field0]")
    body = body.replace("m=audio [media_port]", "m=audio [auto_media_port]")  # a source port per call
    body = body.replace('<log message="', '<log message="L [call_number] [field0] ')
    xml = (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        f'<scenario name="ivr load {process.name}">\n{body}</scenario>\n'
    )
    return xml, builder.pcaps


# ------------------------------------------------------------------------------------------ results


def parse_load_log(text: str, process: LoadProcess, script: TypeAheadScript) -> list[LoadCallResult]:
    """Split the process's log by call and read each call back (wall-clock times included)."""
    by_call: dict[int, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        number, caller, rest = int(match.group(1)), match.group(2), match.group(3)
        by_call.setdefault(number, (caller, []))[1].append(rest)
    lengths = {"unit": len(script.unit_key)}
    for call in process.calls[:1]:
        lengths["password"] = lengths["confirm"] = len(call.password)
    results = []
    for number in sorted(by_call):
        caller, lines = by_call[number]
        result = parse_events(
            "\n".join(lines),
            caller=None,
            call_id=f"{process.name}-{number}",
            exit_code=0,
            fallback_duration=0.0,
        )
        origin: tuple[int, float] | None = None
        ticks: dict[str, int] = {}
        keys: dict[str, int] = {}
        for rest in lines:
            if match := _CLOCK.match(rest):
                origin = (int(match.group(1)), int(float(match.group(2))) + float(match.group(3)) / 1e6)
            elif match := _KEYS.match(rest):
                keys.setdefault(match.group(1), int(match.group(2)))
            elif rest.startswith("EVENT "):
                parts = rest.split()
                if len(parts) == 4 and parts[3].isdigit():
                    ticks.setdefault(parts[1], int(parts[3]))
        loaded = LoadCallResult(caller, number, result)
        if origin is not None:
            tick0, wall0 = origin

            def wall(tick: int, tick0: int = tick0, wall0: float = wall0) -> float:
                return wall0 + (tick - tick0) / 1000

            loaded.invite_at = wall(ticks["invite"]) if "invite" in ticks else None
            loaded.answered_at = wall(ticks["answered"]) if "answered" in ticks else None
            for entry, tick in keys.items():
                offset = script.last_key_offset(lengths.get(entry, 1), process.mode)
                loaded.entry_sent_at[entry] = wall(tick) + offset
        results.append(loaded)
    return results


# ------------------------------------------------------------------------------------------ running


def sipp_argv(
    process: LoadProcess, target: Target, workdir: Path, *, tag: str, time_limit: float
) -> list[str]:
    return [
        target.binary,
        f"{target.host}:{target.port}",
        "-sf", str(workdir / "scenario.xml"),
        "-inf", str(workdir / "calls.csv"),
        "-r", f"{process.rate:g}",
        "-rp", "1000",
        "-l", str(process.limit),
        "-m", str(len(process.calls)),
        "-i", "127.0.0.1",
        "-p", str(process.sip_port),
        "-mi", "127.0.0.1",
        "-mp", str(process.media_port),
        "-cid_str", f"{tag}-%u@ivr-sipp",
        "-aa",
        "-nostdin",
        "-trace_logs", "-log_file", str(workdir / "events.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        "-timeout", f"{max(1, int(time_limit))}s",
        "-timeout_error",
    ]  # fmt: skip


async def arun_load(
    process: LoadProcess,
    script: TypeAheadScript,
    target: Target,
    *,
    time_limit: float | None = None,
    keep_dir: Path | None = None,
) -> LoadResult:
    """Run one SIPp process to the end (or ``time_limit``) and read back every call.

    Cancelling the task kills SIPp. ``keep_dir`` receives the scenario and SIPp's logs, never the
    injection CSV (it may hold passwords).
    """
    if shutil.which(target.binary) is None:
        raise SippError(f"{target.binary} not found (apt-get install sip-tester)")
    if not process.calls:
        return LoadResult(process.name, [], 0, 0.0)
    if process.sip_port == 0 or process.media_port == 0:
        raise ValueError("LoadProcess: sip_port and media_port must be set")
    limit = time_limit or (len(process.calls) / process.rate + script.planned_seconds() + 30)
    workdir = Path(tempfile.mkdtemp(prefix="ivr-sipp-load-"))  # mode 0700
    try:
        xml, pcaps = render_load_scenario(process, script, workdir)
        write_scenario(workdir, xml, pcaps)
        csv_path = workdir / "calls.csv"
        csv_path.touch(mode=0o600)
        csv_path.write_text(injection_csv(process), encoding="ascii")
        argv = sipp_argv(process, target, workdir, tag=uuid.uuid4().hex[:12], time_limit=limit)
        sipp = await run_sipp(argv, workdir, kill_after=limit + 30, capture_stdout=False)
        text = read_log(workdir / "events.log")
        error_text = read_log(workdir / "errors.log")[-2000:]
        if keep_dir is not None:
            _keep(workdir, keep_dir, process.name)
        return LoadResult(
            process.name,
            parse_load_log(text, process, script),
            sipp.exit_code,
            sipp.seconds,
            errors=error_text,
            stderr=sipp.stderr.decode(errors="replace")[-2000:],
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _keep(workdir: Path, keep_dir: Path, prefix: str) -> None:
    keep_dir.mkdir(parents=True, exist_ok=True)
    for name in ("scenario.xml", "events.log", "errors.log"):  # never calls.csv
        with contextlib.suppress(OSError):
            shutil.copy(workdir / name, keep_dir / f"{prefix}-{name}")


# ------------------------------------------------------------------------------------------ planning


def plan_processes(
    calls_by_caller: Sequence[str],
    *,
    mode: DtmfMode,
    processes: int,
    variants: int,
    rate: float,
    limit: int,
    sip_port_base: int,
    media_port_base: int,
    password: Callable[[], str] | None = None,
) -> list[LoadProcess]:
    """Share the callers over ``processes`` SIPp processes (round robin), with fresh passwords: one
    per call (SIP INFO) or one per variant (RFC 4733, ``variants`` per process)."""
    if processes < 1 or variants < 1:
        raise ValueError("processes and variants must be >= 1")
    make = password or random_password
    count = min(processes, max(1, len(calls_by_caller)))
    plans = []
    for index in range(count):
        mine = list(calls_by_caller[index::count])
        share = len(mine) / max(1, len(calls_by_caller))
        kinds = [make() for _ in range(variants)] if mode == "rfc4733" else []
        calls = []
        for position, caller in enumerate(mine):
            if mode == "rfc4733":
                variant = position % variants
                calls.append(LoadCall(caller, kinds[variant], variant))
            else:
                calls.append(LoadCall(caller, make()))
        plans.append(
            LoadProcess(
                name=f"{mode}-{index}",
                mode=mode,
                calls=calls,
                variants=kinds,
                rate=max(0.1, rate * share),
                limit=max(1, round(limit * share)),
                sip_port=sip_port_base + index,
                media_port=media_port_base + 10000 * index % 30000,
            )
        )
    return plans


def random_password(length: int = 8) -> str:
    """A fresh password of ``length`` digits (``secrets``) that the IVR takes: none with a run of 4
    identical or consecutive digits (``core.phone_line.guessable_temporary_password``)."""
    while True:
        digits = "".join(secrets.choice("0123456789") for _ in range(length))
        if guessable_temporary_password(digits) is None:
            return digits
