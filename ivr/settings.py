"""The voice's settings sections: the FastAGI daemon, the menu, AMI and the lab.

The root (`stack.settings.Settings`) composes them with the web's and the notices' sections into the
one settings object. What the voice needs of that object is `VoiceSettings`, a protocol: the voice
never imports the root.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, SecretStr, field_validator


def absolute_path(path: Path) -> Path:
    """A directory setting made absolute when the settings are built: a relative one (the defaults
    ``data``, ``.lab``) is relative to the working directory the process started in, not to where
    the code is installed, and stays where it was if the process changes directory later."""
    return path.expanduser().resolve()


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
    # Accepts per peer address (a token bucket): one Asterisk's reconnecting burst is a few hundred
    # at once and 60/s for 300 calls in 5 s; beyond, connections are closed before anything runs.
    accept_per_second: float = Field(200.0, gt=0)
    accept_burst: int = Field(600, ge=1)
    # Refused connections are counted; each reason is logged at most once per interval.
    reject_log_interval_seconds: float = Field(10.0, ge=0)
    header_timeout_seconds: float = 1.0
    header_max_bytes: int = 8192
    command_timeout_seconds: float = 60.0
    max_pending_connections: int = 1000
    # Password hashes computed at once, in their own threads: each argon2id hash takes 19 MiB, and a
    # burst of confirmations must neither grow the daemon's memory without bound nor hold up the
    # database calls of other callers in the shared thread pool. None: one per core, at nice
    # `hash_niceness`, so that a burst of saves uses every core the calls leave idle while the event
    # loop keeps the priority (chosen on SIPp callers through Asterisk: docs/voice.md "The hash pool").
    hash_workers: int | None = Field(None, ge=1)
    # The hashing threads' nice value (Linux schedules threads by their own): the argon2 work gives
    # way to the event loop that answers every other call's commands (docs/voice.md "Cost per call").
    hash_niceness: int = Field(10, ge=0, le=19)
    # Stamped on this daemon's call records; at start it closes only its own node's open records.
    # Default (None): "<hostname>:<port>". Daemons sharing one database need distinct ids.
    node_id: str | None = None
    # Call records are queued and written in one transaction per batch at most this long after.
    call_record_flush_seconds: float = 0.1
    # On SIGTERM / SIGINT the daemon stops accepting, lets calls in progress finish this long, then
    # cuts the rest (the dialplan plays them the apology). `ivr serve --grace` overrides it.
    shutdown_grace_seconds: float = 15.0
    # Prometheus metrics, /healthz and /readyz over HTTP (docs/deploy.md). None: not served.
    # Loopback by default: the scraper runs on the node or reaches it through its own proxy.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None


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
    # A temporary password may not be the last 8 digits of the caller's or the target's number
    # (runs of 4 identical or consecutive digits are always refused).
    refuse_own_number_password: bool = True
    # No dead air while the daemon waits (the line's lookup, the number's check, the password's
    # save): a wait longer than this gets the progress sound (a short prompt, then a soft tone)
    # until it ends, so no caller hears more than ~1 s of silence after an entry.
    progress_after_seconds: float = Field(1.0, gt=0)
    # Beyond this the caller hears the apology instead of waiting on; a save is abandoned before
    # it commits (docs/voice.md "No dead air": why 20 s).
    max_wait_seconds: float = Field(20.0, gt=0)


class AmiSettings(BaseModel):
    """The Asterisk Manager Interface connection the daemon listens on."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "ivr-daemon"
    # IVR_AMI__SECRET; else read from `secret_file` (default <data_dir>/ami-secret, created 0600 with
    # a random secret on first use, like the FastAGI one): `ivr lab render` writes the same value
    # into manager.conf. A value shipped anywhere (the old lab constant) refuses to start.
    secret: SecretStr | None = None
    secret_file: Path | None = None
    reconnect_seconds: float = 2.0


class LabSettings(BaseModel):
    """The local Asterisk lab (root filesystem, ports)."""

    cache_dir: Path = Path("/var/cache/ivr-lab")  # IVR_LAB__CACHE_DIR
    # The lab's state, logs and rendered configuration; relative: to the working directory (made
    # absolute when the settings are built), so `ivr lab up` from the repository uses ./.lab.
    run_dir: Path = Field(default=Path(".lab"), validate_default=True)
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
    # Asterisk's systemname, the prefix of its uniqueids (call ids): each Asterisk of a platform
    # sharing one database needs its own (docs/deploy.md). None: no prefix (one Asterisk).
    system_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$")
    # hagi:// (FastAGI by DNS SRV): with a domain, the dialplan's first address is
    # hagi://<domain>/temp-password, and `ivr lab up` serves _agi._tcp.<domain> with dnsmasq on
    # dns_address:53 (targets: agi_srv_ports, first = priority 10; default: agi.port, then the
    # fallback port). None: the two-address form (agi://host:port, then the fallback port).
    agi_srv_domain: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9-]+)+$"
    )
    agi_srv_ports: list[int] = []
    dns_address: str = "127.0.0.153"

    _absolute_run_dir = field_validator("run_dir")(absolute_path)


SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,128}")


class VoiceSettings(Protocol):
    """What the voice reads of the one settings object (`stack.settings.Settings` has it)."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def log_format(self) -> str: ...
    @property
    def log_level(self) -> str: ...
    @property
    def agi(self) -> AgiSettings: ...
    @property
    def menu(self) -> MenuSettings: ...
    @property
    def ami(self) -> AmiSettings: ...
    @property
    def lab(self) -> LabSettings: ...
    @property
    def effective_database_url(self) -> str: ...


class SecretError(ValueError):
    """The FastAGI or AMI secret is missing or unusable."""


def agi_secret(settings: VoiceSettings) -> str:
    """The FastAGI shared secret: `agi.secret`, else the secret file (created with a new random
    secret, mode 0600, when it does not exist yet). The daemon and the lab's dialplan both call
    this, so they agree without the secret appearing in any command line or URL."""
    agi = settings.agi
    return _secret("FastAGI", agi.secret, agi.secret_file or settings.data_dir / "agi-secret")


#: AMI secrets that were shipped in this repository: known to anyone, refused.
SHIPPED_AMI_SECRETS = frozenset({"ivr-lab-ami-secret"})


def ami_secret(settings: VoiceSettings) -> str:
    """The AMI account's secret: `ami.secret`, else the secret file (created like the FastAGI
    one). The daemon's listener and the rendered manager.conf both call this."""
    ami = settings.ami
    if ami.secret is not None and ami.secret.get_secret_value() in SHIPPED_AMI_SECRETS:
        raise SecretError(
            "IVR_AMI__SECRET is a value shipped with this software: set a random one, or unset it"
        )
    return _secret("AMI", ami.secret, ami.secret_file or settings.data_dir / "ami-secret")


def _secret(what: str, configured: SecretStr | None, path: Path) -> str:
    if configured is not None:
        value = configured.get_secret_value()
    else:
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
        raise SecretError(f"the {what} secret must be 32 to 128 characters of A-Z a-z 0-9 _ -")
    return value


def hash_pool_size(agi: AgiSettings, cpu_count: int | None = None) -> int:
    """The hashing threads of a daemon: ``agi.hash_workers``, or one per core."""
    if agi.hash_workers is not None:
        return agi.hash_workers
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 2)
    return max(1, cores)
