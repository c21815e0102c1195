"""One typed settings object, built once at the entry point and passed down.

Values come from environment variables (prefix ``IVR_``, nested sections with ``__``, e.g.
``IVR_AGI__PORT=573``) and, if ``IVR_CONFIG`` names a TOML file, from that file (environment wins).
Each package owns its sections (``ivr.settings``: agi, menu, ami, lab; ``web_stub.settings``: web,
smtp; ``notices.settings``: notices); this module, the composition root's, puts them together, with
what they share (the data directory, the database, the log, the credential rules). Nothing reads
the environment anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ivr.settings import AgiSettings, AmiSettings, LabSettings, MenuSettings, absolute_path
from notices.settings import NoticeSettings
from web_stub.settings import SmtpSettings, WebSettings


class CredentialPolicy(BaseModel):
    """Rules of the credential core that an operator may tune (the operator guide gives the defaults)."""

    temporary_validity_seconds: int = 24 * 3600
    temporary_max_failures: int = 3
    permanent_max_failures: int = 10
    permanent_max_age_days: int | None = None  # None: passwords never expire
    otp_code_validity_seconds: int = 300
    otp_code_max_failures: int = 3
    registration_link_validity_seconds: int = 24 * 3600


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IVR_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # The SQLite file, the FastAGI secret file, `ivr run`'s logs and mail; relative: to the working
    # directory (made absolute when the settings are built), so scripts/run uses the repository's data/.
    data_dir: Path = Field(default=Path("data"), validate_default=True)
    database_url: str | None = None  # default: SQLite file in data_dir
    log_format: str = "json"  # json | console
    log_level: str = "info"

    credentials: CredentialPolicy = Field(default_factory=CredentialPolicy)
    agi: AgiSettings = Field(default_factory=AgiSettings)
    menu: MenuSettings = Field(default_factory=MenuSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    notices: NoticeSettings = Field(default_factory=NoticeSettings)
    lab: LabSettings = Field(default_factory=LabSettings)

    _absolute_data_dir = field_validator("data_dir")(absolute_path)

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
