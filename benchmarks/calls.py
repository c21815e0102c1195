"""Benchmark of the voice menu at load, through the real stack; prints figures (no pass/fail).

    .venv/bin/python benchmarks/calls.py --calls 300                 # RFC 4733 type-ahead callers
    .venv/bin/python benchmarks/calls.py --calls 100 --dtmf-mode info --autodialler
    .venv/bin/python benchmarks/calls.py --calls 200 --flood         # + a web login flood phase

SIPp (a few processes, each running many calls with -r / -l / -m) -> a lab Asterisk of its own ->
`ivr serve` (a subprocess) -> a fresh SQLite database holding N one-number contracts imported with
`ivr contracts import`. Every caller types ahead without `#`: the unit key 1, ~1.5 s later the
8-digit password while the read-back plays, ~1.5 s after that the same 8 digits again, then waits
for the IVR to hang up after the completion prompt.

Phases, one after the other in the same run, each with fresh passwords:
  agi       the real IVR (FastAGI)
  baseline  the same prompts and key collection in pure dialplan (benchmarks/lab-baseline.conf,
            Background + extension patterns, no AGI): what Asterisk costs per call without AGI
  flood     (--flood) the real IVR again while 40 connections POST wrong logins to `ivr web`

Figures per phase: completed / failed, passwords verified against the database (argon2 verify of
the stored temporary-password hash), answer -> first prompt and entry -> next prompt (Asterisk's
log of played prompts against the moment SIPp sent the entry's last key), save time, keys lost,
CPU seconds per call (utime + stime from /proc) and peak RSS (VmHWM, reset per phase) of the
daemon and Asterisk. See docs/voice.md "Load".

Isolation: its own run directory and ports (SIP 5260, RTP 16000-17999, AMI 5238, FastAGI: the
settings' ports + 300, web 8380; SIPp 5300+), holding the lab's test lock for its SIP port. Everything
it started is stopped at the end (web, daemon, SIPp, lab), also on an error, Ctrl-C, SIGTERM or the
time limit. Passwords are never printed; the database and the lab instance are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import select

from core.db import make_engine, make_session_factory, upgrade_database
from core.models import CallRecord, Credential, PhoneNumber
from core.secrets import default_hasher, verify_secret
from ivr.lab import Lab
from ivr.lab.config import placeholder_values, render_text
from ivr.lab.lab import port_free
from ivr.settings import AgiSettings, LabSettings
from ivr.sipp import SippError, Target
from ivr.sipp.load import LoadCallResult, LoadProcess, LoadResult, TypeAheadScript, arun_load, plan_processes
from stack.processes import stop_processes
from stack.settings import Settings, load_settings

CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_DIR = Path(__file__).resolve().parent
BASELINE_TEMPLATE = BENCH_DIR / "lab-baseline.conf"
BASELINE_NUMBER = "0363049999"
CALLER_PREFIX = "0377"  # 0377000001 ... one-number contracts, one per caller
FLOOD_PREFIX = "0378"  # lines the web flood guesses passwords for
_ASTERISK_LINE = re.compile(
    r"^\[(?P<ts>[\d-]+ [\d:.]+)\] \w+\[\d+\]\[(?P<callid>C-[0-9a-f]+)\] (?P<rest>.*)$"
)
_HOLD = re.compile(r"Started music on hold, class '(?P<cls>[^']+)'")
_PLAYING = re.compile(r"Playing '(?P<file>[^']+?)(?:\.(?:wav|slin|gsm|ulaw|alaw))?'")
_CALLER = re.compile(r"IVR_CALLER_NUM_LC=(\d+)|lab-baseline call caller=(\d+)")
_BASELINE_RESULT = re.compile(r"lab-baseline result=(\w+)")
_CSRF = re.compile(r'name="csrf_token"\s+value="([^"]*)"')
_EIGHT_DIGITS = re.compile(r"(?<![\w-])\d{8}(?![\w-])")  # not C-00000001 or carrier-00000001


# ------------------------------------------------------------------------------------------ helpers


def rank(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def p50_p99(values: Sequence[float], unit: str = "ms", scale: float = 1000.0) -> str:
    if not values:
        return "-"
    return f"{rank(values, 50) * scale:.0f} / {rank(values, 99) * scale:.0f} {unit}"


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterable[None]:
    """`count` busy-looping processes at nice 0 while the block runs (3 per core: load ~6 on two
    cores plus what the benchmark itself runs), always killed at its end."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def machine_ticks() -> list[int]:
    """The machine's CPU time so far, by kind (/proc/stat's first line: user nice system idle
    iowait irq softirq steal ...)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def steal_share(before: Sequence[int], after: Sequence[int]) -> float:
    """The share of CPU time stolen by the hypervisor between two `machine_ticks` (a virtual
    machine whose host is busy runs slower: the figures with it are not comparable)."""
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:8])
    return delta[7] / total if total > 0 and len(delta) > 7 else 0.0


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmHWM: peak resident set, VmRSS: current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux: ``echo 5 > /proc/<pid>/clear_refs``)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def proc_cpu_seconds(pid: int | None) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ivr_argv() -> list[str]:
    ivr = Path(sys.executable).with_name("ivr")
    return [str(ivr)] if ivr.exists() else [sys.executable, "-m", "stack.cli.main"]


def caller_numbers(count: int, prefix: str = CALLER_PREFIX) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(1, count + 1)]


def contracts_csv(numbers: Iterable[str]) -> str:
    """One one-number contract per number (the format of `ivr contracts import`)."""
    rows = ["contract_number,number,services,name,kind,unit"]
    rows += [f"{n},{n},incoming_call_mail,,residential,line" for n in numbers]
    return "\n".join(rows) + "\n"


def default_agi_ports() -> tuple[int, int]:
    """The settings' FastAGI ports moved by 300 (staying below 1024 if they are), so a daemon or
    lab on the defaults is not disturbed."""
    primary, fallback = AgiSettings().port, LabSettings().agi_fallback_port
    shift = 300 if primary >= 1024 or primary + 300 < 1024 else -300
    return primary + shift, fallback + shift


# ------------------------------------------------------------------------------------------ processes


class Daemon:
    """`ivr serve` as a subprocess in its own session, logging JSON lines to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> float:
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*ivr_argv(), "serve", "--grace", "5"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C reaches us; we stop it in order
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ivr serve exited with {self.process.returncode}: {self.tail()}")
            if any(e.get("event") == "daemon_ready" for e in daemon_events(self.log_path)):
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"ivr serve not ready after {timeout:.0f} s: {self.tail()}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process], timeout=20)


