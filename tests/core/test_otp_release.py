"""The admin's bulk release of one-time-password registrations and the password re-entry that
confirms it (core.otp.registration.release_registrations, core.auth.check_password_in_steps)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.auth import check_password_in_steps
from core.enums import AuditEventType, AuthUnit
from core.models import AuditEvent
from core.otp.choice import otp_state
from core.otp.registration import (
    complete_registration_in_steps,
    prepare_registration,
    release_registrations,
    start_registration,
)
from core.secrets import SecretHasher
from tests.core.conftest import SEED_ADDITIONAL, SEED_CONTRACT, SetTemporary, credential_of


def _register(sessions: sessionmaker[Session], hasher: SecretHasher, number: str, now: datetime) -> str:
    registration = prepare_registration(
        mail_address="taro@example.jp",
        confirmation_id="abc12345",
        confirmation_password="baiyo4qx",
        hasher=hasher,
    )
    with sessions() as session, session.begin():
        return start_registration(session, number=number, registration=registration, now=now)


def test_release_clears_registered_and_pending_and_leaves_the_others(
    sample_db: sessionmaker[Session], fast_hasher: SecretHasher, core_now: datetime
) -> None:
    token = _register(sample_db, fast_hasher, SEED_CONTRACT, core_now)
    assert (
        complete_registration_in_steps(sample_db, token=token, now=core_now, hasher=fast_hasher).status
        == "ok"
    )
    pending = _register(sample_db, fast_hasher, SEED_ADDITIONAL, core_now)
    with sample_db() as session, session.begin():
        assert otp_state(session, number=SEED_CONTRACT).status == "on"
        released = release_registrations(
            session, numbers=[SEED_CONTRACT, SEED_ADDITIONAL, "0355501001"], now=core_now
        )
    assert released == [SEED_CONTRACT, SEED_ADDITIONAL]  # 0355501001 had nothing to release
    with sample_db() as session:
        for number in (SEED_CONTRACT, SEED_ADDITIONAL):
            state = otp_state(session, number=number, now=core_now)
            assert state.status == "unchosen" and state.mail_address is None
            assert not state.has_confirmation and state.pending_mail_address is None
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event == AuditEventType.OTP_RELEASED)
        ).all()
        assert sorted(e.number or "" for e in events) == [SEED_CONTRACT, SEED_ADDITIONAL]
    # The pending link no longer registers anything.
    later = core_now + timedelta(minutes=1)
    assert (
        complete_registration_in_steps(sample_db, token=pending, now=later, hasher=fast_hasher).status != "ok"
    )


def test_password_reentry_counts_like_a_login(
    sample_db: sessionmaker[Session],
    fast_hasher: SecretHasher,
    set_temporary: SetTemporary,
    core_now: datetime,
) -> None:
    set_temporary(SEED_CONTRACT, "24681357", unit=AuthUnit.LINE, at=core_now)
    assert (
        check_password_in_steps(
            sample_db, number=SEED_CONTRACT, password="11112222", now=core_now, hasher=fast_hasher
        )
        == "wrong"
    )
    assert (
        check_password_in_steps(
            sample_db, number=SEED_CONTRACT, password="24681357", now=core_now, hasher=fast_hasher
        )
        == "ok"
    )
    with sample_db() as session:
        credential = credential_of(session, SEED_CONTRACT)
        assert credential is not None and credential.failures == 0  # a right one resets the count
    statuses = [
        check_password_in_steps(
            sample_db, number=SEED_CONTRACT, password="11112222", now=core_now, hasher=fast_hasher
        )
        for _ in range(3)
    ]
    assert statuses == ["wrong", "wrong", "locked"]  # a temporary password: 3 tries
    assert (
        check_password_in_steps(
            sample_db, number=SEED_CONTRACT, password="24681357", now=core_now, hasher=fast_hasher
        )
        == "locked"
    )
    with sample_db() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.event == AuditEventType.PASSWORD_REENTERED)
        ).all()
    assert sorted(outcomes) == sorted(["wrong", "ok", "wrong", "wrong", "locked", "locked"])
