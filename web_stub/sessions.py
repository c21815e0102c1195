"""Server-side web sessions: an in-process store keyed by a random id, with idle expiry.

The browser holds only the random id (HttpOnly cookie). Everything else (who logged in, which step of
the login they are at, the CSRF token) stays here. Limitation: the store lives in one process, so a
deployment with several web nodes needs sticky sessions (or a shared store); a restart logs everyone
out. Failure counters are not kept here: they live in the credential database, so a new browser
session never resets them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

Clock = Callable[[], datetime]


@dataclass
class WebSession:
    """One browser's state. ``stage`` is where the login stands (see ``web_stub.app``)."""

    id: str
    csrf_token: str
    created_at: datetime
    last_seen: datetime
    stage: str = "anonymous"
    number: str | None = None
    contract_id: int | None = None
    unit: str | None = None
    role: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.stage != "anonymous" and self.number is not None


class SessionStore:
    """Sessions by id; a session idle longer than ``idle_timeout`` is gone."""

    def __init__(self, *, idle_timeout: timedelta, clock: Clock, max_sessions: int = 100_000) -> None:
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._max_sessions = max_sessions
        self._sessions: dict[str, WebSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self) -> WebSession:
        now = self._clock()
        if len(self._sessions) >= self._max_sessions:
            self.purge_expired()
        if len(self._sessions) >= self._max_sessions:
            # Drop the longest-idle session rather than refusing new visitors.
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = WebSession(
            id=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> tuple[WebSession | None, bool]:
        """The live session for ``session_id`` (touching it) and whether it had just expired."""
        if not session_id:
            return None, False
        session = self._sessions.get(session_id)
        if session is None:
            return None, False
        now = self._clock()
        if now - session.last_seen > self._idle_timeout:
            del self._sessions[session_id]
            return None, True
        session.last_seen = now
        return session, False

    def rotate(self, session: WebSession) -> WebSession:
        """Give the session a new id and CSRF token (at login), so a planted id is worthless."""
        self._sessions.pop(session.id, None)
        session.id = secrets.token_urlsafe(32)
        session.csrf_token = secrets.token_urlsafe(32)
        session.last_seen = self._clock()
        self._sessions[session.id] = session
        return session

    def delete(self, session: WebSession) -> None:
        self._sessions.pop(session.id, None)

    def purge_expired(self) -> int:
        now = self._clock()
        expired = [sid for sid, s in self._sessions.items() if now - s.last_seen > self._idle_timeout]
        for sid in expired:
            del self._sessions[sid]
        return len(expired)
