"""The daemon's cost per call: Asterisk's side of FastAGI played against `ivr serve` (no media time).

    .venv/bin/python benchmarks/agi.py [--quick | --smoke] [--tree DIR] [--profile DIR] [--idle 5000]

In one run, against a fresh SQLite database with the sample contracts (`ivr db upgrade`,
`ivr contracts import --sample`):

- `ivr serve --no-ami` (a subprocess, default settings, JSON log at info to a file), played by the
  generic Asterisk model of `benchmarks/agi_peer.py` with the real dialogs: completed unit 1
  (0300001111), unit 2 (0300001111 -> 0300002222#), unit 3 (0355501001-039), and three wrong unit
  keys (the short session); every session is checked for its ``IVR_RESULT``;
- a bare asyncio responder (`benchmarks/agi_bare.py`, a subprocess) sending the same commands for
  the same dialogs, with no logic (the transcripts are recorded from the daemon in this run);
- classic `ivr agi`, one process per session, the environment on its stdin, the same model on its
  stdin/stdout.

It prints sessions/s at 1/10/50/200 at once, CPU ms per session (utime+stime of the server process
from /proc/<pid>/stat; for classic AGI of the reaped processes), environment -> first prompt
p50/p99, another session's command round trip p99 while completed sessions keep the password
hashes saturated, RSS per idle session with 5,000 connections parked in a digit wait (VmRSS delta /
5,000, a second daemon allowed that many calls), and the start-up of `ivr agi` (wall time to its
first command; `python -X importtime`). Then the issue's targets as ratios. Nothing passes or
fails: the exit status is 0 unless something broke. Passwords are random per session and never
printed; the temporary directory (database, logs) is deleted unless `--keep`.

The secret the daemon may ask for (``GET VARIABLE IVR_AGI_SECRET``) is set in the daemon's
environment as ``IVR_AGI__SECRET`` and answered by the model; a daemon that does not ask is fine.
`--tree DIR` runs the daemon and `ivr agi` from another checkout (e.g. a `git worktree` of a commit).
"""

from __future__ import annotations

