"""Shared pytest configuration: each area's fixtures live in tests/fixtures/<area>.py."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.lab",
    "tests.fixtures.web",
    "tests.fixtures.voice",
]
