"""Stopping the child processes a command started (the stack of `ivr run`, a daemon under test)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any


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
