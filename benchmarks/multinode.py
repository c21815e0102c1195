"""Two FastAGI daemons on one PostgreSQL, beside one daemon on SQLite and one on PostgreSQL: the
voice benchmark's daemon figures (benchmarks/agi.py, the same dialogs and Asterisk model), side by
side, in one run on one machine.

    .venv/bin/python benchmarks/multinode.py [--levels 1,10,50] [--sessions 200] [--smoke]

Set-ups, each on a fresh database with the sample contracts:

- ``sqlite, 1 daemon``: the single-node default (what benchmarks/agi.py measures);
- ``postgres, 1 daemon``: the same daemon on a private PostgreSQL cluster (initdb in a temporary
  directory, Debian's binaries, fsync on: real commits);
- ``postgres, 2 daemons``: two daemons (node ids node-a, node-b) on that PostgreSQL, the sessions
  alternating between them as two Asterisks would send them.

For each, at 1/10/50 sessions at once: short sessions/s (three wrong unit keys), completed
sessions/s (a password hashed and stored), CPU ms per session (all the set-up's daemons together,
utime+stime from /proc), environment -> first prompt p50/p99. Every session is checked for its
``IVR_RESULT``. Nothing passes or fails: the exit status is 0 unless something broke.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agi import (  # the sibling benchmark, also when run as a script
    COMPLETED,
    DIALOGS,
    REPO,
    WRONG_UNIT,
    Batch,
    Daemon,
    Runner,
    cpu_seconds,
    fastagi_runner,
    free_port,
    ms,
    raise_fd_limit,
    run_batch,
)

PG_BIN = Path(os.environ.get("IVR_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgres_cluster() -> Iterator[int]:
    """A private PostgreSQL cluster on a free loopback port; yields the port."""
    base = Path(tempfile.mkdtemp(prefix="ivr-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    data = base / "data"
    run = _as_postgres()
    subprocess.run(
        [*run, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8", "--locale=C"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-p {port} -h 127.0.0.1 -k {base} -c max_connections=300"
    subprocess.run(
        [*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options,
         "-w", "-t", "60", "start"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port
    finally:
        subprocess.run(
            [*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def prepared_env(url: str, secret: str) -> dict[str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IVR_")},
        "PYTHONPATH": str(REPO),
        "IVR_DATABASE_URL": url,
        "IVR_LOG_FORMAT": "json",
        "IVR_LOG_LEVEL": "info",
        "IVR_AGI__SECRET": secret,
    }
    for command in (["db", "upgrade"], ["contracts", "import", "--sample"]):
        subprocess.run(
            [sys.executable, "-m", "stack.cli.main", *command],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    return env


def alternating(runners: Sequence[Runner]) -> Runner:
    """Session n goes to daemon n mod len(runners), as several Asterisks would spread them."""

    async def run(dialog: Any, n: int) -> Any:
        return await runners[n % len(runners)](dialog, n)

    return run


async def measure(
    label: str, daemons: list[Daemon], secret: str, levels: Sequence[int], sessions: int
) -> dict[tuple[str, int], Batch]:
    runner = alternating([fastagi_runner(d.port, secret) for d in daemons])
    for n, dialog in enumerate(DIALOGS * len(daemons)):  # every dialog on every daemon, checked
        session = await runner(dialog, n)
        if session.result != dialog.expected:
            raise RuntimeError(f"{label}: {dialog.name} ended with {session.result!r} ({session.closed_by})")
    await run_batch("warm", runner, DIALOGS, concurrency=4, total=40, pid=None)
    table: dict[tuple[str, int], Batch] = {}
    for level in levels:
        for kind, dialogs, total in (
            ("short", [WRONG_UNIT], max(sessions, 3 * level)),
            ("completed", COMPLETED, max(sessions // 2, 2 * level)),
        ):
            before = sum(cpu_seconds(d.pid) for d in daemons)
            batch = await run_batch(
                f"{label} {kind}", runner, dialogs, concurrency=level, total=total, pid=None
            )
            batch.cpu = sum(cpu_seconds(d.pid) for d in daemons) - before
            table[(kind, level)] = batch
            failed = f"  FAILED {dict(batch.failures)}" if batch.failures else ""
            print(
                f"  {label:20} {kind:9} at {level:3}: {batch.ok}/{len(batch.sessions)} ok, "
                f"{batch.rate:7.1f}/s, cpu {batch.cpu_ms:6.2f} ms, first prompt p50 "
                f"{ms(batch.first_prompt(50))} p99 {ms(batch.first_prompt(99))} ms{failed}",
                flush=True,
            )
    return table


async def setup_run(
    label: str, url: str, count: int, work: Path, levels: Sequence[int], sessions: int
) -> dict[tuple[str, int], Batch]:
    secret = os.urandom(16).hex()
    env = prepared_env(url, secret)
    daemons = []
    try:
        for index in range(count):
            node_env = {**env, "IVR_AGI__NODE_ID": f"node-{'ab'[index]}"}
            daemon = Daemon(REPO, node_env, work / f"{label.replace(' ', '-')}-{index}.log", free_port())
            daemons.append(daemon)
        for daemon in daemons:
            daemon.wait_ready()
        return await measure(label, daemons, secret, levels, sessions)
    finally:
        for daemon in daemons:
            daemon.stop()


def report(results: dict[str, dict[tuple[str, int], Batch]], levels: Sequence[int]) -> None:
    labels = list(results)
    print("\n| | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    rows = [
        ("short sessions/s", "short", lambda b: f"{b.rate:.0f}"),
        ("CPU ms per short session", "short", lambda b: f"{b.cpu_ms:.2f}"),
        ("env → first prompt p50 / p99 ms (short)", "short",
         lambda b: f"{ms(b.first_prompt(50))} / {ms(b.first_prompt(99))}"),
        ("completed sessions/s", "completed", lambda b: f"{b.rate:.1f}"),
        ("CPU ms per completed session", "completed", lambda b: f"{b.cpu_ms:.1f}"),
    ]  # fmt: skip
    for level in levels:
        for name, kind, cell in rows:
            values = [cell(results[label][(kind, level)]) for label in labels]
            print(f"| {name}, {level} at once | " + " | ".join(values) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50])
    parser.add_argument("--sessions", type=int, default=200, help="short sessions per level (at least 3x it)")
    parser.add_argument(
        "--smoke", action="store_true", help="a few sessions (level 1, 6 short, 3 completed per set-up)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.levels, args.sessions = [1], 6
        print("smoke run: every part runs once, small; the figures are not measurements", flush=True)
    head = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"commit {head or '(not a git checkout)'}")
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; fd limit {raise_fd_limit(20000)}")
    work = Path(tempfile.mkdtemp(prefix="ivr-bench-multinode-"))
    results: dict[str, dict[tuple[str, int], Batch]] = {}
    try:
        results["sqlite, 1 daemon"] = asyncio.run(
            setup_run(
                "sqlite, 1 daemon", f"sqlite:///{work / 'ivr.sqlite3'}", 1, work, args.levels, args.sessions
            )
        )
        with postgres_cluster() as port:
            for count, database in ((1, "one"), (2, "two")):
                subprocess.run(
                    [*_as_postgres(), str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                     "-U", "postgres", database],
                    check=True, capture_output=True,
                )  # fmt: skip
                url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
                label = f"postgres, {count} daemon{'s' if count > 1 else ''}"
                results[label] = asyncio.run(setup_run(label, url, count, work, args.levels, args.sessions))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.levels)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
