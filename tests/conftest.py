"""Shared pytest configuration: each area's fixtures live in tests/fixtures/<area>.py."""

from __future__ import annotations

from typing import Any

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.lab",
    "tests.fixtures.web",
    "tests.fixtures.voice",
]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The time each area took (setup, call and teardown of its tests), so a slow area shows."""
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
    terminalreporter.section("time per area")
    for area, seconds in sorted(by_area.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {area}")
