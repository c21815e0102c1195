"""50 concurrent wrong attempts never run more checks than the limit (SQLite and PostgreSQL), in
one transaction (``authenticate``) and in steps with the check outside any transaction (``log_in``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.auth import authenticate, change_password_in_steps, log_in
from core.models import OtpLoginAttempt
from core.otp.codes import issue_code, prepare_code, verify_code_in_steps
from core.otp.registration import complete_registration_in_steps, prepare_registration, start_registration
from core.policy import CredentialPolicy
from core.secrets import SecretHasher
from tests.core.conftest import SEED_ADDITIONAL, SetTemporary, credential_of
from tests.fixtures.db import hashing_in_write_transaction_allowed
from tests.support import CountingHasher

ATTEMPTS = 50


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


def _registered_with_a_code(sessions: sessionmaker[Session], hasher: SecretHasher, now: datetime) -> str:
    registration = prepare_registration(
        mail_address="taro@example.jp",
        confirmation_id="abc12345",
        confirmation_password="baiyo4qx",
        hasher=hasher,
    )
    with sessions() as session, session.begin():
        token = start_registration(session, number=SEED_ADDITIONAL, registration=registration, now=now)
    assert complete_registration_in_steps(sessions, token=token, now=now, hasher=hasher).status == "ok"
    code = prepare_code(hasher)
    with sessions() as session, session.begin():
        issue_code(session, number=SEED_ADDITIONAL, login_attempt_id="attempt-1", code=code, now=now)
    return code.code


def _together(count: int, task: Callable[[int], str]) -> list[str]:
    barrier = threading.Barrier(count)

    def run(i: int) -> str:
        barrier.wait()
        return task(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.mark.timeout(120)
def test_50_concurrent_wrong_codes_check_three_and_void_the_attempt(
    sample_db: sessionmaker[Session],
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
) -> None:
    """The try is reserved (UPDATE … RETURNING) and committed before the check, which runs with no
    transaction open: still exactly ``otp_code_max_failures`` (3) checks, however many race."""
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    code = _registered_with_a_code(sample_db, fast_hasher, core_now)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    counting = CountingHasher(fast_hasher)
    statuses = _together(
        ATTEMPTS,
        lambda _i: verify_code_in_steps(
            sample_db,
            number=SEED_ADDITIONAL,
            login_attempt_id="attempt-1",
            code=wrong,
            now=core_now,
            hasher=counting,
        ),
    )
    assert counting.checks == 3
    assert statuses.count("wrong") == 2 and statuses.count("too_many") == ATTEMPTS - 2
    with sample_db() as session:
        attempt = session.get(OtpLoginAttempt, "attempt-1")
        assert attempt is not None and attempt.failures == 3 and attempt.voided_at is not None
    assert (
        verify_code_in_steps(
            sample_db,
            number=SEED_ADDITIONAL,
            login_attempt_id="attempt-1",
            code=code,
            now=core_now,
            hasher=counting,
        )
        == "too_many"
    )


@pytest.mark.timeout(120)
def test_50_concurrent_right_codes_accept_one(
    sample_db: sessionmaker[Session],
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    code = _registered_with_a_code(sample_db, fast_hasher, core_now)
    statuses = _together(
        ATTEMPTS,
        lambda _i: verify_code_in_steps(
            sample_db,
            number=SEED_ADDITIONAL,
            login_attempt_id="attempt-1",
            code=code,
            now=core_now,
            hasher=fast_hasher,
        ),
    )
    assert statuses.count("ok") == 1
    assert set(statuses) <= {"ok", "used", "too_many"}  # the others found it used or no try left
    with sample_db() as session:
        attempt = session.get(OtpLoginAttempt, "attempt-1")
        assert attempt is not None and attempt.completed_at is not None and attempt.voided_at is None


@pytest.mark.timeout(120)
def test_50_concurrent_wrong_confirmations_check_five_and_lock_the_settings(
    sample_db: sessionmaker[Session],
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
) -> None:
    """The web's count (5 wrong confirmations lock the OTP settings) is taken and committed before
    the check, which runs with no transaction open: exactly 5 checks of both secrets."""
    from web_stub.core_backend import CoreBackend

    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    _registered_with_a_code(sample_db, fast_hasher, core_now)
    counting = CountingHasher(fast_hasher)
    backend = CoreBackend(sample_db, CredentialPolicy(), hasher=counting)
    statuses = _together(
        ATTEMPTS,
        lambda i: backend.otp_check_confirmation(
            number=SEED_ADDITIONAL,
            confirmation_id="abc12345",
            confirmation_password=f"wr0ng{i:03d}",
            now=core_now,
        ),
    )
    assert counting.checks == 5 * 2  # the ID and the password of each of the 5 counted tries
    assert statuses.count("wrong") == 4 and statuses.count("locked") == ATTEMPTS - 4
    assert backend.otp_settings_locked(number=SEED_ADDITIONAL)
    right = backend.otp_check_confirmation(
        number=SEED_ADDITIONAL, confirmation_id="abc12345", confirmation_password="baiyo4qx", now=core_now
    )
    assert right == "locked" and counting.checks == 10