import argparse
import asyncio
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
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agi_peer import (  # the sibling module, also when run as a script
    Action,
    AsteriskPeer,
    CallerScript,
    Keys,
    Session,
    agi_environment,
    classic_session,
    fastagi_session,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROUTE = "temp-password"
SECRET_VARIABLE = "IVR_AGI_SECRET"
LEVELS = (1, 10, 50, 200)
UNIT3_CALLERS = [f"03555010{i:02d}" for i in range(1, 40)]  # admin_user, not the contract number
_ids = itertools.count(1)
_RUN = int(time.time())


# ------------------------------------------------------------------------------------------ dialogs


def _password() -> str:
    """8 random digits the IVR takes: no run of 4 identical or consecutive digits (the rule of
    core.phone_line.guessable_temporary_password, written out: --tree may run an older checkout)."""
    while True:
        digits = "".join(secrets.choice("0123456789") for _ in range(8))
        steps = [int(b) - int(a) for a, b in itertools.pairwise(digits)]
        if not any(len(set(steps[i : i + 3])) == 1 and steps[i] in (-1, 0, 1) for i in range(len(steps) - 2)):
            return digits


@dataclass(frozen=True)
class Dialog:
    name: str
    expected: str  # IVR_RESULT
    short: bool

    def caller(self, n: int) -> str:
        if self.name == "completed-unit-3":
            return UNIT3_CALLERS[n % len(UNIT3_CALLERS)]
        return "0300001111"

    def actions(self) -> list[Action]:
        if self.name == "wrong-unit":
            return [Keys("9"), Keys("0"), Keys("7")]
        password = _password()
        entry = Keys(password + "#")
        if self.name == "completed-unit-1":
            return [Keys("1"), entry, entry]
        if self.name == "completed-unit-2":
            return [Keys("2"), Keys("0300002222#"), entry, entry]
        return [Keys("3"), entry, entry]


WRONG_UNIT = Dialog("wrong-unit", "too_many_wrong_unit", short=True)
COMPLETED = [
    Dialog("completed-unit-1", "completed", short=False),
    Dialog("completed-unit-2", "completed", short=False),
    Dialog("completed-unit-3", "completed", short=False),
]
DIALOGS = [*COMPLETED, WRONG_UNIT]


# ------------------------------------------------------------------------------------------ helpers


def rank(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop(process: subprocess.Popen[Any] | None, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


# ------------------------------------------------------------------------------------------ servers


class Daemon:
    """`ivr serve --no-ami` as a subprocess; its stderr (the JSON log) copied to a file by a thread
    that also notices ``daemon_ready``."""

    def __init__(self, tree: Path, env: dict[str, str], log_path: Path, port: int) -> None:
        self.port = port
        self.log_path = log_path
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stack.cli.main",
                "serve",
                "--no-ami",
                "--port",
                str(port),
                "--grace",
                "5",
            ],
            cwd=tree,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.ready = threading.Event()
        self.lines = 0
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        assert self.process.stderr is not None
        with open(self.log_path, "ab") as log:
            for line in self.process.stderr:
                log.write(line)
                self.lines += 1
                if b'"daemon_ready"' in line or b"daemon_ready" in line:
                    self.ready.set()
        self.ready.set()

    def wait_ready(self, limit: float = 30) -> None:
        """The ``daemon_ready`` line, or (below info, where it is not logged) the port listening."""
        deadline = time.monotonic() + limit
        while not self.ready.wait(0.05) and time.monotonic() < deadline and self.process.poll() is None:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    time.sleep(0.5)  # let it close its stale call records before the first call
                    self.ready.set()
        if not self.ready.is_set() or self.process.poll() is not None:
            tail = self.log_path.read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"ivr serve did not start: {tail}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop(self.process)
        self._thread.join(timeout=10)


class Bare:
    def __init__(self, transcripts: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("agi_bare.py")), "--transcripts", str(transcripts)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("listening "):
            raise RuntimeError("the bare responder did not start")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop(self.process)


# ------------------------------------------------------------------------------------------ load


@dataclass
class Batch:
    label: str
    concurrency: int
    sessions: list[Session] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = math.nan

    @property
    def ok(self) -> int:
        return sum(1 for s, e in zip(self.sessions, self.expected, strict=True) if s.result == e)

    @property
    def failures(self) -> Counter[str]:
        return Counter(
            f"{s.result or '-'}/{s.closed_by}"
            for s, e in zip(self.sessions, self.expected, strict=True)
            if s.result != e
        )

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall else math.nan

    @property
    def cpu_ms(self) -> float:
        return self.cpu / len(self.sessions) * 1000 if self.sessions else math.nan

    def first_prompt(self, p: float) -> float:
        return rank([x for s in self.sessions if (x := s.first_prompt_latency()) is not None], p)


Runner = Callable[[Dialog, int], Any]  # an awaitable giving a Session


def caller_script(actions: Sequence[Action], secret: str, *, park: bool = False) -> CallerScript:
    """The daemon's secret as Asterisk would hold it, wherever the daemon reads it from: the channel
    variable ``IVR_AGI_SECRET``, or ``AST_CONFIG(<file>,<category>,secret)`` for any file/category."""
    return CallerScript(
        actions, variables={SECRET_VARIABLE: secret}, config={"*": {"*": {"secret": secret}}}, park=park
    )


def fastagi_runner(port: int, secret: str, *, fast_args: bool = True) -> Runner:
    async def run(dialog: Dialog, n: int) -> Session:
        call = next(_ids)
        env = agi_environment(
            uniqueid=f"{_RUN}.{call}",
            callerid=dialog.caller(n),
            request=f"agi://127.0.0.1:{port}/{ROUTE}",
            network_script=ROUTE,
            args=(dialog.name,),
            channel=f"PJSIP/carrier-{call:08x}",
        )
        return await fastagi_session("127.0.0.1", port, env, caller_script(dialog.actions(), secret))

    return run


def classic_runner(
    tree: Path, env: dict[str, str], starts: list[float], prompts: list[float] | None = None
) -> Runner:
    async def run(dialog: Dialog, n: int) -> Session:
        call = next(_ids)
        agi_env = agi_environment(
            uniqueid=f"{_RUN}.{call}",
            callerid=dialog.caller(n),
            request="/usr/local/bin/ivr-agi",
            channel=f"PJSIP/carrier-{call:08x}",
        )
        script = caller_script(dialog.actions(), env["IVR_AGI__SECRET"])
        session, first = await classic_session(
            [sys.executable, "-m", "stack.cli.main", "agi"], agi_env, script, process_env=env, cwd=str(tree)
        )
        starts.append(first)
        heard = session.first_prompt_latency()  # from the environment, written just after the spawn
        if prompts is not None and heard is not None:
            prompts.append(heard)
        return session

    return run


async def run_batch(
    label: str,
    runner: Runner,
    dialogs: Sequence[Dialog],
    *,
    concurrency: int,
    total: int,
    pid: int | None,
) -> Batch:
    """`concurrency` sessions at once (each worker starts its next as its last ends), `total` in all."""
    batch = Batch(label, concurrency)
    counter = itertools.count()
    cpu0 = cpu_seconds(pid) if pid else children_cpu()
    start = time.monotonic()

    async def worker() -> None:
        while (n := next(counter)) < total:
            dialog = dialogs[n % len(dialogs)]
            session = await runner(dialog, n)
            batch.sessions.append(session)
            batch.expected.append(dialog.expected)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    batch.wall = time.monotonic() - start
    batch.cpu = (cpu_seconds(pid) if pid else children_cpu()) - cpu0
    return batch


HASH_LOAD_SECRET = "IVR_BENCH_AGI_SECRET"  # the secret for `--hash-load`, in its environment (not argv)


async def hash_load(port: int, secret: str, *, seconds: float, hashers: int) -> dict[str, Any]:
    """`--hash-load`: `hashers` workers loop completed sessions (password hashes back to back) for
    `seconds`; prints ``started`` when they begin."""
    runner = fastagi_runner(port, secret)
    sessions: list[Session] = []
    print("started", flush=True)
    start = time.monotonic()
    end = start + seconds

    async def loop() -> None:
        n = 0
        while time.monotonic() < end:
            sessions.append(await runner(COMPLETED[n % len(COMPLETED)], n))
            n += 1

    await asyncio.gather(*(loop() for _ in range(hashers)))
    wall = time.monotonic() - start
    return {
        "sessions": len(sessions),
        "completed": sum(1 for s in sessions if s.result == "completed"),
        "wall": wall,
    }


async def hashing_saturated(
    runner: Runner, *, port: int, secret: str, seconds: float, hashers: int, probes: int
) -> dict[str, Any]:
    """`hashers` completing sessions loop (password hashes back to back) while `probes` workers loop
    wrong-unit sessions; the probes' command round trips are the figure. The completing sessions
    are driven by a second process (`--hash-load`), so the probes' process measures only the probes:
    in one process, its own work for the completing sessions was in every probe's round trip."""
    probe_sessions: list[Session] = []

    # the control: the same probes alone, just before, so the machine's own noise is in the figures
    control_end = time.monotonic() + seconds / 2
    control_sessions: list[Session] = []

    async def control(out: list[Session]) -> None:
        while time.monotonic() < control_end:
            out.append(await runner(WRONG_UNIT, 0))

    await asyncio.gather(*(control(control_sessions) for _ in range(probes)))
    control_trips = [t for s in control_sessions for t in s.round_trips()]

    load = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--hash-load",
        str(port),
        "--saturate-seconds",
        str(seconds + 1.0),  # outlasts the probes
        "--hashers",
        str(hashers),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, HASH_LOAD_SECRET: secret},
    )
    assert load.stdout is not None
    await load.stdout.readline()  # "started"
    end = time.monotonic() + seconds

    async def loop(out: list[Session]) -> None:
        n = 0
        while time.monotonic() < end:
            out.append(await runner(WRONG_UNIT, n))
            n += 1

    await asyncio.gather(*(loop(probe_sessions) for _ in range(probes)))
    output, _ = await load.communicate()
    hashed = json.loads(output.decode().strip().splitlines()[-1])
    trips = [t for s in probe_sessions for t in s.round_trips()]
    return {
        "control_p50": rank(control_trips, 50),
        "control_p99": rank(control_trips, 99),
        "round_trip_p50": rank(trips, 50),
        "round_trip_p99": rank(trips, 99),
        "round_trip_max": max(trips) if trips else math.nan,
        "round_trips": len(trips),
        "probe_ok": sum(1 for s in probe_sessions if s.result == WRONG_UNIT.expected),
        "probes": len(probe_sessions),
        "completed_per_s": hashed["completed"] / hashed["wall"],
        "first_prompt_p99": rank([x for s in probe_sessions if (x := s.first_prompt_latency())], 99),
    }


