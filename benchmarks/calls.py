"""Benchmark of the voice menu under load, through the real stack; prints figures (no pass/fail).

    .venv/bin/python benchmarks/calls.py [--calls N] [--concurrency C] [--rate R]
                                         [--dtmf-mode rfc4733|info] [--time-limit SECONDS]

SIPp callers -> a lab Asterisk of its own -> `ivr serve` (a subprocess) -> a temporary SQLite
database with the sample contracts. Every call comes from one of the business contract's 40
numbers (0355501000-0355501039, unit admin_user), presses 3 (the additional numbers go straight to
the password; the contract number 0355501000 enters its own number), types a password of its own
twice with barge-in, and expects the IVR to hang up after the completion prompt.

Isolation: its own run directory, SIP/RTP/AMI/FastAGI ports (5260, 16000-16999, 5238, 4873/4874 by
default), all on 127.0.0.1, so a test session on the default ports is not disturbed. It holds the
lab's test lock for its SIP port while it runs. Everything it started is stopped at the end (the
daemon by SIGTERM, then the lab), also on an error, Ctrl-C, SIGTERM or the time limit.

Figures: calls completed, outcomes from the call_records table, wall time and calls per second,
per-call duration (SIPp: answer to the far end's BYE), answer -> first prompt (Asterisk's log) and
the daemon's share of it (its JSON log), save latency (argon2id + commit), the daemon's peak RSS and
CPU seconds, Asterisk's peak RSS and CPU seconds. Passwords are generated per call, never printed
or written anywhere but as hashes in the temporary database (which is deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import func, select

from core.db import make_engine, make_session_factory, upgrade_database
from core.models import CallRecord, Credential, PhoneNumber
from core.secrets import verify_secret
from ivr.lab import Lab
from ivr.processes import stop_processes
from ivr.settings import Settings, load_settings
from ivr.sipp import Caller, CallResult, ExpectHangup, SendDigits, SippError, Step, Target, Wait, arun_call

CONTRACT_NUMBER = "0355501000"
NUMBERS = [f"03555010{i:02d}" for i in range(40)]  # core/data/sample_contracts.csv, unit admin_user
ADMIN_USER_KEY = "3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_ASTERISK_LINE = re.compile(
    r"^\[(?P<ts>[\d-]+ [\d:.]+)\] \w+\[\d+\]\[(?P<callid>C-[0-9a-f]+)\] (?P<rest>.*)$"
)


# ------------------------------------------------------------------------------------------ helpers


def percentiles(values: Sequence[float]) -> str:
    """``p50 / p95 / max`` (nearest rank), or a dash when there is nothing to measure."""
    if not values:
        return "-"
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return f"p50 {rank(50):.3f} s  p95 {rank(95):.3f} s  max {ordered[-1]:.3f} s  (n={len(ordered)})"


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmHWM: peak resident set, VmRSS: current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


# ------------------------------------------------------------------------------------------ callers


@dataclass
class PlannedCall:
    caller: Caller
    number: str
    password: str = field(repr=False)


def plan_calls(count: int, dtmf_mode: str) -> list[PlannedCall]:
    """One caller per number of the business contract (cycling when more calls than numbers)."""
    planned = []
    for index in range(count):
        number = NUMBERS[index % len(NUMBERS)]
        password = f"{secrets.randbelow(10**8):08d}"
        steps: list[Step] = [Wait(2.0), SendDigits(ADMIN_USER_KEY), Wait(1.0)]
        if number == CONTRACT_NUMBER:  # the contract number names the number to set
            steps += [SendDigits(number + "#"), Wait(1.0)]
        steps += [SendDigits(password + "#"), Wait(1.0), SendDigits(password + "#"), ExpectHangup(within=60)]
        caller = Caller(number, dtmf_mode=dtmf_mode, steps=steps, name=f"bench-{index}")  # type: ignore[arg-type]
        planned.append(PlannedCall(caller, number, password))
    return planned


@dataclass
class Placed:
    result: CallResult | None
    error: str | None
    started: float
    ended: float


async def place_calls(
    planned: Sequence[PlannedCall], *, rate: float, concurrency: int, target: Target, time_limit: float
) -> tuple[list[Placed | None], bool]:
    """Start call i at i/rate seconds, at most ``concurrency`` at once. Calls still running at the
    time limit are cut (their SIPp processes killed); returns what finished and whether time ran out."""
    gate = asyncio.Semaphore(concurrency)
    placed: list[Placed | None] = [None] * len(planned)

    async def one(index: int, call: PlannedCall) -> None:
        await asyncio.sleep(index / rate)
        async with gate:
            started = time.monotonic()
            try:
                result = await arun_call(call.caller, target=target)
                placed[index] = Placed(result, result.error, started, time.monotonic())
            except SippError as exc:
                placed[index] = Placed(None, str(exc), started, time.monotonic())

    tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(planned)]
    _done, pending = await asyncio.wait(tasks, timeout=time_limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return placed, bool(pending)


# ------------------------------------------------------------------------------------------ logs


def daemon_events(path: Path) -> list[dict[str, Any]]:
    events = []
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
    return events


def _ts(event: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


@dataclass
class DaemonFigures:
    calls_started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)  # call_finished duration_ms
    to_first_prompt: list[float] = field(default_factory=list)  # call_started -> caller_identified
    save: list[float] = field(default_factory=list)  # confirm accepted -> temporary_password_stored
    peak_concurrent: int = 0
    problems: Counter[str] = field(default_factory=Counter)  # warning/error events by name


def read_daemon_log(path: Path) -> DaemonFigures:
    figures = DaemonFigures()
    by_call: dict[str, list[dict[str, Any]]] = {}
    for event in daemon_events(path):
        if event.get("level") in ("warning", "error", "critical"):
            figures.problems[f"{event.get('level')}: {event.get('event')}"] += 1
        if event.get("call_id"):
            by_call.setdefault(str(event["call_id"]), []).append(event)
    edges: list[tuple[datetime, int]] = []
    for events in by_call.values():
        first: dict[str, dict[str, Any]] = {}
        for event in events:
            first.setdefault(str(event.get("event")), event)
        started, finished = first.get("call_started"), first.get("call_finished")
        if started is None:
            continue
        figures.calls_started += 1
        if (start_ts := _ts(started)) is not None:
            edges.append((start_ts, 1))
        if finished is not None:
            figures.outcomes[str(finished.get("outcome"))] += 1
            if isinstance(finished.get("duration_ms"), int | float):
                figures.durations.append(finished["duration_ms"] / 1000)
            if (end_ts := _ts(finished)) is not None:
                edges.append((end_ts, -1))
        identified = first.get("caller_identified")
        if identified is not None and (gap := seconds_between(_ts(started), _ts(identified))) is not None:
            figures.to_first_prompt.append(gap)
        confirmed = next(
            (e for e in events if e.get("event") == "step" and e.get("step") == "confirm"
             and e.get("result") == "digits"),
            None,
        )  # fmt: skip
        stored = first.get("temporary_password_stored")
        if confirmed is not None and stored is not None:
            gap = seconds_between(_ts(confirmed), _ts(stored))
            if gap is not None:
                figures.save.append(gap)
    live = 0
    for _when, delta in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        live += delta
        figures.peak_concurrent = max(figures.peak_concurrent, live)
    return figures


@dataclass
class AsteriskFigures:
    answer_to_agi: list[float] = field(default_factory=list)
    answer_to_first_prompt: list[float] = field(default_factory=list)
    completions_played: int = 0
    apologies_played: int = 0
    problems: Counter[str] = field(default_factory=Counter)


def read_asterisk_log(text: str) -> AsteriskFigures:
    figures = AsteriskFigures()
    answered: dict[str, datetime] = {}
    agi: set[str] = set()
    prompted: set[str] = set()
    for line in text.splitlines():
        if " WARNING[" in line or " ERROR[" in line:
            message = line.split(": ", 1)[-1]
            figures.problems[re.sub(r"\d+", "N", message)[:120]] += 1
        match = _ASTERISK_LINE.match(line)
        if match is None:
            continue
        callid, rest = match.group("callid"), match.group("rest")
        when = datetime.fromisoformat(match.group("ts"))
        if "] Answer(" in rest and callid not in answered:
            answered[callid] = when
        elif "] AGI(" in rest and callid in answered and callid not in agi:
            agi.add(callid)
            figures.answer_to_agi.append((when - answered[callid]).total_seconds())
        elif " Playing '" in rest:
            if callid in answered and callid not in prompted:
                prompted.add(callid)
                figures.answer_to_first_prompt.append((when - answered[callid]).total_seconds())
            if "ivr/completed-suffix" in rest:
                figures.completions_played += 1
            if "ivr/system-error" in rest:
                figures.apologies_played += 1
    return figures


# ------------------------------------------------------------------------------------------ the run


class Daemon:
    """`ivr serve` as a subprocess in its own session, logging JSON lines to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> float:
        started = time.monotonic()
        ivr = Path(sys.executable).with_name("ivr")
        argv = [str(ivr)] if ivr.exists() else [sys.executable, "-m", "ivr.cli.main"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*argv, "serve", "--grace", "5"],
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

    def tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.process is None:
            return None
        stop_processes([self.process], timeout=20)
        return self.process.returncode


