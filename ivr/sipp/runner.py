"""Run SIPp callers against the lab and read back what happened.

Each call is one ``sipp`` process with its own scenario, its own RFC 4733 pcaps (fresh timestamps
per call), and its own SIP and media ports; many run side by side for load tests. Async functions
(``arun_call``, ``arun_calls``) suit tests that serve FastAGI in the same event loop; ``run_call`` and
``run_calls`` are their blocking twins.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ivr.settings import LabSettings, VoiceSettings
from ivr.sipp.model import Caller, CallResult, ExpectHangup, SendDigits, Wait
from ivr.sipp.scenario import render_scenario

_EVENT = re.compile(r"^EVENT (\w+) (\S+) (\d+)\s*$")
_SIP = re.compile(r"^SIP (\d{3}) (\d+)\s*$")


class SippError(RuntimeError):
    """SIPp could not be run."""


@dataclass(frozen=True)
class SippExit:
    """How one SIPp process ended."""

    exit_code: int
    stdout: bytes  # empty unless captured
    stderr: bytes
    seconds: float


def write_scenario(workdir: Path, xml: str, pcaps: Mapping[str, bytes]) -> None:
    """``scenario.xml`` (SIPp reads it as ISO-8859-1) and the RTP captures it plays, in ``workdir``."""
    (workdir / "scenario.xml").write_text(xml, encoding="iso-8859-1")
    for name, data in pcaps.items():
        (workdir / name).write_bytes(data)


def read_log(path: Path) -> str:
    """A log SIPp wrote, or ``""`` when it wrote none."""
    return path.read_text(errors="replace") if path.exists() else ""


async def run_sipp(
    argv: Sequence[str], workdir: Path, *, kill_after: float, capture_stdout: bool
) -> SippExit:
    """Run SIPp in ``workdir`` to its end. After ``kill_after`` seconds, or when the task is
    cancelled, SIPp is killed and the error raised."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=kill_after)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return SippExit(proc.returncode or 0, stdout or b"", stderr or b"", time.monotonic() - started)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    binary: str = "sipp"

    @classmethod
    def from_settings(cls, settings: VoiceSettings | None) -> Target:
        """Where the lab's Asterisk listens (``None``: the lab section's defaults)."""
        lab = settings.lab if settings is not None else LabSettings()
        host = lab.sip_host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return cls(host, lab.sip_port, lab.sipp_binary)


