"""Call records off the call path: one writer thread, batches in one transaction each.

The flow's ``start_call`` / ``finish_call`` only append to an in-memory queue (a lock held for
microseconds, no database round trip). One thread writes what is queued: it wakes on the first
event, waits ``flush_seconds`` (default 0.1 s) for more, then writes everything queued in ONE
transaction (:func:`core.call_records.write_call_record_batch`), so a burst of calls costs a few
commits per second instead of two per call, and the write lock is taken by one thread instead of a
pool of them. Bounds:

- a record reaches the database at most ``flush_seconds`` + one commit after it was queued, so a
  SIGKILL loses at most the last 200 ms of records with the default;
- :meth:`CallRecordWriter.close` (shutdown, SIGTERM) writes everything still queued;
- a daemon that starts closes the records its own node left open (``system_error``, ended now,
  last step kept): :meth:`CallRecordWriter.start`. Records carry the node id (``agi.node_id``,
  default ``<hostname>:<port>``), so daemons sharing one PostgreSQL only close their own. Two
  daemons must therefore never share a node id.

A batch that fails (database down) is kept and retried with a growing pause; the queue is bounded
(``max_pending``), beyond which the oldest events are dropped and counted.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from core.call_records import CallEvent, close_open_call_records, write_call_record_batch

SYSTEM_ERROR = "system_error"
DEFAULT_FLUSH_SECONDS = 0.1
MAX_BATCH = 5_000

log = structlog.get_logger("ivr.records")


def default_node_id(port: int) -> str:
    """``<hostname>:<FastAGI port>``: unique per daemon on a machine, stable across restarts."""
    return f"{socket.gethostname()}:{port}"[:64]


def attach_records_writer(store: Any, agi_settings: Any) -> CallRecordWriter | None:
    """Give an ``SqlCallStore`` a batching writer stamped with this daemon's node id (settings
    ``agi.node_id``, default ``<hostname>:<port>``). The caller starts it (:meth:`start`, which
    closes the node's stale records) once the daemon listens, and closes it on shutdown."""
    from ivr.flow.store import SqlCallStore

    if not isinstance(store, SqlCallStore):
        return None
    node = getattr(agi_settings, "node_id", None) or default_node_id(int(agi_settings.port))
    flush = float(getattr(agi_settings, "call_record_flush_seconds", DEFAULT_FLUSH_SECONDS))
    writer = CallRecordWriter(store.sessions, node=node, flush_seconds=flush)
    store.node = node
    store.attach_records(writer)
    return writer


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CallRecordWriter:
    """Queues call-record events and writes them in batches from one thread."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        node: str | None,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending: int = 100_000,
    ) -> None:
        self._sessions = session_factory
        self.node = node
        self.flush_seconds = flush_seconds
        self._pending: deque[CallEvent] = deque()
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._queued = 0  # events ever queued
        self._written = 0  # events ever written (or dropped)
        self._closing = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.batches = 0
        self.failures = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, close_stale: bool = True, now: datetime | None = None) -> int:
        """Close this node's records left open by a dead daemon (returns how many), then start the
        writer thread. Call before taking calls."""
        closed = 0
        if close_stale:
            now = now or _utcnow()
            with self._sessions() as session, session.begin():
                closed = close_open_call_records(
                    session, node=self.node, now=now, outcome=SYSTEM_ERROR, started_before=now
                )
            if closed:
                log.warning("call_records_closed_after_restart", count=closed, node=self.node)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ivr_call_records", daemon=True)
            self._thread.start()
        return closed

    def close(self, timeout: float = 10.0) -> bool:
        """Write everything queued, then stop the thread. True when nothing was left unwritten."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        else:
            self._drain_once()  # never started: write in the caller's thread
        with self._cond:
            return not self._pending

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued before this call is written (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            self._cond.notify_all()  # no need to linger: someone is waiting
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flush_now = True
                self._cond.wait(remaining)
            return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    # ------------------------------------------------------------------ the flow's side
    def queue(self, event: CallEvent) -> None:
        """Queue a call's start or finish (``SqlCallStore.start_call`` / ``finish_call`` with this
        writer attached): a lock held for microseconds, no database round trip."""
        with self._cond:
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
                self._written += 1
            self._pending.append(event)
            self._queued += 1
            if len(self._pending) == 1 or self._closing:
                self._cond.notify_all()
        if self._closing and not self.running:
            self._drain_once()  # after close: write at once rather than lose it

    # ------------------------------------------------------------------ the writer thread
    _flush_now = False

    def _run(self) -> None:
        pause = self.flush_seconds
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                # linger so that a burst becomes one batch, unless closing or someone flushes
                deadline = time.monotonic() + pause
                while not self._closing and not self._flush_now and len(self._pending) < MAX_BATCH:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._flush_now = False
            if self._drain_once():
                pause = self.flush_seconds
            else:
                if self._closing and self.failures > 3:
                    log.error("call_records_unwritten_at_close", count=self.pending)
                    return
                pause = min(max(pause * 2, 0.2), 5.0)

    def _drain_once(self) -> bool:
        with self._cond:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
        if not batch:
            return True
        try:
            with self._sessions() as session, session.begin():
                write_call_record_batch(session, batch, node=self.node)
        except Exception as exc:
            self.failures += 1
            log.error("call_records_write_failed", error_type=type(exc).__name__, count=len(batch))
            with self._cond:
                self._pending.extendleft(reversed(batch))
            return False
        with self._cond:
            self.batches += 1
            self._written += len(batch)
            self._cond.notify_all()
        return True
