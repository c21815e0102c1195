"""One typed settings object, built once at the entry point and passed down.

Values come from environment variables (prefix ``IVR_``, nested sections with ``__``, e.g.
``IVR_AGI__PORT=4573``) and, if ``IVR_CONFIG`` names a TOML file, from that file (environment wins).
Each area owns its section class below; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import os
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
    port: int = 4573
    max_concurrent_calls: int = 200
    header_timeout_seconds: float = 5.0
    header_max_bytes: int = 8192
    command_timeout_seconds: float = 60.0
    max_pending_connections: int = 100  # connections still sending their AGI environment
    # Password hashes computed at once, in their own threads: each argon2id hash takes 19 MiB, and a
    # burst of confirmations must neither grow the daemon's memory without bound nor hold up the
    # database calls of other callers in the shared thread pool.
    hash_workers: int = 2


class MenuSettings(BaseModel):
    """Timing and limits of the voice menu."""

    max_wrong_entries: int = 3
    first_digit_timeout_seconds: float = 10.0
    inter_digit_timeout_seconds: float = 5.0
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
    agi_fallback_port: int = 4574  # second daemon address tried by the dialplan
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


def load_settings(**overrides: Any) -> Settings:
    """Build the settings object (entry points only)."""
    return Settings(**overrides)
