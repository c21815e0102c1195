"""What the voice menu needs from the credential core, as plain synchronous calls.

Each method opens its own session and transaction (the caller owns them, per core's rules), and
flows run every one of them in a thread (`asyncio.to_thread`) so the event loop never blocks on the
database or on password hashing.

The lookups (caller line, number on contract) use read-only Core connections (no ORM session:
a third of the CPU): one SELECT each, no write lock. With a
:class:`ivr.flow.records.CallRecordWriter` attached (``ivr serve``), ``start_call`` and
``finish_call`` only queue the record (no database round trip; safe to call on the event loop or
in a thread); without one (``ivr agi``, tests) they write and commit at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.call_records import CallEvent, CallFinish, CallStart
from core.enums import AuthUnit
from core.phone_line import CallerLine

if TYPE_CHECKING:
    from ivr.flow.records import CallRecordWriter


class SaveAbandoned(Exception):
    """The flow stopped waiting before the save began to commit: nothing was written."""


class _SaveState(Enum):
    PENDING = "pending"
    COMMITTING = "committing"
    ABANDONED = "abandoned"


class SaveGuard:
    """Decides a slow save one way only: the flow stops waiting, or the store commits, not both.

    The store calls `begin_commit` just before COMMIT (False: it rolls back and raises
    `SaveAbandoned`); the flow calls `abandon` when it will wait no longer (False: the commit has
    begun, and its result decides what the caller hears). So a caller told the apology never has a
    stored password, and a caller told 完了 always has one. Thread-safe: the store runs in a thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _SaveState.PENDING

    def begin_commit(self) -> bool:
        with self._lock:
            if self._state is _SaveState.ABANDONED:
                return False
            self._state = _SaveState.COMMITTING
            return True

    def abandon(self) -> bool:
        with self._lock:
            if self._state is _SaveState.COMMITTING:
                return False
            self._state = _SaveState.ABANDONED
            return True

    @property
    def abandoned(self) -> bool:
        return self._state is _SaveState.ABANDONED


class CallStore(Protocol):
    @property
    def queues_call_records(self) -> bool:
        """`start_call` / `finish_call` only queue (call them on the event loop, no thread)."""
        ...

    def lookup_caller(self, caller_number: str) -> CallerLine | None: ...

    def number_on_contract(self, contract_id: int, number: str) -> bool: ...

    def hash_password(self, plain: str) -> str: ...

    def save_temporary_password(
        self,
        *,
        line: CallerLine,
        unit: AuthUnit,
        target_number: str,
        password_hash: str,
        now: datetime,
        guard: SaveGuard | None = None,
    ) -> None:
        """Store and COMMIT (durably) before returning; with a `guard`, ask it just before the
        COMMIT and roll back (raising `SaveAbandoned`) when the flow has stopped waiting."""
        ...

    def start_call(
        self, *, call_id: str, caller: str | None, service_number: str | None, started_at: datetime
    ) -> None: ...

    def finish_call(
        self,
        *,
        call_id: str,
        ended_at: datetime,
        outcome: str,
        unit: str | None,
        target_number: str | None,
        last_step: str | None,
        wrong_entries: int,
    ) -> None: ...


class SqlCallStore:
    """`CallStore` over core's functions and a session factory."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        hasher: Callable[[str], str] | None = None,
        read_session_factory: sessionmaker[Session] | None = None,
        node: str | None = None,
    ) -> None:
        from core.db import read_session_factory_for

        self._sessions = session_factory
        self._read_sessions = read_session_factory or read_session_factory_for(session_factory)
        # the read sessions' engine (read-only execution option): the lookups use its connections
        self._read_engine: Engine = self._read_sessions.kw["bind"]
        self._hasher = hasher
        self.node = node
        self.records: CallRecordWriter | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The write session factory."""
        return self._sessions

    @property
    def queues_call_records(self) -> bool:
        return self.records is not None

    def attach_records(self, writer: CallRecordWriter) -> None:
        """From now on ``start_call`` / ``finish_call`` queue into ``writer`` (the caller starts and
        closes it)."""
        self.records = writer

    def warm_up(self) -> None:
        """Before the daemon listens, what its first calls would pay otherwise (a restarted daemon
        meets Asterisk's reconnecting burst): the ORM's mappers configured (tens of ms holding the
        GIL, in whichever thread first uses the ORM: the call-record writer's first batch), the
        lookups' statements compiled and a pooled connection opened. Reads only."""
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
        self.lookup_caller("0000000000")
        self.number_on_contract(0, "0000000000")

    def lookup_caller(self, caller_number: str) -> CallerLine | None:
        from core.phone_line import lookup_caller_line

        with self._read_engine.begin() as connection:
            return lookup_caller_line(connection, caller_number)

    def number_on_contract(self, contract_id: int, number: str) -> bool:
        from core.phone_line import number_on_contract

        with self._read_engine.begin() as connection:
            return number_on_contract(connection, contract_id, number)

    def hash_password(self, plain: str) -> str:
        if self._hasher is not None:
            return self._hasher(plain)
        from core.secrets import hash_secret

        return hash_secret(plain)

    def save_temporary_password(
        self,
        *,
        line: CallerLine,
        unit: AuthUnit,
        target_number: str,
        password_hash: str,
        now: datetime,
        guard: SaveGuard | None = None,
    ) -> None:
        from core.phone_line import set_temporary_password

        if guard is not None and guard.abandoned:  # abandoned before its turn: no transaction at all
            raise SaveAbandoned()
        with self._sessions() as session, session.begin():
            set_temporary_password(
                session,
                contract_id=line.contract_id,
                unit=unit,
                target_number=target_number,
                password_hash=password_hash,
                now=now,
                channel="phone",
            )
            session.flush()  # every statement but the COMMIT done: what is left cannot fail halfway
            if guard is not None and not guard.begin_commit():
                raise SaveAbandoned()  # leaves the block: rolled back

    def start_call(
        self, *, call_id: str, caller: str | None, service_number: str | None, started_at: datetime
    ) -> None:
        self._record(CallStart(call_id, caller, service_number, started_at))

    def finish_call(
        self,
        *,
        call_id: str,
        ended_at: datetime,
        outcome: str,
        unit: str | None,
        target_number: str | None,
        last_step: str | None,
        wrong_entries: int,
    ) -> None:
        self._record(CallFinish(call_id, ended_at, outcome, unit, target_number, last_step, wrong_entries))

    def _record(self, event: CallEvent) -> None:
        """Queue the event into the attached writer, or write and commit it at once."""
        if self.records is not None:
            self.records.queue(event)
            return
        from core.call_records import write_call_event

        with self._sessions() as session, session.begin():
            write_call_event(session, event, node=self.node)