class _PortPool:
    """Hands out UDP port pairs (SIP, media) that are free now, without reuse inside this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(random.randrange(0, 2000) * 8)

    def take(self, ip: str) -> tuple[int, int]:
        with self._lock:
            for _ in range(5000):
                base = 21000 + next(self._counter) * 8 % 30000
                if all(_udp_free(ip, base + off) for off in (0, 4, 5, 6, 7)):
                    return base, base + 4
        raise SippError("no free UDP ports for SIPp")


def _udp_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


_PORTS = _PortPool()


def planned_seconds(caller: Caller) -> float:
    total = caller.answer_timeout + 10.0
    for step in caller.steps:
        if isinstance(step, Wait):
            total += step.seconds
        elif isinstance(step, SendDigits):
            total += step.seconds + (0.5 * len(step.digits) if caller.dtmf_mode == "info" else 0.1)
        elif isinstance(step, ExpectHangup):
            total += step.within
    return total


async def arun_call(
    caller: Caller,
    settings: VoiceSettings | None = None,
    *,
    target: Target | None = None,
    keep_logs: bool = False,
    trace_messages: bool = False,
) -> CallResult:
    """Place one call and return what happened. SIP message traces (``trace_messages``) can hold
    DTMF digits sent by SIP INFO; they are off by default and the work directory is removed unless
    ``keep_logs``."""
    if target is None:
        target = Target.from_settings(settings)
    if shutil.which(target.binary) is None:
        raise SippError(f"{target.binary} not found (apt-get install sip-tester)")
    call_tag = uuid.uuid4().hex
    call_id = f"{call_tag}-1@ivr-sipp"  # what sipp makes of -cid_str for its call number 1
    workdir = Path(tempfile.mkdtemp(prefix="ivr-sipp-"))
    try:
        rendered = render_scenario(caller, call_id, workdir)
        write_scenario(workdir, rendered.xml, rendered.pcaps)
        sip_port, media_port = _PORTS.take(caller.source_ip)
        limit = planned_seconds(caller)
        argv = [
            target.binary,
            f"{target.host}:{target.port}",
            "-sf", str(workdir / "scenario.xml"),
            "-m", "1",
            "-l", "1",
            "-i", caller.source_ip,
            "-p", str(sip_port),
            "-mi", caller.source_ip,
            "-mp", str(media_port),
            "-cid_str", f"{call_tag}-%u@ivr-sipp",
            "-aa",
            "-nostdin",
            "-trace_logs", "-log_file", str(workdir / "events.log"),
            "-trace_err", "-error_file", str(workdir / "errors.log"),
            "-timeout", f"{int(limit) + 5}s",
        ]  # fmt: skip
        if trace_messages:
            argv += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
        sipp = await run_sipp(argv, workdir, kill_after=limit + 15, capture_stdout=True)
        stdout, stderr = sipp.stdout.decode(errors="replace"), sipp.stderr.decode(errors="replace")
        result = parse_events(
            read_log(workdir / "events.log"),
            caller=caller,
            call_id=call_id,
            exit_code=sipp.exit_code,
            fallback_duration=sipp.seconds,
        )
        if result.error is not None and "logged nothing" in result.error:
            result.error += ": " + (stderr + stdout)[-800:]
        if result.error is None and sipp.exit_code != 0:
            detail = read_log(workdir / "errors.log").strip() or stderr.strip() or stdout
            result.error = f"sipp exit {sipp.exit_code}: {detail[-800:]}"
        if keep_logs:
            result.log_dir = str(workdir)
        return result
    finally:
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_events(
    text: str, *, caller: Caller | None, call_id: str, exit_code: int, fallback_duration: float
) -> CallResult:
    """Turn the scenario's log lines into a ``CallResult``."""
    codes: list[int] = []
    events: list[tuple[str, str, int]] = []
    for line in text.splitlines():
        if match := _SIP.match(line):
            codes.append(int(match.group(1)))
        elif match := _EVENT.match(line):
            events.append((match.group(1), match.group(2), int(match.group(3))))
    ticks = {name: tick for name, _detail, tick in reversed(events)}  # first occurrence wins
    answered = "answered" in ticks
    hung_up_by: str | None = None
    if "remote_bye" in ticks:
        hung_up_by = "remote"
    elif "local_bye" in ticks:
        hung_up_by = "local"
    end_tick = ticks.get("done") or max((tick for _n, _d, tick in events), default=0)
    start_tick = ticks.get("answered", ticks.get("invite", 0))
    duration = (end_tick - start_tick) / 1000 if events else fallback_duration
    steps_done = 1 + max((int(d) for n, d, _t in events if n == "step_done"), default=-1)
    if "remote_bye" in ticks and caller is not None:
        # an ExpectHangup met counts as done
        for index, step in enumerate(caller.steps):
            if isinstance(step, ExpectHangup) and index == steps_done:
                steps_done += 1
                break
    failed = [f"ExpectHangup step {d} timed out" for n, d, _t in events if n == "expect_failed"]
    error = None
    if not events:
        error = "sipp logged nothing (did it start?)"
    elif "no_answer" in ticks:
        error = "no answer"
    elif "rejected" in ticks:
        error = f"call rejected ({codes[-1] if codes else '?'})"
    remote_after = (
        (ticks["remote_bye"] - ticks["answered"]) / 1000 if answered and "remote_bye" in ticks else None
    )
    return CallResult(
        answered=answered,
        sip_codes=codes,
        hung_up_by=hung_up_by,  # type: ignore[arg-type]
        duration=duration,
        call_id=call_id,
        caller=caller,
        steps_done=steps_done,
        expectations_failed=failed,
        remote_hangup_after=remote_after,
        exit_code=exit_code,
        error=error,
    )


async def arun_calls(
    callers: Sequence[Caller],
    rate: float = 5.0,
    concurrency: int = 10,
    settings: VoiceSettings | None = None,
    *,
    target: Target | None = None,
) -> list[CallResult]:
    """Place calls at ``rate`` new calls per second, at most ``concurrency`` at once; results in order."""
    if rate <= 0 or concurrency <= 0:
        raise ValueError("rate and concurrency must be positive")
    target = target or Target.from_settings(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, caller: Caller) -> CallResult:
        await asyncio.sleep(index / rate)
        async with gate:
            return await arun_call(caller, target=target)

    return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(callers))))


def run_call(caller: Caller, settings: VoiceSettings | None = None, **kwargs: object) -> CallResult:
    """Blocking ``arun_call`` (not from inside a running event loop)."""
    return asyncio.run(arun_call(caller, settings, **kwargs))  # type: ignore[arg-type]


def run_calls(
    callers: Sequence[Caller], rate: float = 5.0, concurrency: int = 10, settings: VoiceSettings | None = None
) -> list[CallResult]:
    """Blocking ``arun_calls``."""
    return asyncio.run(arun_calls(callers, rate, concurrency, settings))
