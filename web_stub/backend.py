"""What the web pages need from the credential store, as one synchronous interface.

``CoreBackend`` (``web_stub.core_backend``) implements it over ``core``; every method is blocking
(database, argon2) and the app calls it through ``run_in_threadpool``. Keeping the pages on this
small interface means a change of a core name is fixed in one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from core.enums import CodeStatus, LinkStatus, OtpStatus

LoginStatus = Literal["ok", "wrong", "invalidated", "temporary_expired", "throttled"]
ConfirmationStatus = Literal["ok", "wrong", "locked"]


@dataclass(frozen=True)
class WebLimits:
    """The web's limits (``WebSettings``), as the backend applies them."""

    idle_seconds: int = 15 * 60
    lifetime_seconds: int = 8 * 3600
    login_failures_per_client: int = 100
    login_failure_window_seconds: int = 300
    otp_wrong_codes_per_number: int = 10
    otp_wrong_code_window_seconds: int = 24 * 3600
    otp_mails_per_number: int = 10
    otp_mail_window_seconds: int = 3600
    confirmation_failures_per_number: int = 5
    confirmation_failure_window_seconds: int = 24 * 3600
    max_secret_chars: int = 64

    @classmethod
    def from_web_settings(cls, web: Any) -> WebLimits:
        return cls(
            idle_seconds=web.session_idle_timeout_seconds,
            lifetime_seconds=web.session_absolute_lifetime_seconds,
            **{name: getattr(web, name) for name in _SAME_NAMES},
        )


_SAME_NAMES = (
    "login_failures_per_client",
    "login_failure_window_seconds",
    "otp_wrong_codes_per_number",
    "otp_wrong_code_window_seconds",
    "otp_mails_per_number",
    "otp_mail_window_seconds",
    "confirmation_failures_per_number",
    "confirmation_failure_window_seconds",
    "max_secret_chars",
)


@dataclass(frozen=True)
class SessionRecord:
    """A stored session as the backend returns it (``data`` JSON, ``sealed`` opaque)."""

    stage: str
    number: str
    contract_id: int
    unit: str
    role: str
    created_at: datetime
    data: str
    sealed: str | None


class InputRefused(ValueError):
    """The store refused the input; ``problems`` maps a field (``mail_address``, …) to reason codes."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        super().__init__("input refused: " + ", ".join(problems))
        self.problems = problems


class CodeUnavailable(RuntimeError):
    """No code can be sent: ``not_registered``, ``attempt_closed`` (log in again), ``too_many_codes``."""

    def __init__(self, reason: str, retry_after_seconds: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds


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
    otp: OtpState = field(default_factory=lambda: OtpState(OtpStatus.UNCHOSEN))
    retry_after_seconds: int = 0  # "throttled": the client's failure budget is spent
    temporary: bool | None = None  # "invalidated": the password was a temporary one (None: unknown)


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
    def login(self, *, number: str, password: str, now: datetime, client: str | None = None) -> LoginOutcome:
        """Check a login. With ``client``, its failed-login budget is taken first (``throttled``
        without any password check when spent) and given back when the login succeeds."""
        ...

    # ---- sessions (core.web_sessions); rows are keyed by the hash of the cookie value
    def session_open(
        self, *, id_hash: str, now: datetime, stage: str, number: str, data: str, sealed: str | None
    ) -> SessionRecord: ...

    def session_load(self, *, id_hash: str, now: datetime) -> tuple[SessionRecord | None, str | None]:
        """The live session, or ``(None, reason)`` when it just ended (``idle``, ``lifetime``,
        ``credential_replaced``, …), or ``(None, None)`` when there is none."""
        ...

    def session_save(
        self,
        *,
        id_hash: str,
        now: datetime,
        stage: str,
        data: str,
        sealed: str | None,
        new_id_hash: str | None,
        resnapshot: bool,
    ) -> None: ...

    def session_delete(self, *, id_hash: str) -> None: ...

    def otp_mail_failed(self, *, number: str, now: datetime) -> None:
        """A code mail could not be sent: it does not count against the number's mail budget."""
        ...

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
    ) -> ConfirmationStatus:
        """Counted per number across logins; ``locked`` once the limit is reached."""
        ...

    def otp_settings_locked(self, *, number: str) -> bool: ...

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

    def check_password(self, *, number: str, password: str, now: datetime) -> str:
        """The current password re-entered to confirm an action: ``ok``, ``wrong``, ``locked``
        (this try was the last, or none was left) or ``expired``; counts like a login."""
        ...

    def otp_registered_numbers(self, *, numbers: list[str]) -> list[str]:
        """Those of ``numbers`` with a one-time-password registration (or one waiting for its link)."""
        ...

    def otp_release(self, *, numbers: list[str], now: datetime) -> list[str]:
        """Release the registrations of ``numbers`` (the admin's bulk release); the numbers released."""
        ...

    def contract_size(self, *, contract_id: int) -> int:
        """How many numbers the contract has, whatever their credentials (the 33-number bulk pages)."""
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
