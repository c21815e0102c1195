"""What the voice menu uses: caller lookup, targets, storing the temporary password, call records."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.enums import AuthUnit, CredentialKind
from core.models import AuditEvent
from core.phone_line import (
    CallerLine,
    NotOnContract,
    finish_call_record,
    list_call_records,
    lookup_caller_line,
    needs_number_entry,
    number_on_contract,
    set_temporary_password,
    start_call_record,
    target_number_for,
    temporary_password_problem,
)
from core.secrets import SecretHasher
from tests.core.conftest import BUSINESS_CONTRACT, SEED_ADDITIONAL, SEED_CONTRACT, credential_of, unit_of

Sessions = sessionmaker[Session]


def test_lookup_caller_line(sample_db: Sessions) -> None:
    with sample_db() as session:
        main = lookup_caller_line(session, "+81300001111")
        extra = lookup_caller_line(session, SEED_ADDITIONAL)
        assert main is not None and main.is_contract_number and main.caller_number == SEED_CONTRACT
        assert extra is not None and not extra.is_contract_number
        assert extra.contract_number == SEED_CONTRACT and extra.contract_id == main.contract_id
        assert lookup_caller_line(session, "0399999999") is None
        assert lookup_caller_line(session, "anonymous") is None
        assert lookup_caller_line(session, "") is None


def test_number_on_contract(sample_db: Sessions) -> None:
    with sample_db() as session:
        line = lookup_caller_line(session, SEED_CONTRACT)
        assert line is not None
        assert number_on_contract(session, line.contract_id, SEED_ADDITIONAL)
        assert number_on_contract(session, line.contract_id, "03-0000-1111")
        assert not number_on_contract(session, line.contract_id, BUSINESS_CONTRACT)  # another contract
        assert not number_on_contract(session, line.contract_id, "0300003333")
        assert not number_on_contract(session, line.contract_id, "12")


@pytest.mark.parametrize(
    ("digits", "problem"),
    [
        ("12345678", None),
        ("00000000", None),
        ("1234567", "too_short"),
        ("123456789", "too_long"),
        ("", "empty"),
        ("1234*678", "not_digits"),
        ("１２３４５６７８", "not_digits"),
    ],
)
def test_temporary_password_is_exactly_8_digits(digits: str, problem: str | None) -> None:
    assert temporary_password_problem(digits) == problem


def test_target_number_per_unit() -> None:
    from_contract = CallerLine(1, SEED_CONTRACT, SEED_CONTRACT, True)
    from_additional = CallerLine(1, SEED_ADDITIONAL, SEED_CONTRACT, False)
    assert target_number_for(AuthUnit.LINE, from_additional, None) == SEED_CONTRACT
    assert target_number_for(AuthUnit.NUMBER, from_contract, SEED_ADDITIONAL) == SEED_ADDITIONAL
    assert target_number_for(AuthUnit.ADMIN_USER, from_contract, SEED_ADDITIONAL) == SEED_ADDITIONAL
    assert target_number_for(AuthUnit.ADMIN_USER, from_additional, None) == SEED_ADDITIONAL
    assert needs_number_entry(AuthUnit.ADMIN_USER, from_contract)
    assert not needs_number_entry(AuthUnit.ADMIN_USER, from_additional)
    assert needs_number_entry(AuthUnit.NUMBER, from_additional)
    assert not needs_number_entry(AuthUnit.LINE, from_contract)
    with pytest.raises(ValueError):
        target_number_for(AuthUnit.NUMBER, from_contract, None)


def test_set_temporary_password_replaces_and_sets_the_unit(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    first = fast_hasher.hash("24681357")  # hashed before the transaction, as the phone line does
    with sample_db() as session, session.begin():
        line = lookup_caller_line(session, SEED_CONTRACT)
        assert line is not None
        set_temporary_password(
            session,
            contract_id=line.contract_id,
            unit=AuthUnit.NUMBER,
            target_number=SEED_ADDITIONAL,
            password_hash=first,
            now=core_now,
        )
    with sample_db() as session, session.begin():
        credential = credential_of(session, SEED_ADDITIONAL)
        assert credential is not None
        assert credential.kind is CredentialKind.TEMPORARY
        assert credential.expires_at == core_now + timedelta(hours=24)
        credential.failures = 3
        credential.invalidated_at = core_now
        assert unit_of(session, SEED_CONTRACT) is AuthUnit.NUMBER
    later = core_now + timedelta(hours=1)
    second = fast_hasher.hash("97531864")
    with sample_db() as session, session.begin():
        set_temporary_password(
            session,
            contract_id=line.contract_id,
            unit=AuthUnit.ADMIN_USER,
            target_number=SEED_ADDITIONAL,
            password_hash=second,
            now=later,
        )
    with sample_db() as session:
        credential = credential_of(session, SEED_ADDITIONAL)
        assert credential is not None
        assert credential.failures == 0 and credential.invalidated_at is None
        assert credential.set_at == later
        assert unit_of(session, SEED_CONTRACT) is AuthUnit.ADMIN_USER
        events = [(e.event, e.channel) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert ("temporary_set", "phone") in events and ("unit_changed", "phone") in events
    assert fast_hasher.verify(credential.secret_hash, "97531864")  # checked with the session closed


def test_set_temporary_password_refuses_other_numbers(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    digest = fast_hasher.hash("24681357")
    with sample_db() as session:
        line = lookup_caller_line(session, SEED_CONTRACT)
        assert line is not None
        with pytest.raises(NotOnContract):
            set_temporary_password(
                session,
                contract_id=line.contract_id,
                unit=AuthUnit.NUMBER,
                target_number=BUSINESS_CONTRACT,
                password_hash=digest,
                now=core_now,
            )
        with pytest.raises(NotOnContract):
            set_temporary_password(
                session,
                contract_id=line.contract_id,
                unit=AuthUnit.LINE,
                target_number=SEED_ADDITIONAL,
                password_hash=digest,
                now=core_now,
            )
        with pytest.raises(ValueError, match="argon2 hash") as info:
            set_temporary_password(
                session,
                contract_id=line.contract_id,
                unit=AuthUnit.NUMBER,
                target_number=SEED_ADDITIONAL,
                password_hash="24681357",
                now=core_now,
            )
        assert "24681357" not in str(info.value)


def test_call_records(sample_db: Sessions, core_now: datetime) -> None:
    with sample_db() as session, session.begin():
        start_call_record(
            session, call_id="c-1", caller=SEED_CONTRACT, service_number="0363044747", started_at=core_now
        )
        start_call_record(
            session, call_id="c-1", caller=SEED_CONTRACT, service_number="0363044747", started_at=core_now
        )
        start_call_record(
            session,
            call_id="c-2",
            caller=None,
            service_number="0363044747",
            started_at=core_now + timedelta(minutes=1),
        )
    with sample_db() as session:
        in_progress = list_call_records(session)
        assert [r.call_id for r in in_progress] == ["c-2", "c-1"]
        assert all(r.outcome is None and r.duration_seconds is None for r in in_progress)
    with sample_db() as session, session.begin():
        finish_call_record(
            session,
            call_id="c-1",
            ended_at=core_now + timedelta(seconds=42),
            outcome="completed",
            unit="number",
            target_number=SEED_ADDITIONAL,
            last_step="completed",
            wrong_entries=1,
        )
        finish_call_record(
            session,
            call_id="c-2",
            ended_at=core_now + timedelta(minutes=1, seconds=5),
            outcome="caller_id_withheld",
            unit=None,
            target_number=None,
            last_step="caller_check",
            wrong_entries=0,
        )
    with sample_db() as session:
        done = list_call_records(session, number=SEED_ADDITIONAL)
        assert [r.call_id for r in done] == ["c-1"]
        assert done[0].duration_seconds == 42 and done[0].as_dict()["wrong_entries"] == 1
        assert [r.call_id for r in list_call_records(session, outcome="caller_id_withheld")] == ["c-2"]
        assert [r.call_id for r in list_call_records(session, since=core_now + timedelta(seconds=30))] == [
            "c-2"
        ]
        assert len(list_call_records(session, limit=1)) == 1


def test_guessable_temporary_passwords() -> None:
    from core.phone_line import guessable_temporary_password as guessable

    assert guessable("12345678") == "sequential_run"
    assert guessable("87654321") == "sequential_run"
    assert guessable("90123740") == "sequential_run"  # 0123 inside
    assert guessable("00000000") == "repeated_run"
    assert guessable("11112222") == "repeated_run"
    assert guessable("11223344") is None  # pairs, no run of 4
    assert guessable("78901357") is None  # 7890: no wrap-around
    assert guessable("40719352") is None
    assert guessable("55501005", ["0355501005"]) == "own_number"
    assert guessable("55501005", ["+81355501005"]) == "own_number"  # the caller ID as E.164
    assert guessable("55501005", ["0355501000"]) is None
    assert guessable("55501005") is None
