"""What many tests need, in one home: waiting on a condition (never on the clock), a free port,
where scratch files go, a hasher that counts its checks, the database lookups tests make to see
what a call left, and CPU load with the processes a command left running.

``eventually`` returns the condition's first truthy value, so a test can wait for a thing and use
it: ``row = eventually(lambda: record(sessions, "c.1"))``. It fails (AssertionError naming what
was awaited) when the condition never holds: a wait that cannot fail is not a wait.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import CallRecord, Credential
from core.secrets import SecretHasher

T = TypeVar("T")


def eventually(
    condition: Callable[[], T], within: float = 10.0, *, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        time.sleep(interval)


async def async_eventually(
    condition: Callable[[], T | Awaitable[T]],
    within: float = 10.0,
    *,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """``eventually`` inside an event loop: the loop keeps running while it waits. ``condition``
    may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: A RAM file system used for scratch files when it has this much room.
_SCRATCH_MIN_FREE_BYTES = 2 * 1024**3


def scratch_root() -> Path:
    """Where tests put scratch files: pytest's ``tmp_path`` (tests/conftest.py), the private
    PostgreSQL cluster, the postfix instances. ``IVR_TEST_TMPDIR`` when set; else /dev/shm when it
    is a writable RAM file system with room (the tests' databases need no durable disk: there, a
    SQLite commit's fsync or a CREATE DATABASE does not wait for a busy disk); else the system's
    temporary directory."""
    chosen = os.environ.get("IVR_TEST_TMPDIR")
    if chosen:
        return Path(chosen)
    shm = Path("/dev/shm")
    try:
        if os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free >= _SCRATCH_MIN_FREE_BYTES:
            return shm
    except OSError:
        pass
    return Path(tempfile.gettempdir())


class CountingHasher(SecretHasher):
    """Counts real password checks (``checks``, thread-safe) and dummy checks of unknown numbers."""

    def __init__(self, base: SecretHasher) -> None:
        super().__init__(base.parameters)
        self._count_lock = threading.Lock()
        self.checks = 0
        self.dummies = 0

    @property
    def verifications(self) -> int:
        return self.checks

    def verify(self, stored_hash: str, plain: str) -> bool:
        with self._count_lock:
            self.checks += 1
        return super().verify(stored_hash, plain)

    def dummy_verify(self, plain: str) -> None:
        with self._count_lock:
            self.dummies += 1
        super().dummy_verify(plain)


def record(sessions: sessionmaker[Session], call_id: str) -> CallRecord | None:
    """The call record of ``call_id``, if one was written."""
    with sessions() as session:
        return session.scalars(select(CallRecord).where(CallRecord.call_id == call_id)).one_or_none()


def record_of(sessions: sessionmaker[Session], call_id: str) -> CallRecord:
    """The call record of ``call_id``; fails when there is none."""
    found = record(sessions, call_id)
    assert found is not None, f"no call record for {call_id}"
    return found


def finished(sessions: sessionmaker[Session], call_id: str) -> CallRecord | None:
    """The call record of ``call_id`` once it has an outcome, else None (records are written off the
    call path: wait with ``eventually(lambda: finished(sessions, call_id))``)."""
    found = record(sessions, call_id)
    return found if found is not None and found.outcome is not None else None


def credentials(sessions: sessionmaker[Session]) -> list[Credential]:
    """Every credential row."""
    with sessions() as session:
        return list(session.scalars(select(Credential)))


def recording_controller(handler: Any, *, hostname: str, port: int, **kwargs: Any) -> Any:
    """An aiosmtpd ``Controller`` whose sessions append each RCPT argument, as it came on the wire
    (before aiosmtpd parses and unquotes the address), to ``handler.raw_rcpt`` (a list, guarded
    by ``handler.lock``): a test sees what a relay sees (``"taro..yamada"@…`` quoted or not)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class RecordingSMTP(SMTP):
        async def smtp_RCPT(self, arg: str) -> None:
            with handler.lock:
                handler.raw_rcpt.append(arg)
            await super().smtp_RCPT(arg)

    class RecordingController(Controller):
        def factory(self) -> SMTP:
            return RecordingSMTP(self.handler, **self.SMTP_kwargs)

    return RecordingController(handler, hostname=hostname, port=port, **kwargs)


#: busy processes per core of `cpu_load`: 3 make a load of 6 on the project's 2-core machine
LOAD_PER_CORE = 3


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@contextmanager
def cpu_load(per_core: int = LOAD_PER_CORE) -> Iterator[list[int]]:
    """``per_core`` busy-looping processes per core (nice 0, in the caller's session, so they
    compete with what the test starts there), running once this yields their pids; always
    killed on exit."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range((os.cpu_count() or 1) * per_core)
    ]
    try:
        eventually(lambda: all(_cpu_ticks(hog.pid) > 0 for hog in hogs), 30, what="the load running")
        yield [hog.pid for hog in hogs]
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if running(current):
            found.append(current)
        todo.extend(children.get(current, []))
    return found


def command_lines(pids: list[int]) -> list[str]:
    """``pid: command line`` of each process, to name what a test found still running."""
    lines = []
    for pid in pids:
        try:
            lines.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            lines.append(f"{pid}: (gone)")
    return lines


def can_bind(port: int, kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``port`` now (the lab's own check before it starts)."""
    from ivr.lab.lab import port_free

    return port_free(host, port, kind)


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
