"""Counted budgets shared through the database: N events per (scope, key) per window.

A window starts with the first event counted and lasts ``window_seconds``; within it at most
``limit`` events are taken, after that :func:`take` refuses until the window ends. Taking reads
and writes the counter under its row lock, so concurrent takers on any number of processes never
overshoot the limit, on SQLite and on PostgreSQL. A taker
whose event turns out not to count (a login that succeeded) gives it back with :func:`give_back`.

The caller owns the session and the transaction; nothing here hashes or sleeps. Decisions on a
counter's state are the pure function :func:`decide`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.web_models import RateCounter

SWEEP_BATCH = 500


@dataclass(frozen=True)
class Budget:
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Taken:
    """The outcome of :func:`take`: ``allowed`` (then ``count`` includes this event)."""

    allowed: bool
    count: int
    window_started_at: datetime
    retry_after_seconds: int = 0


def window_open(window_started_at: datetime, now: datetime, budget: Budget) -> bool:
    return window_started_at <= now < window_started_at + timedelta(seconds=budget.window_seconds)


def retry_after_seconds(window_started_at: datetime, now: datetime, budget: Budget) -> int:
    """Whole seconds until the window that started at ``window_started_at`` ends (at least 1)."""
    end = window_started_at + timedelta(seconds=budget.window_seconds)
    return max(1, math.ceil((end - now).total_seconds()))


def decide(count: int, window_started_at: datetime, now: datetime, budget: Budget) -> Taken:
    """Whether one more event fits a counter in this state (pure): a counter whose window has
    ended starts a new one with this event."""
    if not window_open(window_started_at, now, budget):
        return Taken(budget.limit >= 1, 1, now, 0 if budget.limit >= 1 else budget.window_seconds)
    if count < budget.limit:
        return Taken(True, count + 1, window_started_at)
    return Taken(False, count, window_started_at, retry_after_seconds(window_started_at, now, budget))


def _ensure_row(session: Session, scope: str, key: str, now: datetime, budget: Budget) -> None:
    values = {
        "scope": scope,
        "key": key,
        "window_started_at": now,
        "expires_at": now + timedelta(seconds=budget.window_seconds),
        "count": 0,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(RateCounter).values(**values).on_conflict_do_nothing())


def take(session: Session, *, scope: str, key: str, now: datetime, budget: Budget) -> Taken:
    """Count one event if the budget allows it. The counter row is locked (``FOR UPDATE`` on
    PostgreSQL; SQLite's write transaction holds the database) from the read to the write, so
    concurrent takers on any number of processes never overshoot the limit."""
    _ensure_row(session, scope, key, now, budget)
    count, started = session.execute(
        select(RateCounter.count, RateCounter.window_started_at)
        .where(RateCounter.scope == scope, RateCounter.key == key)
        .with_for_update()
    ).one()
    taken = decide(count, started, now, budget)
    if taken.allowed:
        session.execute(
            update(RateCounter)
            .where(RateCounter.scope == scope, RateCounter.key == key)
            .values(
                count=taken.count,
                window_started_at=taken.window_started_at,
                expires_at=taken.window_started_at + timedelta(seconds=budget.window_seconds),
            )
            .execution_options(synchronize_session=False)
        )
    return taken


def give_back(session: Session, *, scope: str, key: str, taken: Taken) -> None:
    """Return an event taken by :func:`take` (only within the same window)."""
    if not taken.allowed:
        return
    session.execute(
        update(RateCounter)
        .where(
            RateCounter.scope == scope,
            RateCounter.key == key,
            RateCounter.window_started_at == taken.window_started_at,
            RateCounter.count > 0,
        )
        .values(count=RateCounter.count - 1)
        .execution_options(synchronize_session=False)
    )


def current(session: Session, *, scope: str, key: str, now: datetime, budget: Budget) -> Taken:
    """What :func:`take` would answer, without counting (``count``: events in the open window)."""
    row = session.execute(
        select(RateCounter.count, RateCounter.window_started_at).where(
            RateCounter.scope == scope, RateCounter.key == key
        )
    ).one_or_none()
    if row is None or not window_open(row[1], now, budget):
        return Taken(budget.limit >= 1, 0, now)
    if row[0] < budget.limit:
        return Taken(True, row[0], row[1])
    return Taken(False, row[0], row[1], retry_after_seconds(row[1], now, budget))


def forget(session: Session, *, scope: str, key: str) -> None:
    session.execute(delete(RateCounter).where(RateCounter.scope == scope, RateCounter.key == key))


def sweep(session: Session, *, now: datetime, batch: int = SWEEP_BATCH) -> int:
    """Delete at most ``batch`` counters whose window has ended."""
    keys = session.execute(
        select(RateCounter.scope, RateCounter.key).where(RateCounter.expires_at <= now).limit(batch)
    ).all()
    for scope, key in keys:
        session.execute(
            delete(RateCounter).where(
                RateCounter.scope == scope, RateCounter.key == key, RateCounter.expires_at <= now
            )
        )
    return len(keys)
