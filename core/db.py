"""Engines, sessions and migrations.

Two kinds of session, one factory each:

- :func:`make_session_factory` (writes). On SQLite every transaction opens with ``BEGIN IMMEDIATE``:
  a transaction that reads and then writes (the login counters) must hold the write lock from its
  start, or a concurrent writer's commit would make its first write fail with ``database is
  locked`` (SQLite cannot upgrade a stale read snapshot) instead of waiting. That reason still
  holds, so every write session still takes the lock at its start. Use these only for short units
  of work that write; never hash a password inside one (``core.secrets`` can refuse it, see
  :func:`core.secrets.set_hash_guard`).
- :func:`make_read_session_factory` (reads). Plain ``BEGIN`` (DEFERRED): in WAL mode readers never
  wait for the writer and never block it. The session refuses to flush anything, and on SQLite the
  connection runs the transaction with ``PRAGMA query_only=ON`` (on PostgreSQL ``SET TRANSACTION
  READ ONLY``), so a write through it fails loudly instead of silently taking the lock.

Writers in one process are serialised by an in-process lock (one per database file), taken just
before ``BEGIN IMMEDIATE`` and released at commit or rollback. Without it, threads that find the
file locked sit in SQLite's busy handler, which sleeps 1, 2, 5, 10 … 100 ms between retries and so
wakes up long after the lock was freed (74 % of the daemon's database samples were that sleep); with
it, a waiting thread is woken the moment the previous writer commits, in arrival order. Writers in
*other* processes (the web login, ``ivr contracts import``) still meet at SQLite's lock and its busy
handler, which is why nothing may hold the lock for long: no password hash inside a write
transaction anywhere.

The wait for the write lock (in-process lock plus ``BEGIN IMMEDIATE``) is measured per engine:
:func:`write_lock_wait_stats` (count, total, max wait; and the longest hold, in wall time and in
the holder thread's CPU time, where a hash inside a transaction shows whatever the machine's load),
so a test or a benchmark can say how long a path waited and what it waited for.

PostgreSQL (several daemons sharing one store) uses psycopg 3 and its own pool: no in-process lock,
its row locks serialise the conditional counter updates; read sessions are ``READ ONLY``
transactions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core import secrets as _secrets

SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: execution option that marks a connection of a read session
READ_ONLY_OPTION = "ivr_read_only"


def normalize_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver we ship)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


# ---------------------------------------------------------------------------------- lock waits


@dataclass(frozen=True)
class LockWaitSnapshot:
    count: int
    total_seconds: float
    max_seconds: float
    max_hold_seconds: float = 0.0  # the longest a transaction of the engine held the lock
    max_hold_cpu_seconds: float = 0.0  # the most CPU its thread spent holding it (a hash shows here)


class WriteLockStats:
    """How long write transactions of one engine waited for the write lock (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.total_seconds = 0.0
        self.max_seconds = 0.0
        self.waiting = 0  # transactions waiting for the lock right now
        self.max_hold_seconds = 0.0
        self.max_hold_cpu_seconds = 0.0

    def record_hold(self, seconds: float, cpu_seconds: float) -> None:
        with self._lock:
            self.max_hold_seconds = max(self.max_hold_seconds, seconds)
            self.max_hold_cpu_seconds = max(self.max_hold_cpu_seconds, cpu_seconds)

    def _waiting(self, delta: int) -> None:
        with self._lock:
            self.waiting += delta

    def record(self, seconds: float) -> None:
        with self._lock:
            self.count += 1
            self.total_seconds += seconds
            if seconds > self.max_seconds:
                self.max_seconds = seconds

    def snapshot(self) -> LockWaitSnapshot:
        with self._lock:
            return LockWaitSnapshot(
                self.count,
                self.total_seconds,
                self.max_seconds,
                self.max_hold_seconds,
                self.max_hold_cpu_seconds,
            )

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.total_seconds = 0.0
            self.max_seconds = 0.0
            self.max_hold_seconds = 0.0
            self.max_hold_cpu_seconds = 0.0

    def __repr__(self) -> str:
        s = self.snapshot()
        return (
            f"WriteLockStats(count={s.count}, total={s.total_seconds:.4f}s, max={s.max_seconds:.4f}s, "
            f"max_hold={s.max_hold_seconds:.4f}s)"
        )


_stats: WeakKeyDictionary[Engine, WriteLockStats] = WeakKeyDictionary()
_stats_guard = threading.Lock()


def write_lock_wait_stats(engine: Engine) -> WriteLockStats:
    """The engine's write-lock wait statistics (created empty on first use)."""
    with _stats_guard:
        stats = _stats.get(engine)
        if stats is None:
            stats = _stats[engine] = WriteLockStats()
        return stats


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _writer_lock_for(path: Path | None) -> threading.Lock:
    """One lock per database file in this process (every engine on the file shares it)."""
    key = str(path.resolve()) if path is not None else f"memory:{id(object())}"
    with _file_locks_guard:
        lock = _file_locks.get(key)
        if lock is None:
            lock = _file_locks[key] = threading.Lock()
        return lock


# ------------------------------------------------------------------------------------- engines


def create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600), before SQLite does (with the
    umask's 0644): it holds the password hashes. SQLite gives its -wal and -shm files the main
    file's mode. An existing file is left as it is."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_database_url(url)
    if not is_sqlite(url):
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
        _instrument_postgres(engine)
        return engine

    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    path = sqlite_path(url)
    file_backed = path is not None
    if path is not None:
        create_private_file(path)
    writer_lock = _writer_lock_for(path)
    stats = write_lock_wait_stats(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN, instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if file_backed:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")  # completion prompt only after durable
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        info = connection.info
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            if not info.get("ivr_query_only"):
                connection.exec_driver_sql("PRAGMA query_only=ON")
                info["ivr_query_only"] = True
            connection.exec_driver_sql("BEGIN")
            return
        if info.get("ivr_query_only"):
            connection.exec_driver_sql("PRAGMA query_only=OFF")
            info["ivr_query_only"] = False
        started = time.perf_counter()
        stats._waiting(1)
        try:
            if not writer_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
                raise OperationalError("BEGIN IMMEDIATE", {}, Exception("in-process write lock timed out"))
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                writer_lock.release()
                raise
        finally:
            stats._waiting(-1)
        acquired = time.perf_counter()
        stats.record(acquired - started)
        info["ivr_holds_writer_lock"] = (acquired, time.thread_time(), threading.get_ident())
        _secrets.note_write_transaction(True)

    def _release(proxied: Any) -> None:
        try:
            info = proxied.info
        except (AttributeError, NotImplementedError):  # the dialect's first-connect probe
            return
        held = info.pop("ivr_holds_writer_lock", None)
        if held is not None:
            writer_lock.release()
            acquired, cpu, thread = held
            cpu_held = time.thread_time() - cpu if thread == threading.get_ident() else 0.0
            stats.record_hold(time.perf_counter() - acquired, cpu_held)
            _secrets.note_write_transaction(False)

    # Release after the COMMIT / ROLLBACK itself (the engine's "commit" event fires before it, when
    # SQLite still holds its lock). The pool's reset-on-return rolls back through the same method.
    dialect: Any = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def _do_commit(proxied: Any) -> None:
        try:
            do_commit(proxied)
        finally:
            _release(proxied)

    def _do_rollback(proxied: Any) -> None:
        try:
            do_rollback(proxied)
        finally:
            _release(proxied)

    dialect.do_commit = _do_commit
    dialect.do_rollback = _do_rollback

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # a connection returned or invalidated without a commit/rollback: never leak the lock
        if record.info.pop("ivr_holds_writer_lock", None) is not None:
            writer_lock.release()
            _secrets.note_write_transaction(False)

    return engine


def _instrument_postgres(engine: Engine) -> None:
    stats = write_lock_wait_stats(engine)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            return
        stats.record(0.0)  # PostgreSQL takes row locks, not a database lock, at BEGIN
        connection.info["ivr_in_write_transaction"] = True
        _secrets.note_write_transaction(True)

    def _on_end(connection: Any) -> None:
        if connection.info.pop("ivr_in_write_transaction", False):
            _secrets.note_write_transaction(False)

    event.listen(engine, "commit", _on_end)
    event.listen(engine, "rollback", _on_end)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record.info.pop("ivr_in_write_transaction", False):
            _secrets.note_write_transaction(False)


# ------------------------------------------------------------------------------------ sessions


class ReadOnlySessionError(RuntimeError):
    """Something tried to write through a read-only session."""


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("a read-only session may not write (use a write session)")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Write sessions (``BEGIN IMMEDIATE`` on SQLite). Keep their transactions short."""
    return sessionmaker(engine, expire_on_commit=False)


def read_only_engine(engine: Engine) -> Engine:
    """The engine's read-only face, for Core reads without an ORM session (the daemon's caller
    lookup: a third of a session's CPU): ``with read_only_engine(engine).begin() as connection``
    runs a DEFERRED (SQLite, with ``query_only``) / READ ONLY (PostgreSQL) transaction, so a write
    statement through it fails in the database. Same pool as the engine."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Read-only sessions: a DEFERRED (SQLite) / READ ONLY (PostgreSQL) transaction that never
    waits for the write lock; flushing a change raises :class:`ReadOnlySessionError`, and a write
    statement fails in the database (``query_only``)."""
    factory = sessionmaker(read_only_engine(engine), expire_on_commit=False, autoflush=False)
    event.listen(factory, "before_flush", _refuse_flush)
    return factory


def read_session_factory_for(write_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The read-only counterpart of a write session factory (same engine)."""
    bind = write_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the session factory is not bound to an engine")
    return make_read_session_factory(bind)


# ---------------------------------------------------------------------------------- migrations


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply the migrations (``alembic upgrade head``); creates the SQLite file's directory."""
    from alembic import command

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_alembic_config(url), revision)


def downgrade_database(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


#: The newest migration's revision, so that checking a database needs no alembic import (~100 ms
#: of a classic `ivr agi` process's start-up); tests/core/test_migrations.py keeps it equal to
#: alembic's head.
HEAD_REVISION = "0006"


def schema_is_current(engine: Engine) -> bool:
    """One SELECT: the database's alembic revision is `HEAD_REVISION`."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as connection:
            found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:  # no alembic_version table: never migrated
        return False
    return found == [HEAD_REVISION]


def database_readiness(engine: Engine) -> str | None:
    """None when the database answers and its schema is current (`core.db.schema_is_current`,
    which takes a database it cannot reach for one never migrated: asked after a ``SELECT 1``)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = schema_is_current(engine)
    except SQLAlchemyError:
        return "database_unreachable"
    return None if current else "schema_not_current"


def readers_of(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Read-only sessions on the same engine as ``sessions`` (the write factory itself when it is
    bound to a connection, as in a test's transaction)."""
    try:
        return read_session_factory_for(sessions)
    except TypeError:
        return sessions
