"""Shared pytest configuration: each area's fixtures live in tests/fixtures/<area>.py."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from tests.support import scratch_root

# pytest's tmp_path and tmp_path_factory under the scratch root (a RAM file system where there is one)
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(scratch_root()))

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.lab",
    "tests.fixtures.web",
    "tests.fixtures.voice",
]


@pytest.fixture(autouse=True)
def _process_state_left_as_found() -> Iterator[None]:
    """A test that runs the CLI in-process (`stack.cli.main.main`) configures structlog, the root
    logger and the SIGTERM handler for the whole process: put them back, so the next test logs
    where it expects (and library loggers such as httpx's stay quiet as they are by default)."""
    sigterm = signal.getsignal(signal.SIGTERM)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGTERM, sigterm)


#: The markers of the tests that share one Asterisk lab and fixed ports: one process only.
ONE_PROCESS_MARKERS = ("e2e", "lab", "browser")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under pytest-xdist (``-n``) an e2e, lab or browser test fails before its fixtures start
    anything: two processes would fight over the lab's ports (scripts/test runs them apart)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and any(item.get_closest_marker(m) for m in ONE_PROCESS_MARKERS):
        pytest.fail(
            "e2e/lab/browser tests share one Asterisk and fixed ports: run them without -n "
            '(-n goes with -m "not e2e and not lab and not browser")',
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The time each area took (setup, call and teardown of its tests), so a slow area shows. With
    ``-n`` the processes' times add up: the sum is more than the wall-clock time."""
    by_area: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            duration = getattr(report, "duration", None)
            if not nodeid or duration is None:
                continue
            parts = nodeid.split("::", 1)[0].split("/")
            area = "/".join(parts[:2]) if len(parts) > 2 else parts[0]
            by_area[area] = by_area.get(area, 0.0) + float(duration)
    if not by_area:
        return
    processes = terminalreporter.config.getoption("numprocesses", default=None)
    title = f"time per area (summed over {processes} processes)" if processes else "time per area"
    terminalreporter.section(title)
    for area, seconds in sorted(by_area.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {area}")
