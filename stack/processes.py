"""Processes and signals: stopping the child processes a command started (the stack of `ivr run`, a
daemon under test), and SIGTERM handled the way Ctrl-C is.

A supervisor (systemd, supervisord, a container runtime) stops a service with SIGTERM, a terminal
with Ctrl-C (SIGINT). `stop_on_sigterm` makes SIGTERM raise `Terminated`, a `KeyboardInterrupt`,
so every command that cleans up after Ctrl-C (``except KeyboardInterrupt`` / ``finally``) cleans up
the same way under a supervisor. Commands running an event loop (``ivr serve``, uvicorn under
``ivr web``) install their own handlers for both signals, which take precedence.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: signals that stop a command: Ctrl-C and a supervisor's stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where Ctrl-C raises KeyboardInterrupt."""

    signum = signal.SIGTERM


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (entry points only)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status of a command stopped by a signal: 128 + its number (130, 143)."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


@contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """While cleaning up after a stop: a second Ctrl-C or SIGTERM (an impatient operator, a
    supervisor's repeat) must not cut the cleanup half-way and leave processes behind. The
    supervisor's last resort, SIGKILL, still works."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_processes(processes: Sequence[subprocess.Popen[Any]], *, timeout: float) -> None:
    """SIGTERM every process still running, then give each up to ``timeout`` seconds to exit
    (they wind down side by side) before SIGKILL."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