async def idle_sessions(port: int, pid: int, secret: str, count: int, step: int = 250) -> dict[str, Any]:
    """`count` calls parked in their first digit wait; VmRSS before and after."""
    peers: list[AsteriskPeer] = []
    parked = 0
    all_parked = asyncio.Event()
    target = 0

    refused = 0

    def on_park(_session: Session) -> None:
        nonlocal parked
        parked += 1
        if parked + refused >= target:
            all_parked.set()

    async def one() -> Session:
        call = next(_ids)
        env = agi_environment(
            uniqueid=f"{_RUN}.{call}",
            callerid="0300001111",
            request=f"agi://127.0.0.1:{port}/{ROUTE}",
            network_script=ROUTE,
            args=("idle",),
        )
        script = caller_script((), secret, park=True)
        session = await fastagi_session(
            "127.0.0.1", port, env, script, wait_limit=3600, on_park=on_park, peer_out=peers
        )
        if session.parked_at is None:  # closed before its first digit wait (refused by the daemon)
            nonlocal refused
            refused += 1
            if parked + refused >= target:
                all_parked.set()
        return session

    # warm the paths the parked calls take, then the baseline
    warm = [asyncio.ensure_future(one()) for _ in range(20)]
    target = 20
    await asyncio.wait_for(all_parked.wait(), 60)
    for peer in peers:
        peer.release(hang_up=True)
    await asyncio.gather(*warm)
    peers.clear()
    parked = 0
    await asyncio.sleep(0.5)  # let the daemon finish the warm-up calls' records before the baseline
    before = rss_kib(pid)
    tasks: list[asyncio.Future[Session]] = []
    start = time.monotonic()
    for low in range(0, count, step):
        all_parked.clear()
        target = min(count, low + step)
        tasks += [asyncio.ensure_future(one()) for _ in range(target - low)]
        await asyncio.wait_for(all_parked.wait(), 120)
    opened = time.monotonic() - start
    after = rss_kib(pid)
    for peer in peers:
        peer.release(hang_up=True)
    sessions = await asyncio.gather(*tasks)
    return {
        "count": count,
        "parked": parked,
        "refused": refused,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "per_session_kib": (after - before) / max(1, parked),
        "open_seconds": opened,
        "closed_ok": sum(1 for s in sessions if s.closed_by == "asterisk"),
    }


