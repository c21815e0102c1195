"""Processes and signals: stopping the child processes a command started (the stack of `ivr run`, a
daemon under test), and SIGTERM handled the way Ctrl-C is.

A supervisor (systemd, supervisord, a container runtime) stops a service with SIGTERM, a terminal
with Ctrl-C (SIGINT). `stop_on_sigterm` makes SIGTERM raise `Terminated`, a `KeyboardInterrupt`,
so every command that cleans up after Ctrl-C (``except KeyboardInterrupt`` / ``finally``) cleans up
the same way under a supervisor. Commands running an event loop (``ivr serve``, uvicorn under
``ivr web``) install their own handlers for both signals, which take precedence.

A child can be tied to its parent (`tied_to_parent`): Linux sends it a signal when the parent
dies, even of SIGKILL. What a tie cannot catch (a child that changes its user, which clears the
tie; processes in sessions of their own that must outlive a command, such as the lab's Asterisk)
is `stack.watchdog`'s job.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

#: prctl(2) option: the signal the calling process gets when its parent thread dies
PR_SET_PDEATHSIG = 1

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
    """SIGTERM every process still running at once, give them ``timeout`` seconds in all to exit
    (they wind down side by side: one deadline, not one per process), then SIGKILL what is left."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def tied_to_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for `subprocess.Popen`: the child gets ``signum`` when the process starting
    it dies, however it dies (Linux's parent-death signal). Fork from the main thread: the kernel
    sends it when the forking *thread* ends. The tie survives exec, but not a change of user or
    group (a daemon dropping root privileges loses it) nor a set-user-ID program."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    parent = os.getpid()

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the tie was made
            os.kill(os.getpid(), signum)

    return tie


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone or a zombie: with the
    pid, it names one process (a pid alone may be reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])
