"""The web login and account-security pages (seed 003, P7–P28) as a Starlette app.

:func:`create_app` is the one place that assembles the app: the shared :class:`~web_stub.site.Site`
(sessions, rendering, guards), one page group per module of :mod:`web_stub.pages` with its routes
(every URL as before), the static files, the middleware and the error page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from core.policy import PolicyLike
from core.secrets import SecretHasher
from web_stub import messages as msg
from web_stub.backend import CredentialBackend
from web_stub.mail import Mailer, SmtpMailer
from web_stub.pages import api, bulk, login, otp_login, otp_settings, passwords, units
from web_stub.sessions import Clock
from web_stub.settings import SmtpSettings, WebSettings
from web_stub.site import (
    HERE,
    BodyLimit,
    BodyTooLarge,
    Detour,
    SecurityHeaders,
    Site,
    client_address,
    log,
    utc_now,
)

__all__ = ["client_address", "create_app"]

#: The page groups, each a class taking the Site with a ``routes()`` method.
PAGE_GROUPS = (
    login.LoginPages,
    passwords.PasswordPages,
    otp_login.OtpLoginPages,
    otp_settings.OtpSettingsPages,
    units.UnitPages,
    bulk.BulkPages,
    api.ApiPages,
)


def create_app(
    web: WebSettings,
    smtp: SmtpSettings,
    credentials: PolicyLike,
    *,
    database_url: str | None = None,
    clock: Clock | None = None,
    mailer: Mailer | None = None,
    backend: CredentialBackend | None = None,
    hasher: SecretHasher | None = None,
) -> Starlette:
    """The ASGI app from the settings sections it needs. The credential store is ``database_url``
    (or an injected ``backend``); tests inject ``clock`` (24 h / 300 s / idle expiry) or ``mailer``,
    and ``hasher`` (argon2id with cheap parameters; the production parameters without it)."""
    if backend is None:
        if database_url is None:
            raise ValueError("create_app needs the credential store: database_url or backend")
        from web_stub.core_backend import CoreBackend

        backend = CoreBackend.open(database_url, credentials, web, hasher=hasher)
    site = Site(
        web=web,
        smtp=smtp,
        policy=credentials,
        backend=backend,
        clock=clock or utc_now,
        mailer=mailer or SmtpMailer(smtp),
    )
    routes: list[BaseRoute] = [
        Route(route.path, site.endpoint(route.endpoint), methods=route.methods)
        for group in PAGE_GROUPS
        for route in group(site).routes()
    ]
    routes.append(Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"))
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(BodyLimit, web=site)],
        exception_handlers={
            Detour: site.detour_answer,
            BodyTooLarge: site.detour_answer,
            Exception: _error_page(site),
        },
    )
    app.state.site = site
    from web_stub.ops import install_ops  # /metrics, /readyz and their counters

    install_ops(app, site, web)
    return app


def _error_page(site: Site) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        log.error("web_unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "server_error", "message": msg.SYSTEM_ERROR}, status_code=500)
        return site.message_page(
            request,
            "エラー",
            [],
            None,
            status_code=500,
            errors=[msg.SYSTEM_ERROR],
            link_url="/login",
            link_text="ログイン画面へ",
        )

    return handler
