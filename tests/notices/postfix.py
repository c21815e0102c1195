"""A private postfix instance on loopback for tests: its own configuration directory, queue and
log (``postfix -c DIR``), nothing system-wide. It relays every mail to ``relay_port`` and the
return-path domain's mail (the DSNs) to ``bounce_port``; a short ``maximal_queue_lifetime`` makes
a deferred mail give up (and bounce) within seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import scratch_root

POSTFIX = Path("/usr/sbin/postfix")


@dataclass
class Postfix:
    base: Path
    port: int

    @property
    def config(self) -> Path:
        return self.base / "etc"

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        # postfix prints its errors to a terminal only; they are in the maillog either way
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.config), *args], capture_output=True, text=True, timeout=60
        )


def usable() -> str | None:
    if not POSTFIX.exists():
        return "postfix is not installed (scripts/bootstrap installs it)"
    if os.geteuid() != 0:
        return "a private postfix instance needs root"
    return None


def start_postfix(
    *, port: int, relay_port: int, bounce_domain: str, bounce_port: int, queue_lifetime: str = "2s"
) -> Postfix:
    base = Path(tempfile.mkdtemp(prefix="ivr-postfix-", dir=scratch_root()))
    base.chmod(0o755)  # the postfix user walks into it
    for name in ("etc", "spool", "data"):
        (base / name).mkdir()
    shutil.chown(base / "data", "postfix")
    main_cf = f"""
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = mta.notices.test
mydomain = notices.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
transport_maps = inline:{{ {bounce_domain}=smtp:[127.0.0.1]:{bounce_port} }}
smtp_host_lookup = native
disable_dns_lookups = yes
maximal_queue_lifetime = {queue_lifetime}
bounce_queue_lifetime = {queue_lifetime}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
smtp_connect_timeout = 5s
biff = no
"""
    (base / "etc" / "main.cf").write_text(main_cf)
    master = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line.startswith("smtp ") and len(fields) > 1 and fields[1] == "inet":
            line = f"127.0.0.1:{port} inet n - n - - smtpd"
        elif fields and not line.startswith(("#", " ", "\t")) and len(fields) >= 8 and fields[4] == "y":
            fields[4] = "n"  # no chroot: the instance lives in a temporary directory
            line = " ".join(fields)
        master.append(line)
    (base / "etc" / "master.cf").write_text("\n".join(master) + "\n")
    # postfix waits until a configuration file is a second or two old before it trusts its
    # contents ("pausing to let ... cool down"): written just now, they are dated a minute back
    past = time.time() - 60
    for name in ("main.cf", "master.cf"):
        os.utime(base / "etc" / name, (past, past))
    instance = Postfix(base, port)
    started = instance.command("start")
    if started.returncode != 0:
        raise RuntimeError(f"postfix did not start:\n{instance.log()[-2000:]}")
    deadline = time.monotonic() + 15
    while "daemon started" not in instance.log():
        if time.monotonic() > deadline:
            raise RuntimeError(f"postfix did not start:\n{instance.log()[-2000:]}")
        time.sleep(0.1)
    return instance


def stop_postfix(instance: Postfix) -> None:
    pid_file = instance.base / "spool" / "pid" / "master.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
    instance.command("stop")
    deadline = time.monotonic() + 10
    while pid is not None and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(instance.base, ignore_errors=True)
