"""50 concurrent wrong attempts never run more checks than the limit (SQLite and PostgreSQL), in
one transaction (``authenticate``) and in steps with the check outside any transaction (``log_in``)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.auth import authenticate, change_password_in_steps, log_in
from core.policy import CredentialPolicy
from core.secrets import SecretHasher
from tests.core.conftest import SEED_ADDITIONAL, SetTemporary, credential_of
from tests.fixtures.db import hashing_in_write_transaction_allowed

ATTEMPTS = 50


class CountingHasher(SecretHasher):
    """Counts real password checks (not the dummy check of unknown numbers)."""

    def __init__(self, base: SecretHasher) -> None:
        super().__init__(base.parameters)
        self._count_lock = threading.Lock()
        self.checks = 0

    def verify(self, stored_hash: str, plain: str) -> bool:
        with self._count_lock:
            self.checks += 1
        return super().verify(stored_hash, plain)


@pytest.fixture(params=["one_transaction", "in_steps"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _storm(sessions: sessionmaker[Session], hasher: SecretHasher, now: datetime, mode: str) -> list[str]:
    barrier = threading.Barrier(ATTEMPTS)

    def attempt(i: int) -> str:
        barrier.wait()
        wrong: dict[str, Any] = {
            "number": SEED_ADDITIONAL,
            "password": f"wrong{i:03d}x",
            "now": now,
            "policy": CredentialPolicy(),
            "hasher": hasher,
        }
        if mode == "in_steps":
            return log_in(sessions, **wrong).status
        with sessions() as session, session.begin():  # hashes inside: allowed around the storm
            return authenticate(session, **wrong).status

    allowed = hashing_in_write_transaction_allowed() if mode == "one_transaction" else nullcontext()
    with allowed, ThreadPoolExecutor(max_workers=ATTEMPTS) as pool:
        return list(pool.map(attempt, range(ATTEMPTS)))


@pytest.mark.timeout(120)
def test_50_concurrent_wrong_attempts_on_a_temporary_password(
    sample_db: sessionmaker[Session],
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
    mode: str,
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    counting = CountingHasher(fast_hasher)
    statuses = _storm(sample_db, counting, core_now, mode)
    assert counting.checks <= 3
    assert counting.checks == 3  # and the three allowed tries were really used
    assert statuses.count("wrong") == 2
    assert statuses.count("locked") == ATTEMPTS - 2
    with sample_db() as session:
        credential = credential_of(session, SEED_ADDITIONAL)
        assert credential is not None
        assert credential.failures == 3 and credential.invalidated_at is not None


@pytest.mark.timeout(120)
def test_50_concurrent_wrong_attempts_on_a_permanent_password(
    sample_db: sessionmaker[Session],
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
    mode: str,
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    change_password_in_steps(
        sample_db, number=SEED_ADDITIONAL, new_password="k7m2p9q4z", now=core_now, hasher=fast_hasher
    )
    counting = CountingHasher(fast_hasher)
    statuses = _storm(sample_db, counting, core_now, mode)
    assert counting.checks == 10
    assert statuses.count("wrong") == 9
    assert statuses.count("locked") == ATTEMPTS - 9
    with sample_db() as session:
        credential = credential_of(session, SEED_ADDITIONAL)
        assert credential is not None and credential.failures == 10 and credential.invalidated_at is not None
