"""`ivr run`: the whole stack on the embedded default, following the call log.

Applies the schema, loads the sample contracts, starts the lab Asterisk, the FastAGI daemon and the
web login, then follows the call log until Ctrl-C or SIGTERM, and stops everything it started
within 20 s, even on a loaded machine: every process at once, under one deadline, the daemon with
a short shutdown grace (`RUN_SHUTDOWN_GRACE_SECONDS`), then the lab. SIGKILLed, it leaves nothing
behind either: its children are tied to it (`stack.processes.tied_to_parent`), and its watchdog
(`stack.watchdog`) stops whatever is left, the lab's Asterisk included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ivr.lab import Lab, LabError
from stack.processes import stop_processes, stop_signals_ignored, tied_to_parent
from stack.settings import Settings
from stack.watchdog import Watchdog

STEP_STOP_SECONDS = 10  # `ivr lab up` / `ivr db upgrade` stopped half-way: time to clean up before SIGKILL
#: the daemon's shutdown grace under `ivr run` (the setting's, if shorter; `ivr run --grace`): calls
#: in progress may go on this long, then are cut, and Asterisk, stopped next, ends them
RUN_SHUTDOWN_GRACE_SECONDS = 5.0
#: beyond the daemon's grace period, time for every process to exit (the daemon writes its last
#: records) before SIGKILL
STOP_MARGIN_SECONDS = 5.0
#: `Lab.down`'s wait for each of its processes, per signal
LAB_STOP_SECONDS = 5.0


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
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"the daemon's shutdown grace for calls in progress (default: {RUN_SHUTDOWN_GRACE_SECONDS:g}, "
        "or the setting agi.shutdown_grace_seconds if shorter)",
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


def _start(
    argv: list[str], env: dict[str, str], log_path: Path | None, watchdog: Watchdog
) -> subprocess.Popen[bytes]:
    """Start one process of the stack, tied to us, with its output in its own log file (None: ours)."""
    if log_path is None:
        process = subprocess.Popen(argv, env=env, preexec_fn=tied_to_parent())
    else:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent()
            )
    watchdog.watch(process)
    return process


def _step(argv: list[str], env: dict[str, str], watchdog: Watchdog) -> None:
    """Run one set-up command to its end. Stopped meanwhile (Ctrl-C, SIGTERM), the command is
    stopped the same way and waited for (not killed half-way through starting Asterisk), then the
    stop goes on. Should we die, it gets SIGTERM too."""
    # Its own session: Ctrl-C in the terminal reaches it only through us, once.
    process = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=tied_to_parent())
    watchdog.watch(process)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        stop_processes([process], timeout=STEP_STOP_SECONDS)
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, argv)


def run_stack(args: argparse.Namespace, settings: Settings) -> int:
    """Until Ctrl-C or SIGTERM (both raise KeyboardInterrupt here: `stack.processes`), then stop
    every process started, all at once, and the lab Asterisk after them."""
    env = dict(os.environ)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    grace = args.grace
    if grace is None:
        grace = min(settings.agi.shutdown_grace_seconds, RUN_SHUTDOWN_GRACE_SECONDS)
    stop_seconds = grace + STOP_MARGIN_SECONDS
    lab = Lab(settings)
    # First of all: whatever ends us from now on, even SIGKILL, it stops what we started.
    watchdog = Watchdog.start(grace=stop_seconds, env=env, log_path=logs / "watchdog.jsonl")
    children: list[subprocess.Popen[bytes]] = []
    lab_started = False
    try:
        _step(_ivr("db", "upgrade"), env, watchdog)
        if not args.no_sample:
            _step(_ivr("contracts", "import", "--sample"), env, watchdog)
            _step(_ivr("notices", "sample"), env, watchdog)  # a sample support ID
        if lab.is_running():  # someone else's: not ours to stop
            print(f"ivr run: the lab is already running ({lab.state_path}); stop it first", file=sys.stderr)
            return 1
        lab_started = True  # from its first moment: a stop half-way through still takes it down
        watchdog.lab_started()
        _step(_ivr("lab", "up"), env, watchdog)
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
                    watchdog,
                )
            )
            if not _wait_listening(settings.smtp.port, 10):
                print("ivr run: the local SMTP sink did not start listening", file=sys.stderr)
                return 1
        children.append(_start(_ivr("serve", "--grace", f"{grace:g}"), env, logs / "daemon.jsonl", watchdog))
        if not _wait_listening(settings.agi.port, 20):
            print(
                f"ivr run: the FastAGI daemon did not start listening; see {logs}/daemon.jsonl",
                file=sys.stderr,
            )
            return 1
        if not args.no_web:
            children.append(_start(_ivr("web"), env, logs / "web.log", watchdog))
            if not _wait_listening(settings.web.port, 20):
                print(f"ivr run: the web login did not start listening; see {logs}/web.log", file=sys.stderr)
                return 1
        # the support site, the notice delivery worker and its bounce listener (docs/notices.md)
        children.append(_start(_ivr("notices", "serve"), env, logs / "notices.jsonl", watchdog))
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
                    '  try:            .venv/bin/ivr call --from 0300001111 --dtmf "1,40719352,40719352"',
                    f"  logs            {logs}/daemon.jsonl (the call log as JSON lines), web.log, mail.log",
                    "Following the call log (Ctrl-C or SIGTERM stops everything; "
                    f"calls in progress get {grace:g} s):",
                    "",
                ]
            ),
            flush=True,
        )
        children.append(_start(_ivr("calls", "--follow"), env, None, watchdog))
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
            # All at once, under one deadline: the daemon's grace, then a margin, then SIGKILL.
            stop_processes(children[::-1], timeout=stop_seconds)
            if lab_started:  # after the daemon: calls cut by its grace end in Asterisk
                try:
                    stopped = lab.down(timeout=LAB_STOP_SECONDS)
                    print("stopped: " + (", ".join(stopped) or "nothing was running"), flush=True)
                except LabError as exc:
                    print(f"ivr run: {exc}", file=sys.stderr)
            watchdog.done()