class Web:
    """`ivr web` on loopback, for the login flood."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env = env
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*ivr_argv(), "web", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ivr web exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"ivr web not listening on {self.port} after {timeout:.0f} s")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process], timeout=10)


@dataclass
class FloodFigures:
    attempts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def flood_logins(
    base_url: str, numbers: Sequence[str], connections: int, stop: asyncio.Event
) -> FloodFigures:
    """``connections`` clients POSTing wrong logins (random 8 digits) until ``stop``."""
    import httpx

    figures = FloodFigures()
    counter = itertools.count()
    started = time.monotonic()

    async def client() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as http:
            token = ""
            while not stop.is_set():
                try:
                    if not token:
                        page = await http.get("/login")
                        found = _CSRF.search(page.text)
                        token = found.group(1) if found else ""
                    number = numbers[next(counter) % len(numbers)]
                    guess = f"{secrets.randbelow(10**8):08d}"
                    sent = time.monotonic()
                    reply = await http.post(
                        "/login", data={"csrf_token": token, "number": number, "password": guess}
                    )
                    figures.latencies.append(time.monotonic() - sent)
                    figures.attempts += 1
                    figures.statuses[str(reply.status_code)] += 1
                    if reply.status_code == 403:
                        token = ""
                except httpx.HTTPError as exc:
                    figures.statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(client()) for _ in range(connections)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        figures.seconds = time.monotonic() - started
    return figures


# ------------------------------------------------------------------------------------------ logs


def daemon_events(path: Path, since: int = 0) -> list[dict[str, Any]]:
    events = []
    with contextlib.suppress(OSError), open(path, "rb") as log:
        log.seek(since)
        for raw in log:
            line = raw.decode("utf-8", errors="replace")
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
    return events


def _epoch(value: Any) -> float | None:
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@dataclass
class DaemonCall:
    caller: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def daemon_calls(events: Iterable[dict[str, Any]]) -> dict[str, DaemonCall]:
    calls: dict[str, DaemonCall] = {}
    for event in events:
        call_id = event.get("call_id")
        if not call_id:
            continue
        call = calls.setdefault(str(call_id), DaemonCall())
        call.events.append(event)
        if event.get("event") == "call_started":
            call.caller = event.get("caller")
    return calls


@dataclass
class AsteriskCall:
    caller: str | None = None
    answered_at: float | None = None
    agi_at: float | None = None
    plays: list[tuple[float, str]] = field(default_factory=list)  # (epoch, prompt file)
    holds: list[tuple[float, str]] = field(default_factory=list)  # (epoch, music-on-hold class): progress
    result: str | None = None  # the baseline's "lab-baseline result=..." notice


def asterisk_calls(text: str) -> tuple[dict[str, AsteriskCall], Counter[str]]:
    """Per Asterisk call id: the caller, Answer(), AGI() and every prompt played (naive local times
    as if UTC; ``align_clock`` corrects them). Also warnings/errors by message."""
    calls: dict[str, AsteriskCall] = defaultdict(AsteriskCall)
    problems: Counter[str] = Counter()
    for line in text.splitlines():
        if " WARNING[" in line or " ERROR[" in line:
            problems[re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:100]] += 1
        match = _ASTERISK_LINE.match(line)
        if match is None:
            continue
        rest = match.group("rest")
        when = datetime.fromisoformat(match.group("ts")).replace(tzinfo=UTC).timestamp()
        call = calls[match.group("callid")]
        if call.caller is None and (found := _CALLER.search(rest)):
            call.caller = found.group(1) or found.group(2)
        if "] Answer(" in rest and call.answered_at is None:
            call.answered_at = when
        elif "] AGI(" in rest and call.agi_at is None:
            call.agi_at = when
        elif played := _PLAYING.search(rest):
            call.plays.append((when, played.group("file")))
        elif held := _HOLD.search(rest):
            call.holds.append((when, held.group("cls")))
        elif " NOTICE[" in line and (result := _BASELINE_RESULT.search(rest)):
            call.result = result.group(1)
    return dict(calls), problems


def align_clock(asterisk: dict[str, AsteriskCall], sipp: dict[str, LoadCallResult]) -> float:
    """Asterisk logs local time of its root filesystem: the offset (a whole number of quarter
    hours) that maps its naive times onto SIPp's epoch times, from answers seen by both."""
    diffs = [
        call.answered_at - sipp[call.caller].answered_at  # type: ignore[operator]
        for call in asterisk.values()
        if call.caller in sipp and call.answered_at is not None and sipp[call.caller].answered_at
    ]
    if not diffs:
        return 0.0
    return round(rank(diffs, 50) / 900) * 900


