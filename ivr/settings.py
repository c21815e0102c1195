"""One typed settings object, built once at the entry point and passed down.

Values come from environment variables (prefix ``IVR_``, nested sections with ``__``, e.g.
``IVR_AGI__PORT=573``) and, if ``IVR_CONFIG`` names a TOML file, from that file (environment wins).
Each area owns its section class below; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class CredentialPolicy(BaseModel):
    """Rules of the credential core that an operator may tune (seed 003 gives the defaults)."""

    temporary_validity_seconds: int = 24 * 3600
    temporary_max_failures: int = 3
    permanent_max_failures: int = 10
    permanent_max_age_days: int | None = None  # None: passwords never expire
    otp_code_validity_seconds: int = 300
    otp_code_max_failures: int = 3
    registration_link_validity_seconds: int = 24 * 3600


class AgiSettings(BaseModel):
    """The FastAGI daemon."""

    host: str = "127.0.0.1"
    # Below 1024, so that no unprivileged local user can take the address the dialplan connects to
    # while the daemon is down (bind as root and drop to `run_as_user`, or systemd socket activation).
    port: int = 573
    max_concurrent_calls: int = 300
    # Only these peers may drive the daemon (addresses or networks); then every connection proves
    # it is our Asterisk with the shared secret (Asterisk reads it from ivr-agi.conf: AST_CONFIG()).
    allowed_peers: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    secret: SecretStr | None = None  # IVR_AGI__SECRET; else read from `secret_file`
    secret_file: Path | None = None  # default: <data_dir>/agi-secret, created (0600) if absent
    run_as_user: str | None = None  # drop root privileges to this user once the port is bound
    # A connection must send its AGI environment and prove the secret within this deadline; when
    # `max_pending_connections` are pending, the oldest pending one is dropped for a new one.
    header_timeout_seconds: float = 1.0
    header_max_bytes: int = 8192
    command_timeout_seconds: float = 60.0
    max_pending_connections: int = 1000
    # Password hashes computed at once, in their own threads: each argon2id hash takes 19 MiB, and a
    # burst of confirmations must neither grow the daemon's memory without bound nor hold up the
    # database calls of other callers in the shared thread pool.
    hash_workers: int = 2
    # The hashing threads' nice value (Linux schedules threads by their own): the argon2 work gives
    # way to the event loop that answers every other call's commands (docs/voice.md "Cost per call").
    hash_niceness: int = Field(10, ge=0, le=19)
    # Stamped on this daemon's call records; at start it closes only its own node's open records.
    # Default (None): "<hostname>:<port>". Daemons sharing one database need distinct ids.
    node_id: str | None = None
    # Call records are queued and written in one transaction per batch at most this long after.
    call_record_flush_seconds: float = 0.1


class MenuSettings(BaseModel):
    """Timing and limits of the voice menu."""

    max_wrong_entries: int = 3
    first_digit_timeout_seconds: float = 10.0
    inter_digit_timeout_seconds: float = 5.0
    # Keys this soon after an entry ended belong to it, not to the next step: a lone # after a
    # fixed-length entry (the habit of ending every entry with #) is dropped once, and keys left
    # over from a wrong (overlong) entry that stop "wrong-entry" are dropped and it plays again.
    leftover_key_seconds: float = 1.0
    language: str = "ja"


class AmiSettings(BaseModel):
    """The Asterisk Manager Interface connection the daemon listens on."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ivr-daemon"
    secret: SecretStr = SecretStr("ivr-lab-ami-secret")
    reconnect_seconds: float = 2.0


