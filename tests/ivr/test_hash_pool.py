"""Password hashing runs in the daemon's own small pool, not in the loop's shared one."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.secrets import SecretHasher
from ivr.daemon.scripted import FakeChannel
from ivr.daemon.server import FastAgiServer
from ivr.flow.store import SqlCallStore
from ivr.flow.temporary_password import Outcome, temporary_password_call
from ivr.settings import AgiSettings, MenuSettings, hash_pool_size
from tests.ivr.test_flow import PASSWORD, assert_password_stored


class _RecordingStore(SqlCallStore):
    def __init__(self, inner: SqlCallStore) -> None:
        self.__dict__.update(inner.__dict__)
        self.hash_threads: list[str] = []

    def hash_password(self, plain: str) -> str:
        self.hash_threads.append(threading.current_thread().name)
        return super().hash_password(plain)


async def test_the_password_is_hashed_in_the_given_pool(
    call_store: SqlCallStore,
    menu_settings: MenuSettings,
    voice_sessions: sessionmaker[Session],
    test_hasher: SecretHasher,
) -> None:
    store = _RecordingStore(call_store)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivr-hash") as pool:
        report = await temporary_password_call(
            FakeChannel(["1", PASSWORD, PASSWORD]), store=store, menu=menu_settings, hash_executor=pool
        )
    assert report.outcome is Outcome.COMPLETED
    assert len(store.hash_threads) == 1 and store.hash_threads[0].startswith("ivr-hash")
    assert_password_stored(voice_sessions, test_hasher, "0300001111")


def test_the_daemon_bounds_concurrent_hashes_by_default_at_one_per_core() -> None:
    assert hash_pool_size(AgiSettings(), cpu_count=2) == 2
    assert hash_pool_size(AgiSettings(), cpu_count=8) == 8
    assert hash_pool_size(AgiSettings(), cpu_count=1) == 1
    assert hash_pool_size(AgiSettings(hash_workers=3), cpu_count=2) == 3
    with pytest.raises(ValueError):
        AgiSettings(hash_workers=0)


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_the_hashing_threads_run_at_the_configured_niceness(call_store: SqlCallStore) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = min(19, base + 5)
    server = FastAgiServer(AgiSettings(hash_niceness=wanted), MenuSettings(), call_store, secret="x" * 32)
    try:
        niceness = await asyncio.get_running_loop().run_in_executor(server._hash_pool, _own_niceness)
    finally:
        await server.stop(grace_seconds=0)
    assert niceness == wanted
    assert _own_niceness() == base  # the event loop's thread keeps its own