# ------------------------------------------------------------------------------------------ phases


@dataclass
class PhaseFigures:
    name: str
    calls: int = 0
    completed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    verified: int | None = None
    peak_at_once: int = 0
    wall: float = 0.0
    invite_to_answer: list[float] = field(default_factory=list)  # SIPp: INVITE sent -> 200 OK
    answer_to_prompt: list[float] = field(default_factory=list)  # Asterisk: Answer() -> first Playing
    answer_to_agi: list[float] = field(default_factory=list)
    entry_to_prompt: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    reply_to_prompt: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # daemon side
    save: list[float] = field(default_factory=list)  # daemon: confirm step -> password stored
    stored_to_prompt: list[float] = field(default_factory=list)  # daemon: stored -> completion prompt
    silence: dict[str, list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )  # last key -> any sound
    progress_calls: int = 0  # calls whose caller heard the progress sound (music on hold)
    waits_too_long: int = 0  # waits past the limit: the caller heard the apology
    step_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    wrong_steps: int = 0  # entries of a wrong length / wrong entries (daemon or dialplan)
    wrong_records: int = 0  # call_records.wrong_entries summed
    outcomes: Counter[str] = field(default_factory=Counter)
    asterisk_cpu: float = 0.0
    daemon_cpu: float = 0.0
    sipp_cpu: float = 0.0
    web_cpu: float = 0.0
    bench_cpu: float = 0.0  # this process: the flood's HTTP clients
    asterisk_hwm: int | None = None
    daemon_hwm: int | None = None
    hash_cpu: float = 0.0
    problems: Counter[str] = field(default_factory=Counter)
    flood: FloodFigures | None = None
    steal: float = 0.0  # share of the machine's CPU time the hypervisor gave elsewhere (/proc/stat)


NEXT_PROMPT = {  # entry -> the prompt the caller hears next
    "unit": "ivr/set-for-number-prefix",
    "password": "ivr/confirm-password",
    "confirm": "ivr/set-for-number-prefix",  # the completion read-back, after the save
}


def measure_prompts(
    figures: PhaseFigures, asterisk: dict[str, AsteriskCall], sipp: dict[str, LoadCallResult]
) -> float:
    """Answer -> first prompt, and each entry's last key (SIPp) -> the next prompt (Asterisk).
    Returns the clock offset of Asterisk's log."""
    offset = align_clock(asterisk, sipp)
    for call in asterisk.values():
        if call.caller not in sipp or call.answered_at is None:
            continue
        answered = call.answered_at - offset
        plays = [(when - offset, name) for when, name in call.plays]
        if plays:
            figures.answer_to_prompt.append(plays[0][0] - answered)
        if call.agi_at is not None:
            figures.answer_to_agi.append(call.agi_at - call.answered_at)
        holds = [(when - offset, name) for when, name in call.holds]
        figures.progress_calls += bool(holds)
        sounds = sorted(when for when, _name in plays + holds)
        for entry, sent in sipp[call.caller].entry_sent_at.items():
            wanted = NEXT_PROMPT[entry]
            later = [when for when, name in plays if name == wanted and when >= sent - 0.25]
            if later:
                figures.entry_to_prompt[entry].append(later[0] - sent)
            # the silence after the entry: its last key -> the next sound of any kind (a prompt or
            # the progress sound); keys typed over a prompt that goes on are not silence
            heard = [when for when in sounds if when >= sent - 0.25]
            if heard:
                figures.silence[entry].append(max(0.0, heard[0] - sent))
    return offset


def measure_replies(
    figures: PhaseFigures, asterisk: dict[str, AsteriskCall], daemon: dict[str, DaemonCall], offset: float
) -> None:
    """The daemon's side of the gap: its step line (the entry's reply is in, the entry accepted) ->
    Asterisk starting the next prompt. Keys typed in that window reach no AGI command."""
    by_caller = {call.caller: call for call in asterisk.values() if call.caller}
    for call in daemon.values():
        played = by_caller.get(call.caller or "")
        if played is None:
            continue
        for event in call.events:
            if event.get("event") == "temporary_password_stored" and (
                stored := _epoch(event.get("timestamp"))
            ):
                completion = [
                    w - offset
                    for w, name in played.plays
                    if name == NEXT_PROMPT["confirm"] and w - offset >= stored - 0.05
                ]
                if completion:
                    figures.stored_to_prompt.append(completion[0] - stored)
                continue
            if event.get("event") != "step" or event.get("result") != "digits":
                continue
            step, logged = str(event.get("step")), _epoch(event.get("timestamp"))
            if step not in NEXT_PROMPT or logged is None:
                continue
            later = [
                w - offset
                for w, name in played.plays
                if name == NEXT_PROMPT[step] and w - offset >= logged - 0.05
            ]
            if later:
                figures.reply_to_prompt[step].append(later[0] - logged)


