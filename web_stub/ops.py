"""What operators watch on the web process: ``/metrics`` (Prometheus) and ``/readyz``, and the
counters behind them (docs/deploy.md "Metrics"). ``/healthz`` (alive) is the app's own route.

`install_ops(app, site, web)` is the one hook `create_app` calls. It counts from outside the pages,
so the pages know nothing of it:

- logins by outcome, from the backend's ``login`` answers (ok, wrong, invalidated, temporary_expired,
  throttled);
- lockouts: passwords that went from valid to locked (the core's guarded ``UPDATE … SET
  invalidated_at``, seen on the backend's engine, counted when its transaction commits; once per
  lockout however many tries race for the last one);
- requests refused with 429, by area of the site, from the responses;
- one-time-password mails sent and failed, from the mailer;
- database errors, from the driver (SQLAlchemy's ``handle_error``);
- live sessions: a count in the database when Prometheus scrapes (sessions live there, shared by
  every web process: each exports the platform's count; alert on ``max``).

``/metrics`` is protected, not hidden: the web port is the public one, and behind the reverse proxy
every request comes from the proxy's own address, so no address check can tell Prometheus from the
Internet. It answers only a bearer token (``IVR_WEB__METRICS_TOKEN``; Prometheus sends it with
``authorization: {credentials_file: ...}``), compared in constant time; without a configured token
it is 404. No label carries a phone number, a password or a mail address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.secrets import constant_time_equals
from web_stub.settings import WebSettings

if TYPE_CHECKING:
    from web_stub.site import Site

log = structlog.get_logger("web")

LOGIN_OUTCOMES = ("ok", "wrong", "invalidated", "temporary_expired", "throttled")
AREAS = ("login", "otp", "settings", "password", "api", "other")
READY_TIMEOUT_SECONDS = 3.0


def area_of(path: str) -> str:
    """A fixed word for the part of the site a path belongs to (never the path itself)."""
    if path in ("/login", "/api/login"):
        return "login"
    for prefix in ("otp", "settings", "password", "api"):
        if path == f"/{prefix}" or path.startswith(f"/{prefix}/"):
            return prefix
    return "other"


class _SessionCount(Collector):
    """``ivr_web_sessions``: sessions not yet expired, counted in the database at scrape time."""

    def __init__(self, session_factory: Any) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterable[Metric]:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        from core.web_models import LoginSession

        family = GaugeMetricFamily(
            "ivr_web_sessions", "Logged-in sessions not yet expired, in the shared database (all nodes)"
        )
        if self.session_factory is not None:
            try:
                with self.session_factory() as session:
                    now = datetime.now(UTC)
                    count = session.scalar(
                        select(func.count()).select_from(LoginSession).where(LoginSession.expires_at > now)
                    )
                family.add_metric([], float(count or 0))
            except SQLAlchemyError:  # the database is down: no sample, the rest of /metrics still served
                pass
        yield family


class WebMetrics:
    """Everything the web process exports, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.logins = Counter("ivr_web_logins", "Login attempts, by outcome", ["outcome"], registry=r)
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        self.lockouts = Counter(
            "ivr_web_lockouts", "Passwords locked by a wrong login (the last try allowed)", registry=r
        )
        self.throttled = Counter(
            "ivr_web_throttled_requests",
            "Requests refused with 429, by area of the site",
            ["area"],
            registry=r,
        )
        for area in AREAS:
            self.throttled.labels(area)
        self.otp_mails = Counter(
            "ivr_web_otp_mails", "One-time-password and registration mails, by result", ["result"], registry=r
        )
        for result in ("sent", "failed"):
            self.otp_mails.labels(result)
        self.database_errors = Counter(
            "ivr_web_database_errors", "Errors raised by the database driver", registry=r
        )
        self.ready = Gauge("ivr_web_ready", "1 when the last /readyz found the web ready", registry=r)

    def watch_database(self, session_factory: Any) -> None:
        """Count the driver's errors and the committed lockouts on ``session_factory``'s engine,
        and count the live sessions through it at scrape time."""
        from sqlalchemy import event

        engine = session_factory.kw.get("bind")
        if engine is not None:
            event.listen(engine, "handle_error", lambda _context: self.database_errors.inc())
            event.listen(engine, "after_cursor_execute", _note_lockouts)
            event.listen(engine, "commit", self._count_lockouts)
            event.listen(engine, "rollback", lambda connection: connection.info.pop(_PENDING, None))
        self.registry.register(_SessionCount(session_factory))

    def _count_lockouts(self, connection: Any) -> None:
        pending = connection.info.pop(_PENDING, 0)
        if pending:
            self.lockouts.inc(pending)


