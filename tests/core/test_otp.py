"""One-time passwords: registration links (24 h, single use, hashed) and codes (300 s, single use,
bound to a login attempt, a few wrong tries void it)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from core.models import AuditEvent, OtpCode, OtpSettings
from core.otp.choice import choose_otp, decline_otp, otp_state
from core.otp.codes import issue_code, prepare_code, verify_code_in_steps
from core.otp.common import OtpNotAvailable
from core.otp.confirmation import (
    change_confirmation_id_in_steps,
    change_confirmation_password_in_steps,
    check_confirmation_in_steps,
)
from core.otp.registration import (
    OtpInputError,
    complete_registration_in_steps,
    prepare_address_change,
    prepare_registration,
    start_address_change,
    start_registration,
)
from core.secrets import SecretHasher
from tests.core.conftest import SEED_ADDITIONAL, SEED_CONTRACT

Sessions = sessionmaker[Session]
MAIL = "taro@example.jp"
CID, CPW = "abc12345", "baiyo4qx"


def register(sessions: Sessions, hasher: SecretHasher, now: datetime, number: str = SEED_ADDITIONAL) -> str:
    registration = prepare_registration(
        mail_address=MAIL, confirmation_id=CID, confirmation_password=CPW, hasher=hasher
    )
    with sessions() as session, session.begin():
        return start_registration(session, number=number, registration=registration, now=now)


def complete(sessions: Sessions, hasher: SecretHasher, token: str, now: datetime) -> str:
    return complete_registration_in_steps(sessions, token=token, now=now, hasher=hasher).status


def confirm(sessions: Sessions, hasher: SecretHasher, now: datetime, cid: str = CID, cpw: str = CPW) -> bool:
    return check_confirmation_in_steps(
        sessions,
        number=SEED_ADDITIONAL,
        confirmation_id=cid,
        confirmation_password=cpw,
        now=now,
        hasher=hasher,
    )


def state(sessions: Sessions, now: datetime, number: str = SEED_ADDITIONAL) -> str:
    with sessions() as session:
        return otp_state(session, number=number, now=now).status


def test_choice_undecided_declined_chosen(sample_db: Sessions, core_now: datetime) -> None:
    assert state(sample_db, core_now) == "unchosen"
    with sample_db() as session, session.begin():
        decline_otp(session, number=SEED_ADDITIONAL, now=core_now)
    assert state(sample_db, core_now) == "off"
    with sample_db() as session, session.begin():
        choose_otp(session, number=SEED_ADDITIONAL, now=core_now)
    assert state(sample_db, core_now) == "pending"
    assert state(sample_db, core_now, SEED_CONTRACT) == "unchosen"  # per identity


def test_registration_link_is_random_hashed_and_single_use(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    token = register(sample_db, fast_hasher, core_now)
    _registration_id, secret = token.split(".")
    assert len(secret) >= 22  # ≥128 bits of randomness, URL-safe
    assert token != register(sample_db, fast_hasher, core_now)  # fresh each time
    with sample_db() as session:
        stored = session.execute(text("SELECT token_hash FROM otp_registrations")).scalars().all()
        dump = " ".join(stored)
        assert secret not in dump and all(s.startswith("$argon2id$") for s in stored)
        settings = session.scalars(select(OtpSettings)).one()
        assert CID not in repr(settings) and CPW not in repr(settings)
    assert state(sample_db, core_now) == "pending"


@pytest.mark.parametrize(
    ("elapsed", "status"),
    [(timedelta(hours=24) - timedelta(seconds=1), "ok"), (timedelta(hours=24), "expired")],
)
def test_registration_link_valid_24_hours(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime, elapsed: timedelta, status: str
) -> None:
    token = register(sample_db, fast_hasher, core_now)
    assert complete(sample_db, fast_hasher, token, core_now + elapsed) == status
    assert state(sample_db, core_now + elapsed) == ("on" if status == "ok" else "pending")


def test_registration_link_used_twice_superseded_or_forged(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    first = register(sample_db, fast_hasher, core_now)
    second = register(sample_db, fast_hasher, core_now + timedelta(minutes=1))
    assert complete(sample_db, fast_hasher, first, core_now + timedelta(minutes=2)) == "unknown"  # superseded
    assert complete(sample_db, fast_hasher, second, core_now + timedelta(minutes=2)) == "ok"
    assert complete(sample_db, fast_hasher, second, core_now + timedelta(minutes=3)) == "used"
    registration_id = second.split(".")[0]
    for forged in (f"{registration_id}.AAAAAAAAAAAAAAAAAAAAAAAA", "999.x", "garbage", "", "1."):
        assert complete(sample_db, fast_hasher, forged, core_now) == "unknown"
    with sample_db() as session:
        view = otp_state(session, number=SEED_ADDITIONAL, now=core_now)
        assert view.status == "on" and view.mail_address == MAIL and view.required_at_login


def test_registration_input_rules(sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime) -> None:
    with pytest.raises(OtpInputError) as info:
        prepare_registration(
            mail_address="not-an-address",
            confirmation_id="12345678",
            confirmation_password="abcdefgh",
            hasher=fast_hasher,
        )
    assert info.value.problems == {
        "mail_address": ["invalid"],
        "confirmation_id": ["digits_only"],
        "confirmation_password": ["letters_and_digits"],
    }
    assert "abcdefgh" not in str(info.value) and "12345678" not in str(info.value)


def _registered(sessions: Sessions, hasher: SecretHasher, now: datetime) -> None:
    assert complete(sessions, hasher, register(sessions, hasher, now), now) == "ok"


def issue(sessions: Sessions, hasher: SecretHasher, attempt: str, now: datetime) -> str:
    new_code = prepare_code(hasher)
    with sessions() as session, session.begin():
        issued = issue_code(session, number=SEED_ADDITIONAL, login_attempt_id=attempt, code=new_code, now=now)
        assert issued.mail_address == MAIL and issued.code not in repr(issued)
        assert len(issued.code) == 6 and issued.code.isdigit()
        return issued.code


def check(sessions: Sessions, hasher: SecretHasher, attempt: str, code: str, now: datetime) -> str:
    return verify_code_in_steps(
        sessions, number=SEED_ADDITIONAL, login_attempt_id=attempt, code=code, now=now, hasher=hasher
    )


def other(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_code_needs_a_registered_address(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    with sample_db() as session, pytest.raises(OtpNotAvailable) as info:
        issue_code(
            session,
            number=SEED_ADDITIONAL,
            login_attempt_id="a1",
            code=prepare_code(fast_hasher),
            now=core_now,
        )
    assert info.value.reason == "not_registered"


@pytest.mark.parametrize(("elapsed", "status"), [(299, "ok"), (300, "expired")])
def test_code_valid_300_seconds(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime, elapsed: int, status: str
) -> None:
    _registered(sample_db, fast_hasher, core_now)
    code = issue(sample_db, fast_hasher, "attempt-1", core_now)
    assert check(sample_db, fast_hasher, "attempt-1", code, core_now + timedelta(seconds=elapsed)) == status


def test_code_single_use_and_bound_to_its_attempt(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    _registered(sample_db, fast_hasher, core_now)
    code = issue(sample_db, fast_hasher, "attempt-1", core_now)
    assert check(sample_db, fast_hasher, "attempt-2", code, core_now) == "none"  # another login attempt
    assert check(sample_db, fast_hasher, "attempt-1", code, core_now) == "ok"
    assert check(sample_db, fast_hasher, "attempt-1", code, core_now) == "used"
    with sample_db() as session, pytest.raises(OtpNotAvailable):
        issue_code(
            session,
            number=SEED_ADDITIONAL,
            login_attempt_id="attempt-1",
            code=prepare_code(fast_hasher),
            now=core_now,
        )
    with sample_db() as session:
        stored = [c.code_hash for c in session.scalars(select(OtpCode))]
        assert stored and all(code not in h for h in stored)


def test_resend_supersedes_the_previous_code(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    _registered(sample_db, fast_hasher, core_now)
    first = issue(sample_db, fast_hasher, "attempt-1", core_now)
    second = issue(sample_db, fast_hasher, "attempt-1", core_now + timedelta(seconds=60))
    if first != second:
        assert check(sample_db, fast_hasher, "attempt-1", first, core_now + timedelta(seconds=61)) == "wrong"
    assert check(sample_db, fast_hasher, "attempt-1", second, core_now + timedelta(seconds=62)) == "ok"


def test_third_wrong_code_voids_the_attempt(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    _registered(sample_db, fast_hasher, core_now)
    code = issue(sample_db, fast_hasher, "attempt-1", core_now)
    assert check(sample_db, fast_hasher, "attempt-1", other(code), core_now) == "wrong"
    assert check(sample_db, fast_hasher, "attempt-1", "abc", core_now) == "wrong"
    assert check(sample_db, fast_hasher, "attempt-1", other(code), core_now) == "too_many"
    assert check(sample_db, fast_hasher, "attempt-1", code, core_now) == "too_many"
    with sample_db() as session, pytest.raises(OtpNotAvailable) as info:
        issue_code(
            session,
            number=SEED_ADDITIONAL,
            login_attempt_id="attempt-1",
            code=prepare_code(fast_hasher),
            now=core_now,
        )
    assert info.value.reason == "attempt_closed"
    # a new login attempt starts afresh
    fresh = issue(sample_db, fast_hasher, "attempt-2", core_now)
    assert check(sample_db, fast_hasher, "attempt-2", fresh, core_now) == "ok"
    with sample_db() as session:
        assert "otp_attempt_voided" in {e.event for e in session.scalars(select(AuditEvent))}


def test_confirmation_and_address_change(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    _registered(sample_db, fast_hasher, core_now)
    assert confirm(sample_db, fast_hasher, core_now)
    assert not confirm(sample_db, fast_hasher, core_now, cpw="wrong123")
    registration = prepare_address_change(mail_address="hanako@example.jp", hasher=fast_hasher)
    with sample_db() as session, session.begin():
        token = start_address_change(session, number=SEED_ADDITIONAL, registration=registration, now=core_now)
    with sample_db() as session:
        view = otp_state(session, number=SEED_ADDITIONAL, now=core_now)
        assert view.mail_address == MAIL and view.pending_mail_address == "hanako@example.jp"
    assert complete(sample_db, fast_hasher, token, core_now + timedelta(hours=1)) == "ok"
    with sample_db() as session, session.begin():
        assert otp_state(session, number=SEED_ADDITIONAL).mail_address == "hanako@example.jp"
    assert confirm(sample_db, fast_hasher, core_now)  # the confirmation ID/password carried over


def test_change_confirmation_id_and_password(
    sample_db: Sessions, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    _registered(sample_db, fast_hasher, core_now)

    def change_id(current: str, new: str) -> list[str]:
        return change_confirmation_id_in_steps(
            sample_db, number=SEED_ADDITIONAL, current=current, new=new, now=core_now, hasher=fast_hasher
        )

    def change_password(current: str, new: str) -> list[str]:
        return change_confirmation_password_in_steps(
            sample_db, number=SEED_ADDITIONAL, current=current, new=new, now=core_now, hasher=fast_hasher
        )

    assert change_id("wrong123", "xyz98765") == ["current_wrong"]
    assert change_id(CID, "ABCDEFGH") == ["upper_only"]
    assert change_id(CID, CID) == ["same_as_current"]
    assert change_id(CID, "xyz98765") == []
    assert change_password(CPW, "onlyletters") == ["letters_and_digits"]
    assert change_password(CPW, "n3wpass99") == []
    assert confirm(sample_db, fast_hasher, core_now, "xyz98765", "n3wpass99")
    with sample_db() as session:
        details = " ".join(e.detail for e in session.scalars(select(AuditEvent)))
        for secret in (CID, CPW, "xyz98765", "n3wpass99"):
            assert secret not in details