def measure_daemon(figures: PhaseFigures, calls: dict[str, DaemonCall], expected: dict[str, int]) -> None:
    for call in calls.values():
        confirmed: float | None = None
        for event in call.events:
            name = event.get("event")
            if name == "step":
                step = str(event.get("step"))
                if isinstance(event.get("duration_ms"), int | float):
                    figures.step_ms[step].append(event["duration_ms"] / 1000)
                wrong = event.get("result") != "digits" or (
                    step in expected and event.get("digit_count") not in (None, expected[step])
                )
                figures.wrong_steps += int(wrong)
                if step == "confirm" and event.get("result") == "digits":
                    confirmed = _epoch(event.get("timestamp"))
            elif name == "temporary_password_stored" and confirmed is not None:
                stored = _epoch(event.get("timestamp"))
                if stored is not None:
                    figures.save.append(stored - confirmed)
            elif name == "call_finished":
                figures.outcomes[str(event.get("outcome"))] += 1
            elif name == "wait_too_long":
                figures.waits_too_long += 1
            if event.get("level") in ("warning", "error", "critical"):
                figures.problems[f"daemon {event.get('level')}: {event.get('event')}"] += 1


def measure_sipp(figures: PhaseFigures, results: Sequence[LoadResult]) -> dict[str, LoadCallResult]:
    by_caller: dict[str, LoadCallResult] = {}
    edges: list[tuple[float, int]] = []
    for run in results:
        if run.exit_code not in (0, 1) or run.errors.strip():
            figures.problems[f"sipp {run.process} exit {run.exit_code}: {run.errors.strip()[-160:]}"] += 1
        for call in run.calls:
            by_caller[call.caller_id] = call
            if call.completed:
                figures.completed += 1
            else:
                res = call.result
                reason = (
                    res.error
                    or ("IVR did not hang up in time" if res.expectations_failed else None)
                    or f"hung up by {res.hung_up_by or '?'}"
                )
                figures.failures[reason[:80]] += 1
            if call.invite_at is not None and call.answered_at is not None:
                figures.invite_to_answer.append(call.answered_at - call.invite_at)
                edges += [(call.invite_at, 1), (call.answered_at + call.result.duration, -1)]
    live = 0
    for _when, delta in sorted(edges):
        live += delta
        figures.peak_at_once = max(figures.peak_at_once, live)
    if edges:
        figures.wall = max(w for w, _d in edges) - min(w for w, _d in edges)
    figures.failures["not placed / not logged by SIPp"] += figures.calls - sum(len(r.calls) for r in results)
    figures.failures = +figures.failures
    return by_caller


def count_outcomes(figures: PhaseFigures, sipp: dict[str, LoadCallResult], outcomes: dict[str, str]) -> None:
    """A call is completed when SIPp saw the IVR hang up after the confirmation and the IVR says
    ``completed`` (daemon: call_finished; baseline: its result notice) for that caller."""
    for caller, call in sipp.items():
        if call.completed and outcomes.get(caller) != "completed":
            figures.completed -= 1
            figures.failures[f"IVR outcome {outcomes.get(caller)}"] += 1


def verify_passwords(url: str, plans: Sequence[LoadProcess]) -> int:
    """How many callers' numbers now hold a temporary-password hash that verifies with what they typed."""
    typed = {call.caller_id: call.password for plan in plans for call in plan.calls}
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            query = (
                select(PhoneNumber.number, Credential.secret_hash)
                .join(Credential, Credential.phone_number_id == PhoneNumber.id)
                .where(PhoneNumber.number.in_(list(typed)))
            )
            hashes = {number: secret_hash for number, secret_hash in session.execute(query).all()}
    finally:
        engine.dispose()
    with ThreadPoolExecutor(max_workers=2) as pool:
        checks = pool.map(lambda n: n in hashes and verify_secret(hashes[n], typed[n]), list(typed))
        return sum(1 for ok in checks if ok)


def record_figures(url: str, call_ids: Iterable[str], timeout: float = 15.0) -> tuple[Counter[str], int]:
    """Outcomes and wrong entries of the phase's call records, once all are written (the daemon
    may write them in batches)."""
    ids = list(call_ids)
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with make_session_factory(engine)() as session:
                rows = session.execute(
                    select(CallRecord.outcome, CallRecord.wrong_entries).where(CallRecord.call_id.in_(ids))
                ).all()
            if (
                len(rows) == len(ids) and all(o is not None for o, _w in rows)
            ) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    finally:
        engine.dispose()
    return Counter(str(outcome) for outcome, _w in rows), sum(int(w or 0) for _o, w in rows)


def hash_cpu_seconds(samples: int = 5) -> float:
    """CPU seconds of one production argon2id hash, measured in this process."""
    hasher = default_hasher()
    hasher.hash("0" * 8)  # warm up
    started = time.process_time()
    for _ in range(samples):
        hasher.hash("0" * 8)
    return (time.process_time() - started) / samples


