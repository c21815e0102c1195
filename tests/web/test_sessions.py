"""The server-side session store: random ids, idle expiry, a new id at login."""

from __future__ import annotations

from datetime import timedelta

from tests.fixtures.web import FakeClock
from web_stub.sessions import SessionStore


def make_store(clock: FakeClock, minutes: int = 15) -> SessionStore:
    return SessionStore(idle_timeout=timedelta(minutes=minutes), clock=clock)


def test_session_ids_are_random_and_long() -> None:
    store = make_store(FakeClock())
    ids = {store.create().id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 40 for i in ids)


def test_idle_session_expires_and_activity_keeps_it_alive() -> None:
    clock = FakeClock()
    store = make_store(clock)
    session = store.create()
    clock.advance(minutes=14)
    assert store.get(session.id) == (session, False)  # touched: idle time starts again
    clock.advance(minutes=14)
    assert store.get(session.id) == (session, False)
    clock.advance(minutes=15, seconds=1)
    assert store.get(session.id) == (None, True)
    assert store.get(session.id) == (None, False)  # gone for good


def test_rotate_gives_new_id_and_csrf_token_and_forgets_the_old_id() -> None:
    store = make_store(FakeClock())
    session = store.create()
    old_id, old_token = session.id, session.csrf_token
    store.rotate(session)
    assert session.id != old_id and session.csrf_token != old_token
    assert store.get(old_id) == (None, False)
    assert store.get(session.id)[0] is session


def test_delete_and_purge() -> None:
    clock = FakeClock()
    store = make_store(clock, minutes=1)
    a, b = store.create(), store.create()
    store.delete(a)
    assert store.get(a.id) == (None, False)
    clock.advance(minutes=2)
    assert store.purge_expired() == 1
    assert store.get(b.id) == (None, False)


def test_store_is_bounded() -> None:
    clock = FakeClock()
    store = SessionStore(idle_timeout=timedelta(minutes=15), clock=clock, max_sessions=10)
    first = store.create()
    for _ in range(20):
        clock.advance(seconds=1)
        store.create()
    assert len(store) == 10
    assert store.get(first.id) == (None, False)
