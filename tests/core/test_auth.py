"""Login, scope, password change and unit change, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.auth import (
    CurrentPasswordWrong,
    LoginResult,
    PasswordRuleError,
    UnitChangeError,
    UnknownIdentity,
    authenticate,
    change_password_in_steps,
    change_unit_in_steps,
    credential_state_for,
    log_in,
    login_scope,
    unit_change_password_numbers,
)
from core.enums import AuthUnit, CredentialKind, CredentialState
from core.models import AuditEvent
from core.policy import CredentialPolicy
from core.secrets import SecretHasher, strict_hash_guard
from tests.core.conftest import (
    SEED_ADDITIONAL,
    SEED_CONTRACT,
    SetTemporary,
    contract_id_of,
    credential_of,
    unit_of,
)
from tests.fixtures.db import hashing_in_write_transaction_allowed
from tests.support import CountingHasher

Sessions = sessionmaker[Session]


_LOGIN_MODE = {"mode": "one_transaction"}


@pytest.fixture(autouse=True, params=["one_transaction", "in_steps"])
def login_mode(request: pytest.FixtureRequest) -> str:
    """Every login test runs through ``authenticate`` (one transaction) and ``log_in`` (steps, no
    lock across the hash: the strict hash guard raises if it hashed inside a write transaction)."""
    _LOGIN_MODE["mode"] = request.param
    return str(request.param)


def login(
    sessions: Sessions,
    hasher: SecretHasher,
    number: str,
    password: str,
    now: datetime,
    policy: CredentialPolicy | None = None,
) -> LoginResult:
    attempt: dict[str, Any] = {
        "number": number,
        "password": password,
        "now": now,
        "policy": policy or CredentialPolicy(),
        "hasher": hasher,
    }
    if _LOGIN_MODE["mode"] == "in_steps":
        with strict_hash_guard():
            return log_in(sessions, **attempt)
    with hashing_in_write_transaction_allowed(), sessions() as session, session.begin():
        return authenticate(session, **attempt)


def set_permanent(
    sessions: Sessions, hasher: SecretHasher, number: str, password: str, now: datetime
) -> None:
    change_password_in_steps(sessions, number=number, new_password=password, now=now, hasher=hasher)


def test_temporary_login_forces_a_change(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_CONTRACT, "24681357", unit=AuthUnit.LINE, at=core_now)
    result = login(sample_db, fast_hasher, SEED_CONTRACT, "24681357", core_now)
    assert result.status == "ok"
    assert result.must_change_password and result.change_reason == "temporary"
    assert result.role == "line" and result.unit is AuthUnit.LINE
    assert result.identity_number == SEED_CONTRACT


@pytest.mark.parametrize(
    ("elapsed", "status"),
    [(timedelta(hours=24) - timedelta(seconds=1), "ok"), (timedelta(hours=24), "expired")],
)
def test_temporary_expires_at_exactly_24_hours(
    sample_db: Sessions,
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
    elapsed: timedelta,
    status: str,
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "24681357", core_now + elapsed).status == status


def test_temporary_third_wrong_attempt_invalidates(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    first = login(sample_db, fast_hasher, SEED_ADDITIONAL, "11111112", core_now)
    second = login(sample_db, fast_hasher, SEED_ADDITIONAL, "11111113", core_now)
    third = login(sample_db, fast_hasher, SEED_ADDITIONAL, "11111114", core_now)
    assert (first.status, first.remaining_attempts) == ("wrong", 2)
    assert (second.status, second.remaining_attempts) == ("wrong", 1)
    assert (third.status, third.remaining_attempts) == ("locked", 0)
    # now even the right password is refused: recover by phone
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "24681357", core_now).status == "locked"
    set_temporary(SEED_ADDITIONAL, "97531864", at=core_now + timedelta(minutes=5))
    assert (
        login(sample_db, fast_hasher, SEED_ADDITIONAL, "97531864", core_now + timedelta(minutes=6)).status
        == "ok"
    )


def test_two_wrong_then_right_resets_the_count(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    login(sample_db, fast_hasher, SEED_ADDITIONAL, "00000001", core_now)
    login(sample_db, fast_hasher, SEED_ADDITIONAL, "00000002", core_now)
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "24681357", core_now).status == "ok"
    with sample_db() as session:
        credential = credential_of(session, SEED_ADDITIONAL)
        assert credential is not None and credential.failures == 0


def test_permanent_tenth_wrong_attempt_invalidates_and_success_resets(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    set_permanent(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now)
    for i in range(9):
        assert login(sample_db, fast_hasher, SEED_ADDITIONAL, f"wrong{i}x1", core_now).status == "wrong"
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now).status == "ok"  # resets to 0
    results = [login(sample_db, fast_hasher, SEED_ADDITIONAL, f"bad{i}y2", core_now) for i in range(10)]
    assert [r.status for r in results] == ["wrong"] * 9 + ["locked"]
    assert results[8].remaining_attempts == 1
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now).status == "locked"
    with sample_db() as session:
        assert credential_state_for(session, SEED_ADDITIONAL, now=core_now) is CredentialState.INVALIDATED
        events = [
            e.event for e in session.scalars(select(AuditEvent).where(AuditEvent.number == SEED_ADDITIONAL))
        ]
        assert "locked" in events


def test_unknown_number_is_wrong_after_a_dummy_check(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    counting = CountingHasher(fast_hasher)
    for number in ["0399999999", "not-a-number", SEED_ADDITIONAL]:  # the last one has no credential yet
        result = login(sample_db, counting, number, "k7m2p9q4z", core_now)
        assert result.status == "wrong"
        assert result.role is None
    assert counting.dummies == 3


def test_line_unit_logs_in_with_the_contract_number_only(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_CONTRACT, "24681357", unit=AuthUnit.LINE, at=core_now)
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "24681357", core_now).status == "wrong"
    assert login(sample_db, fast_hasher, "+81300001111", "24681357", core_now).status == "ok"


def test_expired_permanent_password_forces_a_change(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    set_permanent(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now)
    later = core_now + timedelta(days=90)
    assert not login(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", later).must_change_password
    aged = login(
        sample_db,
        fast_hasher,
        SEED_ADDITIONAL,
        "k7m2p9q4z",
        later,
        CredentialPolicy(permanent_max_age_days=90),
    )
    assert aged.status == "ok" and aged.must_change_password and aged.change_reason == "expired"


@pytest.mark.parametrize(
    ("unit", "login_number", "expected"),
    [
        (AuthUnit.LINE, SEED_CONTRACT, [SEED_CONTRACT, SEED_ADDITIONAL]),
        (AuthUnit.NUMBER, SEED_CONTRACT, [SEED_CONTRACT]),
        (AuthUnit.NUMBER, SEED_ADDITIONAL, [SEED_ADDITIONAL]),
        (AuthUnit.ADMIN_USER, SEED_CONTRACT, [SEED_CONTRACT, SEED_ADDITIONAL]),
        (AuthUnit.ADMIN_USER, SEED_ADDITIONAL, [SEED_ADDITIONAL]),
    ],
)
def test_seed_scope_example_per_unit(
    sample_db: Sessions,
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
    unit: AuthUnit,
    login_number: str,
    expected: list[str],
) -> None:
    """Seed 003 P3: 03-0000-1111 (着信お知らせメール) and 03-0000-2222 (着信 + FAX お知らせメール)."""
    set_temporary(login_number, "24681357", unit=unit, at=core_now)
    result = login(sample_db, fast_hasher, login_number, "24681357", core_now)
    assert result.status == "ok" and result.unit is unit and result.contract_id is not None
    with sample_db() as session:
        scope = login_scope(session, contract_id=result.contract_id, unit=unit, login_number=login_number)
    assert scope == expected
    assert (
        result.role
        == {
            AuthUnit.LINE: "line",
            AuthUnit.NUMBER: "number",
            AuthUnit.ADMIN_USER: "admin" if login_number == SEED_CONTRACT else "user",
        }[unit]
    )


def test_change_password_consumes_the_temporary_and_checks_rules(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    with pytest.raises(PasswordRuleError) as info:
        change_password_in_steps(
            sample_db, number=SEED_ADDITIONAL, new_password="a0300001111", now=core_now, hasher=fast_hasher
        )
    assert "contains_phone_number" in info.value.reasons
    assert "a0300001111" not in str(info.value)
    set_permanent(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now)
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "24681357", core_now).status == "wrong"  # consumed
    result = login(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now)
    assert result.status == "ok" and not result.must_change_password
    assert result.credential_kind is CredentialKind.PERMANENT
    with pytest.raises(PasswordRuleError) as same:
        change_password_in_steps(
            sample_db, number=SEED_ADDITIONAL, new_password="k7m2p9q4z", now=core_now, hasher=fast_hasher
        )
    assert same.value.reasons == ["same_as_current"]


def test_change_password_with_current_password_counts_failures(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    set_permanent(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now)
    with pytest.raises(CurrentPasswordWrong) as info:
        change_password_in_steps(
            sample_db,
            number=SEED_ADDITIONAL,
            new_password="r5t8w2e6q",
            current_password="nope1234",
            now=core_now,
            hasher=fast_hasher,
        )
    assert info.value.status == "wrong"
    with sample_db() as session:
        credential = credential_of(session, SEED_ADDITIONAL)
        assert credential is not None and credential.failures == 1
    change_password_in_steps(
        sample_db,
        number=SEED_ADDITIONAL,
        new_password="r5t8w2e6q",
        current_password="k7m2p9q4z",
        now=core_now,
        hasher=fast_hasher,
    )
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "r5t8w2e6q", core_now).status == "ok"


def test_change_password_for_an_unknown_identity(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    with pytest.raises(UnknownIdentity):
        change_password_in_steps(
            sample_db, number="0399999999", new_password="k7m2p9q4z", now=core_now, hasher=fast_hasher
        )


def test_unit_change_line_to_number_copies_the_line_password(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_CONTRACT, "24681357", unit=AuthUnit.LINE, at=core_now)
    set_permanent(sample_db, fast_hasher, SEED_CONTRACT, "k7m2p9q4z", core_now)
    with sample_db() as session:
        contract_id = contract_id_of(session, SEED_CONTRACT)
        assert unit_change_password_numbers(
            session,
            contract_id=contract_id,
            new_unit=AuthUnit.NUMBER,
            login_number=SEED_CONTRACT,
            now=core_now,
        ) == [SEED_CONTRACT]
    with pytest.raises(UnitChangeError) as wrong:
        change_unit_in_steps(
            sample_db,
            contract_id=contract_id,
            new_unit=AuthUnit.NUMBER,
            login_number=SEED_CONTRACT,
            passwords={SEED_CONTRACT: "nope1234"},
            now=core_now,
            hasher=fast_hasher,
        )
    assert wrong.value.problems == {SEED_CONTRACT: "wrong_password"}
    change_unit_in_steps(
        sample_db,
        contract_id=contract_id,
        new_unit=AuthUnit.NUMBER,
        login_number=SEED_CONTRACT,
        passwords={SEED_CONTRACT: "k7m2p9q4z"},
        now=core_now,
        hasher=fast_hasher,
    )
    with sample_db() as session:
        assert unit_of(session, SEED_CONTRACT) is AuthUnit.NUMBER
    for number in (SEED_CONTRACT, SEED_ADDITIONAL):
        assert login(sample_db, fast_hasher, number, "k7m2p9q4z", core_now).status == "ok"


def test_unit_change_number_to_line_needs_every_password_and_keeps_the_login_one(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_CONTRACT, "24681357", unit=AuthUnit.NUMBER, at=core_now)
    set_temporary(SEED_ADDITIONAL, "13572468", unit=AuthUnit.NUMBER, at=core_now)
    set_permanent(sample_db, fast_hasher, SEED_CONTRACT, "k7m2p9q4z", core_now)
    set_permanent(sample_db, fast_hasher, SEED_ADDITIONAL, "r5t8w2e6q", core_now)
    with sample_db() as session:
        contract_id = contract_id_of(session, SEED_CONTRACT)
    with pytest.raises(UnitChangeError) as missing:
        change_unit_in_steps(
            sample_db,
            contract_id=contract_id,
            new_unit=AuthUnit.LINE,
            login_number=SEED_ADDITIONAL,
            passwords={SEED_ADDITIONAL: "r5t8w2e6q"},
            now=core_now,
            hasher=fast_hasher,
        )
    assert missing.value.problems == {SEED_CONTRACT: "password_required"}
    change_unit_in_steps(
        sample_db,
        contract_id=contract_id,
        new_unit=AuthUnit.LINE,
        login_number=SEED_ADDITIONAL,
        passwords={SEED_CONTRACT: "k7m2p9q4z", SEED_ADDITIONAL: "r5t8w2e6q"},
        now=core_now,
        hasher=fast_hasher,
    )
    # line unit: log in with the contract number and the password the login used
    assert login(sample_db, fast_hasher, SEED_CONTRACT, "r5t8w2e6q", core_now).status == "ok"
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "r5t8w2e6q", core_now).status == "wrong"


def test_admin_user_to_number_keeps_each_password_and_users_may_not_change_it(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_CONTRACT, "24681357", unit=AuthUnit.ADMIN_USER, at=core_now)
    set_temporary(SEED_ADDITIONAL, "13572468", unit=AuthUnit.ADMIN_USER, at=core_now)
    with sample_db() as session:
        contract_id = contract_id_of(session, SEED_CONTRACT)
    with pytest.raises(UnitChangeError) as user:
        change_unit_in_steps(
            sample_db,
            contract_id=contract_id,
            new_unit=AuthUnit.NUMBER,
            login_number=SEED_ADDITIONAL,
            passwords={SEED_ADDITIONAL: "13572468"},
            now=core_now,
            hasher=fast_hasher,
        )
    assert user.value.problems == {"*": "not_allowed"}
    with pytest.raises(UnitChangeError) as same:
        change_unit_in_steps(
            sample_db,
            contract_id=contract_id,
            new_unit=AuthUnit.ADMIN_USER,
            login_number=SEED_CONTRACT,
            passwords={},
            now=core_now,
            hasher=fast_hasher,
        )
    assert same.value.problems == {"*": "same_unit"}
    change_unit_in_steps(
        sample_db,
        contract_id=contract_id,
        new_unit=AuthUnit.NUMBER,
        login_number=SEED_CONTRACT,
        passwords={SEED_CONTRACT: "24681357"},
        now=core_now,
        hasher=fast_hasher,
    )
    assert login(sample_db, fast_hasher, SEED_CONTRACT, "24681357", core_now).role == "number"
    assert login(sample_db, fast_hasher, SEED_ADDITIONAL, "13572468", core_now).role == "number"


def test_no_secret_in_audit_records(
    sample_db: Sessions, fast_hasher: SecretHasher, set_temporary: SetTemporary, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", at=core_now)
    login(sample_db, fast_hasher, SEED_ADDITIONAL, "99887766", core_now)
    login(sample_db, fast_hasher, SEED_ADDITIONAL, "24681357", core_now)
    set_permanent(sample_db, fast_hasher, SEED_ADDITIONAL, "k7m2p9q4z", core_now)
    with sample_db() as session:
        events = list(session.scalars(select(AuditEvent)))
    assert {e.event for e in events} >= {
        "temporary_set",
        "login_failure",
        "login_success",
        "password_changed",
    }
    text = " ".join(f"{e.event} {e.outcome} {e.detail} {e.number} {e!r}" for e in events)
    for secret in ("24681357", "99887766", "k7m2p9q4z", "$argon2"):
        assert secret not in text