# ------------------------------------------------------------------------------------------ the run


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        agi_port, fallback_port = args.agi_port or default_agi_ports()
        self.env = {
            "IVR_DATA_DIR": str(scratch / "data"),  # its FastAGI and AMI secrets: the run's, deleted with it
            "IVR_LAB__RUN_DIR": str(scratch / "lab"),
            "IVR_LAB__SIP_HOST": "127.0.0.1",
            "IVR_LAB__SIP_PORT": str(args.sip_port),
            "IVR_LAB__RTP_PORT_START": str(args.rtp_start),
            "IVR_LAB__RTP_PORT_END": str(args.rtp_start + 1999),
            "IVR_LAB__CARRIER_MATCH": "127.0.0.1",
            "IVR_AGI__HOST": "127.0.0.1",
            "IVR_AGI__PORT": str(agi_port),
            "IVR_LAB__AGI_FALLBACK_PORT": str(fallback_port),
            "IVR_AGI__MAX_CONCURRENT_CALLS": str(args.max_concurrent_calls or args.calls + 50),
            "IVR_AMI__HOST": "127.0.0.1",
            "IVR_AMI__PORT": str(args.ami_port),
            "IVR_WEB__HOST": "127.0.0.1",
            "IVR_WEB__PORT": str(args.web_port),
            "IVR_WEB__BASE_URL": f"http://127.0.0.1:{args.web_port}",
            "IVR_DATABASE_URL": f"sqlite:///{scratch / 'ivr.sqlite3'}",
            "IVR_LOG_FORMAT": "json",
            "IVR_LOG_LEVEL": "info",
        }
        os.environ.update(self.env)  # this process's settings (the lab, SIPp's target) and the children's
        self.settings: Settings = load_settings()
        self.lab = Lab(self.settings)
        self.daemon = Daemon(dict(os.environ), scratch / "daemon.log")
        self.web = Web(dict(os.environ), args.web_port, scratch / "web.log")
        self.url = self.settings.effective_database_url
        self.callers = caller_numbers(args.calls)
        self.flood_numbers = caller_numbers(args.flood_lines, FLOOD_PREFIX) if args.flood else []
        self.script = (
            TypeAheadScript.autodialler(dialled=self.settings.lab.service_number)
            if args.autodialler
            else TypeAheadScript(dialled=self.settings.lab.service_number)
        )
        self.asterisk_pid: int | None = None
        self.keep = Path(args.keep) if args.keep else None

    # --- setup

    def prepare_database(self) -> None:
        upgrade_database(self.url)
        csv_path = self.scratch / "contracts.csv"
        csv_path.write_text(contracts_csv([*self.callers, *self.flood_numbers]))
        subprocess.run(
            [*ivr_argv(), "contracts", "import", str(csv_path)], env=dict(os.environ), check=True,
            capture_output=True,
        )  # fmt: skip
        if self.flood_numbers:
            self._flood_credentials()

    def _flood_credentials(self) -> None:
        """Temporary passwords nobody knows on the flood's lines (one hash shared: it is never
        guessed), so each wrong login runs a real argon2 verify until the line locks."""
        from core.enums import AuthUnit
        from core.phone_line import lookup_caller_line, set_temporary_password

        shared = default_hasher().hash(secrets.token_hex(16))
        engine = make_engine(self.url)
        try:
            sessions = make_session_factory(engine)
            now = datetime.now(UTC)
            with sessions() as session, session.begin():
                for number in self.flood_numbers:
                    line = lookup_caller_line(session, number)
                    assert line is not None
                    set_temporary_password(
                        session,
                        contract_id=line.contract_id,
                        unit=AuthUnit.LINE,
                        target_number=number,
                        password_hash=shared,
                        now=now,
                        channel="phone",
                    )
        finally:
            engine.dispose()

    def enable_baseline(self) -> None:
        """Render benchmarks/lab-baseline.conf into this lab instance and include it."""
        etc = self.lab.host_path(self.lab.paths.etc)
        values = placeholder_values(
            self.settings, self.lab.paths, (self.settings.agi.port, self.settings.lab.agi_fallback_port)
        )
        values["LAB_BASELINE_NUMBER"] = BASELINE_NUMBER
        text = render_text(BASELINE_TEMPLATE.read_text(encoding="utf-8"), values, name=BASELINE_TEMPLATE.name)
        target = etc / "lab-baseline.conf"
        target.write_text(text, encoding="utf-8")
        target.chmod(0o600)
        extensions = etc / "extensions.conf"
        if "#include lab-baseline.conf" not in extensions.read_text(encoding="utf-8"):
            with open(extensions, "a", encoding="utf-8") as out:
                out.write("\n#include lab-baseline.conf\n")
        self.lab.cli("dialplan reload")
        shown = self.lab.cli(f"dialplan show {BASELINE_NUMBER}@ivr-service")
        if "lab-baseline" not in shown:
            raise RuntimeError(f"the baseline dialplan did not load: {shown.strip()[:300]}")

    def wait_idle(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.lab.cli("core show channels count")
            found = re.search(r"(\d+) active channel", text)
            if found and int(found.group(1)) == 0:
                return
            time.sleep(0.5)
        print("benchmark: Asterisk still has channels; measuring anyway", file=sys.stderr)

    # --- one phase

    def plans(self, kind: str) -> list[LoadProcess]:
        args = self.args
        rate = args.calls / args.ramp
        modes = ["rfc4733", "info"] if args.dtmf_mode == "mixed" else [args.dtmf_mode]
        plans: list[LoadProcess] = []
        for m_index, mode in enumerate(modes):
            share = self.callers[m_index :: len(modes)]
            plans += plan_processes(
                share,
                mode=mode,  # type: ignore[arg-type]
                processes=args.processes if mode == "rfc4733" else 1,
                variants=args.variants,
                rate=rate * len(share) / len(self.callers),
                limit=args.calls,
                sip_port_base=args.sipp_port + 10 * m_index,
                media_port_base=20000 + 5000 * m_index,
            )
        for plan in plans:
            plan.name = f"{kind}-{plan.name}"
        return plans

    def run_phase(self, kind: str, *, flood: bool, deadline: float) -> PhaseFigures:
        name = f"{kind}+flood" if flood else kind
        figures = PhaseFigures(name, calls=self.args.calls)
        plans = self.plans(name)
        script = self.script
        if kind == "baseline":
            script = TypeAheadScript(**{**script.__dict__, "dialled": BASELINE_NUMBER})
        self.wait_idle()
        daemon_mark, asterisk_mark = self.daemon.log_offset(), self.lab.log_offset()
        for pid in (self.daemon.pid, self.asterisk_pid):
            if pid is not None:
                reset_peak_rss(pid)
        print(
            f"phase {name}: {self.args.calls} calls, {len(plans)} SIPp process(es), "
            f"{self.args.calls / self.args.ramp:.0f} new calls/s ...",
            flush=True,
        )
        cpu0 = (proc_cpu_seconds(self.asterisk_pid), proc_cpu_seconds(self.daemon.pid))
        machine0 = machine_ticks()
        sipp0, web0, self0 = children_cpu_seconds(), proc_cpu_seconds(self.web.pid), time.process_time()
        remaining = max(30.0, deadline - time.monotonic() - 60)
        with cpu_hogs(self.args.cpu_hogs):  # a busy machine: other work competing for the cores
            results, flood_figures = asyncio.run(
                self._drive(plans, script, flood=flood, time_limit=remaining)
            )
        # the last call records and log lines: wait for every call the daemon started to finish
        if kind == "agi":
            self._wait_daemon_finished(daemon_mark, timeout=15)
        figures.asterisk_cpu = proc_cpu_seconds(self.asterisk_pid) - cpu0[0]
        figures.daemon_cpu = proc_cpu_seconds(self.daemon.pid) - cpu0[1]
        figures.sipp_cpu = children_cpu_seconds() - sipp0
        figures.web_cpu = proc_cpu_seconds(self.web.pid) - web0 if flood else 0.0
        figures.bench_cpu = time.process_time() - self0
        figures.steal = steal_share(machine0, machine_ticks())
        figures.asterisk_hwm = proc_status_kib(self.asterisk_pid or -1, "VmHWM")
        figures.daemon_hwm = proc_status_kib(self.daemon.pid or -1, "VmHWM")
        figures.flood = flood_figures

        sipp = measure_sipp(figures, results)
        asterisk_text = self.lab.messages(asterisk_mark)
        asterisk, problems = asterisk_calls(asterisk_text)
        figures.problems.update({f"asterisk: {k}": v for k, v in problems.items()})
        offset = measure_prompts(figures, asterisk, sipp)
        if kind == "agi":
            calls = daemon_calls(daemon_events(self.daemon.log_path, daemon_mark))
            measure_daemon(figures, calls, {"unit": 1, "password": 8, "confirm": 8})
            measure_replies(figures, asterisk, calls, offset)
            finished = {
                str(c.caller): str(e.get("outcome"))
                for c in calls.values()
                for e in c.events
                if e.get("event") == "call_finished"
            }
            count_outcomes(figures, sipp, finished)
            records, figures.wrong_records = record_figures(self.url, calls)
            if records != figures.outcomes:
                figures.problems[f"call records {dict(records)} differ from the daemon log"] += 1
            figures.verified = verify_passwords(self.url, plans)
        else:
            notices = [line for line in asterisk_text.splitlines() if " NOTICE[" in line]
            figures.wrong_steps = sum("lab-baseline wrong" in line for line in notices)
            figures.outcomes = Counter(re.findall(r"lab-baseline result=(\w+)", "\n".join(notices)))
            count_outcomes(
                figures, sipp, {str(c.caller): str(c.result) for c in asterisk.values() if c.caller}
            )
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            # the baseline's throwaway digits are in Asterisk's verbose log: masked here
            (self.keep / f"asterisk-{name}.log").write_text(_EIGHT_DIGITS.sub("********", asterisk_text))
        return figures

    async def _drive(
        self, plans: Sequence[LoadProcess], script: TypeAheadScript, *, flood: bool, time_limit: float
    ) -> tuple[list[LoadResult], FloodFigures | None]:
        target = Target.from_settings(self.settings)
        stop = asyncio.Event()
        flood_task = None
        if flood:
            flood_task = asyncio.create_task(
                flood_logins(
                    f"http://127.0.0.1:{self.args.web_port}",
                    self.flood_numbers,
                    self.args.flood_connections,
                    stop,
                )
            )
            await asyncio.sleep(3.0)  # the flood at full strength before the first call
        try:
            keep = self.keep
            runs = [arun_load(plan, script, target, time_limit=time_limit, keep_dir=keep) for plan in plans]
            results = list(await asyncio.gather(*runs))
        finally:
            stop.set()
        flood_figures = await flood_task if flood_task is not None else None
        return results, flood_figures

    def _wait_daemon_finished(self, mark: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = daemon_calls(daemon_events(self.daemon.log_path, mark))
            if all(any(e.get("event") == "call_finished" for e in c.events) for c in calls.values()):
                return
            time.sleep(0.2)

    # --- whole run

    def run(self, deadline: float) -> list[PhaseFigures]:
        args = self.args
        busy = [
            p
            for p in (self.settings.agi.port, self.settings.lab.agi_fallback_port)
            if not port_free("127.0.0.1", p)
        ]
        if args.flood and not port_free("127.0.0.1", args.web_port):
            busy.append(args.web_port)
        if busy:
            raise RuntimeError(f"port(s) {busy} in use; choose others (--agi-port, --web-port)")
        self.lab.build(progress=lambda msg: print(msg, flush=True))
        self.prepare_database()
        hash_cpu = hash_cpu_seconds()
        phases: list[PhaseFigures] = []
        with self.lab.reserved_for_tests(wait=10):
            self.lab.up()
            try:
                self.asterisk_pid = next(p.pid for p in self.lab.status().processes if p.name == "asterisk")
                if not args.no_baseline:
                    self.enable_baseline()
                self.daemon.start()
                if args.flood:
                    self.web.start()
                print(
                    f"lab on SIP 127.0.0.1:{args.sip_port} (Asterisk pid {self.asterisk_pid}), daemon pid "
                    f"{self.daemon.pid} on FastAGI {self.settings.agi.port}, "
                    f"cap {self.settings.agi.max_concurrent_calls} calls",
                    flush=True,
                )
                kinds = [("agi", False)]
                if not args.no_baseline:
                    kinds.append(("baseline", False))
                if args.flood:
                    kinds.append(("agi", True))
                for kind, flood in kinds:
                    if time.monotonic() > deadline - 60:
                        print(f"benchmark: time limit: phase {kind} not run", file=sys.stderr)
                        break
                    figures = self.run_phase(kind, flood=flood, deadline=deadline)
                    figures.hash_cpu = hash_cpu
                    phases.append(figures)
                if self.daemon.pid is None:
                    print(
                        f"benchmark: the daemon exited during the run: {self.daemon.tail()}", file=sys.stderr
                    )
            finally:
                # a second Ctrl-C or SIGTERM must not cut the cleanup short
                previous = {
                    sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
                }
                try:
                    self.web.stop()
                    self.daemon.stop()
                    if self.keep is not None:
                        with contextlib.suppress(OSError):
                            shutil.copy(self.daemon.log_path, self.keep / "daemon.log")
                finally:
                    self.lab.down()
                    shutil.rmtree(self.lab.instance_dir, ignore_errors=True)
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)
        return phases


# ------------------------------------------------------------------------------------------ report


def silence_figure(values: Sequence[float]) -> str:
    """The p99 and the longest of the silences after the callers' entries."""
    if not values:
        return "-"
    return f"{rank(values, 99) * 1000:.0f} / {max(values) * 1000:.0f} ms"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f} MiB"


