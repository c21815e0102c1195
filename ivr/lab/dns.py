"""The lab's DNS server for ``hagi://`` (FastAGI located by DNS SRV, docs/deploy.md).

With `LabSettings.agi_srv_domain` set, the dialplan's first address is
``hagi://<domain>/temp-password``: Asterisk looks up ``_agi._tcp.<domain>`` and tries the targets
in priority order. The lab serves those records with Debian's dnsmasq (package dnsmasq-base: the
binary, no service) on `LabSettings.dns_address` port 53, authoritative for nothing else and
forwarding nothing, and points the root filesystem's resolv.conf at it.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

DNSMASQ = "dnsmasq"
SRV_SERVICE = "_agi._tcp"
FIRST_PRIORITY, PRIORITY_STEP = 10, 10
RESOLV_MARK = "# ivr lab: the lab's DNS server first (hagi:// SRV records), then the host's"


def srv_records(domain: str, host: str, ports: Sequence[int]) -> list[tuple[str, str, int, int]]:
    """(service name, target, port, priority) for each daemon port, first port first."""
    return [
        (f"{SRV_SERVICE}.{domain}", f"agi-{index}.{domain}", port, FIRST_PRIORITY + index * PRIORITY_STEP)
        for index, port in enumerate(ports)
    ]


def dnsmasq_argv(
    *, address: str, domain: str, host: str, ports: Sequence[int], binary: str = DNSMASQ
) -> list[str]:
    """dnsmasq in the foreground, on ``address``:53 only, answering the SRV records (and the A
    records of their targets) and refusing to forward anything."""
    argv = [
        binary,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        f"--listen-address={address}",
        "--port=53",
        "--pid-file=",
        "--user=nobody",
        "--log-facility=-",
        "--log-queries",
        f"--local=/{domain}/",  # never asked upstream
    ]
    targets: dict[str, str] = {}
    for name, target, port, priority in srv_records(domain, host, ports):
        argv.append(f"--srv-host={name},{target},{port},{priority},0")
        targets[target] = host
    argv += [f"--host-record={target},{address_of}" for target, address_of in targets.items()]
    return argv


def listening(address: str, port: int = 53) -> bool:
    """Whether a UDP socket is bound to ``address``:``port`` (read from the kernel's table, so the
    check sends no query)."""
    packed = ipaddress.IPv4Address(address).packed[::-1].hex().upper()
    wanted = f"{packed}:{port:04X}"
    try:
        with open("/proc/net/udp") as rows:
            next(rows, None)
            return any(row.split()[1] == wanted for row in rows if len(row.split()) > 1)
    except OSError:
        return False


def point_resolv_conf_at(root: Path, address: str) -> None:
    """The root filesystem's /etc/resolv.conf: the lab's DNS server first, then the servers the
    file named before (a lookup of anything else goes on to them at once: the lab's server answers
    only its domain and refuses the rest). Idempotent: every lab writes the same content."""
    path = root / "etc" / "resolv.conf"
    try:
        before = path.read_text()
    except OSError:
        before = ""
    kept = [
        line
        for line in before.splitlines()
        if line.strip() and line.strip() != RESOLV_MARK and line.split()[:2] != ["nameserver", address]
    ]
    text = "\n".join([RESOLV_MARK, f"nameserver {address}", *kept]) + "\n"
    if text != before:
        tmp = path.with_name(".resolv.conf.ivr-lab")
        tmp.write_text(text)
        tmp.replace(path)


def dnsmasq_binary() -> str | None:
    return shutil.which(DNSMASQ) or next(
        (str(p) for p in (Path("/usr/sbin/dnsmasq"), Path("/sbin/dnsmasq")) if p.exists()), None
    )


def address_free(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 53))
        except OSError:
            return False
    return True
