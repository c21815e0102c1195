"""Pure decisions of the credential core: functions of state and ``now``, no I/O.

Validity windows are half-open: a temporary password set at T is valid while ``now < T + 24 h``
("24時間以上経過すると無効"), a code issued at T while ``now < T + 300 s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from core.enums import AuthUnit, CodeStatus, CredentialKind, CredentialState, LinkStatus, OtpStatus, OtpUsage
from core.policy import PolicyLike, permanent_max_age


class CredentialLike(Protocol):
    """What the rules read from a credential (a ``core.models.Credential`` row fits)."""

    @property
    def kind(self) -> CredentialKind: ...
    @property
    def set_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def failures(self) -> int: ...
    @property
    def invalidated_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class CredentialSnapshot:
    """A credential's state without a database row (for tests and callers that copy state)."""

    kind: CredentialKind
    set_at: datetime
    expires_at: datetime | None = None
    failures: int = 0
    invalidated_at: datetime | None = None


def max_failures(kind: CredentialKind, policy: PolicyLike) -> int:
    """3 consecutive wrong attempts for a temporary password, 10 for a permanent one."""
    if kind is CredentialKind.TEMPORARY:
        return policy.temporary_max_failures
    return policy.permanent_max_failures


def temporary_expiry(set_at: datetime, policy: PolicyLike) -> datetime:
    return set_at + timedelta(seconds=policy.temporary_validity_seconds)


def permanent_expiry(set_at: datetime, policy: PolicyLike) -> datetime | None:
    age = permanent_max_age(policy)
    return None if age is None else set_at + age


def is_locked(credential: CredentialLike, policy: PolicyLike) -> bool:
    return credential.invalidated_at is not None or credential.failures >= max_failures(
        credential.kind, policy
    )


def credential_state(credential: CredentialLike | None, now: datetime, policy: PolicyLike) -> CredentialState:
    if credential is None:
        return CredentialState.NONE
    if is_locked(credential, policy):
        return CredentialState.INVALIDATED
    if credential.kind is CredentialKind.TEMPORARY:
        expires_at = credential.expires_at or temporary_expiry(credential.set_at, policy)
        return CredentialState.TEMPORARY if now < expires_at else CredentialState.EXPIRED
    return CredentialState.PERMANENT


def permanent_password_expired(credential: CredentialLike, now: datetime, policy: PolicyLike) -> bool:
    """A permanent password past the configurable maximum age (off by default)."""
    if credential.kind is not CredentialKind.PERMANENT:
        return False
    expiry = permanent_expiry(credential.set_at, policy)
    return expiry is not None and now >= expiry


def must_change_password(credential: CredentialLike, now: datetime, policy: PolicyLike) -> bool:
    """Logging in with a temporary or an expired password forces a change before anything else."""
    return credential.kind is CredentialKind.TEMPORARY or permanent_password_expired(credential, now, policy)


def remaining_attempts(credential: CredentialLike, policy: PolicyLike) -> int:
    if credential.invalidated_at is not None:
        return 0
    return max(0, max_failures(credential.kind, policy) - credential.failures)


def is_within(issued_at: datetime, now: datetime, validity_seconds: int) -> bool:
    """``issued_at <= now < issued_at + validity``: the window of codes and links."""
    return issued_at <= now < issued_at + timedelta(seconds=validity_seconds)


def identity_number_for(unit: AuthUnit, contract_number: str, number: str) -> str | None:
    """Which number's credential a login with ``number`` uses; None if it cannot log in.

    In line unit only the contract number logs in (with the contract's one credential); in the
    other units every number logs in with its own.
    """
    if unit is AuthUnit.LINE:
        return contract_number if number == contract_number else None
    return number


def role_for(unit: AuthUnit, contract_number: str, login_number: str) -> str:
    """``line`` | ``number`` | ``admin`` | ``user``."""
    if unit is AuthUnit.LINE:
        return "line"
    if unit is AuthUnit.NUMBER:
        return "number"
    return "admin" if login_number == contract_number else "user"


def scope_numbers(
    unit: AuthUnit, contract_number: str, all_numbers: list[str], login_number: str
) -> list[str]:
    """The numbers a login may act on (the operator guide P3's table); ``[]`` if the login is not allowed."""
    if login_number not in all_numbers:
        return []
    everything = sorted(all_numbers, key=lambda n: (n != contract_number, n))
    if unit is AuthUnit.LINE:
        return everything if login_number == contract_number else []
    if unit is AuthUnit.ADMIN_USER and login_number == contract_number:
        return everything
    return [login_number]


# --------------------------------------------------------------------- one-time passwords


def otp_status(usage: OtpUsage, *, registered: bool) -> OtpStatus:
    """Where a number's OTP settings stand: the customer's choice, and whether an address is
    registered (a mailed link followed)."""
    if usage is OtpUsage.UNDECIDED:
        return OtpStatus.UNCHOSEN
    if usage is OtpUsage.NOT_USED:
        return OtpStatus.OFF
    return OtpStatus.ON if registered else OtpStatus.PENDING


def registration_link_refusal(
    *, superseded: bool, consumed: bool, created_at: datetime, now: datetime, validity_seconds: int
) -> LinkStatus | None:
    """Why a mailed registration link cannot register now (None: it can): a newer registration
    replaced it (``unknown``, as if it never was), it was followed already (``used``), or it is
    older than its validity (``expired``, 24 h by default)."""
    if superseded:
        return LinkStatus.UNKNOWN
    if consumed:
        return LinkStatus.USED
    if not is_within(created_at, now, validity_seconds):
        return LinkStatus.EXPIRED
    return None


def code_refusal(
    *,
    attempt_voided: bool,
    attempt_completed: bool,
    code_consumed: bool | None,
    code_created_at: datetime | None,
    now: datetime,
    validity_seconds: int,
) -> CodeStatus | None:
    """Why a one-time code cannot be checked for this login attempt (None: a try may be spent on
    it): the attempt's tries are spent (``too_many``), the attempt is done (``used``), no code was
    sent (``none``, ``code_consumed`` None), the code was used or is older than its validity."""
    if attempt_voided:
        return CodeStatus.TOO_MANY
    if attempt_completed:
        return CodeStatus.USED
    if code_consumed is None or code_created_at is None:
        return CodeStatus.NONE
    if code_consumed:
        return CodeStatus.USED
    if not is_within(code_created_at, now, validity_seconds):
        return CodeStatus.EXPIRED
    return None