def table(phases: Sequence[PhaseFigures]) -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: Iterable[str]) -> None:
        rows.append((label, list(values)))

    row("completed / failed", (f"{p.completed} / {p.calls - p.completed}" for p in phases))
    row(
        "passwords verified in the database",
        ("-" if p.verified is None else f"{p.verified} / {p.calls}" for p in phases),
    )
    row("peak calls at once (SIPp)", (str(p.peak_at_once) for p in phases))
    row("INVITE -> 200 OK p50 / p99", (p50_p99(p.invite_to_answer) for p in phases))
    row("answer -> first prompt p50 / p99", (p50_p99(p.answer_to_prompt) for p in phases))
    row("unit key -> next prompt p50 / p99", (p50_p99(p.entry_to_prompt.get("unit", [])) for p in phases))
    row("password -> next prompt p50 / p99", (p50_p99(p.entry_to_prompt.get("password", [])) for p in phases))
    row(
        "confirmation -> completion prompt p50 / p99",
        (p50_p99(p.entry_to_prompt.get("confirm", [])) for p in phases),
    )
    row(
        "daemon: unit step -> next prompt p50 / p99",
        (p50_p99(p.reply_to_prompt.get("unit", [])) for p in phases),
    )
    row(
        "daemon: password step -> next prompt p50 / p99",
        (p50_p99(p.reply_to_prompt.get("password", [])) for p in phases),
    )
    row("save (confirm step -> stored) p50 / p99", (p50_p99(p.save) for p in phases))
    row("saved -> completion prompt p50 / p99", (p50_p99(p.stored_to_prompt) for p in phases))
    row(
        "longest silence after an entry p99 / max",
        (silence_figure([v for values in p.silence.values() for v in values]) for p in phases),
    )
    row(
        "calls that heard the progress sound / the apology",
        (f"{p.progress_calls} / {p.waits_too_long}" for p in phases),
    )
    row(
        "keys lost: wrong entries (steps) / call records",
        (f"{p.wrong_steps} / {p.wrong_records}" for p in phases),
    )
    row(
        "Asterisk CPU s per call",
        (f"{p.asterisk_cpu / p.calls:.3f}" for p in phases),
    )
    row("daemon CPU s per call (hashing aside)", (
        f"{p.daemon_cpu / p.calls:.3f} ({max(0.0, p.daemon_cpu - p.completed * p.hash_cpu) / p.calls:.3f})"
        if p.daemon_cpu else "-" for p in phases
    ))  # fmt: skip
    row("SIPp CPU s per call", (f"{p.sipp_cpu / p.calls:.3f}" for p in phases))
    row("CPU stolen by the hypervisor", (f"{p.steal:.0%}" for p in phases))
    row("peak RSS Asterisk / daemon", (f"{_mib(p.asterisk_hwm)} / {_mib(p.daemon_hwm)}" for p in phases))
    return rows


