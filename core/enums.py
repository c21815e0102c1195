"""Enumerations shared by the phone line, the web login and the database."""

from __future__ import annotations

from enum import StrEnum


class AuthUnit(StrEnum):
    """A contract's authentication unit (認証単位)."""

    LINE = "line"  # 回線単位: one credential for the contract, login with the contract number
    NUMBER = "number"  # 電話番号単位: one credential per number
    ADMIN_USER = "admin_user"  # 管理者/ユーザ単位: contract number = admin, additional number = user

    @classmethod
    def from_menu_key(cls, key: str) -> AuthUnit:
        """The unit chosen on the phone menu: 1 line, 2 number, 3 admin/user. ValueError otherwise."""
        try:
            return _MENU_KEYS[key]
        except KeyError:
            raise ValueError(f"no unit for menu key {key!r}") from None

    @property
    def menu_key(self) -> str:
        return {v: k for k, v in _MENU_KEYS.items()}[self]

    @property
    def label_ja(self) -> str:
        return {
            AuthUnit.LINE: "回線単位",
            AuthUnit.NUMBER: "電話番号単位",
            AuthUnit.ADMIN_USER: "管理者/ユーザ単位",
        }[self]


_MENU_KEYS: dict[str, AuthUnit] = {"1": AuthUnit.LINE, "2": AuthUnit.NUMBER, "3": AuthUnit.ADMIN_USER}


class Service(StrEnum):
    """Services a number subscribes to that the settings site manages."""

    INCOMING_CALL_MAIL = "incoming_call_mail"  # 着信お知らせメール
    FAX_MAIL = "fax_mail"  # FAXお知らせメール
    VOICE_WARP = "voice_warp"  # ボイスワープ
    BULK_TRANSFER = "bulk_transfer"  # 一括転送機能
    FAULT_NOTIFICATION = "fault_notification"  # 故障・回復通知機能

    @property
    def label_ja(self) -> str:
        return _SERVICE_LABELS[self]


_SERVICE_LABELS = {
    Service.INCOMING_CALL_MAIL: "着信お知らせメール",
    Service.FAX_MAIL: "FAXお知らせメール",
    Service.VOICE_WARP: "ボイスワープ",
    Service.BULK_TRANSFER: "一括転送機能",
    Service.FAULT_NOTIFICATION: "故障・回復通知機能",
}


class CredentialKind(StrEnum):
    TEMPORARY = "temporary"  # 仮パスワード: 8 digits set by phone, 24 h, 3 tries
    PERMANENT = "permanent"  # パスワード: set on the web, 10 tries


class CredentialState(StrEnum):
    """What a credential is worth at a given moment (see core.rules.credential_state)."""

    NONE = "none"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    EXPIRED = "expired"  # temporary past its validity: gone
    INVALIDATED = "invalidated"  # too many consecutive failures (or replaced)


class OtpUsage(StrEnum):
    UNDECIDED = "undecided"
    NOT_USED = "not_used"
    USED = "used"


class Channel(StrEnum):
    PHONE = "phone"
    WEB = "web"
    CLI = "cli"


class AuditEventType(StrEnum):
    TEMPORARY_SET = "temporary_set"
    LOGIN_SUCCESS = "login_success"
    LOGIN_FAILURE = "login_failure"
    LOCKED = "locked"
    PASSWORD_CHANGED = "password_changed"
    UNIT_CHANGED = "unit_changed"
    OTP_DECLINED = "otp_declined"
    OTP_REGISTRATION_STARTED = "otp_registration_started"
    OTP_REGISTERED = "otp_registered"
    OTP_USAGE_CHANGED = "otp_usage_changed"
    OTP_CODE_ISSUED = "otp_code_issued"
    OTP_CODE_ACCEPTED = "otp_code_accepted"
    OTP_CODE_REJECTED = "otp_code_rejected"
    OTP_ATTEMPT_VOIDED = "otp_attempt_voided"
    OTP_CONFIRMATION_CHANGED = "otp_confirmation_changed"
    OTP_CONFIRMATION_CHECKED = "otp_confirmation_checked"
    OTP_RELEASED = "otp_released"  # an admin released the number's registration (bulk release)
    PASSWORD_REENTERED = "password_reentered"  # the current password re-entered to confirm an action
    CONTRACT_IMPORTED = "contract_imported"


class OtpStatus(StrEnum):
    """Where a number's one-time-password settings stand."""

    UNCHOSEN = "unchosen"  # the customer has not chosen yet (asked at the next login)
    OFF = "off"  # not used
    PENDING = "pending"  # used, the receiving address waits for its mailed link
    ON = "on"  # used and registered: asked at every login


class LinkStatus(StrEnum):
    """What a mailed registration link found."""

    OK = "ok"
    EXPIRED = "expired"
    USED = "used"
    UNKNOWN = "unknown"


class CodeStatus(StrEnum):
    """What a one-time code typed at login found."""

    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    USED = "used"
    TOO_MANY = "too_many"  # the login attempt's last try: a new login is needed
    NONE = "none"  # no code was sent for this login attempt
    INVALIDATED = "invalidated"  # the number's code budget is spent: the password is invalidated
