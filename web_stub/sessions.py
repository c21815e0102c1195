"""Web sessions as the pages see them, stored through the backend in the credential database.

The browser holds a random 256-bit value (HttpOnly cookie ``ivr_session``); the database holds only
its SHA-256 (``core.web_sessions``), so a copy of the database opens no session. Everything else
(who logged in, which step of the login they are at) is in the row; the CSRF token is derived from
the cookie value, and the few secrets a session carries for a moment (a registration draft's
confirmation ID and password) are sealed in the row with AES-256-GCM under a key derived from the
cookie value too.

Only a login creates a session: the anonymous login form carries a signed double-submit token
(:class:`FormToken`) instead, so a visitor without a cookie costs no row and no write.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.secrets import constant_time_equals
from core.web_sessions import session_id_hash
from web_stub.stages import Stage

__all__ = [
    "Clock",
    "Draft",
    "FormToken",
    "SessionData",
    "Stage",
    "WebSession",
    "new_cookie_value",
    "seal",
    "unseal",
]

Clock = Callable[[], datetime]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_cookie_value() -> str:
    return secrets.token_urlsafe(32)


def _derive(cookie: str, purpose: bytes) -> bytes:
    return hmac.new(cookie.encode("utf-8"), purpose, hashlib.sha256).digest()


#: the sealed format: a version byte, a 96-bit random nonce, then AES-256-GCM's ciphertext and tag
SEAL_VERSION = b"\x02"
_SEAL_CONTEXT = b"ivr-web-session-draft"  # authenticated with every sealed value


def seal(cookie: str, plaintext: bytes) -> str:
    """Encrypt and authenticate with AES-256-GCM (``cryptography``), under a key derived from the
    cookie value: the database row alone opens nothing."""
    nonce = os.urandom(12)
    ciphertext = AESGCM(_derive(cookie, b"seal")).encrypt(nonce, plaintext, _SEAL_CONTEXT)
    return _b64(SEAL_VERSION + nonce + ciphertext)


def unseal(cookie: str, sealed: str) -> bytes | None:
    """The plaintext, or None for anything that is not a value sealed with this cookie (a value
    sealed before AES-GCM, another session's, a tampered one): the draft is dropped."""
    try:
        raw = _unb64(sealed)
    except ValueError:
        return None
    if len(raw) < 1 + 12 + 16 or raw[:1] != SEAL_VERSION:
        return None
    try:
        return AESGCM(_derive(cookie, b"seal")).decrypt(raw[1:13], raw[13:], _SEAL_CONTEXT)
    except InvalidTag:
        return None


@dataclass
class Draft:
    """A registration or address change waiting for its confirmation page. Its confirmation ID
    and password are not here: they are the session's sealed ``secrets``."""

    email: str
    confirmation_password_length: int
    address_only: bool


@dataclass
class SessionData:
    """What a session remembers between pages (stored as JSON in the row; never a secret)."""

    otp_status: str = "unchosen"  # "unchosen" | "off" | "pending" | "on", refreshed from the store
    otp_email: str | None = None
    login_attempt_id: str | None = None  # the one-time-password step of this login (until home)
    change_reason: str | None = None  # "temporary" | "expired": why the password must change
    two_step: bool = False  # this login passed a one-time password (P23)
    confirmation_checked: bool = False  # the confirmation ID and password were checked (P22)
    release_checked: bool = False  # the admin re-entered the password for the bulk release
    bulk: bool = False  # an admin of 33 numbers or more (the bulk menu items)
    draft: Draft | None = None

    def to_json(self) -> str:
        """The fields that differ from their defaults (a small row; defaults come back on load)."""
        default = asdict(SessionData())
        changed = {k: v for k, v in asdict(self).items() if v != default[k]}
        return json.dumps(changed, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> SessionData:
        """The stored JSON; keys this version does not know are dropped, missing ones default."""
        raw = json.loads(text or "{}")
        if not isinstance(raw, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        draft = values.pop("draft", None)
        data = cls(**values)
        if isinstance(draft, dict):
            try:
                data.draft = Draft(**draft)
            except TypeError:
                data.draft = None
        return data


@dataclass
class WebSession:
    """One logged-in browser. ``secrets`` never reach the row in clear (sealed)."""

    cookie: str
    stage: Stage
    number: str
    contract_id: int
    unit: str
    role: str
    created_at: datetime
    data: SessionData = field(default_factory=SessionData)
    secrets: dict[str, str] = field(default_factory=dict)
    stored_hash: str | None = None  # the row's key as loaded (None: not stored yet)
    ended: bool = False
    resnapshot: bool = False  # this session replaced its own credential: adopt the new generation
    loaded_state: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.stage != Stage.ANONYMOUS and not self.ended

    @property
    def id_hash(self) -> str:
        return session_id_hash(self.cookie)

    @property
    def csrf_token(self) -> str:
        return _b64(_derive(self.cookie, b"csrf"))

    def rotate(self) -> None:
        """A new cookie value (and so a new CSRF token and row key): a planted value is worthless."""
        self.cookie = new_cookie_value()

    def end(self) -> None:
        self.ended = True

    def state(self) -> str:
        return json.dumps([self.stage, asdict(self.data), self.secrets], sort_keys=True, ensure_ascii=False)

    @property
    def needs_save(self) -> bool:
        return (
            self.ended
            or self.stored_hash is None
            or self.stored_hash != self.id_hash
            or self.resnapshot
            or self.loaded_state != self.state()
        )

    def sealed(self) -> str | None:
        if not self.secrets:
            return None
        return seal(self.cookie, json.dumps(self.secrets).encode("utf-8"))


class FormToken:
    """The signed double-submit token of forms shown without a session (the login form, the mailed
    link): a random value in an HttpOnly cookie, and its HMAC under the site key in the form."""

    COOKIE = "ivr_form"

    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"ivr-web-form\x00" + secret_key.encode("utf-8")).digest()

    @staticmethod
    def new_value() -> str:
        return secrets.token_urlsafe(32)

    def token_for(self, value: str) -> str:
        return _b64(hmac.digest(self._key, value.encode("utf-8"), "sha256"))

    def valid(self, value: str | None, token: str) -> bool:
        if not value or not token or len(value) > 128:
            return False
        return constant_time_equals(token, self.token_for(value))