def report(args: argparse.Namespace, phases: Sequence[PhaseFigures], commit: str) -> None:
    print()
    mode = args.dtmf_mode + (
        " autodialler (keys 120 ms apart)" if args.autodialler else " (keys 300 ms apart)"
    )
    hogs = f", {args.cpu_hogs} busy processes beside it" if args.cpu_hogs else ""
    print(f"== {args.calls} calls at once, {mode}, ramp {args.ramp:g} s{hogs}, commit {commit}")
    rows = table(phases)
    width = max(len(label) for label, _ in rows)
    cols = [max(len(p.name), *(len(values[i]) for _l, values in rows)) for i, p in enumerate(phases)]
    print(" " * width + "  " + "  ".join(p.name.rjust(c) for p, c in zip(phases, cols, strict=True)))
    for label, values in rows:
        print(label.ljust(width) + "  " + "  ".join(v.rjust(c) for v, c in zip(values, cols, strict=True)))
    agi = next((p for p in phases if p.name == "agi"), None)
    base = next((p for p in phases if p.name == "baseline"), None)
    if agi and base and base.asterisk_cpu > 0:
        print(f"Asterisk CPU per call, AGI / baseline: {agi.asterisk_cpu / base.asterisk_cpu:.2f}x")
    if agi and agi.asterisk_cpu > 0:
        ex_hash = max(0.0, agi.daemon_cpu - agi.completed * agi.hash_cpu)
        print(
            f"daemon CPU / Asterisk CPU: {agi.daemon_cpu / agi.asterisk_cpu:.0%}; hashing aside "
            f"{ex_hash / agi.asterisk_cpu:.0%} (one argon2id hash: {agi.hash_cpu * 1000:.0f} ms CPU)"
        )
    for p in phases:
        for reason, count in p.failures.most_common(6):
            print(f"{p.name}: not completed: {count} x {reason}")
        if p.outcomes:
            print(f"{p.name}: outcomes: " + ", ".join(f"{o} {n}" for o, n in p.outcomes.most_common()))
        steps = ", ".join(f"{s} {p50_p99(v)}" for s, v in sorted(p.step_ms.items()))
        if steps:
            print(f"{p.name}: daemon step duration_ms (prompt start -> entry complete) p50/p99: {steps}")
        if p.flood is not None:
            f = p.flood
            print(
                f"{p.name}: web flood {args.flood_connections} connections: {f.attempts} wrong logins in "
                f"{f.seconds:.1f} s ({f.attempts / max(f.seconds, 0.001):.1f}/s), latency "
                f"{p50_p99(f.latencies)}, statuses {dict(f.statuses)}; CPU: ivr web {p.web_cpu:.1f} s, "
                f"the flood's clients {p.bench_cpu:.1f} s"
            )
        for problem, count in p.problems.most_common(8):
            print(f"{p.name}: {count} x {problem}")


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head[:72] + (" (+ uncommitted changes)" if dirty else "")


