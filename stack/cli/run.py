"""`ivr run`: the whole stack on the embedded default, following the call log.

Applies the schema, loads the sample contracts, starts the lab Asterisk, the FastAGI daemon and the
web login, then follows the call log until Ctrl-C, and stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stack.processes import stop_processes, stop_signals_ignored
from stack.settings import Settings

STEP_STOP_SECONDS = 30  # `ivr lab up` / `down` stopped half-way: time to clean up before SIGKILL
#: beyond the daemon's grace period (calls in progress finish), time to write its last records
DAEMON_STOP_MARGIN_SECONDS = 10


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the whole stack (lab Asterisk, daemon, web, sample contracts) and follow the call log",
    )
    parser.add_argument("--no-sample", action="store_true", help="do not load the sample contracts")
    parser.add_argument("--no-web", action="store_true", help="do not start the web login")
    parser.add_argument(
        "--no-mail-sink",
        action="store_true",
        help="do not start the local SMTP sink (use the SMTP server the settings name)",
    )
    parser.add_argument(
        "--exit-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this many seconds (for smoke tests)",
    )
    parser.set_defaults(func=run_stack)


def _ivr(*args: str) -> list[str]:
    return [sys.executable, "-m", "stack.cli.main", *args]


def _is_listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port``, read from the kernel's table.

    Connecting to find out would show up in the daemon's log as a rejected AGI connection.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def _wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _is_listening(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def _start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start one process of the stack with its output in its own log file."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _step(argv: list[str], env: dict[str, str]) -> None:
    """Run one set-up or tear-down command to its end. Stopped meanwhile (Ctrl-C, SIGTERM), the
    command is stopped the same way and waited for (not killed half-way through starting Asterisk),
    then the stop goes on."""
    # Its own session: Ctrl-C in the terminal reaches it only through us, once.
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        stop_processes([process], timeout=STEP_STOP_SECONDS)
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, argv)


def run_stack(args: argparse.Namespace, settings: Settings) -> int:
    """Until Ctrl-C or SIGTERM (both raise KeyboardInterrupt here: `stack.processes`), then stop
    every process started, the web and the daemon first, and the lab Asterisk last."""
    env = dict(os.environ)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    lab_started = False
    try:
        _step(_ivr("db", "upgrade"), env)
        if not args.no_sample:
            _step(_ivr("contracts", "import", "--sample"), env)
            _step(_ivr("notices", "sample"), env)  # a sample support ID
        lab_started = True  # from its first moment: a stop half-way through still takes it down
        _step(_ivr("lab", "up"), env)
        maildir = settings.data_dir / "maildir"
        if not args.no_mail_sink and not _is_listening(settings.smtp.port):
            # One-time passwords and registration links land here as files (a Maildir), so the web
            # login works end to end on one machine without a real mail server.
            children.append(
                _start(
                    [
                        sys.executable,
                        "-m",
                        "aiosmtpd",
                        "-n",
                        "-u",
                        "-l",
                        f"{settings.smtp.host}:{settings.smtp.port}",
                        "-c",
                        "aiosmtpd.handlers.Mailbox",
                        str(maildir),
                    ],
                    env,
                    logs / "mail.log",
                )
            )
            if not _wait_listening(settings.smtp.port, 10):
                print("ivr run: the local SMTP sink did not start listening", file=sys.stderr)
                return 1
        children.append(_start(_ivr("serve"), env, logs / "daemon.jsonl"))
        if not _wait_listening(settings.agi.port, 20):
            print(
                f"ivr run: the FastAGI daemon did not start listening; see {logs}/daemon.jsonl",
                file=sys.stderr,
            )
            return 1
        if not args.no_web:
            children.append(_start(_ivr("web"), env, logs / "web.log"))
            if not _wait_listening(settings.web.port, 20):
                print(f"ivr run: the web login did not start listening; see {logs}/web.log", file=sys.stderr)
                return 1
        # the support site, the notice delivery worker and its bounce listener (docs/notices.md)
        children.append(_start(_ivr("notices", "serve"), env, logs / "notices.jsonl"))
        if not _wait_listening(settings.notices.web_port, 20):
            print(f"ivr run: the notices process did not start; see {logs}/notices.jsonl", file=sys.stderr)
            return 1
        print(
            "\n".join(
                [
                    "",
                    "The stack is up:",
                    f"  service number  {settings.lab.service_number} "
                    f"(SIP {settings.lab.sip_host}:{settings.lab.sip_port})",
                    f"  FastAGI daemon  {settings.agi.host}:{settings.agi.port}",
                    f"  web login       {settings.web.base_url}/login" if not args.no_web else "",
                    f"  mail (OTP)      {maildir}/new" if not args.no_mail_sink else "",
                    f"  support site    {settings.notices.base_url}/support/ (log: notices.jsonl)",
                    '  try:            .venv/bin/ivr call --from 0300001111 --dtmf "1,12345678,12345678"',
                    f"  logs            {logs}/daemon.jsonl (the call log as JSON lines), web.log, mail.log",
                    "Following the call log (Ctrl-C or SIGTERM stops everything):",
                    "",
                ]
            ),
            flush=True,
        )
        follower = subprocess.Popen(_ivr("calls", "--follow"), env=env)
        children.append(follower)
        deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
        while True:
            for child in children:
                if child.poll() is not None:
                    print(f"ivr run: a process of the stack exited with {child.returncode}", file=sys.stderr)
                    return 1
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        with stop_signals_ignored():
            stop_processes(
                children[::-1], timeout=settings.agi.shutdown_grace_seconds + DAEMON_STOP_MARGIN_SECONDS
            )
            if lab_started:
                subprocess.run(_ivr("lab", "down"), env=env, check=False)
