"""What every page shares: the session of a request (load, persist, cookies), rendering, CSRF,
the guards that send a request elsewhere (``logged_in`` raising :class:`Detour`, answered once by
:meth:`Site.endpoint`), the login's moves (:meth:`Site.advance` over :mod:`web_stub.stages`), the
security middleware. The page groups (:mod:`web_stub.pages`) hold a :class:`Site` and add their
routes. A page of another stage redirects to the page of the session's stage, so nothing is
reachable before the steps in front of it are done. Credential work (database, argon2) runs in a
threadpool.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.phone import format_number
from core.policy import PolicyLike
from core.web_sessions import session_id_hash
from web_stub import messages as msg
from web_stub.backend import (
    CredentialBackend,
    LoginOutcome,
    OtpState,
    SessionRecord,
)
from web_stub.csv_files import (
    BULK_THRESHOLD,
    csv_download,
)
from web_stub.mail import Mailer
from web_stub.sessions import Clock, FormToken, SessionData, WebSession, new_cookie_value, unseal
from web_stub.settings import SmtpSettings, WebSettings
from web_stub.stages import API_NEXT, PAGES, Event, Stage, next_stage, password_done

log = structlog.get_logger("web")

HERE = Path(__file__).resolve().parent


@functools.cache
def page_templates() -> Jinja2Templates:
    """The pages' templates, one set for every app of the process, built at the first app: each
    template is compiled once (the tests build an app per test, hundreds in one process; compiling
    was most of a page's time). No app changes the set's environment."""
    return Jinja2Templates(directory=str(HERE / "templates"))


SESSION_COOKIE = "ivr_session"
UNIT_LABELS = {"line": "回線単位", "number": "電話番号単位", "admin_user": "管理者/ユーザ単位"}
STAGE_PAGES = PAGES  # the names the pages used before web_stub.stages
STAGE_API_NEXT = API_NEXT


def utc_now() -> datetime:
    return datetime.now(UTC)


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison that also survives non-ASCII input (a 403, not a 500)."""
    return bool(given) and secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def address_change_allowed(stage: str, data: SessionData) -> bool:
    """P22: before the code (the send page), after the confirmation ID and password were checked;
    P23: from the menu after a two-step login of this session, straight away."""
    return data.confirmation_checked or (stage == "home" and data.two_step)


def mask_email(email: str | None) -> str:
    if not email or "@" not in email:
        return ""
    local, _, domain = email.partition("@")
    return f"{local[:2]}***@{domain}"


class SecurityHeaders:
    """Headers every answer carries: no framing, no caching of account pages, no referrer leak."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                    ),
                ]
                if not scope["path"].startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                headers.extend((k, v) for k, v in extra if k not in names)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Detour(Exception):
    """A guard's answer in place of the page: raised by ``require…``, answered by the route wrapper."""

    def __init__(self, response: Response) -> None:
        super().__init__("detour")
        self.response = response


class BodyTooLarge(Exception):
    """The request body passed its route's cap while it was being read."""


def client_key(address: str) -> str:
    """What the per-client budget counts: an IPv4 address, an IPv6 /64, or the raw peer name."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()[:80] or "unknown"
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client a request comes from: the peer, or, when the peer is a trusted proxy, the nearest
    address in ``X-Forwarded-For`` that is not one (hops to its left are the client's own claims)."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not peer:
        return "unknown"
    if not forwarded_for or not is_trusted(peer):
        return client_key(peer)
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return client_key(hop)
    return client_key(hops[0] if hops else peer)


UPLOAD_PATHS = ("/password/bulk", "/settings/otp/bulk")


def body_limit_for(path: str, web: Any) -> int:
    """The body cap of a route: the login small, CSV uploads a few MB, other forms in between."""
    if path in ("/login", "/api/login"):
        return int(web.max_login_bytes)
    if path in UPLOAD_PATHS or path.startswith("/settings/unit/"):
        return int(web.max_upload_bytes)
    return int(web.max_form_bytes)


class BodyLimit:
    """Caps request bodies by route before anything reads or spools them: a ``Content-Length`` over
    the cap is answered 413 at once; a body without one is cut off when it passes the cap."""

    def __init__(self, app: ASGIApp, *, web: Site) -> None:
        self.app = app
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope["path"], self.web.web)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            log.info("web_body_too_large", path=scope["path"], limit=limit)
            await self.web.too_large_page(Request(scope), limit)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


@dataclass
class Context:
    """One request's session as loaded by :meth:`Site.load` (``ended``: why it just ended)."""

    session: WebSession | None
    ended: str | None

    @property
    def idle_expired(self) -> bool:
        return self.ended is not None


SCOPE_CONTEXT = "ivr.web.context"
SCOPE_SESSIONS = "ivr.web.sessions"
Handler = Callable[[Request], Awaitable[Response]]


class Site:
    """The shared part of every page (one per app): settings sections, the credential backend,
    the clock, the mailer, the templates; sessions, rendering and guards."""

    def __init__(
        self,
        *,
        web: WebSettings,
        smtp: SmtpSettings,
        policy: PolicyLike,
        backend: CredentialBackend,
        clock: Clock,
        mailer: Mailer,
    ) -> None:
        self.web = web
        self.smtp = smtp
        self.policy = policy
        self.backend = backend
        self.clock = clock
        self.mailer = mailer
        self.service_number = web.service_number
        self.sender_domain = smtp.sender.rpartition("@")[2]
        self.form_token = FormToken(self.web.secret_key.get_secret_value())
        self.trusted_proxies = [ipaddress.ip_network(p, strict=False) for p in self.web.trusted_proxies]
        self.templates = page_templates()

    # ----------------------------------------------------------------- plumbing
    # ----------------------------------------------------------------- plumbing
    def endpoint(self, handler: Handler) -> Handler:
        """A route: the handler, then the sessions it touched are stored, when it answered or a
        guard raised (a :class:`Detour`, answered by :meth:`detour_answer`, the app's exception
        handler for it)."""

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except (Detour, BodyTooLarge):
                await self.persist(request)  # e.g. the stage a guard's redirect points to
                raise
            await self.persist(request)  # not after a failure: nothing half-done is stored
            return response

        return run

    async def detour_answer(self, request: Request, exc: Exception) -> Response:
        """The one exception handler of the guards: a :class:`Detour`'s response, or the page of
        a body that passed its cap while it was read."""
        if isinstance(exc, Detour):
            return exc.response
        limit = body_limit_for(request.url.path, self.web)
        log.info("web_body_too_large", path=request.url.path, limit=limit)
        return self.too_large_page(request, limit)

    def _sessions_of(self, request: Request) -> list[WebSession]:
        found = request.scope.setdefault(SCOPE_SESSIONS, [])
        assert isinstance(found, list)
        return found

    async def load(self, request: Request) -> Context:
        cached = request.scope.get(SCOPE_CONTEXT)
        if isinstance(cached, Context):
            return cached
        cookie = request.cookies.get(SESSION_COOKIE)
        ctx = Context(session=None, ended=None)
        if cookie and len(cookie) <= 128:
            record, ended = await run_in_threadpool(
                self.backend.session_load, id_hash=session_id_hash(cookie), now=self.clock()
            )
            session = self._session_from(cookie, record) if record is not None else None
            if session is not None:
                self._sessions_of(request).append(session)
            ctx = Context(session=session, ended=ended)
        request.scope[SCOPE_CONTEXT] = ctx
        return ctx

    @staticmethod
    def _session_from(cookie: str, record: SessionRecord) -> WebSession:
        opened = unseal(cookie, record.sealed) if record.sealed else None
        session = WebSession(
            cookie=cookie,
            stage=Stage(record.stage),
            number=record.number,
            contract_id=record.contract_id,
            unit=record.unit,
            role=record.role,
            created_at=record.created_at,
            data=SessionData.from_json(record.data),
            secrets=json.loads(opened) if opened else {},
            stored_hash=session_id_hash(cookie),
        )
        session.loaded_state = session.state()
        return session

    async def persist(self, request: Request) -> None:
        """Store what this request changed in its sessions (before the answer leaves)."""
        for session in self._sessions_of(request):
            if not session.needs_save:
                continue
            if session.ended:
                if session.stored_hash is not None:
                    await run_in_threadpool(self.backend.session_delete, id_hash=session.stored_hash)
                continue
            data = session.data.to_json()
            if session.stored_hash is None:
                await run_in_threadpool(
                    self.backend.session_open,
                    id_hash=session.id_hash,
                    now=self.clock(),
                    stage=str(session.stage),
                    number=session.number,
                    data=data,
                    sealed=session.sealed(),
                )
            else:
                await run_in_threadpool(
                    self.backend.session_save,
                    id_hash=session.stored_hash,
                    now=self.clock(),
                    stage=str(session.stage),
                    data=data,
                    sealed=session.sealed(),
                    new_id_hash=session.id_hash if session.id_hash != session.stored_hash else None,
                    resnapshot=session.resnapshot,
                )
            session.stored_hash = session.id_hash
            session.loaded_state = session.state()

    def _cookie(self, response: Response, name: str, value: str) -> None:
        response.set_cookie(
            name, value, httponly=True, samesite="lax", secure=self.web.cookie_secure, path="/"
        )

    def set_cookie(self, response: Response, session: WebSession) -> None:
        self._cookie(response, SESSION_COOKIE, session.cookie)

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=self.web.cookie_secure
        )

    def client_of(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"), self.trusted_proxies)

    def render(
        self,
        request: Request,
        template: str,
        title: str,
        session: WebSession | None,
        *,
        status_code: int = 200,
        errors: list[str] | None = None,
        notice: str | None = None,
        csrf_token: str | None = None,
        **context: Any,
    ) -> Response:
        otp_enabled = bool(session and session.data.otp_status == "on")
        if csrf_token is None:
            csrf_token = session.csrf_token if session else ""
        response = self.templates.TemplateResponse(
            request,
            template,
            {
                "page_title": title,
                "ws": session,
                "csrf_token": csrf_token,
                "unit_label": UNIT_LABELS.get(session.unit or "", "") if session else "",
                "otp_enabled": otp_enabled,
                "menu_bulk": bool(session and session.data.bulk),
                "menu_release": bool(session and self.release_allowed(session)),
                "copyright_notice": self.web.copyright_notice,
                "sender_domain": self.sender_domain,
                "errors": errors or [],
                "notice": notice,
                "static_url": "/static",
                "service_number_display": format_number(self.service_number),
                "limits": self.web,
                **context,
            },
            status_code=status_code,
        )
        if session is not None and not session.ended:
            self.set_cookie(response, session)
        return response

    def render_anonymous(self, request: Request, template: str, title: str, **kwargs: Any) -> Response:
        """A form page without a session: its CSRF token is the signed double-submit token."""
        value = request.cookies.get(FormToken.COOKIE) or ""
        if not value or len(value) > 128:
            value = FormToken.new_value()
        response = self.render(
            request, template, title, None, csrf_token=self.form_token.token_for(value), **kwargs
        )
        self._cookie(response, FormToken.COOKIE, value)
        return response

    def anonymous_form_ok(self, request: Request, form: dict[str, str]) -> bool:
        return self.form_token.valid(request.cookies.get(FormToken.COOKIE), form.get("csrf_token", ""))

    def login_form(self, request: Request, *, status_code: int = 200, **kwargs: Any) -> Response:
        kwargs.setdefault("number", "")
        return self.render_anonymous(request, "login.html", "ログイン", status_code=status_code, **kwargs)

    def message_page(
        self,
        request: Request,
        title: str,
        paragraphs: list[str],
        session: WebSession | None,
        *,
        status_code: int = 200,
        link_url: str | None = None,
        link_text: str | None = None,
        errors: list[str] | None = None,
    ) -> Response:
        return self.render(
            request,
            "message.html",
            title,
            session,
            status_code=status_code,
            paragraphs=paragraphs,
            link_url=link_url,
            link_text=link_text,
            errors=errors,
        )

    def too_large_page(self, request: Request, limit: int) -> Response:
        if request.url.path.startswith("/api/"):
            return self.api_error(413, "payload_too_large", msg.body_too_large(limit))
        return self.message_page(
            request,
            "エラー",
            [],
            None,
            status_code=413,
            errors=[msg.body_too_large(limit)],
            link_url="/login",
            link_text="戻る",
        )

    def throttled_page(self, request: Request, retry_after: int) -> Response:
        log.warning("web_login_throttled", retry_after=retry_after)
        text = msg.login_throttled(retry_after)
        if request.url.path.startswith("/api/"):
            response: Response = JSONResponse(
                {"error": "too_many_attempts", "message": text, "retry_after": retry_after}, status_code=429
            )
        else:
            response = self.login_form(request, status_code=429, errors=[text])
        response.headers["Retry-After"] = str(retry_after)
        return response

    def redirect(self, url: str, session: WebSession | None = None) -> Response:
        response = RedirectResponse(url, status_code=303)
        if session is not None and not session.ended:
            self.set_cookie(response, session)
        return response

    def to_login(self, request: Request, ctx: Context) -> Response:
        url = {"idle": "/login?timeout=1", None: "/login"}.get(ctx.ended, f"/login?ended={ctx.ended}")
        response = self.redirect(url)
        self.clear_cookie(response)
        return response

    async def form(self, request: Request) -> dict[str, str]:
        data = await request.form()
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def too_long(self, *values: str) -> bool:
        """A secret longer than any valid one is refused before it is hashed."""
        return any(len(v) > self.web.max_secret_chars for v in values)

    def csrf_ok(self, session: WebSession | None, form: dict[str, str]) -> bool:
        return session is not None and same_token(form.get("csrf_token", ""), session.csrf_token)

    def csrf_failed(self, request: Request, ctx: Context) -> Response:
        if ctx.ended or ctx.session is None:
            log.info("web_form_without_session", path=request.url.path, ended=ctx.ended)
            return self.to_login(request, ctx)
        log.warning("web_csrf_rejected", path=request.url.path, number=ctx.session.number)
        return self.message_page(
            request,
            "エラー",
            [msg.FORM_EXPIRED],
            ctx.session,
            status_code=403,
            link_url=STAGE_PAGES.get(ctx.session.stage, "/login"),
            link_text="戻る",
        )

    async def logged_in(self, request: Request, *stages: Stage) -> WebSession:
        """The guard of a page: the session if it is logged in at one of ``stages``; else raises a
        :class:`Detour` (to the login, or to the page of the session's stage), which
        :meth:`endpoint` answers. The session's number, contract, unit and role are all set."""
        ctx = await self.load(request)
        return self.at_stage(request, ctx, stages)

    def at_stage(self, request: Request, ctx: Context, stages: tuple[Stage, ...]) -> WebSession:
        session = ctx.session
        if session is None or not session.authenticated:
            raise Detour(self.to_login(request, ctx))
        if session.stage not in stages:
            raise Detour(self.redirect(STAGE_PAGES[session.stage], session))
        return session

    async def logged_in_form(self, request: Request, *stages: Stage) -> tuple[WebSession, dict[str, str]]:
        """As :meth:`logged_in`, for a form's POST: its CSRF token first."""
        ctx = await self.load(request)
        form = await self.form(request)
        if not self.csrf_ok(ctx.session, form):
            raise Detour(self.csrf_failed(request, ctx))
        return self.at_stage(request, ctx, stages), form

    def begin_login(self, request: Request, outcome: LoginOutcome) -> WebSession:
        """A new session (a new cookie value) for a login whose password was right."""
        assert outcome.number and outcome.contract_id is not None and outcome.unit and outcome.role
        session = WebSession(
            cookie=new_cookie_value(),
            stage=Stage.ANONYMOUS,
            number=outcome.number,
            contract_id=outcome.contract_id,
            unit=outcome.unit,
            role=outcome.role,
            created_at=self.clock(),
            data=SessionData(
                otp_status=outcome.otp.status,
                otp_email=outcome.otp.email,
                login_attempt_id=secrets.token_urlsafe(16),
                change_reason=outcome.change_reason,
            ),
        )
        self._sessions_of(request).append(session)
        self.advance(
            session, Event.MUST_CHANGE if outcome.must_change_password else password_done(outcome.otp.status)
        )
        return session

    def advance(self, session: WebSession, event: Event) -> None:
        """Move the login on by ``event`` (:data:`web_stub.stages.TRANSITIONS`, the only place
        a stage changes). Reaching home completes the login: a new cookie value, the code's
        login attempt forgotten."""
        before = session.stage
        session.stage = next_stage(before, event)
        if session.stage is Stage.HOME and before != Stage.HOME:
            session.rotate()
            session.data.login_attempt_id = None
            log.info("web_login_completed", number=session.number, unit=session.unit, role=session.role)

    async def refresh_otp(self, session: WebSession) -> OtpState:
        state = await run_in_threadpool(self.backend.otp_state, number=session.number)
        session.data.otp_status = state.status
        session.data.otp_email = state.email
        return state

    def end_session_with(self, request: Request, session: WebSession, title: str, text: str) -> Response:
        """Log out with an explanation (the login must start again)."""
        session.end()
        response = self.message_page(
            request,
            title,
            [],
            None,
            status_code=403,
            errors=[text],
            link_url="/login",
            link_text="ログイン画面へ",
        )
        self.clear_cookie(response)
        return response

    def invalidated(self, temporary: bool | None) -> str:
        """The lockout message with this site's policy (which password, how many tries, whom to call)."""
        return msg.invalidated_message(
            self.service_number,
            temporary=temporary,
            temporary_tries=self.policy.temporary_max_failures,
            permanent_tries=self.policy.permanent_max_failures,
        )

    def refused_message(self, outcome: LoginOutcome) -> str:
        if outcome.status == "temporary_expired":
            return msg.temporary_expired_message(self.service_number)
        return self.invalidated(outcome.temporary)

    async def password_targets(self, session: WebSession) -> list[str]:
        """Whose password this login may change: its own; an admin any number of the contract (P12)."""
        assert session.number is not None
        if session.role != "admin" or session.contract_id is None or session.unit is None:
            return [session.number]
        rows = await run_in_threadpool(
            self.backend.scope, contract_id=session.contract_id, unit=session.unit, number=session.number
        )
        return [row.number for row in rows]

    # ----------------------------------------------------------------- 33 numbers or more (P12–P13)
    async def bulk_allowed(self, session: WebSession) -> list[str]:
        """The numbers of an admin login with at least BULK_THRESHOLD of them; else []."""
        targets = await self.password_targets(session)
        return targets if session.role == "admin" and len(targets) >= BULK_THRESHOLD else []

    async def marks_csv(self, session: WebSession, numbers: list[str], filename: str) -> Response:
        """The bulk download: one row per number, ``*`` when its password is temporary or unset."""
        marks = await run_in_threadpool(self.backend.password_marks, numbers=numbers, now=self.clock())
        log.info("web_bulk_download", number=session.number, rows=len(numbers))
        return csv_download([[number, "*" if marks.get(number) else ""] for number in numbers], filename)

    # ----------------------------------------------------------------- address change
    def otp_settings_locked_page(self, request: Request, session: WebSession) -> Response:
        log.info("web_otp_settings_locked", number=session.number)
        back = "/otp/send" if session.stage == "otp_code" else "/home"
        return self.message_page(
            request,
            "ワンタイムパスワード設定",
            [],
            session,
            status_code=423,
            errors=[msg.otp_settings_locked(self.web.confirmation_failures_per_number, self.service_number)],
            link_url=back,
            link_text="戻る",
        )

    async def require_otp_settings(self, request: Request, session: WebSession) -> None:
        """The one-time-password settings pages: registered, and not locked for this number."""
        state = await self.refresh_otp(session)
        if state.email is None:
            raise Detour(self.redirect(STAGE_PAGES[session.stage], session))
        if await run_in_threadpool(self.backend.otp_settings_locked, number=session.number):
            raise Detour(self.otp_settings_locked_page(request, session))

    # ----------------------------------------------------------------- bulk release (登録一括解除, P23 menu)
    @staticmethod
    def release_allowed(session: WebSession) -> bool:
        """The menu item of the seed's two-step screens: an admin (contract number, admin/user unit)
        who logged in with a one-time password and still uses them."""
        return (
            session.role == "admin"
            and session.stage == "home"
            and session.data.two_step
            and session.data.otp_status == "on"
        )

    # ----------------------------------------------------------------- JSON API
    def api_error(self, status: int, error: str, message: str) -> JSONResponse:
        return JSONResponse({"error": error, "message": message}, status_code=status)
