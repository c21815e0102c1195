"""What the web pages need from the credential store, as one synchronous interface.

``CoreBackend`` (``web_stub.core_backend``) implements it over ``core``; every method is blocking
(database, argon2) and the app calls it through ``run_in_threadpool``. Keeping the pages on this
small interface means a change of a core name is fixed in one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

LoginStatus = Literal["ok", "wrong", "invalidated", "temporary_expired"]
OtpStatus = Literal["unchosen", "off", "pending", "on"]
LinkStatus = Literal["ok", "expired", "used", "unknown"]
CodeStatus = Literal["ok", "wrong", "expired", "used", "too_many", "none"]


class InputRefused(ValueError):
    """The store refused the input; ``problems`` maps a field (``mail_address``, …) to reason codes."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        super().__init__("input refused: " + ", ".join(problems))
        self.problems = problems


class CodeUnavailable(RuntimeError):
    """No code can be sent: ``not_registered``, ``attempt_closed`` (log in again), ``too_many_codes``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OtpState:
    status: OtpStatus
    email: str | None = None  # the registered (active) receiving address


@dataclass(frozen=True)
class LoginOutcome:
    status: LoginStatus
    number: str | None = None  # the identity's login number (normalised)
    contract_id: int | None = None
    unit: str | None = None  # "line" | "number" | "admin_user"
    role: str | None = None  # "line" | "number" | "admin" | "user"
    must_change_password: bool = False
    change_reason: Literal["temporary", "expired"] | None = None
    otp: OtpState = field(default_factory=lambda: OtpState("unchosen"))


@dataclass(frozen=True)
class NumberServices:
    number: str
    services: list[str]


@dataclass(frozen=True)
class LinkOutcome:
    status: LinkStatus
    number: str | None = None


@dataclass(frozen=True)
class IssuedCode:
    code: str
    email: str


class CredentialBackend(Protocol):
    def login(self, *, number: str, password: str, now: datetime) -> LoginOutcome: ...

    def change_password(
        self, *, number: str, current_password: str, new_password: str, now: datetime
    ) -> list[str]:
        """Reason codes why the change was refused (empty: changed and committed).

        ``current_wrong`` when the current password does not match; the rule codes of
        ``core.auth.password_rule_violations`` otherwise."""
        ...

    def scope(self, *, contract_id: int, unit: str, number: str) -> list[NumberServices]: ...

    def otp_state(self, *, number: str) -> OtpState: ...

    def otp_decline(self, *, number: str, now: datetime) -> None: ...

    def otp_disable(self, *, number: str, now: datetime) -> None: ...

    def otp_enable(self, *, number: str, now: datetime) -> OtpState:
        """Switch it on: ``on`` at once if an address is registered, else ``pending``."""
        ...

    def otp_register(
        self,
        *,
        number: str,
        email: str,
        confirmation_id: str,
        confirmation_password: str,
        now: datetime,
    ) -> str:
        """Store a provisional registration; return the plain link token (only its hash is stored)."""
        ...

    def otp_change_address(self, *, number: str, email: str, now: datetime) -> str: ...

    def otp_confirm_link(self, *, token: str, now: datetime) -> LinkOutcome: ...

    def otp_issue_code(self, *, number: str, login_attempt_id: str, now: datetime) -> IssuedCode: ...

    def otp_verify_code(
        self, *, number: str, login_attempt_id: str, code: str, now: datetime
    ) -> CodeStatus: ...

    def otp_check_confirmation(
        self, *, number: str, confirmation_id: str, confirmation_password: str, now: datetime
    ) -> bool: ...

    def otp_change_confirmation_id(
        self, *, number: str, current: str, new: str, now: datetime
    ) -> list[str]: ...

    def otp_change_confirmation_password(
        self, *, number: str, current: str, new: str, now: datetime
    ) -> list[str]: ...

    def unit_change_numbers(
        self, *, contract_id: int, new_unit: str, login_number: str, now: datetime
    ) -> list[str]:
        """Whose current passwords a change of the contract's unit asks for."""
        ...

    def change_unit(
        self, *, contract_id: int, new_unit: str, login_number: str, passwords: dict[str, str], now: datetime
    ) -> dict[str, str]:
        """Problems by number (or ``"*"``): ``same_unit``, ``not_allowed``, ``password_required``,
        ``wrong_password``, ``locked``, ``expired``; empty when changed and committed."""
        ...

    def password_marks(self, *, numbers: list[str], now: datetime) -> dict[str, bool]:
        """For the bulk download: True where the number's password is temporary or unset (``*``)."""
        ...

    def bulk_change_passwords(self, *, rows: list[tuple[str, str]], now: datetime) -> dict[int, list[str]]:
        """Set each (number, new password) in one transaction; all or nothing.

        Returns reason codes by row index (empty: all changed and committed)."""
        ...

    def bulk_otp_settings(
        self, *, rows: list[tuple[str, bool, str, str, str]], now: datetime
    ) -> tuple[dict[int, dict[str, list[str]]], dict[int, str]]:
        """(number, use, mail, confirmation ID, confirmation password) rows in one transaction, all or
        nothing: "not used" for ``use`` False, else a provisional registration. Returns (problems by
        row index and field, link tokens by row index)."""
        ...

    def confirmation_id_violations(self, value: str) -> list[str]: ...

    def confirmation_password_violations(self, value: str) -> list[str]: ...