class WebSettings(BaseModel):
    """The web login endpoint."""

    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = "http://127.0.0.1:8080"
    session_idle_timeout_seconds: int = 15 * 60
    cookie_secure: bool = False
    secret_key: SecretStr = SecretStr("change-me-in-production-ivr-web-secret")
    # `ivr web` lowers its CPU priority by this much (os.nice): beside the FastAGI daemon on one
    # machine, a login flood then cannot starve the callers' password hashes (nice 10). 0: as is.
    niceness: int = Field(default=15, ge=0, le=19)
    # --- limits (web_stub, docs/web.md "Security")
    session_absolute_lifetime_seconds: int = 8 * 3600  # a session ends this long after login
    trusted_proxies: list[str] = []  # addresses/networks whose X-Forwarded-For is believed
    login_failures_per_client: int = 100  # failed logins per client address per window ...
    login_failure_window_seconds: int = 300  # ... (then 429 without checking the password)
    otp_wrong_codes_per_number: int = 10  # wrong one-time codes per number per window ...
    otp_wrong_code_window_seconds: int = 24 * 3600  # ... (the last one invalidates the password)
    otp_mails_per_number: int = 10  # one-time-password mails per number per window
    otp_mail_window_seconds: int = 3600
    confirmation_failures_per_number: int = 5  # wrong confirmation ID/password per window ...
    confirmation_failure_window_seconds: int = 24 * 3600  # ... (then OTP settings locked)
    max_form_bytes: int = 16 * 1024  # request body of a form page or the JSON API
    max_login_bytes: int = 4 * 1024  # request body of the login form and POST /api/login
    max_upload_bytes: int = 2 * 1024 * 1024  # request body of a CSV upload page
    max_secret_chars: int = 64  # longer passwords, codes or confirmation secrets are not hashed


class SmtpSettings(BaseModel):
    """Outgoing mail (one-time passwords, registration links)."""

    host: str = "127.0.0.1"
    port: int = 8025
    username: str | None = None
    password: SecretStr | None = None
    start_tls: bool = False
    use_tls: bool = False
    timeout_seconds: float = 10.0
    sender: str = "noreply@settings.example.jp"


class LabSettings(BaseModel):
    """The local Asterisk lab (root filesystem, ports)."""

    cache_dir: Path = Path("/var/cache/ivr-lab")  # IVR_LAB__CACHE_DIR
    run_dir: Path = PROJECT_ROOT / ".lab"
    mirror: str | None = None  # Debian mirror; None: read from the host's apt sources
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    rtp_port_start: int = 10000
    rtp_port_end: int = 10999
    service_number: str = "0363044747"
    carrier_match: str = "127.0.0.1"  # source address(es) of the trusted carrier trunk
    agi_fallback_port: int = 574  # second daemon address tried by the dialplan (also below 1024)
    max_call_seconds: int = 600  # absolute call timeout
    softphone_password: SecretStr = SecretStr("lab-softphone-4747")
    softphone_caller_id: str = "0300001111"  # caller ID presented for the lab softphone
    ready_timeout_seconds: float = 30.0
    sipp_binary: str = "sipp"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IVR_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = PROJECT_ROOT / "data"
    database_url: str | None = None  # default: SQLite file in data_dir
    log_format: str = "json"  # json | console
    log_level: str = "info"

    credentials: CredentialPolicy = Field(default_factory=CredentialPolicy)
    agi: AgiSettings = Field(default_factory=AgiSettings)
    menu: MenuSettings = Field(default_factory=MenuSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    lab: LabSettings = Field(default_factory=LabSettings)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'ivr.sqlite3'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("IVR_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,128}")


class SecretError(ValueError):
    """The FastAGI shared secret is missing or unusable."""


def agi_secret(settings: Settings) -> str:
    """The FastAGI shared secret: `agi.secret`, else the secret file (created with a new random
    secret, mode 0600, when it does not exist yet). The daemon and the lab's dialplan both call
    this, so they agree without the secret appearing in any command line or URL."""
    if settings.agi.secret is not None:
        value = settings.agi.secret.get_secret_value()
    else:
        path = settings.agi.secret_file or settings.data_dir / "agi-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(tmp, path)  # atomic: whoever comes first wins, the other reads theirs
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        value = path.read_text(encoding="utf-8").strip()
    if not SECRET_PATTERN.fullmatch(value):
        raise SecretError("the FastAGI secret must be 32 to 128 characters of A-Z a-z 0-9 _ -")
    return value


def load_settings(**overrides: Any) -> Settings:
    """Build the settings object (entry points only)."""
    return Settings(**overrides)
