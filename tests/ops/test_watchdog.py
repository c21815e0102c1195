"""`ivr run`'s watchdog (`stack.watchdog`) and the tie of a child to its parent
(`stack.processes.tied_to_parent`): a parent SIGKILLed leaves nothing running, neither its tied
children nor those in sessions of their own that only the watchdog knows; a parent that stopped
everything itself (``done``) leaves the watchdog nothing to do. `ivr run` itself, SIGKILLed with
its lab: tests/test_stop_under_load.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stack.processes import stop_processes
from stack.watchdog import Watched, read_reports, stop_left_behind
from tests.support import command_lines, descendants, eventually, running

#: A stand-in for `ivr run`: its watchdog, a child tied to it, and one in a session of its own
#: (as the lab's Asterisk is), both reported; it prints their pids, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from stack.processes import tied_to_parent
    from stack.watchdog import Watchdog

    watchdog = Watchdog.start(grace=2.0, env=None, log_path=Path(sys.argv[1]))
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    tied = subprocess.Popen(sleep, preexec_fn=tied_to_parent())
    apart = subprocess.Popen(sleep, start_new_session=True)
    for child in (tied, apart):
        watchdog.watch(child)
    if sys.argv[2] == "done":  # as if it had stopped them itself
        watchdog.done()
    print(watchdog.process.pid, tied.pid, apart.pid, flush=True)
    time.sleep(600)
    """
)


def _parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env["IVR_DATA_DIR"] = str(tmp_path)
    env["IVR_LAB__RUN_DIR"] = str(tmp_path / "lab")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "watchdog.jsonl"), mode],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pids = [int(word) for word in parent.stdout.readline().split()]
    assert len(pids) == 3, pids
    return parent, pids


@pytest.mark.timeout(60)
def test_a_sigkilled_parent_leaves_no_child_running(tmp_path: Path) -> None:
    parent, (watchdog, tied, apart) = _parent(tmp_path, "killed")
    try:
        assert all(running(pid) for pid in (watchdog, tied, apart))
        parent.kill()
        parent.wait()
        eventually(lambda: not running(tied), 10, what="the tied child gone (parent-death signal)")
        eventually(
            lambda: not running(apart), 20, what="the child in its own session stopped by the watchdog"
        )
        eventually(lambda: not running(watchdog), 20, what="the watchdog gone once done")
    finally:
        for pid in (watchdog, tied, apart):
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    log = (tmp_path / "watchdog.jsonl").read_text()
    assert "watchdog_run_gone" in log and str(apart) in log


@pytest.mark.timeout(60)
def test_after_a_clean_stop_the_watchdog_exits_without_stopping_anything(tmp_path: Path) -> None:
    parent, (watchdog, tied, apart) = _parent(tmp_path, "done")
    try:
        eventually(lambda: not running(watchdog), 20, what="the watchdog gone after done")
        assert parent.poll() is None  # the watchdog exits on "done", not on its parent's end
        parent.kill()
        parent.wait()
        eventually(lambda: not running(tied), 10, what="the tied child gone (parent-death signal)")
        assert running(apart)  # the watchdog, gone, stopped nothing
    finally:
        parent.kill()
        parent.wait()
        if running(apart):
            os.kill(apart, signal.SIGKILL)
    assert "watchdog_run_gone" not in (tmp_path / "watchdog.jsonl").read_text()


def test_reports_are_read_up_to_the_end_of_the_pipe() -> None:
    watched = read_reports(["process 12 345\n", "lab\n", "process 13 346\n", "garbage\n"])
    assert watched == Watched(processes={12: 345, 13: 346}, lab=True, done=False)
    assert read_reports(["process 12 345\n", "done\n"]).done


@pytest.mark.timeout(60)
def test_what_ignores_sigterm_is_killed_after_the_grace_and_the_lab_stopped_last(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print(1, flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline()  # SIGTERM ignored from now on
    from stack.processes import start_time

    started = start_time(stubborn.pid)
    assert started is not None
    order: list[str] = []

    def lab_down() -> None:
        order.append("lab" if stubborn.poll() is not None else "lab before the processes were gone")

    try:
        stopped = stop_left_behind(Watched({stubborn.pid: started}, lab=True), grace=0.5, lab_down=lab_down)
    finally:
        stubborn.kill()
    assert stubborn.wait() == -signal.SIGKILL
    assert stopped == [stubborn.pid] and order == ["lab"]


@pytest.mark.timeout(60)
def test_stop_processes_gives_them_one_deadline_in_all_not_one_each() -> None:
    ignoring = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print(1, flush=True); time.sleep(600)",
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for process in ignoring:
        assert process.stdout is not None and process.stdout.readline()
    started = time.monotonic()
    stop_processes(ignoring, timeout=1.0)
    took = time.monotonic() - started
    assert [process.returncode for process in ignoring] == [-signal.SIGKILL] * 4
    assert took < 3.0, f"{took:.1f} s: a deadline per process would take 4 s or more"
    assert not [pid for process in ignoring for pid in descendants(process.pid)], command_lines(
        [process.pid for process in ignoring]
    )
