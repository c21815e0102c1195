"""`ivr serve` runs on the event loop its settings name (uvloop by default)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from ivr.cli.serve import run_on_loop
from ivr.settings import AgiSettings


async def _loop_kind() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    assert AgiSettings().event_loop == "uvloop"


@pytest.mark.parametrize(("name", "uses_uvloop"), [("uvloop", True), ("asyncio", False)])
def test_the_daemon_runs_on_the_loop_named(name: str, uses_uvloop: bool) -> None:
    kind = run_on_loop(_loop_kind(), name)
    assert issubclass(kind, uvloop.Loop) is uses_uvloop
    assert issubclass(kind, asyncio.AbstractEventLoop)
