"""Benchmark of the notice mail: one notice posted to N destinations (default 100,000), delivered by
`ivr notices serve` worker processes to postfix's ``smtp-sink`` (a fast sink written in C, so the
sink does not measure itself).

    .venv/bin/python benchmarks/notice_mail.py                  # SQLite, 1 worker, 100,000 mails
    .venv/bin/python benchmarks/notice_mail.py --postgres --workers 2
    .venv/bin/python benchmarks/notice_mail.py --count 10000 --postgres --workers 1 --workers 2
    .venv/bin/python benchmarks/notice_mail.py --smoke          # 200 mails, SQLite and PostgreSQL

Prints figures, no pass/fail: the time to queue the notice (one INSERT … SELECT), mails/s from the
posting to the last mail recorded as sent, the time to the last mail, and each worker's peak RSS
(VmHWM) with its RSS at the first and the last sample (memory flat in N: compare --count 10000 and
100000). ``--postgres`` starts a private PostgreSQL cluster (Debian's binaries) unless ``--pg-url``
names a server whose ``postgres`` database may create scratch databases. The figures end as a
Markdown table (docs/notices.md "Benchmark"), with the commit and the machine's load.

The file is not named ``notices.py``: Python puts a script's folder first on ``sys.path``, and a
``benchmarks/notices.py`` would shadow the ``notices`` package for itself and every benchmark beside
it (tests/test_benchmarks.py checks that no benchmark's name shadows a module).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.db import make_engine, make_session_factory, upgrade_database  # noqa: E402
from notices import queue  # noqa: E402
from notices.bulk import make_destinations  # noqa: E402

PG_BIN = Path(os.environ.get("IVR_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PrivatePostgres:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ivr-bench-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.port = free_port()
        data = self.base / "data"
        run = as_postgres()
        subprocess.run(
            [*run, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run,
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-l",
                str(self.base / "log"),
                "-o",
                f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=on "
                "-c max_connections=200 -c shared_buffers=256MB",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def scratch_database(server_url: str) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database or "postgres", autocommit=True
    ) as connection:
        connection.execute(f"CREATE DATABASE {name}".encode())
    return url.set(database=name).render_as_string(hide_password=False)


def rss_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_started(procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 120.0) -> None:
    """Until every worker has logged ``notice_worker_started`` (imported, connected, leases released)."""
    deadline = time.monotonic() + timeout
    waiting = list(zip(procs, logs, strict=True))
    while waiting:
        if any(p.poll() is not None for p, _ in waiting):
            raise RuntimeError(f"a worker exited before it started; see {logs[0].parent}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not start in {timeout:.0f} s; see {logs[0].parent}")
        waiting = [(p, log) for p, log in waiting if b"notice_worker_started" not in log.read_bytes()]
        time.sleep(0.05)


def run_once(url: str, count: int, workers: int, connections: int, window: int, label: str) -> dict[str, Any]:
    upgrade_database(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    started = time.perf_counter()
    with sessions() as session, session.begin():
        make_destinations(session, count=count, now=datetime.now(UTC), domains=50)
    setup = time.perf_counter() - started

    sink_port = free_port()
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        [SMTP_SINK, *user, f"127.0.0.1:{sink_port}", "512"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logdir = Path(tempfile.mkdtemp(prefix="ivr-bench-notices-"))
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        IVR_DATABASE_URL=url,
        IVR_DATA_DIR=str(logdir),
        IVR_LOG_LEVEL="info",  # notice_worker_started, then a progress line every 10 s
        IVR_NOTICES__SMTP_HOST="127.0.0.1",
        IVR_NOTICES__SMTP_PORT=str(sink_port),
        IVR_NOTICES__SMTP_CONNECTIONS=str(connections),
        IVR_NOTICES__WINDOW=str(window),
        IVR_NOTICES__CLAIM_BATCH=str(min(window, 500)),
        IVR_NOTICES__PER_DOMAIN_WINDOW=str(window),
        IVR_NOTICES__POLL_SECONDS="0.1",
    )
    procs = []
    for n in range(workers):
        with open(logdir / f"w{n}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "stack.cli.main",
                        "notices",
                        "serve",
                        "--no-web",
                        "--no-bounces",
                        "--worker-id",
                        f"bench-{n}",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    wait_started(procs, [logdir / f"w{n}.log" for n in range(workers)])  # not measured
    first_rss = {p.pid: rss_kib(p.pid, "VmRSS") for p in procs}
    try:
        t0 = time.perf_counter()
        with sessions() as session, session.begin():
            notice = queue.post_notice(
                session,
                queue.NoticeDraft(
                    kind="outage",
                    status="occurring",
                    title="ベンチマーク",
                    area="全国",
                    body="ベンチマークの本文です。\n" * 10,
                    products=("hikari-denwa",),
                ),
                posted_by="bench",
                now=datetime.now(UTC),
                catalog={"hikari-denwa": "ひかり電話"},
            )
            notice_id, recipients = notice.id, notice.recipients
        queued = time.perf_counter() - t0
        sent = 0
        while sent < recipients:
            time.sleep(0.2)
            with sessions() as session:
                sent = queue.delivery_counts(session, notice_id=notice_id).get("sent", 0)
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; see {logdir}")
        last = time.perf_counter() - t0
        peaks = [rss_kib(p.pid, "VmHWM") for p in procs]
        final = [rss_kib(p.pid, "VmRSS") for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        sink.terminate()
        sink.wait(10)
        engine.dispose()
    figures = {
        "mails": recipients,
        "setup_s": setup,
        "queue_s": queued,
        "last_mail_s": last,
        "mails_per_s": recipients / last,
        "peak_rss_mib": [pk / 1024 for pk in peaks],
    }
    print(
        f"{label:<28} mails={recipients:>7}  queued in {queued:6.2f} s  last mail after {last:6.1f} s  "
        f"{recipients / last:7.0f} mails/s  peak RSS per worker "
        + ", ".join(
            f"{pk / 1024:.0f} MiB (start {first_rss[p.pid] / 1024:.0f}, end {fin / 1024:.0f})"
            for p, pk, fin in zip(procs, peaks, final, strict=True)
        )
    )
    shutil.rmtree(logdir, ignore_errors=True)
    return figures


def commit() -> str:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--short", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (head or "(not a git checkout)") + (" (modified)" if dirty else "")


def report(rows: list[tuple[str, dict[str, Any]]], head: str, loads: tuple[float, float]) -> None:
    print(
        f"\ncommit {head}, {os.cpu_count()} CPUs, load average {loads[0]:.2f} at the start, "
        f"{loads[1]:.2f} at the end"
    )
    print("\n| database, workers | mails | queued in | last mail after | mails/s | peak RSS per worker |")
    print("|---|---|---|---|---|---|")
    for label, f in rows:
        rss = ", ".join(f"{mib:.0f}" for mib in f["peak_rss_mib"])
        print(
            f"| {label} | {f['mails']:,} | {f['queue_s']:.2f} s | {f['last_mail_s']:.1f} s | "
            f"{f['mails_per_s']:,.0f} | {rss} MiB |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of a SQLite file")
    parser.add_argument("--pg-url", help="an existing server (default: a private cluster)")
    parser.add_argument("--workers", type=int, action="append", help="worker processes (repeat to compare)")
    parser.add_argument("--connections", type=int, default=16, help="SMTP sessions per worker")
    parser.add_argument("--window", type=int, default=1000, help="mails in flight per worker")
    parser.add_argument(
        "--smoke", action="store_true", help="a few mails: 200 on SQLite, then 200 on PostgreSQL, 1 worker"
    )
    args = parser.parse_args(argv)
    if not Path(SMTP_SINK).exists():
        print("smtp-sink not found (apt-get install postfix)", file=sys.stderr)
        return 2
    backends = ["postgres" if args.postgres else "sqlite"]
    if args.smoke:
        args.count, args.workers, backends = 200, [1], ["sqlite", "postgres"]
        print("smoke run: every part runs once, small; the figures are not measurements", flush=True)
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="ivr-bench-sqlite-"))
    rows: list[tuple[str, dict[str, Any]]] = []
    head, load_at_start = commit(), os.getloadavg()[0]  # the code measured, however long the run
    try:
        for backend in backends:
            if backend == "postgres" and not args.pg_url and server is None:
                server = PrivatePostgres()
            for workers in args.workers or [1]:
                if backend == "postgres":
                    url = scratch_database(args.pg_url or server.url)  # type: ignore[union-attr]
                    label = f"PostgreSQL, {workers}"
                else:
                    url = f"sqlite:///{tmp / f'bench-{workers}.sqlite3'}"
                    label = f"SQLite, {workers}"
                rows.append((label, run_once(url, args.count, workers, args.connections, args.window, label)))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, head, (load_at_start, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
