"""core.throttle (budgets shared through the database) and core.web_sessions' verdict."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core import throttle
from core.web_sessions import SessionTimes, Standing, Verdict, verdict

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
BUDGET = throttle.Budget(limit=3, window_seconds=300)


def take(sessions: sessionmaker[Session], now: datetime, key: str = "198.51.100.1") -> throttle.Taken:
    with sessions() as session, session.begin():
        return throttle.take(session, scope="login_client", key=key, now=now, budget=BUDGET)


def test_a_budget_allows_its_limit_per_window_then_refuses_until_it_ends(
    db_sessions: sessionmaker[Session],
) -> None:
    assert [take(db_sessions, NOW).count for _ in range(3)] == [1, 2, 3]
    refused = take(db_sessions, NOW + timedelta(seconds=100))
    assert not refused.allowed and refused.retry_after_seconds == 200
    assert take(db_sessions, NOW, key="198.51.100.2").allowed  # another key has its own
    again = take(db_sessions, NOW + timedelta(seconds=300))
    assert again.allowed and again.count == 1  # a new window


def test_give_back_returns_an_event_of_the_same_window(db_sessions: sessionmaker[Session]) -> None:
    taken = [take(db_sessions, NOW) for _ in range(3)]
    with db_sessions() as session, session.begin():
        throttle.give_back(session, scope="login_client", key="198.51.100.1", taken=taken[-1])
    assert take(db_sessions, NOW).allowed
    assert not take(db_sessions, NOW).allowed


def test_parallel_takers_never_overshoot(db_sessions: sessionmaker[Session]) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        allowed = take(db_sessions, NOW).allowed
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 3 and len(results) == 20


def test_sweep_is_bounded(db_sessions: sessionmaker[Session]) -> None:
    for n in range(7):
        take(db_sessions, NOW, key=f"k{n}")
    with db_sessions() as session, session.begin():
        assert throttle.sweep(session, now=NOW + timedelta(seconds=300), batch=5) == 5
        assert throttle.sweep(session, now=NOW + timedelta(seconds=300), batch=5) == 2


def row(**overrides: Any) -> Any:
    values = {
        "created_at": NOW,
        "last_seen_at": NOW,
        "absolute_expires_at": NOW + timedelta(hours=8),
        "credential_generation": 4,
        "contract_credential_generation": 4,
        "unit": "line",
    }
    values.update(overrides)
    return SimpleNamespace(**values)


STANDING = Standing(
    credential_generation=4,
    credential_invalidated=False,
    contract_unit="line",
    contract_unit_changed_at=None,
    contract_credential_generation=4,
    contract_number_reset=False,
)
TIMES = SessionTimes(idle_seconds=900, lifetime_seconds=8 * 3600)


def test_verdict_of_a_session() -> None:
    later = NOW + timedelta(minutes=10)
    assert verdict(row(), STANDING, later, TIMES) is Verdict.OK
    assert verdict(row(), STANDING, NOW + timedelta(seconds=901), TIMES) is Verdict.IDLE
    assert verdict(row(last_seen_at=NOW + timedelta(hours=8)), STANDING, NOW + timedelta(hours=8), TIMES) is (
        Verdict.LIFETIME
    )
    assert verdict(row(), Standing(**{**vars(STANDING), "credential_generation": 5}), later, TIMES) is (
        Verdict.CREDENTIAL_REPLACED
    )
    assert verdict(row(), Standing(**{**vars(STANDING), "credential_invalidated": True}), later, TIMES) is (
        Verdict.CREDENTIAL_INVALIDATED
    )
    changed = Standing(**{**vars(STANDING), "contract_unit_changed_at": NOW + timedelta(minutes=1)})
    assert verdict(row(), changed, later, TIMES) is Verdict.CONTRACT_CHANGED
    assert verdict(row(), Standing(**{**vars(STANDING), "contract_unit": "number"}), later, TIMES) is (
        Verdict.CONTRACT_CHANGED
    )
    assert verdict(row(), Standing(**{**vars(STANDING), "contract_number_reset": True}), later, TIMES) is (
        Verdict.CONTRACT_RESET
    )