_PENDING = "ivr.web.lockouts_pending"
#: the core's one way to lock a password (core.auth.settle_attempt, core.limits.invalidate_password):
#: UPDATE credentials SET invalidated_at=… WHERE … AND credentials.invalidated_at IS NULL
LOCK_STATEMENT_START = "UPDATE credentials SET invalidated_at="
LOCK_STATEMENT_GUARD = "credentials.invalidated_at IS NULL"


def _note_lockouts(
    connection: Any, cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool
) -> None:
    """After each statement: a password that went from valid to locked (the guarded UPDATE changed
    a row), counted once its transaction commits. A try refused because a concurrent one took the
    last changes no row, so each lockout counts once however many race for it."""
    if statement.startswith(LOCK_STATEMENT_START) and LOCK_STATEMENT_GUARD in statement:
        changed = cursor.rowcount
        if changed and changed > 0:
            connection.info[_PENDING] = connection.info.get(_PENDING, 0) + changed


class _CountedBackend:
    """The credential backend, with its login answers counted (everything else passed through)."""

    def __init__(self, backend: Any, metrics: WebMetrics) -> None:
        self._backend = backend
        self._metrics = metrics

    def login(self, **kwargs: Any) -> Any:
        outcome = self._backend.login(**kwargs)
        self._metrics.logins.labels(outcome.status).inc()
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class _CountedMailer:
    """The mailer, with its sends counted by result."""

    def __init__(self, mailer: Any, metrics: WebMetrics) -> None:
        self._mailer = mailer
        self._metrics = metrics

    async def send(self, message: Any) -> None:
        try:
            await self._mailer.send(message)
        except Exception:
            self._metrics.otp_mails.labels("failed").inc()
            raise
        self._metrics.otp_mails.labels("sent").inc()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mailer, name)


class _CountThrottled:
    """ASGI middleware: counts the responses with status 429, by area."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 429:
                self.metrics.throttled.labels(area_of(scope.get("path", ""))).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


def _bearer_matches(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and constant_time_equals(given.strip(), token)


def install_ops(app: Starlette, site: Site, web: WebSettings) -> WebMetrics:
    """Add /metrics and /readyz to ``app`` and count what the module docstring lists."""
    from core.db import database_readiness

    metrics = WebMetrics()
    from sqlalchemy.orm import sessionmaker

    session_factory = getattr(site.backend, "session_factory", None)
    if not isinstance(session_factory, sessionmaker):  # a test's backend without a database
        session_factory = None
    if session_factory is not None:
        metrics.watch_database(session_factory)
    site.backend = cast(Any, _CountedBackend(site.backend, metrics))
    site.mailer = cast(Any, _CountedMailer(site.mailer, metrics))
    app.add_middleware(_CountThrottled, metrics=metrics)
    token = web.metrics_token.get_secret_value() if web.metrics_token else None

    async def metrics_page(request: Request) -> Response:
        if token is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        if not _bearer_matches(request, token):
            return Response(
                "Unauthorized",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        engine = session_factory.kw.get("bind") if session_factory is not None else None
        reason: str | None = None
        if engine is not None:
            try:
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    reason = await run_in_threadpool(database_readiness, engine)
            except TimeoutError:
                reason = "database_unreachable"
        metrics.ready.set(1 if reason is None else 0)
        if reason is None:
            return JSONResponse({"status": "ready"}, headers={"Cache-Control": "no-store"})
        log.warning("web_not_ready", reason=reason)
        return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)

    app.router.routes.append(Route("/metrics", metrics_page, methods=["GET"]))
    app.router.routes.append(Route("/readyz", readyz, methods=["GET"]))
    return metrics
