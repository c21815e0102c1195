"""Pure decisions at their boundaries: functions of state and now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.enums import AuthUnit, CredentialKind, CredentialState
from core.policy import CredentialPolicy
from core.rules import (
    CredentialSnapshot,
    credential_state,
    identity_number_for,
    is_within,
    max_failures,
    must_change_password,
    remaining_attempts,
    role_for,
    scope_numbers,
    temporary_expiry,
)

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
POLICY = CredentialPolicy()


def temporary(failures: int = 0, invalidated: bool = False) -> CredentialSnapshot:
    return CredentialSnapshot(
        CredentialKind.TEMPORARY,
        set_at=T0,
        expires_at=temporary_expiry(T0, POLICY),
        failures=failures,
        invalidated_at=T0 if invalidated else None,
    )


def permanent(failures: int = 0, set_at: datetime = T0) -> CredentialSnapshot:
    return CredentialSnapshot(CredentialKind.PERMANENT, set_at=set_at, failures=failures)


def test_no_credential() -> None:
    assert credential_state(None, T0, POLICY) is CredentialState.NONE


@pytest.mark.parametrize(
    ("elapsed", "state"),
    [
        (timedelta(0), CredentialState.TEMPORARY),
        (timedelta(hours=24) - timedelta(microseconds=1), CredentialState.TEMPORARY),
        (timedelta(hours=24), CredentialState.EXPIRED),  # exactly 24 h: 24時間以上経過すると無効
        (timedelta(hours=24, seconds=1), CredentialState.EXPIRED),
    ],
)
def test_temporary_valid_for_24_hours(elapsed: timedelta, state: CredentialState) -> None:
    assert credential_state(temporary(), T0 + elapsed, POLICY) is state


@pytest.mark.parametrize(
    ("failures", "state"), [(2, CredentialState.TEMPORARY), (3, CredentialState.INVALIDATED)]
)
def test_temporary_third_failure_invalidates(failures: int, state: CredentialState) -> None:
    assert credential_state(temporary(failures), T0, POLICY) is state
    assert remaining_attempts(temporary(failures), POLICY) == 3 - failures


@pytest.mark.parametrize(
    ("failures", "state"), [(9, CredentialState.PERMANENT), (10, CredentialState.INVALIDATED)]
)
def test_permanent_tenth_failure_invalidates(failures: int, state: CredentialState) -> None:
    assert credential_state(permanent(failures), T0 + timedelta(days=400), POLICY) is state


def test_invalidated_flag_wins() -> None:
    assert credential_state(temporary(0, invalidated=True), T0, POLICY) is CredentialState.INVALIDATED


def test_max_failures_per_kind() -> None:
    assert max_failures(CredentialKind.TEMPORARY, POLICY) == 3
    assert max_failures(CredentialKind.PERMANENT, POLICY) == 10


def test_must_change_after_temporary_or_max_age() -> None:
    assert must_change_password(temporary(), T0, POLICY)
    assert not must_change_password(permanent(), T0 + timedelta(days=3650), POLICY)  # max age off
    aged = CredentialPolicy(permanent_max_age_days=90)
    assert not must_change_password(permanent(), T0 + timedelta(days=90) - timedelta(seconds=1), aged)
    assert must_change_password(permanent(), T0 + timedelta(days=90), aged)


@pytest.mark.parametrize(
    ("elapsed", "inside"),
    [(-1, False), (0, True), (299, True), (299.999, True), (300, False), (301, False)],
)
def test_code_window_300_seconds(elapsed: float, inside: bool) -> None:
    assert is_within(T0, T0 + timedelta(seconds=elapsed), 300) is inside


def test_link_window_exactly_24_hours() -> None:
    assert is_within(T0, T0 + timedelta(hours=24) - timedelta(microseconds=1), 24 * 3600)
    assert not is_within(T0, T0 + timedelta(hours=24), 24 * 3600)


# --- units and scope: the seed's example (03-0000-1111 contract, 03-0000-2222 additional) --------
C, A = "0300001111", "0300002222"
ALL = [A, C]


def test_scope_line_unit() -> None:
    assert scope_numbers(AuthUnit.LINE, C, ALL, C) == [C, A]
    assert scope_numbers(AuthUnit.LINE, C, ALL, A) == []  # line unit logs in with the contract number
    assert identity_number_for(AuthUnit.LINE, C, A) is None
    assert role_for(AuthUnit.LINE, C, C) == "line"


def test_scope_number_unit() -> None:
    assert scope_numbers(AuthUnit.NUMBER, C, ALL, C) == [C]
    assert scope_numbers(AuthUnit.NUMBER, C, ALL, A) == [A]
    assert role_for(AuthUnit.NUMBER, C, A) == "number"


def test_scope_admin_user_unit() -> None:
    assert scope_numbers(AuthUnit.ADMIN_USER, C, ALL, C) == [C, A]
    assert scope_numbers(AuthUnit.ADMIN_USER, C, ALL, A) == [A]
    assert role_for(AuthUnit.ADMIN_USER, C, C) == "admin"
    assert role_for(AuthUnit.ADMIN_USER, C, A) == "user"


def test_scope_of_a_number_not_on_the_contract() -> None:
    assert scope_numbers(AuthUnit.ADMIN_USER, C, ALL, "0399999999") == []


def test_menu_keys() -> None:
    assert AuthUnit.from_menu_key("1") is AuthUnit.LINE
    assert AuthUnit.from_menu_key("2") is AuthUnit.NUMBER
    assert AuthUnit.from_menu_key("3") is AuthUnit.ADMIN_USER
    with pytest.raises(ValueError):
        AuthUnit.from_menu_key("4")
    assert AuthUnit.NUMBER.menu_key == "2"


# --- one-time-password decisions, pure functions of state and now


def test_otp_status_follows_the_choice_and_the_registration() -> None:
    from core.enums import OtpStatus, OtpUsage
    from core.rules import otp_status

    assert otp_status(OtpUsage.UNDECIDED, registered=False) is OtpStatus.UNCHOSEN
    assert otp_status(OtpUsage.NOT_USED, registered=True) is OtpStatus.OFF
    assert otp_status(OtpUsage.USED, registered=False) is OtpStatus.PENDING
    assert otp_status(OtpUsage.USED, registered=True) is OtpStatus.ON


def test_a_registration_link_is_refused_when_replaced_used_or_older_than_24_hours() -> None:
    from datetime import UTC, datetime, timedelta

    from core.enums import LinkStatus
    from core.rules import registration_link_refusal

    sent = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    day = 24 * 3600

    def refusal(
        now: datetime = sent, *, superseded: bool = False, consumed: bool = False
    ) -> LinkStatus | None:
        return registration_link_refusal(
            superseded=superseded, consumed=consumed, created_at=sent, now=now, validity_seconds=day
        )

    assert refusal(sent + timedelta(hours=23, minutes=59)) is None
    assert refusal(sent + timedelta(hours=24, seconds=1)) is LinkStatus.EXPIRED
    assert refusal(consumed=True) is LinkStatus.USED
    assert refusal(superseded=True, consumed=True) is LinkStatus.UNKNOWN  # a newer one replaced it


def test_a_code_is_refused_without_spending_a_try_when_it_cannot_match() -> None:
    from datetime import UTC, datetime, timedelta

    from core.enums import CodeStatus
    from core.rules import code_refusal

    sent = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    fresh = {
        "attempt_voided": False,
        "attempt_completed": False,
        "code_consumed": False,
        "code_created_at": sent,
    }

    def refusal(now: datetime = sent, **state: object) -> CodeStatus | None:
        return code_refusal(**{**fresh, **state}, now=now, validity_seconds=300)  # type: ignore[arg-type]

    assert refusal(sent + timedelta(seconds=299)) is None
    assert refusal(sent + timedelta(seconds=301)) is CodeStatus.EXPIRED
    assert refusal(code_consumed=True) is CodeStatus.USED
    assert refusal(code_consumed=None, code_created_at=None) is CodeStatus.NONE
    assert refusal(attempt_completed=True) is CodeStatus.USED
    assert refusal(attempt_voided=True, attempt_completed=True) is CodeStatus.TOO_MANY