def isolated_env(args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    """The settings of this run's lab and daemon (environment variables, see docs/lab.md)."""
    return {
        "IVR_LAB__RUN_DIR": str(scratch / "lab"),
        "IVR_LAB__SIP_HOST": "127.0.0.1",
        "IVR_LAB__SIP_PORT": str(args.sip_port),
        "IVR_LAB__RTP_PORT_START": str(args.rtp_start),
        "IVR_LAB__RTP_PORT_END": str(args.rtp_start + 999),
        "IVR_LAB__CARRIER_MATCH": "127.0.0.1",
        "IVR_AGI__HOST": "127.0.0.1",
        "IVR_AGI__PORT": str(args.agi_port),
        "IVR_LAB__AGI_FALLBACK_PORT": str(args.agi_port + 1),
        "IVR_AMI__HOST": "127.0.0.1",
        "IVR_AMI__PORT": str(args.ami_port),
        "IVR_DATABASE_URL": f"sqlite:///{scratch / 'ivr.sqlite3'}",
        "IVR_LOG_FORMAT": "json",
        "IVR_LOG_LEVEL": "info",
    }


def prepare_database(url: str, env: dict[str, str]) -> None:
    upgrade_database(url)
    ivr = Path(sys.executable).with_name("ivr")
    argv = [str(ivr)] if ivr.exists() else [sys.executable, "-m", "ivr.cli.main"]
    subprocess.run([*argv, "contracts", "import", "--sample"], env=env, check=True, capture_output=True)


def database_figures(url: str, planned: Iterable[PlannedCall]) -> tuple[Counter[str], int, int]:
    """Outcomes of call_records, and how many called numbers now hold a password typed for them."""
    engine = make_engine(url)
    try:
        sessions = make_session_factory(engine)
        typed: dict[str, set[str]] = {}
        for call in planned:
            typed.setdefault(call.number, set()).add(call.password)
        with sessions() as session:
            rows = session.execute(select(CallRecord.outcome, func.count()).group_by(CallRecord.outcome))
            outcomes = Counter({str(outcome): int(n) for outcome, n in rows})
            query = (
                select(PhoneNumber.number, Credential.secret_hash)
                .join(Credential, Credential.phone_number_id == PhoneNumber.id)
                .where(PhoneNumber.number.in_(list(typed)))
            )
            hashes = {number: secret_hash for number, secret_hash in session.execute(query)}
        verified = sum(
            1
            for number, passwords in typed.items()
            if number in hashes and any(verify_secret(hashes[number], pw) for pw in passwords)
        )
        return outcomes, verified, len(typed)
    finally:
        engine.dispose()


def report(
    args: argparse.Namespace,
    planned: Sequence[PlannedCall],
    placed: Sequence[Placed | None],
    timed_out: bool,
    daemon: DaemonFigures,
    asterisk: AsteriskFigures,
    db: tuple[Counter[str], int, int],
    resources: dict[str, Any],
    setup: dict[str, float],
) -> None:
    finished = [p for p in placed if p is not None]
    results = [p.result for p in finished if p.result is not None]
    completed = [r for r in results if r.ok and r.hung_up_by == "remote"]
    wall = (max(p.ended for p in finished) - min(p.started for p in finished)) if finished else 0.0
    print()
    print(
        f"== calls under load: {len(planned)} calls, concurrency {args.concurrency}, rate {args.rate}/s, "
        f"DTMF {args.dtmf_mode}"
    )
    print(
        f"setup: lab build {setup['build']:.1f} s, lab up {setup['up']:.1f} s, "
        f"daemon ready {setup['daemon']:.1f} s"
    )
    print(
        f"calls completed: {len(completed)} / {len(planned)}"
        + ("  (TIME LIMIT reached)" if timed_out else "")
    )
    errors: Counter[str] = Counter()
    for call in finished:
        if call.result is not None and call.result.ok and call.result.hung_up_by == "remote":
            continue
        if call.error:
            errors[call.error[:120]] += 1
        elif call.result is not None and call.result.expectations_failed:
            errors["the IVR did not hang up within 60 s of the last keys"] += 1
        else:
            errors[f"ended, hung up by {call.result.hung_up_by if call.result else '?'}"] += 1
    errors["cut by the time limit"] += len(planned) - len(finished)
    errors = +errors
    for error, count in errors.most_common():
        print(f"  not completed: {count} x {error}")
    outcomes, verified, numbers = db
    print("call_records outcomes: " + (", ".join(f"{o} {n}" for o, n in outcomes.most_common()) or "-"))
    print(f"passwords stored and verified: {verified} / {numbers} numbers")
    print(f"wall time: {wall:.1f} s (first call placed to last call ended)")
    print(f"calls per second: {len(completed) / wall:.3f} completed/s" if wall else "calls per second: -")
    print(f"call duration (SIPp, answer to IVR hangup): {percentiles([r.duration for r in completed])}")
    print(f"call duration (daemon, call_finished):      {percentiles(daemon.durations)}")
    print(f"answer -> first prompt (Asterisk log):      {percentiles(asterisk.answer_to_first_prompt)}")
    print(f"  of which Answer() -> AGI (Asterisk):      {percentiles(asterisk.answer_to_agi)}")
    print(f"  daemon call_started -> caller_identified: {percentiles(daemon.to_first_prompt)}")
    print(f"save (confirm accepted -> stored):          {percentiles(daemon.save)}")
    print(
        f"daemon: {daemon.calls_started} calls seen, peak {daemon.peak_concurrent} at once; "
        f"completion prompts played (Asterisk log) {asterisk.completions_played}, "
        f"apologies {asterisk.apologies_played}"
    )
    print(
        f"daemon (ivr serve, pid {resources['daemon_pid']}): "
        f"peak RSS (VmHWM) {mib(resources['daemon_hwm'])}, "
        f"RSS before / after calls {mib(resources['daemon_rss_idle'])} / "
        f"{mib(resources['daemon_rss_after'])}, CPU {resources['daemon_cpu']:.2f} s "
        f"(of which during the calls {resources['daemon_cpu_calls']:.2f} s)"
    )
    print(
        f"asterisk (pid {resources['asterisk_pid']}): peak RSS (VmHWM) {mib(resources['asterisk_hwm'])}, "
        f"RSS before calls {mib(resources['asterisk_rss_idle'])}, CPU {resources['asterisk_cpu']:.2f} s "
        f"(of which during the calls {resources['asterisk_cpu_calls']:.2f} s)"
    )
    for problem, count in daemon.problems.most_common(10):
        print(f"daemon log: {count} x {problem}")
    for problem, count in asterisk.problems.most_common(10):
        print(f"asterisk log: {count} x {problem}")


def run(args: argparse.Namespace, scratch: Path, deadline: float) -> int:
    env = isolated_env(args, scratch)
    os.environ.update(env)  # this process's settings (the lab, SIPp's target) and the daemon's
    settings: Settings = load_settings()
    lab = Lab(settings)
    daemon = Daemon(dict(os.environ), scratch / "daemon.log")
    planned = plan_calls(args.calls, args.dtmf_mode)
    setup: dict[str, float] = {}

    busy = [str(p) for p in (args.agi_port, args.agi_port + 1) if not tcp_port_free(p)]
    if busy:
        print(
            f"benchmark: FastAGI port(s) {', '.join(busy)} in use; choose another --agi-port", file=sys.stderr
        )
        return 2
    started = time.monotonic()
    lab.build(progress=lambda msg: print(msg, flush=True))
    setup["build"] = time.monotonic() - started
    prepare_database(settings.effective_database_url, dict(os.environ))
    with lab.reserved_for_tests(wait=10):
        setup["up"] = lab.up()
        try:
            setup["daemon"] = daemon.start()
            asterisk_pid = next(p.pid for p in lab.status().processes if p.name == "asterisk")
            daemon_pid = daemon.pid
            assert daemon_pid is not None
            daemon_cpu0 = proc_cpu_seconds(daemon_pid) or 0.0
            asterisk_cpu0 = proc_cpu_seconds(asterisk_pid) or 0.0
            idle = {
                "daemon_rss_idle": proc_status_kib(daemon_pid, "VmRSS"),
                "asterisk_rss_idle": proc_status_kib(asterisk_pid, "VmRSS"),
            }
            print(
                f"lab on SIP 127.0.0.1:{args.sip_port}, daemon pid {daemon_pid} on FastAGI {args.agi_port}; "
                f"placing {len(planned)} calls...",
                flush=True,
            )
            remaining = deadline - time.monotonic() - 30  # keep time to read figures and stop
            placed, timed_out = asyncio.run(
                place_calls(
                    planned,
                    rate=args.rate,
                    concurrency=args.concurrency,
                    target=Target.from_settings(settings),
                    time_limit=max(1.0, remaining),
                )
            )
            time.sleep(1.0)  # the last call records and log lines
            daemon_cpu = proc_cpu_seconds(daemon_pid) or 0.0
            asterisk_cpu = proc_cpu_seconds(asterisk_pid) or 0.0
            resources = {
                **idle,
                "daemon_pid": daemon_pid,
                "asterisk_pid": asterisk_pid,
                "daemon_hwm": proc_status_kib(daemon_pid, "VmHWM"),
                "daemon_rss_after": proc_status_kib(daemon_pid, "VmRSS"),
                "asterisk_hwm": proc_status_kib(asterisk_pid, "VmHWM"),
                "daemon_cpu": daemon_cpu,
                "daemon_cpu_calls": daemon_cpu - daemon_cpu0,
                "asterisk_cpu": asterisk_cpu,
                "asterisk_cpu_calls": asterisk_cpu - asterisk_cpu0,
            }
            if daemon.pid is None:
                print(f"benchmark: the daemon exited during the run: {daemon.tail()}", file=sys.stderr)
            asterisk_text = lab.messages()
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(daemon.log_path, keep / "daemon.log")
                (keep / "asterisk-messages.log").write_text(asterisk_text)
                with contextlib.suppress(OSError):
                    shutil.copy(lab.cdr_path, keep / "Master.csv")
        finally:
            # a second Ctrl-C or SIGTERM must not cut the cleanup short
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                daemon.stop()
            finally:
                lab.down()
                shutil.rmtree(lab.instance_dir, ignore_errors=True)  # this run's configuration and logs
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    report(
        args,
        planned,
        placed,
        timed_out,
        read_daemon_log(daemon.log_path),
        read_asterisk_log(asterisk_text),
        database_figures(settings.effective_database_url, planned),
        resources,
        setup,
    )
    return 1 if timed_out else 0  # an incomplete measurement; slow calls are figures, not failures


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks: SIPp killed, daemon and lab stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/calls.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls to place (default 40, one per number)")
    parser.add_argument("--concurrency", type=int, default=40, help="calls at once at most (default 40)")
    parser.add_argument("--rate", type=float, default=4.0, help="new calls per second (default 4)")
    parser.add_argument("--dtmf-mode", choices=("rfc4733", "info"), default="rfc4733")
    parser.add_argument("--time-limit", type=float, default=600.0, help="stop everything after this (s)")
    parser.add_argument("--sip-port", type=int, default=5260)
    parser.add_argument("--rtp-start", type=int, default=16000, help="Asterisk RTP ports: this + 999")
    parser.add_argument("--agi-port", type=int, default=4873, help="FastAGI port (fallback: this + 1)")
    parser.add_argument("--ami-port", type=int, default=5238)
    parser.add_argument("--keep", metavar="DIR", help="copy the daemon and Asterisk logs there")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1 or args.rate <= 0 or args.time_limit < 60:
        parser.error("--calls and --concurrency must be >= 1, --rate > 0, --time-limit >= 60")
    deadline = time.monotonic() + args.time_limit
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="ivr-bench-calls-") as scratch:
        try:
            return run(args, Path(scratch), deadline)
        except KeyboardInterrupt:
            print("benchmark: interrupted; everything it started has been stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    raise SystemExit(main())