def write_json(path: Path, args: argparse.Namespace, phases: Sequence[PhaseFigures], commit: str) -> None:
    out = {"calls": args.calls, "mode": args.dtmf_mode, "autodialler": args.autodialler, "commit": commit}
    out["table"] = {
        label: dict(zip((p.name for p in phases), values, strict=True)) for label, values in table(phases)
    }
    buffer = io.StringIO()
    json.dump(out, buffer, ensure_ascii=False, indent=1)
    path.write_text(buffer.getvalue() + "\n")


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks: SIPp killed, daemon and lab stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/calls.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="calls at once (default 100)")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which they start (default 5)")
    parser.add_argument("--dtmf-mode", choices=("rfc4733", "info", "mixed"), default="rfc4733")
    parser.add_argument("--processes", type=int, default=3, help="SIPp processes for RFC 4733 (default 3)")
    parser.add_argument("--variants", type=int, default=4, help="passwords per RFC 4733 process (default 4)")
    parser.add_argument("--autodialler", action="store_true", help="keys 120 ms apart (default 300 ms)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the pure-dialplan baseline phase")
    parser.add_argument("--flood", action="store_true", help="add a phase with a web login flood")
    parser.add_argument("--flood-connections", type=int, default=40)
    parser.add_argument("--cpu-hogs", type=int, default=0, help="busy processes (nice 0) during each phase")
    parser.add_argument("--flood-lines", type=int, default=2000, help="lines the flood guesses at")
    parser.add_argument("--max-concurrent-calls", type=int, help="the daemon's cap (default calls + 50)")
    parser.add_argument("--time-limit", type=float, default=900.0, help="stop everything after this (s)")
    parser.add_argument("--sip-port", type=int, default=5260)
    parser.add_argument("--rtp-start", type=int, default=16000, help="Asterisk RTP ports: this + 1999")
    parser.add_argument("--agi-port", type=int, nargs=2, metavar=("PRIMARY", "FALLBACK"),
                        help="FastAGI ports (default: the settings' ports + 300)")  # fmt: skip
    parser.add_argument("--ami-port", type=int, default=5238)
    parser.add_argument("--web-port", type=int, default=8380)
    parser.add_argument("--sipp-port", type=int, default=5300, help="SIPp's SIP ports from here")
    parser.add_argument("--keep", metavar="DIR", help="copy the logs there (digits masked; never the CSVs)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures table as JSON")
    parser.add_argument("--smoke", action="store_true", help="a few calls: --calls 4 --ramp 1 --no-baseline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.calls, args.ramp, args.no_baseline = 4, 1.0, True
    if args.calls < 1 or args.ramp <= 0 or args.time_limit < 60 or args.processes < 1 or args.variants < 1:
        parser.error("--calls, --processes, --variants must be >= 1, --ramp > 0, --time-limit >= 60")
    deadline = time.monotonic() + args.time_limit
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    commit = git_commit()
    with tempfile.TemporaryDirectory(prefix="ivr-bench-calls-") as scratch:
        try:
            phases = Bench(args, Path(scratch)).run(deadline)
        except KeyboardInterrupt:
            print("benchmark: interrupted; everything it started has been stopped", file=sys.stderr)
            return 130
        except (RuntimeError, SippError) as exc:
            print(f"benchmark: {exc}", file=sys.stderr)
            return 2
    report(args, phases, commit)
    if args.json:
        write_json(Path(args.json), args, phases, commit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
