"""Render the Asterisk configuration (asterisk.conf.d/ and dialplan/) for one deployment.

The files (package data, `ivr.assets`; the repository's top-level directories link there) are what
an operator deploys; their ``@NAME@`` placeholders (ports, paths, the service number, secrets) are
filled in here. A placeholder left unfilled is an error,
never a silently broken Asterisk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from ivr.assets import ASTERISK_CONFIG_DIR, DIALPLAN_DIR
from ivr.settings import VoiceSettings, agi_secret, ami_secret

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class ConfigError(ValueError):
    """The configuration could not be rendered."""


@dataclass(frozen=True)
class AsteriskPaths:
    """Asterisk's directories, as Asterisk sees them (inside the lab's chroot)."""

    etc: str
    data: str
    varlib: str
    spool: str
    run: str
    log: str

    @property
    def asterisk_conf(self) -> str:
        return f"{self.etc}/asterisk.conf"


def e164_without_plus(national: str, country_code: str = "81") -> str:
    """0363044747 -> 81363044747 (the form a carrier may send in the request URI)."""
    digits = national.strip()
    if not digits.isdigit():
        raise ConfigError(f"service number must be digits, got {national!r}")
    return country_code + digits[1:] if digits.startswith("0") else digits


def agi_host(settings: VoiceSettings) -> str:
    return settings.agi.host if settings.agi.host not in ("0.0.0.0", "::") else "127.0.0.1"


def placeholder_values(
    settings: VoiceSettings, paths: AsteriskPaths, agi_ports: tuple[int, int]
) -> dict[str, str]:
    lab = settings.lab
    return {
        "ETC_DIR": paths.etc,
        "DATA_DIR": paths.data,
        "VARLIB_DIR": paths.varlib,
        "SPOOL_DIR": paths.spool,
        "RUN_DIR": paths.run,
        "LOG_DIR": paths.log,
        "SIP_HOST": lab.sip_host,
        "SIP_PORT": str(lab.sip_port),
        "RTP_PORT_START": str(lab.rtp_port_start),
        "RTP_PORT_END": str(lab.rtp_port_end),
        "CARRIER_MATCH": lab.carrier_match,
        "SOFTPHONE_CALLER_ID": lab.softphone_caller_id,
        "SOFTPHONE_PASSWORD": lab.softphone_password.get_secret_value(),
        "AMI_HOST": settings.ami.host,
        "AMI_PORT": str(settings.ami.port),
        "AMI_USERNAME": settings.ami.username,
        "AMI_SECRET": ami_secret(settings),
        "SERVICE_NUMBER": lab.service_number,
        "SERVICE_NUMBER_E164": e164_without_plus(lab.service_number),
        "AGI_HOST": agi_host(settings),
        "AGI_PORT": str(agi_ports[0]),
        "AGI_PRIMARY_URI": (
            f"hagi://{lab.agi_srv_domain}"
            if lab.agi_srv_domain
            else f"agi://{agi_host(settings)}:{agi_ports[0]}"
        ),
        "AGI_FALLBACK_PORT": str(agi_ports[1]),
        "MAX_CALL_SECONDS": str(lab.max_call_seconds),
        "AGI_SECRET": agi_secret(settings),
        "SYSTEM_NAME_OPTION": (
            f"systemname = {lab.system_name}" if lab.system_name else "; systemname: not set (one Asterisk)"
        ),
    }


def render_text(template: str, values: Mapping[str, str], *, name: str = "template") -> str:
    """Fill in ``@NAME@`` placeholders (comment lines, starting with ``;``, are left as they are)."""
    for key, value in values.items():
        if any(c in value for c in "\r\n"):
            raise ConfigError(f"{name}: value of @{key}@ contains a line break")
    out: list[str] = []
    missing: set[str] = set()
    for line in template.splitlines(keepends=True):
        if line.lstrip().startswith(";"):
            out.append(line)
            continue
        missing.update(m.group(1) for m in _PLACEHOLDER.finditer(line) if m.group(1) not in values)
        out.append(_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), line))
    if missing:
        raise ConfigError(f"{name}: no value for {', '.join('@' + m + '@' for m in sorted(missing))}")
    return "".join(out)


def template_files() -> list[Traversable]:
    """The configuration templates: every ``*.conf`` of asterisk.conf.d/, then of dialplan/ (a
    directory with none, as in a package built without its data files, is an error)."""
    found: list[Traversable] = []
    for directory in (ASTERISK_CONFIG_DIR, DIALPLAN_DIR):
        files = [f for f in directory.iterdir() if f.name.endswith(".conf")] if directory.is_dir() else []
        if not files:
            raise ConfigError(f"no configuration templates in {directory}")
        found += sorted(files, key=lambda f: f.name)
    return found


def render_config(dest: Path, values: Mapping[str, str]) -> list[Path]:
    """Render every template into ``dest`` (created); returns the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for source in template_files():
        target = dest / source.name
        text = render_text(source.read_text(encoding="utf-8"), values, name=source.name)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(target)
        written.append(target)
    return written
