"""`ivr run`: the whole stack on the embedded default, following the call log.

Applies the schema, loads the sample contracts, starts the lab Asterisk, the FastAGI daemon and the
web login, then follows the call log until Ctrl-C, and stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from ivr.settings import Settings


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
    return [sys.executable, "-m", "ivr.cli.main", *args]


def _wait_port(host: str, port: int, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def run_stack(args: argparse.Namespace, settings: Settings) -> int:
    env = dict(os.environ)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(_ivr("db", "upgrade"), check=True, env=env)
    if not args.no_sample:
        subprocess.run(_ivr("contracts", "import", "--sample"), check=True, env=env)
    subprocess.run(_ivr("lab", "up"), check=True, env=env)
    children: list[subprocess.Popen[bytes]] = []
    try:
        maildir = settings.data_dir / "maildir"
        if not args.no_mail_sink and not _wait_port(settings.smtp.host, settings.smtp.port, 0.1):
            # One-time passwords and registration links land here as files (a Maildir), so the web
            # login works end to end on one machine without a real mail server.
            children.append(
                subprocess.Popen(
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
                    env=env,
                )
            )
            if not _wait_port(settings.smtp.host, settings.smtp.port, 10):
                print("ivr run: the local SMTP sink did not start listening", file=sys.stderr)
                return 1
        children.append(subprocess.Popen(_ivr("serve"), env=env))
        if not _wait_port(settings.agi.host, settings.agi.port, 20):
            print("ivr run: the FastAGI daemon did not start listening", file=sys.stderr)
            return 1
        if not args.no_web:
            children.append(subprocess.Popen(_ivr("web"), env=env))
            if not _wait_port(settings.web.host, settings.web.port, 20):
                print("ivr run: the web login did not start listening", file=sys.stderr)
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
                    '  try:            .venv/bin/ivr call --from 0300001111 --dtmf "1,12345678,12345678"',
                    "Following the call log (Ctrl-C stops everything):",
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
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        subprocess.run(_ivr("lab", "down"), env=env, check=False)
