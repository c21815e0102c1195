"""Benchmark of the credential core: ``python -m core.bench [--url URL] [--logins N] [--threads T]``.

Prints figures (no pass/fail): argon2id hash and verify times with the production parameters, and
login throughput through :func:`core.auth.authenticate` on a scratch database (a temporary SQLite
file unless ``--url`` names an empty database to use).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from core.auth import authenticate
from core.contracts import import_contracts, sample_csv_text
from core.db import make_engine, make_session_factory, upgrade_database
from core.enums import AuthUnit
from core.phone_line import lookup_caller_line, set_temporary_password
from core.secrets import PRODUCTION_PARAMETERS, SecretHasher


def _timings(action: object, rounds: int) -> list[float]:
    assert callable(action)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__)
    parser.add_argument("--url", help="an empty database to use (default: a temporary SQLite file)")
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    hasher = SecretHasher(PRODUCTION_PARAMETERS)
    p = PRODUCTION_PARAMETERS
    print(f"argon2id m={p.memory_cost_kib} KiB t={p.time_cost} p={p.parallelism}")
    stored = hasher.hash("24681357")
    hashing = _timings(lambda: hasher.hash("24681357"), 20)
    verifying = _timings(lambda: hasher.verify(stored, "24681357"), 20)
    print(f"hash   median {statistics.median(hashing):7.1f} ms  max {max(hashing):7.1f} ms")
    print(f"verify median {statistics.median(verifying):7.1f} ms  max {max(verifying):7.1f} ms")

    with tempfile.TemporaryDirectory() as scratch:
        url = args.url or f"sqlite:///{Path(scratch) / 'bench.sqlite3'}"
        upgrade_database(url)
        engine = make_engine(url, pool_size=args.threads, max_overflow=args.threads)
        sessions = make_session_factory(engine)
        now = datetime.now(UTC)
        with sessions() as session, session.begin():
            import_contracts(session, sample_csv_text(), now=now)
            numbers = [f"03555010{i:02d}" for i in range(40)]
            line = lookup_caller_line(session, numbers[0])
            assert line is not None
            for number in numbers:
                set_temporary_password(
                    session, contract_id=line.contract_id, unit=AuthUnit.ADMIN_USER, target_number=number,
                    password_hash=stored, now=now,
                )  # fmt: skip

        def login(i: int) -> float:
            start = time.perf_counter()
            with sessions() as session, session.begin():
                result = authenticate(
                    session, number=numbers[i % 40], password="24681357", now=now, hasher=hasher
                )
            assert result.status == "ok"
            return (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            latencies = sorted(pool.map(login, range(args.logins)))
        elapsed = time.perf_counter() - start
        engine.dispose()
    backend = url.split(":", 1)[0]
    print(
        f"logins on {backend}: {args.logins} with {args.threads} threads in {elapsed:.2f} s = "
        f"{args.logins / elapsed:.1f}/s; latency median {statistics.median(latencies):.1f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
