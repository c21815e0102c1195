"""The watchdog of `ivr run`: however `ivr run` ends, nothing it started outlives it, even when it
is SIGKILLed and has no moment to clean up.

`ivr run` starts the watchdog first, in a session of its own, with the read end of a pipe as its
standard input; `ivr run` holds the only write end. It writes a line for each process it starts
(``process PID START_TIME``), one when it starts the lab (``lab``), and after its own clean stop
``done``. The kernel closes the write end when `ivr run` exits, for whatever reason: the watchdog
then reads the end of the file. Without ``done`` before it, it stops what is left: SIGTERM to each
process still running (the very process, by pid and start time: a pid alone may be reused), SIGKILL
to those still running ``--grace`` seconds later, then the lab by its state file (`Lab.down`:
Asterisk and dnsmasq run in sessions of their own, so that a standalone `ivr lab up` may exit and
leave them running; nothing else would stop them). Then it exits.

Why a process and a pipe: the children `ivr run` starts are also tied to it with Linux's
parent-death signal (`stack.processes.tied_to_parent`), but a tie is lost when a child changes its
user (the daemon dropping root), and the lab's processes must not be tied to the short-lived
`ivr lab up` that starts them. A cgroup would need root or a systemd scope. The pipe's end of file
needs neither, and comes however the writer dies.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from stack.processes import start_time

#: after SIGKILL, how long a process may take to be gone (a zombie counts as gone)
KILL_WAIT_SECONDS = 5.0


@dataclass
class Watched:
    """What `ivr run` reported, read until the end of the pipe."""

    processes: dict[int, int] = field(default_factory=dict)  # pid -> start time
    lab: bool = False
    done: bool = False


def read_reports(lines: Iterable[str]) -> Watched:
    watched = Watched()
    for line in lines:
        words = line.split()
        if words[:1] == ["process"] and len(words) == 3:
            watched.processes[int(words[1])] = int(words[2])
        elif words == ["lab"]:
            watched.lab = True
        elif words == ["done"]:
            watched.done = True
    return watched


def _alive(pid: int, started: int) -> bool:
    return start_time(pid) == started


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _wait_gone(processes: dict[int, int], deadline: float) -> dict[int, int]:
    while True:
        left = {pid: started for pid, started in processes.items() if _alive(pid, started)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def stop_left_behind(watched: Watched, *, grace: float, lab_down: Callable[[], Any]) -> list[int]:
    """Stop the processes of ``watched`` still running (SIGTERM, SIGKILL after ``grace`` s), then
    the lab if it was started. Returns the pids that had to be stopped."""
    left = {pid: started for pid, started in watched.processes.items() if _alive(pid, started)}
    for pid in left:
        _signal(pid, signal.SIGTERM)
    stubborn = _wait_gone(left, time.monotonic() + grace)
    for pid in stubborn:
        _signal(pid, signal.SIGKILL)
    _wait_gone(stubborn, time.monotonic() + KILL_WAIT_SECONDS)
    if watched.lab:
        lab_down()
    return sorted(left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.watchdog", description=__doc__)
    parser.add_argument("--grace", type=float, required=True, help="seconds before SIGKILL")
    args = parser.parse_args(argv)
    # Its own session spares it the terminal's Ctrl-C; a supervisor's stop of everything must not
    # end it either before `ivr run` is gone: it ends when its work is done.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)

    from ivr.lab import Lab, LabError  # imported now: after `ivr run` died, every second counts
    from ivr.logging import configure_logging
    from stack.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    log = structlog.get_logger("ivr.watchdog")
    lab = Lab(settings)
    watched = read_reports(sys.stdin)  # until `ivr run` exits
    if watched.done:
        return 0

    def lab_down() -> None:
        try:
            stopped = lab.down(timeout=5.0)
        except LabError as exc:
            log.error("watchdog_lab_down_failed", error=str(exc))
        else:
            log.info("watchdog_lab_stopped", stopped=stopped)

    started = time.monotonic()
    log.warning("watchdog_run_gone", processes=len(watched.processes), lab=watched.lab)
    stopped = stop_left_behind(watched, grace=args.grace, lab_down=lab_down)
    log.info("watchdog_done", stopped=stopped, seconds=round(time.monotonic() - started, 2))
    return 0


class Watchdog:
    """`ivr run`'s end of the pipe (see the module's docstring)."""

    def __init__(self, process: subprocess.Popen[bytes], pipe: IO[str]) -> None:
        self.process = process
        self._pipe: IO[str] | None = pipe

    @classmethod
    def start(cls, *, grace: float, env: dict[str, str] | None, log_path: Path) -> Watchdog:
        read_end, write_end = os.pipe()  # neither is inherited by the processes started later
        try:
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "stack.watchdog", "--grace", str(grace)],
                    stdin=read_end,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        return cls(process, os.fdopen(write_end, "w", buffering=1))

    def _say(self, line: str) -> None:
        if self._pipe is None:
            return
        with contextlib.suppress(OSError):  # the watchdog is gone: nothing to tell
            self._pipe.write(line + "\n")

    def watch(self, process: subprocess.Popen[Any]) -> None:
        """Stop ``process`` if `ivr run` dies without stopping it."""
        started = start_time(process.pid)
        if started is not None:  # else already gone
            self._say(f"process {process.pid} {started}")

    def lab_started(self) -> None:
        self._say("lab")

    def done(self, *, wait: float = 5.0) -> None:
        """`ivr run` stopped everything itself: the watchdog may exit."""
        self._say("done")
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=wait)


if __name__ == "__main__":
    code = main()
    gc.freeze()  # a quick exit, as `stack.cli.main.program`'s
    sys.exit(code)