# ------------------------------------------------------------------------------------------ start-up


def import_time(tree: Path, env: dict[str, str]) -> dict[str, Any]:
    """``python -X importtime -m stack.cli.main agi`` with an environment and a caller who hangs up at
    once: the import time of one classic call, and its biggest top-level imports."""
    agi_env = agi_environment(uniqueid=f"{_RUN}.{next(_ids)}", callerid="0300001111", request="/x")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stack.cli.main", "agi"],
        cwd=tree,
        env=env,
        input=agi_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    total = 0
    tops: list[tuple[int, str]] = []
    for line in result.stderr.decode(errors="replace").splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match[3]) == 1:
            total += int(match[2])
            tops.append((int(match[2]), match[4]))
    tops.sort(reverse=True)
    return {"total_ms": total / 1000, "top": [(name, us / 1000) for us, name in tops[:8]]}


# ------------------------------------------------------------------------------------------ profile


async def profile_batch(
    out_dir: Path,
    pid: int,
    runner: Runner,
    dialogs: Sequence[Dialog],
    total: int,
    name: str,
    *,
    gil: bool = False,
) -> None:
    """py-spy (raw collapsed stacks) on the daemon during a batch: all threads, GIL-holding or not
    (where the wall time goes), or with `gil` only the thread holding the GIL (the Python CPU)."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print(f"  (no py-spy: profile {name} skipped)")
        return
    raw = out_dir / f"{name}.txt"
    spy = subprocess.Popen(  # noqa: ASYNC220 - started and stopped around the batch, never waited on
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "400", "--output", str(raw)]
        + (["--gil"] if gil else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # py-spy attaches
    batch = await run_batch(name, runner, dialogs, concurrency=50, total=total, pid=pid)
    spy.send_signal(signal.SIGINT)
    await asyncio.to_thread(spy.wait, 30)
    print(f"  profile {name}: {len(batch.sessions)} sessions, {raw}")
    summarize_profile(raw, len(batch.sessions))


def summarize_profile(raw: Path, sessions: int) -> None:
    if not raw.exists():
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")") for f in stack.split(";")
        ]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"    samples {total} (400 Hz, all threads: {total / 400 / sessions * 1000:.1f} ms per session)")
    print("    own time:")
    for frame, count in own.most_common(12):
        print(f"      {count / total:6.1%}  {frame}")
    print("    inclusive:")
    for frame, count in inclusive.most_common(25):
        print(f"      {count / total:6.1%}  {frame}")


# ------------------------------------------------------------------------------------------ main


def recorded_transcripts(sessions: dict[str, Session]) -> dict[str, list[str]]:
    return {name: list(session.commands) for name, session in sessions.items()}


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, str, dict[str, str]]:
    """A fresh database with the sample contracts; the environment of every process started."""
    tree = Path(args.tree).resolve()
    url = f"sqlite:///{work / 'ivr.sqlite3'}"
    secret = secrets.token_hex(16)
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IVR_")},
        "PYTHONPATH": str(tree),
        "IVR_DATABASE_URL": url,
        "IVR_LOG_FORMAT": "json",
        "IVR_LOG_LEVEL": args.log_level,
        "IVR_AGI__SECRET": secret,
        **dict(item.split("=", 1) for item in args.setting),
    }
    # Bytecode for the tree, as an install has it (pip compiles at install): with
    # PYTHONDONTWRITEBYTECODE set, each classic `ivr agi` would otherwise compile ivr/ and core/.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree / "ivr"), str(tree / "core")],
        check=True,
        capture_output=True,
    )
    for command in (["db", "upgrade"], ["contracts", "import", "--sample"]):
        subprocess.run(
            [sys.executable, "-m", "stack.cli.main", *command],
            cwd=tree,
            env=base_env,
            check=True,
            capture_output=True,
        )
    head = (
        subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "(not a git checkout)"
    )
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--short", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    dirty_count = len([d for d in dirty if d.strip()])
    print(f"tree {tree}: {head}" + (f" (+{dirty_count} modified files)" if dirty_count else ""))
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; fd limit {raise_fd_limit(20000)}")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    return tree, secret, base_env


async def benchmark(
    args: argparse.Namespace, work: Path, tree: Path, secret: str, base_env: dict[str, str]
) -> int:

    daemon = Daemon(tree, base_env, work / "daemon.log", free_port())
    bare: Bare | None = None
    results: dict[str, Any] = {}
    try:
        daemon.wait_ready()
        run_daemon = fastagi_runner(daemon.port, secret)
        # one of each dialog: checks them and records the commands the bare responder will send
        first: dict[str, Session] = {}
        for n, dialog in enumerate(DIALOGS):
            session = await run_daemon(dialog, n)
            if session.result != dialog.expected:
                raise RuntimeError(
                    f"dialog {dialog.name}: IVR_RESULT {session.result!r} ({session.closed_by}), "
                    f"commands {[c.split(' ')[0:3] for c in session.commands]}"
                )
            first[dialog.name] = session
        asked_secret = any(
            c.upper().startswith("GET VARIABLE") and "SECRET" in c.upper()
            for c in first[WRONG_UNIT.name].commands
        )
        print(
            "dialogs: "
            + ", ".join(f"{name} {len(s.commands)} commands" for name, s in first.items())
            + f"; secret asked: {'yes' if asked_secret else 'no'}"
        )
        transcripts = work / "transcripts.json"
        transcripts.write_text(json.dumps(recorded_transcripts(first)))
        bare = Bare(transcripts)
        run_bare = fastagi_runner(bare.port, secret)
        await run_batch("warm", run_daemon, DIALOGS, concurrency=4, total=40, pid=daemon.pid)
        await run_batch("warm", run_bare, DIALOGS, concurrency=4, total=40, pid=bare.pid)

        table: dict[tuple[str, str, int], Batch] = {}
        for level in args.levels:
            for kind, dialogs, total in (
                ("wave", [WRONG_UNIT], level),  # `level` callers arriving at once, one session each
                ("short", [WRONG_UNIT], max(args.sessions, 3 * level)),
                ("completed", COMPLETED, max(args.sessions // 5, 2 * level)),
            ):
                for server, runner, pid in (("daemon", run_daemon, daemon.pid), ("bare", run_bare, bare.pid)):
                    batch = await run_batch(
                        f"{server} {kind}", runner, dialogs, concurrency=level, total=total, pid=pid
                    )
                    table[(server, kind, level)] = batch
                    failed = f"  FAILED {dict(batch.failures)}" if batch.failures else ""
                    print(
                        f"  {server:6} {kind:9} at {level:3}: {batch.ok}/{len(batch.sessions)} ok, "
                        f"{batch.rate:7.1f}/s, cpu {batch.cpu_ms:6.2f} ms, first prompt p50 "
                        f"{ms(batch.first_prompt(50))} p99 {ms(batch.first_prompt(99))} ms{failed}"
                    )
        results["table"] = table

        # The CPU ratio at the target level again, alternating daemon and bare: one pair of
        # batches moves with whatever else the machine does; the median of the rounds is the figure.
        level = 50 if 50 in args.levels else args.levels[-1]
        ratios = [
            table[("daemon", "short", level)].cpu_ms / max(table[("bare", "short", level)].cpu_ms, 1e-9)
        ]
        for _ in range(max(0, args.ratio_rounds - 1)):
            total = max(args.sessions, 3 * level)
            pair = [
                await run_batch(
                    f"{server} short", runner, [WRONG_UNIT], concurrency=level, total=total, pid=pid
                )
                for server, runner, pid in (("daemon", run_daemon, daemon.pid), ("bare", run_bare, bare.pid))
            ]
            ratios.append(pair[0].cpu_ms / max(pair[1].cpu_ms, 1e-9))
        results["cpu_ratios"] = ratios
        print(
            f"  CPU ratio daemon/bare, short at {level}, {len(ratios)} rounds: "
            + ", ".join(f"{r:.2f}" for r in ratios)
        )

        results["saturated"] = await hashing_saturated(
            run_daemon,
            port=daemon.port,
            secret=secret,
            seconds=args.saturate_seconds,
            hashers=args.hashers,
            probes=10,
        )
        sat = results["saturated"]
        print(
            f"  hashing saturated ({args.hashers} completing + 10 probing): probe round trip p50 "
            f"{ms(sat['round_trip_p50'])} p99 {ms(sat['round_trip_p99'])} max {ms(sat['round_trip_max'])} ms "
            f"({sat['round_trips']} trips, {sat['probe_ok']}/{sat['probes']} ok), "
            f"{sat['completed_per_s']:.1f} completed/s; the probes alone just before: p50 "
            f"{ms(sat['control_p50'])} p99 {ms(sat['control_p99'])} ms"
        )
        baseline = table.get(("daemon", "short", 10))
        if baseline is not None:
            trips = [t for s in baseline.sessions for t in s.round_trips()]
            results["round_trip_quiet_p99"] = rank(trips, 99)

        if args.profile:
            out = Path(args.profile)
            await profile_batch(out, daemon.pid, run_daemon, [WRONG_UNIT], 600, "short")
            await profile_batch(out, daemon.pid, run_daemon, [WRONG_UNIT], 600, "short-gil", gil=True)
            await profile_batch(out, daemon.pid, run_daemon, COMPLETED, 200, "completed")
    finally:
        daemon.stop()
        if bare is not None:
            bare.stop()

    # classic AGI, one process per session
    starts: list[float] = []
    first_prompts: list[float] = []
    run_classic = classic_runner(tree, base_env, starts, first_prompts)
    classic: dict[tuple[str, int], Batch] = {}
    for level in [lv for lv in args.classic_levels if lv > 0]:  # --classic-levels 0: none
        for kind, dialogs, total in (
            ("short", [WRONG_UNIT], 2 * level + 4),
            ("completed", COMPLETED, level + 3),
        ):
            batch = await run_batch(
                f"classic {kind}", run_classic, dialogs, concurrency=level, total=total, pid=None
            )
            classic[(kind, level)] = batch
            failed = f"  FAILED {dict(batch.failures)}" if batch.failures else ""
            print(
                f"  classic {kind:9} at {level:3}: {batch.ok}/{len(batch.sessions)} ok, {batch.rate:7.2f}/s, "
                f"cpu {batch.cpu_ms:6.1f} ms{failed}"
            )
    one_at_a_time = [s for s in starts[: 2 * args.classic_levels[0] + 4]]
    results["classic"] = classic
    results["classic_start"] = (rank(one_at_a_time, 50), rank(one_at_a_time, 99))
    heard_alone = first_prompts[: 2 * args.classic_levels[0] + 4]
    results["classic_first_prompt"] = (rank(heard_alone, 50), rank(heard_alone, 99))
    results["importtime"] = import_time(tree, base_env)

    # RSS per idle session, on a daemon of its own that takes that many calls
    if args.idle:
        idle_env = {
            **base_env,
            "IVR_AGI__MAX_CONCURRENT_CALLS": str(args.idle + 100),
            "IVR_AGI__MAX_PENDING_CONNECTIONS": str(args.idle + 100),
            "IVR_AGI__COMMAND_TIMEOUT_SECONDS": "3600",
            "IVR_MENU__FIRST_DIGIT_TIMEOUT_SECONDS": "3600",
        }
        idle_daemon = Daemon(tree, idle_env, work / "idle-daemon.log", free_port())
        try:
            idle_daemon.wait_ready()
            results["idle"] = await idle_sessions(idle_daemon.port, idle_daemon.pid, secret, args.idle)
        finally:
            idle_daemon.stop()

    report(args, results)
    return 0


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    table: dict[tuple[str, str, int], Batch] = r["table"]
    classic: dict[tuple[str, int], Batch] = r["classic"]
    print()
    header = "| | " + " | ".join(f"{lv} at once" for lv in args.levels) + " |"
    print(header)
    print("|---" * (len(args.levels) + 1) + "|")

    def row(label: str, cells: Sequence[str]) -> None:
        print(f"| {label} | " + " | ".join(cells) + " |")

    for server in ("daemon", "bare"):
        row(
            f"{server}: env → first prompt p50 / p99 ms, callers arriving at once (one wave)",
            [
                f"{ms(b.first_prompt(50))} / {ms(b.first_prompt(99))}"
                for b in (table[(server, "wave", lv)] for lv in args.levels)
            ],
        )
        for kind in ("short", "completed"):
            batches = [table[(server, kind, lv)] for lv in args.levels]
            row(
                f"{server}: {kind} sessions/s (ok/all)",
                [f"{b.rate:.0f} ({b.ok}/{len(b.sessions)})" for b in batches],
            )
            row(f"{server}: CPU ms per {kind} session", [f"{b.cpu_ms:.2f}" for b in batches])
            row(
                f"{server}: env → first prompt p50 / p99 ms ({kind})",
                [f"{ms(b.first_prompt(50))} / {ms(b.first_prompt(99))}" for b in batches],
            )
    for kind in ("short", "completed"):
        found = [classic.get((kind, lv)) for lv in args.levels]
        row(f"classic `ivr agi`: {kind} sessions/s", [f"{b.rate:.2f}" if b else "-" for b in found])
        row(f"classic `ivr agi`: CPU ms per {kind} session", [f"{b.cpu_ms:.0f}" if b else "-" for b in found])
    sat = r["saturated"]
    print()
    print(
        f"command round trip while hashes saturate: p50 {ms(sat['round_trip_p50'])} / p99 "
        f"{ms(sat['round_trip_p99'])} / max {ms(sat['round_trip_max'])} ms "
        f"(the probes alone just before: p50 {ms(sat['control_p50'])} / p99 {ms(sat['control_p99'])} ms; "
        f"quiet, 10 at once: p99 {ms(r.get('round_trip_quiet_p99', math.nan))} ms)"
    )
    start50, start99 = r["classic_start"]
    imp = r["importtime"]
    print(
        f"`ivr agi` start-up, spawn → first command: p50 {ms(start50)} / p99 {ms(start99)} ms; "
        f"imports {imp['total_ms']:.0f} ms: " + ", ".join(f"{n} {t:.0f}" for n, t in imp["top"])
    )
    heard50, heard99 = r.get("classic_first_prompt", (math.nan, math.nan))
    print(
        f"`ivr agi` spawn → first prompt (the caller's silence after the dialplan's Answer): "
        f"p50 {ms(heard50)} / p99 {ms(heard99)} ms"
    )
    idle = r.get("idle")
    if idle:
        print(
            f"idle sessions: {idle['parked']}/{idle['count']} parked ({idle['refused']} refused) "
            f"in {idle['open_seconds']:.1f} s, VmRSS "
            f"{idle['rss_before_kib'] / 1024:.1f} → {idle['rss_after_kib'] / 1024:.1f} MiB: "
            f"{idle['per_session_kib']:.1f} KiB per idle session"
        )

    # the targets
    level = 50 if 50 in args.levels else args.levels[-1]
    short_d, short_b = table[("daemon", "short", level)], table[("bare", "short", level)]
    wave_d = table[("daemon", "wave", level)]
    best_daemon = max(table[("daemon", "short", lv)].rate for lv in args.levels)
    best_classic = max((b.rate for (k, _lv), b in classic.items() if k == "short"), default=math.nan)
    best_daemon_c = max(table[("daemon", "completed", lv)].rate for lv in args.levels)
    best_classic_c = max((b.rate for (k, _lv), b in classic.items() if k == "completed"), default=math.nan)
    ratios = sorted(r["cpu_ratios"])
    cpu_ratio = ratios[len(ratios) // 2]  # the median round
    completed_p99 = table[("daemon", "completed", level)].first_prompt(99)
    ratio_s = best_daemon / best_classic if best_classic else math.nan
    ratio_c = best_daemon_c / best_classic_c if best_classic_c else math.nan
    targets: list[tuple[str, str, bool | None]] = [
        (
            "CPU per short session ≤ 3× bare (goal 1.3×)",
            f"{cpu_ratio:.1f}× (median of {len(ratios)} rounds, {ratios[0]:.1f}–{ratios[-1]:.1f}×; "
            f"first round {short_d.cpu_ms:.2f} / {short_b.cpu_ms:.2f} ms at {level})",
            cpu_ratio <= 3,
        ),
        (
            f"env → first prompt p99 ≤ 20 ms at {level} at once",
            f"{ms(wave_d.first_prompt(99))} ms ({level} arriving at once); sustained {level} in flight: "
            f"{ms(short_d.first_prompt(99))} ms short, {ms(completed_p99)} ms completed",
            wave_d.first_prompt(99) <= 0.020,
        ),
        (
            "round trip p99 ≤ 5 ms while hashes saturate",
            f"{ms(sat['round_trip_p99'])} ms (the same probes without hashing: {ms(sat['control_p99'])} ms)",
            sat["round_trip_p99"] <= 0.005,
        ),
        ("`ivr agi` start-up ≤ 150 ms", f"{ms(start50)} ms (p50 to first command)", start50 <= 0.150),
        (
            "short sessions/s ≥ 30× classic",
            f"{ratio_s:.0f}× ({best_daemon:.0f} / {best_classic:.2f} per s)",
            ratio_s >= 30,
        ),
        (
            "completed sessions/s vs classic (as it comes)",
            f"{ratio_c:.0f}× ({best_daemon_c:.0f} / {best_classic_c:.2f} per s)",
            None,
        ),
    ]
    if idle:
        targets.append(
            ("idle session ≤ 20 KB", f"{idle['per_session_kib']:.1f} KiB", idle["per_session_kib"] <= 20)
        )
    print()
    print("| target | measured | |")
    print("|---|---|---|")
    for name, value, met in targets:
        print(f"| {name} | {value} | {'met' if met else 'NOT met' if met is not None else ''} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(REPO), help="checkout whose ivr serve / ivr agi to run")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=list(LEVELS))
    parser.add_argument("--classic-levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10])
    parser.add_argument(
        "--sessions",
        type=int,
        default=1000,
        help="short sessions per level (at least 3x it; a fifth as many completed): CPU is read in "
        "10 ms ticks, so the bare responder's ~0.3 ms sessions need many for a figure within a few %%",
    )
    parser.add_argument("--saturate-seconds", type=float, default=8.0)
    parser.add_argument("--hashers", type=int, default=8, help="sessions completing passwords at once")
    parser.add_argument(
        "--ratio-rounds", type=int, default=3, help="rounds of the CPU ratio at the target level (median)"
    )
    parser.add_argument("--idle", type=int, default=5000, help="idle sessions for the RSS figure (0: skip)")
    parser.add_argument(
        "--profile", help="also profile the daemon with py-spy; raw stacks go to this directory"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="IVR_NAME=VALUE",
        help="a setting for the processes started, e.g. IVR_AGI__HASH_WORKERS=1 (repeatable)",
    )
    parser.add_argument("--log-level", default="info", help="the daemon's and ivr agi's log level")
    parser.add_argument("--quick", action="store_true", help="small run: levels 1,10, 100 sessions, 500 idle")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="smaller still (every part runs, the figures mean little): level 1, 20 sessions, 50 idle",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    parser.add_argument(
        "--hash-load", type=int, metavar="PORT", help=argparse.SUPPRESS
    )  # hashing_saturated's
    args = parser.parse_args(argv)
    if args.hash_load:  # the completing sessions of hashing_saturated, in a process of their own
        global _RUN
        _RUN += os.getpid() * 10  # call ids apart from the parent's
        done = asyncio.run(
            hash_load(
                args.hash_load,
                os.environ[HASH_LOAD_SECRET],
                seconds=args.saturate_seconds,
                hashers=args.hashers,
            )
        )
        print(json.dumps(done), flush=True)
        return 0
    if args.quick:
        args.levels, args.sessions, args.idle, args.saturate_seconds = [1, 10], 100, min(args.idle, 500), 3.0
        args.classic_levels = [1, 2]
    if args.smoke:
        args.levels, args.sessions, args.idle, args.saturate_seconds = [1], 20, min(args.idle, 50), 1.0
        args.classic_levels, args.ratio_rounds, args.hashers = [1], 1, 2
        print("smoke run: every part runs once, small; the figures are not measurements", flush=True)
    work = Path(tempfile.mkdtemp(prefix="ivr-agi-bench-"))
    try:
        tree, secret, env = prepare(args, work)
        return asyncio.run(benchmark(args, work, tree, secret, env))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
