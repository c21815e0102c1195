"""core.db: read-only sessions never take the write lock; writers are serialised and measured;
no password hash runs inside a write transaction (the hash guard)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.db import (
    ReadOnlySessionError,
    make_engine,
    make_read_session_factory,
    make_session_factory,
    read_only_engine,
    write_lock_wait_stats,
)
from core.models import CallRecord, PhoneNumber
from core.secrets import (
    FAST_TEST_PARAMETERS,
    HashInsideWriteTransaction,
    SecretHasher,
    hash_guard_violations,
    in_write_transaction,
    strict_hash_guard,
)
from tests.core.conftest import SEED_CONTRACT


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.001)


def statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.strip().split()[0].upper() + " " + " ".join(statement.split()[1:2]).upper())

    return seen


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url, pool_size=1, max_overflow=0)  # one connection: modes alternate on it
    yield engine
    engine.dispose()


def _record(call_id: str, now: datetime) -> CallRecord:
    return CallRecord(call_id=call_id, caller=None, service_number=None, started_at=now, wrong_entries=0)


def test_read_sessions_open_a_deferred_transaction_and_refuse_writes(
    sqlite_engine: Engine, core_now: datetime
) -> None:
    seen = statements(sqlite_engine)
    readers = make_read_session_factory(sqlite_engine)
    writers = make_session_factory(sqlite_engine)
    with readers() as session, session.begin():
        session.scalars(select(PhoneNumber)).all()
    assert "BEGIN IMMEDIATE" not in seen and "BEGIN " in seen

    with pytest.raises(ReadOnlySessionError), readers() as session, session.begin():
        session.add(_record("r-1", core_now))
        session.flush()
    with pytest.raises(OperationalError, match="readonly"), readers() as session, session.begin():
        session.execute(text("DELETE FROM call_records"))

    # the same pooled connection writes again afterwards (query_only switched back off)
    with writers() as session, session.begin():
        session.add(_record("w-1", core_now))
    assert "BEGIN IMMEDIATE" in seen
    with readers() as session:
        assert session.scalars(select(CallRecord.call_id)).all() == ["w-1"]


def test_read_only_connections_open_a_deferred_transaction_and_refuse_writes(
    sqlite_engine: Engine, core_now: datetime
) -> None:
    seen = statements(sqlite_engine)
    with read_only_engine(sqlite_engine).begin() as connection:
        connection.execute(select(PhoneNumber.number)).all()
    assert "BEGIN IMMEDIATE" not in seen and "BEGIN " in seen
    with pytest.raises(OperationalError, match="readonly"), read_only_engine(sqlite_engine).begin() as c:
        c.execute(text("DELETE FROM call_records"))
    with make_session_factory(sqlite_engine)() as session, session.begin():  # the same connection
        session.add(_record("w-2", core_now))
    assert "BEGIN IMMEDIATE" in seen


def test_a_reader_does_not_wait_for_an_open_write_transaction(sqlite_url: str, core_now: datetime) -> None:
    engine = make_engine(sqlite_url)
    try:
        writers, readers = make_session_factory(engine), make_read_session_factory(engine)
        holding, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with writers() as session, session.begin():
                session.add(_record("held", core_now))
                session.flush()
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        try:
            assert holding.wait(10)
            started = time.perf_counter()
            with readers() as session, session.begin():
                numbers = session.scalars(select(PhoneNumber.number)).all()
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5  # a write session would wait for the holder (30 s busy timeout)
            assert numbers == []  # (the empty template) and the uncommitted row is not seen
        finally:
            release.set()
            holder.join(30)
    finally:
        engine.dispose()


def test_writers_wait_for_each_other_and_the_wait_is_measured(sqlite_url: str, core_now: datetime) -> None:
    engine = make_engine(sqlite_url)
    other = make_engine(sqlite_url)  # another engine on the same file shares the process's writer lock
    try:
        writers, others = make_session_factory(engine), make_session_factory(other)
        stats = write_lock_wait_stats(other)
        holding, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with writers() as session, session.begin():
                session.add(_record("first", core_now))
                session.flush()
                assert in_write_transaction()
                holding.set()
                release.wait(30)
            assert not in_write_transaction()

        def second_writer() -> None:
            with others() as session, session.begin():
                session.add(_record("second", core_now))

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert holding.wait(10)
        waiter = threading.Thread(target=second_writer)
        waiter.start()
        wait_until(lambda: stats.waiting == 1)
        held_from = time.perf_counter()
        wait_until(lambda: time.perf_counter() - held_from > 0.05)  # keep it waiting a measurable time
        release.set()
        holder.join(30)
        waiter.join(30)
        snapshot = stats.snapshot()
        assert snapshot.count == 1 and snapshot.max_seconds >= 0.05
        assert snapshot.max_seconds < 5  # woken by the release, not by a busy-handler timeout
        with make_read_session_factory(engine)() as session:
            assert sorted(session.scalars(select(CallRecord.call_id))) == ["first", "second"]
    finally:
        engine.dispose()
        other.dispose()


@pytest.mark.hash_in_transaction  # on purpose, to see the guard refuse it
def test_hashing_inside_a_write_transaction_is_refused_under_the_strict_guard(
    sqlite_url: str, core_now: datetime
) -> None:
    engine = make_engine(sqlite_url)
    hasher = SecretHasher(FAST_TEST_PARAMETERS)
    try:
        writers, readers = make_session_factory(engine), make_read_session_factory(engine)
        with strict_hash_guard():
            stored = hasher.hash("24681357")  # no transaction: fine
            with readers() as session, session.begin():
                session.scalars(select(PhoneNumber)).all()
                assert hasher.verify(stored, "24681357")  # a read transaction holds no lock
            before = hash_guard_violations()
            with pytest.raises(HashInsideWriteTransaction) as raised, writers() as session, session.begin():
                session.add(_record("x", core_now))
                session.flush()
                hasher.verify(stored, "24681357")
            assert "24681357" not in str(raised.value) and stored not in str(raised.value)
            assert hash_guard_violations() == before + 1
            assert not in_write_transaction()  # rolled back: the flag is cleared
            assert hasher.verify(stored, "24681357")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_read_sessions_are_read_only(postgres_url: str, core_now: datetime) -> None:
    engine = make_engine(postgres_url)
    try:
        readers: sessionmaker[Session] = make_read_session_factory(engine)
        with pytest.raises(DBAPIError, match="read-only"), readers() as session, session.begin():
            session.execute(text("DELETE FROM call_records"))
        with readers() as session, session.begin():
            found = session.scalars(select(PhoneNumber.number).where(PhoneNumber.number == SEED_CONTRACT))
            assert found.all() == []
        with make_session_factory(engine)() as session, session.begin():
            session.add(_record("pg-1", core_now))
            session.flush()
            assert in_write_transaction()
        assert not in_write_transaction()
    finally:
        engine.dispose()


def test_a_new_credential_database_and_its_wal_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    """It holds the password hashes: 0600 like the FastAGI secret, whatever the umask says."""
    import stat

    from core.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'ivr.sqlite3'}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.begin() as connection:  # a write: the WAL and shared-memory files exist now
        connection.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    engine.dispose()
    assert modes["ivr.sqlite3"] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes
