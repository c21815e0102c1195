"""The web login and account-security pages (seed 003, P7–P28) as a Starlette app.

Login steps are a small state machine kept in the server-side session (``WebSession.stage``):

    anonymous --login--> must_change --change--> otp_choice | otp_register | otp_code | home
    otp_choice --use--> otp_register --link opened--> otp_code --code--> home
    otp_choice --not use + agree--> home

A page of another stage redirects to the page of the session's stage, so nothing is reachable
before the steps in front of it are done. Credential work (database, argon2) runs in a threadpool.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.phone import format_number
from core.web_sessions import session_id_hash
from ivr.settings import Settings
from web_stub import messages as msg
from web_stub.backend import (
    CodeUnavailable,
    CredentialBackend,
    InputRefused,
    LoginOutcome,
    OtpState,
    SessionRecord,
)
from web_stub.csv_files import (
    BULK_MAX_BYTES,
    BULK_THRESHOLD,
    bound_errors,
    csv_download,
    email_ok,
    new_password_rules,
    normalize_login_number,
    number_matches,
    parse_bulk_csv,
    parse_otp_bulk_csv,
)
from web_stub.mail import Mailer, MailSendError, SmtpMailer, code_mail, registration_mail
from web_stub.sessions import Clock, FormToken, Stage, WebSession, new_cookie_value, unseal

log = structlog.get_logger("web")

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "ivr_session"
UNIT_LABELS = {"line": "回線単位", "number": "電話番号単位", "admin_user": "管理者/ユーザ単位"}
STAGE_PAGES: dict[str, str] = {
    Stage.MUST_CHANGE: "/password/required",
    Stage.OTP_CHOICE: "/otp/choice",
    Stage.OTP_REGISTER: "/otp/register",
    Stage.OTP_CODE: "/otp/send",
    Stage.HOME: "/home",
}
STAGE_API_NEXT = {
    "must_change": "change_password",
    "otp_choice": "otp_choice",
    "otp_register": "otp_register",
    "otp_code": "otp_code",
    "home": "home",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison that also survives non-ASCII input (a 403, not a 500)."""
    return bool(given) and secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def address_change_allowed(stage: str, data: dict[str, Any]) -> bool:
    """P22: before the code (the send page), after the confirmation ID and password were checked;
    P23: from the menu after a two-step login of this session, straight away."""
    return bool(data.get("confirmation_checked")) or (stage == "home" and bool(data.get("two_step")))


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

    def __init__(self, app: ASGIApp, *, web: WebApp) -> None:
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
    """One request's session as loaded by :meth:`WebApp.load` (``ended``: why it just ended)."""

    session: WebSession | None
    ended: str | None

    @property
    def idle_expired(self) -> bool:
        return self.ended is not None


SCOPE_CONTEXT = "ivr.web.context"
SCOPE_SESSIONS = "ivr.web.sessions"
Handler = Callable[[Request], Awaitable[Response]]


class WebApp:
    def __init__(
        self,
        settings: Settings,
        *,
        backend: CredentialBackend,
        clock: Clock,
        mailer: Mailer,
    ) -> None:
        self.settings = settings
        self.web = settings.web
        self.policy = settings.credentials
        self.backend = backend
        self.clock = clock
        self.mailer = mailer
        self.service_number = settings.web.service_number
        self.sender_domain = settings.smtp.sender.rpartition("@")[2]
        self.form_token = FormToken(self.web.secret_key.get_secret_value())
        self.trusted_proxies = [ipaddress.ip_network(p, strict=False) for p in self.web.trusted_proxies]
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # ----------------------------------------------------------------- plumbing
    def endpoint(self, handler: Handler) -> Handler:
        """A route: the handler, its guards' detours, then the sessions it touched are stored."""

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except Detour as detour:
                response = detour.response
            except BodyTooLarge:
                log.info(
                    "web_body_too_large",
                    path=request.url.path,
                    limit=body_limit_for(request.url.path, self.web),
                )
                response = self.too_large_page(request, body_limit_for(request.url.path, self.web))
            await self.persist(request)
            return response

        return run

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
            stage=record.stage,
            number=record.number,
            contract_id=record.contract_id,
            unit=record.unit,
            role=record.role,
            created_at=record.created_at,
            data=json.loads(record.data or "{}"),
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
            data = json.dumps(session.data, ensure_ascii=False)
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
        otp_enabled = bool(session and session.data.get("otp_status") == "on")
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
                "menu_bulk": bool(session and session.data.get("bulk")),
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
            return self._api_error(413, "payload_too_large", msg.body_too_large(limit))
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

    async def require(self, request: Request, stages: set[str]) -> WebSession:
        """The session if it is logged in at one of ``stages``; else a detour (login or its stage's page)."""
        ctx = await self.load(request)
        return self._at_stage(request, ctx, stages)

    def _at_stage(self, request: Request, ctx: Context, stages: set[str]) -> WebSession:
        session = ctx.session
        if session is None or not session.authenticated:
            raise Detour(self.to_login(request, ctx))
        if session.stage not in stages:
            raise Detour(self.redirect(STAGE_PAGES[session.stage], session))
        return session

    async def require_post(self, request: Request, stages: set[str]) -> tuple[WebSession, dict[str, str]]:
        """As :meth:`require`, for a form: its CSRF token first."""
        ctx = await self.load(request)
        form = await self.form(request)
        if not self.csrf_ok(ctx.session, form):
            raise Detour(self.csrf_failed(request, ctx))
        return self._at_stage(request, ctx, stages), form

    def stage_after_password(self, otp: OtpState) -> str:
        return {"unchosen": "otp_choice", "pending": "otp_register", "on": "otp_code", "off": "home"}[
            otp.status
        ]

    def begin_login(self, request: Request, outcome: LoginOutcome) -> WebSession:
        """A new session (a new cookie value) for a login whose password was right."""
        assert outcome.number and outcome.contract_id is not None and outcome.unit and outcome.role
        stage = "must_change" if outcome.must_change_password else self.stage_after_password(outcome.otp)
        session = WebSession(
            cookie=new_cookie_value(),
            stage=stage,
            number=outcome.number,
            contract_id=outcome.contract_id,
            unit=outcome.unit,
            role=outcome.role,
            created_at=self.clock(),
            data={
                "otp_status": outcome.otp.status,
                "otp_email": outcome.otp.email,
                "login_attempt_id": secrets.token_urlsafe(16),
                "change_reason": outcome.change_reason,
            },
        )
        self._sessions_of(request).append(session)
        return session

    def complete_login(self, session: WebSession) -> WebSession:
        session.rotate()
        session.stage = "home"
        session.data.pop("login_attempt_id", None)
        log.info("web_login_completed", number=session.number, unit=session.unit, role=session.role)
        return session

    async def refresh_otp(self, session: WebSession) -> OtpState:
        state = await run_in_threadpool(self.backend.otp_state, number=session.number)
        session.data["otp_status"] = state.status
        session.data["otp_email"] = state.email
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

    # ----------------------------------------------------------------- login
    async def root(self, request: Request) -> Response:
        ctx = await self.load(request)
        if ctx.session and ctx.session.authenticated:
            return self.redirect(STAGE_PAGES[ctx.session.stage], ctx.session)
        return self.redirect("/login")

    async def login_page(self, request: Request) -> Response:
        ctx = await self.load(request)
        session = ctx.session
        if session and session.authenticated:
            return self.redirect(STAGE_PAGES[session.stage], session)
        ended = (
            ctx.ended
            or request.query_params.get("ended")
            or ("idle" if request.query_params.get("timeout") else None)
        )
        response = self.login_form(request, notice=msg.session_ended_notice(ended))
        if request.cookies.get(SESSION_COOKIE):
            self.clear_cookie(response)
        return response

    async def login_submit(self, request: Request) -> Response:
        ctx = await self.load(request)
        form = await self.form(request)
        if not self.anonymous_form_ok(request, form):
            return self.login_form(request, status_code=403, errors=[msg.FORM_EXPIRED])
        number = normalize_login_number(form.get("number", ""))
        password = form.get("password", "")
        if not number or not password:
            return self.login_form(
                request,
                status_code=400,
                errors=["電話番号（ハイフンなし）とパスワードを入力してください。"],
                number=number[:20],
                invalid_fields=[f for f, v in (("number", number), ("password", password)) if not v],
            )
        outcome = await run_in_threadpool(
            self.backend.login,
            number=number,
            password=password,
            now=self.clock(),
            client=self.client_of(request),
        )
        if outcome.status == "throttled":
            return self.throttled_page(request, outcome.retry_after_seconds)
        if outcome.status == "wrong":
            log.info("web_login_failed", outcome_code="wrong")
            return self.login_form(
                request,
                status_code=401,
                errors=[msg.WRONG_CREDENTIALS],
                number=number[:20],
                invalid_fields=["number", "password"],
            )
        if outcome.status != "ok":
            log.info("web_login_refused", number=number, outcome_code=outcome.status)
            return self.login_form(
                request, status_code=403, errors=[self.refused_message(outcome)], number=number[:20]
            )
        if ctx.session is not None:
            ctx.session.end()  # a new login replaces this browser's earlier session
        session = self.begin_login(request, outcome)
        log.info("web_login_password_ok", number=session.number, stage=session.stage)
        if session.stage == "home":
            session = self.complete_login(session)
        return self.redirect(STAGE_PAGES[session.stage], session)

    async def logout(self, request: Request) -> Response:
        ctx = await self.load(request)
        form = await self.form(request)
        if ctx.session is not None and self.csrf_ok(ctx.session, form):
            log.info("web_logout", number=ctx.session.number)
            ctx.session.end()
        elif ctx.session is not None:
            return self.csrf_failed(request, ctx)
        response = self.message_page(
            request,
            "ログアウト",
            ["ログアウトしました。ブラウザを閉じて終了してください。"],
            None,
            link_url="/login",
            link_text="ログイン画面へ",
        )
        self.clear_cookie(response)
        return response

    # ----------------------------------------------------------------- passwords
    async def password_page(self, request: Request) -> Response:
        forced = request.url.path == "/password/required"
        session = await self.require(request, {"must_change"} if forced else {"home"})
        targets = [] if forced else await self.password_targets(session)
        search = None
        if session.role == "admin" and len(targets) >= BULK_THRESHOLD:
            search = request.query_params.get("q", "").strip()
            targets = [n for n in targets if number_matches(n, search)] if search else targets
        return self._password_form(request, session, forced, targets=targets, search=search)

    async def password_targets(self, session: WebSession) -> list[str]:
        """Whose password this login may change: its own; an admin any number of the contract (P12)."""
        assert session.number is not None
        if session.role != "admin" or session.contract_id is None or session.unit is None:
            return [session.number]
        rows = await run_in_threadpool(
            self.backend.scope, contract_id=session.contract_id, unit=session.unit, number=session.number
        )
        return [row.number for row in rows]

    def _password_form(
        self,
        request: Request,
        session: WebSession,
        forced: bool,
        errors: list[str] | None = None,
        status: int = 200,
        *,
        targets: list[str] | None = None,
        target: str | None = None,
        search: str | None = None,
    ) -> Response:
        reason = session.data.get("change_reason")
        current_label = "仮パスワード" if forced and reason == "temporary" else "現在のパスワード"
        return self.render(
            request,
            "change_password.html",
            "パスワード変更",
            session,
            status_code=status,
            errors=errors,
            forced=forced,
            reason=reason,
            current_label=current_label,
            action="/password/required" if forced else "/password",
            targets=targets if targets and (len(targets) > 1 or search) else [],
            target=target or session.number,
            search=search,
        )

    async def password_submit(self, request: Request) -> Response:
        forced = request.url.path == "/password/required"
        session, form = await self.require_post(request, {"must_change"} if forced else {"home"})
        assert session is not None and session.number is not None
        targets = [session.number] if forced else await self.password_targets(session)
        target = normalize_login_number(form.get("target", "")) or session.number
        if target not in targets:
            log.warning("web_password_target_refused", number=session.number, target=target)
            return self._password_form(
                request, session, forced, ["この電話番号のパスワードは変更できません。"], 403, targets=targets
            )
        own = target == session.number
        ws: WebSession = session
        reason_temporary = session.data.get("change_reason") == "temporary"

        def again(errors: list[str], status: int = 400) -> Response:
            return self._password_form(request, ws, forced, errors, status, targets=targets, target=target)

        current = form.get("current_password", "")
        new = form.get("new_password", "")
        confirm = form.get("new_password_confirm", "")
        if not current or not new:
            return again(["現在のパスワードと新しいパスワードを入力してください。"])
        if new != confirm:
            return again(msg.password_messages(["mismatch"]))
        if self.too_long(current):
            return again(msg.password_messages(["current_wrong"]))
        if self.too_long(new):
            return again(msg.password_messages(["length"]))
        reasons = await run_in_threadpool(
            self.backend.change_password,
            number=target,
            current_password=current,
            new_password=new,
            now=self.clock(),
        )
        if reasons:
            log.info("web_password_change_refused", number=session.number, target=target, reasons=reasons)
            if own and "temporary_expired" in reasons:
                return self.end_session_with(
                    request, session, "パスワード変更", msg.temporary_expired_message(self.service_number)
                )
            if own and "locked" in reasons:
                return self.end_session_with(
                    request, session, "パスワード変更", self.invalidated(forced and reason_temporary)
                )
            if "temporary_expired" in reasons:
                return again([f"{target} の" + msg.temporary_expired_message(self.service_number)], 403)
            if "locked" in reasons:
                return again([f"{target} の" + self.invalidated(None)], 403)
            return again(msg.password_messages(reasons, new))
        log.info("web_password_changed", number=session.number, target=target, forced=forced)
        if own:
            session.resnapshot = True  # the other sessions of this credential end; this one continues
        if not forced:
            return self.message_page(
                request,
                "パスワード変更完了",
                [f"{target} のパスワードを変更しました。次回から新しいパスワードでログインしてください。"],
                session,
                link_url="/home",
                link_text="サービス選択へ",
            )
        session.data["change_reason"] = None
        otp = await self.refresh_otp(session)
        session.stage = self.stage_after_password(otp)
        if session.stage == "home":
            session = self.complete_login(session)
        return self.redirect(STAGE_PAGES[session.stage], session)

    # ----------------------------------------------------------------- 33 numbers or more (P12–P13)
    async def bulk_allowed(self, session: WebSession) -> list[str]:
        """The numbers of an admin login with at least BULK_THRESHOLD of them; else []."""
        targets = await self.password_targets(session)
        return targets if session.role == "admin" and len(targets) >= BULK_THRESHOLD else []

    async def require_bulk(self, request: Request, fallback: str) -> tuple[WebSession, list[str]]:
        """A session at home whose login has the bulk pages, with its numbers; else a detour."""
        session = await self.require(request, {"home"})
        return session, await self._bulk_numbers(session, fallback)

    async def _bulk_numbers(self, session: WebSession, fallback: str) -> list[str]:
        numbers = await self.bulk_allowed(session)
        if not numbers:
            raise Detour(self.redirect(fallback, session))
        return numbers

    async def require_upload(self, request: Request, fallback: str) -> tuple[WebSession, list[str], bytes]:
        """A bulk upload (multipart, one file, capped): CSRF, stage and bulk rights, then the file."""
        ctx = await self.load(request)
        async with request.form(max_files=1, max_fields=10, max_part_size=BULK_MAX_BYTES) as data:
            token = data.get("csrf_token")
            upload = data.get("csv")
            raw = await upload.read(BULK_MAX_BYTES + 1) if isinstance(upload, UploadFile) else b""
        if not self.csrf_ok(ctx.session, {"csrf_token": token if isinstance(token, str) else ""}):
            raise Detour(self.csrf_failed(request, ctx))
        session = self._at_stage(request, ctx, {"home"})
        return session, await self._bulk_numbers(session, fallback), raw

    def _bulk_page(
        self, request: Request, session: WebSession, errors: list[str] | None = None, status: int = 200
    ) -> Response:
        return self.render(
            request, "password_bulk.html", "パスワード一括変更", session, status_code=status, errors=errors
        )

    async def bulk_page(self, request: Request) -> Response:
        session, _numbers = await self.require_bulk(request, "/password")
        return self._bulk_page(request, session)

    async def bulk_download(self, request: Request) -> Response:
        session, numbers = await self.require_bulk(request, "/password")
        return await self.marks_csv(session, numbers, "passwords.csv")

    async def marks_csv(self, session: WebSession, numbers: list[str], filename: str) -> Response:
        """The bulk download: one row per number, ``*`` when its password is temporary or unset."""
        marks = await run_in_threadpool(self.backend.password_marks, numbers=numbers, now=self.clock())
        log.info("web_bulk_download", number=session.number, rows=len(numbers))
        return csv_download([[number, "*" if marks.get(number) else ""] for number in numbers], filename)

    async def bulk_submit(self, request: Request) -> Response:
        session, numbers, raw = await self.require_upload(request, "/password")
        rows, errors = parse_bulk_csv(raw, allowed=set(numbers), rules=new_password_rules)
        if errors:
            errors = [*bound_errors(errors), msg.BULK_NOTHING_CHANGED]
            return self._bulk_page(request, session, errors, 400)
        if self.too_long(*(password for _, _, password in rows)):
            return self._bulk_page(request, session, [msg.password_messages(["length"])[0]], 400)
        problems = await run_in_threadpool(
            self.backend.bulk_change_passwords, rows=[(n, p) for _, n, p in rows], now=self.clock()
        )
        if problems:
            log.info(
                "web_bulk_password_refused", number=session.number, rows=len(rows), refused=len(problems)
            )
            messages = []
            for index, reasons in sorted(problems.items()):
                line, number, password = rows[index]
                for text in msg.password_messages(reasons, password):
                    messages.append(f"{line}行目（{number}）: {text}")
            messages = bound_errors(messages)
            messages.append(msg.BULK_NOTHING_CHANGED)
            return self._bulk_page(request, session, messages, 400)
        log.info("web_bulk_password_changed", number=session.number, rows=len(rows))
        if any(number == session.number for _, number, _ in rows):
            session.resnapshot = True  # its own password was in the file: this session continues
        return self.message_page(
            request,
            "パスワード一括変更完了",
            [f"{len(rows)}件の電話番号のパスワードを変更しました。"],
            session,
            link_url="/home",
            link_text="サービス選択へ",
        )

    # ----------------------------------------------------------------- bulk one-time password settings (P27)
    def _otp_bulk_page(
        self, request: Request, session: WebSession, errors: list[str] | None = None, status: int = 200
    ) -> Response:
        return self.render(
            request,
            "otp_bulk.html",
            "ワンタイムパスワード各種一括設定",
            session,
            status_code=status,
            errors=errors,
        )

    async def otp_bulk_page(self, request: Request) -> Response:
        session, _numbers = await self.require_bulk(request, "/settings/otp")
        return self._otp_bulk_page(request, session)

    async def otp_bulk_download(self, request: Request) -> Response:
        session, numbers = await self.require_bulk(request, "/settings/otp")
        rows = []
        for number in numbers:
            state = await run_in_threadpool(self.backend.otp_state, number=number)
            use = {"on": "1", "pending": "1", "off": "0"}.get(state.status, "")
            rows.append([number, use, state.email or "", "", ""])
        log.info("web_otp_bulk_download", number=session.number, rows=len(numbers))
        return csv_download(rows, "one-time-password.csv")

    async def otp_bulk_submit(self, request: Request) -> Response:
        session, numbers, raw = await self.require_upload(request, "/settings/otp")
        rows, errors = parse_otp_bulk_csv(
            raw, allowed=set(numbers), max_secret_chars=self.web.max_secret_chars
        )
        if errors:
            errors = [*bound_errors(errors), msg.BULK_NOTHING_SET]
            return self._otp_bulk_page(request, session, errors, 400)
        problems, tokens = await run_in_threadpool(
            self.backend.bulk_otp_settings, rows=[r[1:] for r in rows], now=self.clock()
        )
        if problems:
            labels = {
                "mail_address": "メールアドレス",
                "confirmation_id": "確認用ID",
                "confirmation_password": "確認用パスワード",
                "number": "電話番号",
            }
            messages = [
                f"{rows[i][0]}行目（{rows[i][1]}）: "
                + "、".join(labels.get(f, f) for f in sorted(problems[i]))
                + "を確認してください。"
                for i in sorted(problems)
            ]
            messages = bound_errors(messages)
            messages.append(msg.BULK_NOTHING_SET)
            return self._otp_bulk_page(request, session, messages, 400)
        hours = max(1, self.policy.registration_link_validity_seconds // 3600)
        failed: list[str] = []
        for index, link_token in tokens.items():
            line, number, _use, mail, _cid, _cpw = rows[index]
            try:
                await self.mailer.send(
                    registration_mail(
                        sender=self.settings.smtp.sender,
                        recipient=mail,
                        number=number,
                        link=f"{self.web.base_url.rstrip('/')}/otp/verify?token={link_token}",
                        valid_hours=hours,
                    )
                )
            except MailSendError as exc:
                log.error("web_mail_failed", kind="registration_bulk", number=number, reason_code=exc.reason)
                failed.append(f"{line}行目（{number}）: {msg.MAIL_FAILED}")
        log.info(
            "web_otp_bulk_settings",
            number=session.number,
            rows=len(rows),
            mails=len(tokens),
            failed=len(failed),
        )
        paragraphs = [f"{len(rows)}件の電話番号のワンタイムパスワード利用設定を受け付けました。"]
        if tokens:
            paragraphs.append(
                f"「利用あり」の{len(tokens)}件には、登録したメールアドレス宛に本登録のご案内メールを送信しました。"
                f"メールに記載されているURL（有効期限{hours}時間）から本登録の手続きをしてください。"
            )
        return self.message_page(
            request,
            "ワンタイムパスワード各種一括設定",
            paragraphs,
            session,
            status_code=502 if failed else 200,
            errors=failed,
            link_url="/home",
            link_text="サービス選択へ",
        )

    # ----------------------------------------------------------------- OTP choice at first login
    async def otp_choice_page(self, request: Request) -> Response:
        session = await self.require(request, {"otp_choice", "otp_register"})
        session.stage = "otp_choice"  # back from the registration form: choose again
        self._drop_draft(session)
        return self.render(request, "otp_choice.html", "ワンタイムパスワード 利用選択画面", session)

    async def otp_choice_submit(self, request: Request) -> Response:
        session, form = await self.require_post(request, {"otp_choice"})
        choice = form.get("choice")
        if choice == "use":
            session.stage = "otp_register"
            return self.redirect("/otp/register", session)
        if choice == "not_use":
            return self.redirect("/otp/decline", session)
        return self.render(
            request,
            "otp_choice.html",
            "ワンタイムパスワード 利用選択画面",
            session,
            status_code=400,
            errors=[
                "「ワンタイムパスワードを利用する」または「ワンタイムパスワードを利用しない」を選択してください。"
            ],
        )

    async def otp_decline_page(self, request: Request) -> Response:
        session = await self.require(request, {"otp_choice"})
        return self.render(
            request,
            "otp_decline.html",
            "ワンタイムパスワード 利用選択確認",
            session,
            action="/otp/decline",
            back_url="/otp/choice",
        )

    async def otp_decline_submit(self, request: Request) -> Response:
        session, form = await self.require_post(request, {"otp_choice"})
        assert session is not None and session.number is not None
        if form.get("agree") != "1":
            return self.redirect("/otp/choice", session)
        await run_in_threadpool(self.backend.otp_decline, number=session.number, now=self.clock())
        session.data["otp_status"] = "off"
        session = self.complete_login(session)
        return self.redirect("/home", session)

    # ----------------------------------------------------------------- OTP registration
    def _register_context(self, session: WebSession, address_only: bool) -> dict[str, Any]:
        if address_only:
            back = "/otp/send" if session.stage == "otp_code" else "/home"
            return {"action": "/otp/address", "address_only": True, "back_url": back}
        back = "/home" if session.stage == "home" else "/otp/choice"
        return {"action": "/otp/register", "address_only": False, "back_url": back}

    def _register_title(self, address_only: bool) -> str:
        return (
            "ワンタイムパスワード受信用メールアドレス変更"
            if address_only
            else "ワンタイムパスワード利用情報 仮登録"
        )

    # ---- the rules of registration and address change, checked on every GET and POST of the steps
    async def _registration_gate(self, request: Request, session: WebSession, address_only: bool) -> None:
        """Raise a detour unless this session may do this step now (fresh state from the store).

        Registration (mail, confirmation ID and password) is for a number without a registration;
        a registered number changes its address (P22: the confirmation ID and password first; P23:
        from the menu after a two-step login, straight away) and its confirmation ID and password
        on their own pages, with the current ones."""
        state = await self.refresh_otp(session)
        registered = state.email is not None
        if address_only:
            if not registered:
                raise Detour(self.redirect(STAGE_PAGES[session.stage], session))
            if await run_in_threadpool(self.backend.otp_settings_locked, number=session.number):
                raise Detour(self.otp_settings_locked_page(request, session))
            if not address_change_allowed(session.stage, session.data):
                raise Detour(self.redirect("/otp/address-check", session))
            return
        if registered:
            if session.stage == "otp_register":  # the link was opened in another browser meanwhile
                session.stage = "otp_code"
            self._drop_draft(session)
            raise Detour(self.redirect(STAGE_PAGES[session.stage], session))

    @staticmethod
    def _draft(session: WebSession) -> dict[str, Any] | None:
        draft = session.data.get("draft")
        if not isinstance(draft, dict):
            return None
        return {**draft, **session.secrets}

    @staticmethod
    def _set_draft(session: WebSession, *, email: str, cid: str, cpw: str, address_only: bool) -> None:
        session.data["draft"] = {
            "email": email,
            "confirmation_password_length": len(cpw),
            "address_only": address_only,
        }
        session.secrets = {"confirmation_id": cid, "confirmation_password": cpw} if not address_only else {}

    @staticmethod
    def _drop_draft(session: WebSession) -> None:
        session.data.pop("draft", None)
        session.secrets = {}

    async def otp_register_page(self, request: Request) -> Response:
        address_only = request.url.path == "/otp/address"
        stages = {"otp_code", "home"} if address_only else {"otp_register", "home"}
        session = await self.require(request, stages)
        await self._registration_gate(request, session, address_only)
        draft = self._draft(session) or {}
        form = {
            "email": draft.get("email", ""),
            "email_confirm": draft.get("email", ""),
            "confirmation_id": draft.get("confirmation_id", ""),
            "confirmation_id_confirm": draft.get("confirmation_id", ""),
        }
        return self.render(
            request,
            "otp_register.html",
            self._register_title(address_only),
            session,
            form=form,
            **self._register_context(session, address_only),
        )

    async def otp_register_submit(self, request: Request) -> Response:
        address_only = request.url.path == "/otp/address"
        stages = {"otp_code", "home"} if address_only else {"otp_register", "home"}
        session, form = await self.require_post(request, stages)
        await self._registration_gate(request, session, address_only)
        email = unicodedata.normalize("NFKC", form.get("email", "")).strip()
        email_confirm = unicodedata.normalize("NFKC", form.get("email_confirm", "")).strip()
        errors: list[str] = []
        if not email_ok(email):
            errors.append(msg.EMAIL_INVALID)
        elif email != email_confirm:
            errors.append(msg.EMAIL_MISMATCH)
        cid = form.get("confirmation_id", "")
        cpw = form.get("confirmation_password", "")
        if not address_only:
            id_codes = self.backend.confirmation_id_violations(cid)
            if not id_codes and cid != form.get("confirmation_id_confirm", ""):
                id_codes = ["mismatch"]
            errors += msg.confirmation_id_messages(id_codes, cid)
            pw_codes = self.backend.confirmation_password_violations(cpw)
            if not pw_codes and cpw != form.get("confirmation_password_confirm", ""):
                pw_codes = ["mismatch"]
            errors += msg.confirmation_password_messages(pw_codes, cpw)
        if errors:
            shown = {
                k: v
                for k, v in form.items()
                if k in ("email", "email_confirm", "confirmation_id", "confirmation_id_confirm")
            }
            return self.render(
                request,
                "otp_register.html",
                self._register_title(address_only),
                session,
                status_code=400,
                errors=errors,
                form=shown,
                **self._register_context(session, address_only),
            )
        self._set_draft(session, email=email, cid=cid, cpw=cpw, address_only=address_only)
        return self.redirect("/otp/register/confirm", session)

    async def otp_register_confirm_page(self, request: Request) -> Response:
        session = await self.require(request, {"otp_register", "otp_code", "home"})
        draft = self._draft(session)
        if not draft:
            return self.redirect(STAGE_PAGES[session.stage], session)
        address_only = bool(draft["address_only"])
        await self._registration_gate(request, session, address_only)
        title = (
            "ワンタイムパスワード受信用メールアドレス変更内容確認"
            if address_only
            else "ワンタイムパスワード利用情報 仮登録内容確認"
        )
        return self.render(
            request,
            "otp_register_confirm.html",
            title,
            session,
            draft=draft,
            address_only=address_only,
            action="/otp/register/confirm",
            back_url="/otp/address" if address_only else "/otp/register",
        )

    async def otp_register_confirm_submit(self, request: Request) -> Response:
        session, _form = await self.require_post(request, {"otp_register", "otp_code", "home"})
        draft = self._draft(session)
        if not draft:
            return self.redirect(STAGE_PAGES[session.stage], session)
        address_only = bool(draft["address_only"])
        await self._registration_gate(request, session, address_only)
        now = self.clock()
        try:
            if address_only:
                token = await run_in_threadpool(
                    self.backend.otp_change_address, number=session.number, email=draft["email"], now=now
                )
            else:
                token = await run_in_threadpool(
                    self.backend.otp_register,
                    number=session.number,
                    email=draft["email"],
                    confirmation_id=draft["confirmation_id"],
                    confirmation_password=draft["confirmation_password"],
                    now=now,
                )
        except InputRefused as exc:
            log.info("web_registration_refused", number=session.number, fields=sorted(exc.problems))
            self._drop_draft(session)
            if "registration" in exc.problems:  # registered meanwhile: nothing to register
                return self.redirect(STAGE_PAGES[session.stage], session)
            errors: list[str] = []
            if "mail_address" in exc.problems:
                errors.append(msg.EMAIL_INVALID)
            errors += msg.confirmation_id_messages(exc.problems.get("confirmation_id", []))
            errors += msg.confirmation_password_messages(exc.problems.get("confirmation_password", []))
            return self.render(
                request,
                "otp_register.html",
                self._register_title(address_only),
                session,
                status_code=400,
                errors=errors,
                form={"email": draft["email"], "email_confirm": draft["email"]},
                **self._register_context(session, address_only),
            )
        link = f"{self.web.base_url.rstrip('/')}/otp/verify?token={token}"
        hours = max(1, self.policy.registration_link_validity_seconds // 3600)
        mail = registration_mail(
            sender=self.settings.smtp.sender,
            recipient=draft["email"],
            number=session.number,
            link=link,
            valid_hours=hours,
        )
        try:
            await self.mailer.send(mail)
        except MailSendError as exc:
            log.error("web_mail_failed", kind="registration", number=session.number, reason_code=exc.reason)
            return self.render(
                request,
                "otp_register_confirm.html",
                "ワンタイムパスワード利用情報 仮登録内容確認",
                session,
                status_code=502,
                errors=[msg.MAIL_FAILED],
                draft=draft,
                address_only=address_only,
                action="/otp/register/confirm",
                back_url="/otp/address" if address_only else "/otp/register",
            )
        log.info("web_registration_mail_sent", number=session.number, address_only=address_only)
        self._drop_draft(session)
        session.data.pop("confirmation_checked", None)
        if not address_only and session.data.get("otp_status") != "on":
            session.data["otp_status"] = "pending"
        return self.render(
            request,
            "otp_register_sent.html",
            "ワンタイムパスワード利用情報 仮登録完了",
            session,
            link_hours=hours,
            back_url="/otp/address" if address_only else "/otp/register",
        )

    # ----------------------------------------------------------------- the mailed link
    def _verify_form(self, request: Request, session: WebSession | None, **kwargs: Any) -> Response:
        title = "ワンタイムパスワード利用情報 本登録"
        if session is not None:
            return self.render(request, "otp_verify.html", title, session, **kwargs)
        return self.render_anonymous(request, "otp_verify.html", title, **kwargs)

    async def otp_verify_page(self, request: Request) -> Response:
        ctx = await self.load(request)
        token = request.query_params.get("token", "")
        if not token or len(token) > 256:
            return self.message_page(
                request, "メールアドレス本登録", [msg.LINK_UNKNOWN], ctx.session, status_code=400
            )
        return self._verify_form(request, ctx.session, token=token)

    async def otp_verify_submit(self, request: Request) -> Response:
        ctx = await self.load(request)
        form = await self.form(request)
        session = ctx.session
        if not (self.csrf_ok(session, form) or (session is None and self.anonymous_form_ok(request, form))):
            return self._verify_form(
                request,
                session,
                status_code=403,
                errors=[msg.FORM_EXPIRED],
                token=form.get("token", "")[:256],
            )
        outcome = await run_in_threadpool(
            self.backend.otp_confirm_link, token=form.get("token", "")[:256], now=self.clock()
        )
        title = "ワンタイムパスワード利用情報 本登録"
        logged_in = session is not None and session.authenticated
        if outcome.status != "ok":
            log.info("web_registration_link_refused", outcome_code=outcome.status)
            text = {"expired": msg.LINK_EXPIRED, "used": msg.LINK_USED}.get(outcome.status, msg.LINK_UNKNOWN)
            link = STAGE_PAGES.get(session.stage, "/login") if session is not None and logged_in else "/login"
            return self.message_page(
                request,
                title,
                [],
                session,
                status_code=410 if outcome.status == "expired" else 400,
                errors=[text],
                link_url=link,
                link_text="戻る" if logged_in else "ログイン画面へ",
            )
        log.info("web_registration_completed", number=outcome.number)
        if session is not None and logged_in and session.number == outcome.number:
            await self.refresh_otp(session)
            if session.stage in {"otp_register", "otp_code"}:
                session.stage = "otp_code"
                return self.render(
                    request,
                    "otp_send.html",
                    title,
                    session,
                    just_registered=True,
                    masked_email=mask_email(session.data.get("otp_email")),
                )
            if session.stage == "home":
                return self.message_page(
                    request,
                    title,
                    ["ワンタイムパスワードの本登録が完了しました。"],
                    session,
                    link_url="/home",
                    link_text="サービス選択へ",
                )
        return self.message_page(
            request,
            title,
            [
                "ワンタイムパスワードの本登録が完了しました。",
                "ログイン画面から、もう一度ログインしてください。",
            ],
            session if logged_in else None,
            link_url="/login",
            link_text="ログイン画面へ",
        )

    # ----------------------------------------------------------------- OTP code
    async def otp_send_page(self, request: Request) -> Response:
        session = await self.require(request, {"otp_code"})
        return self.render(
            request,
            "otp_send.html",
            "ワンタイムパスワード 送信確認画面",
            session,
            just_registered=False,
            masked_email=mask_email(session.data.get("otp_email")),
        )

    async def otp_send_submit(self, request: Request) -> Response:
        session, _form = await self.require_post(request, {"otp_code"})
        assert session is not None and session.number is not None
        try:
            issued = await run_in_threadpool(
                self.backend.otp_issue_code,
                number=session.number,
                login_attempt_id=session.data["login_attempt_id"],
                now=self.clock(),
            )
        except CodeUnavailable as exc:
            log.info("web_otp_code_unavailable", number=session.number, reason_code=exc.reason)
            if exc.reason == "too_many_mails":  # the number's mails per hour: wait, the login stays
                response = self.render(
                    request,
                    "otp_send.html",
                    "ワンタイムパスワード 送信確認画面",
                    session,
                    status_code=429,
                    errors=[msg.code_mails_limited(self.web.otp_mails_per_number, exc.retry_after_seconds)],
                    just_registered=False,
                    masked_email=mask_email(session.data.get("otp_email")),
                )
                response.headers["Retry-After"] = str(exc.retry_after_seconds)
                return response
            return self.end_session_with(
                request, session, "ワンタイムパスワード", msg.code_unavailable(exc.reason)
            )
        mail = code_mail(
            sender=self.settings.smtp.sender,
            recipient=issued.email,
            number=session.number,
            code=issued.code,
            valid_seconds=self.policy.otp_code_validity_seconds,
        )
        try:
            await self.mailer.send(mail)
        except MailSendError as exc:
            log.error("web_mail_failed", kind="otp_code", number=session.number, reason_code=exc.reason)
            await run_in_threadpool(self.backend.otp_mail_failed, number=session.number, now=self.clock())
            return self.render(
                request,
                "otp_send.html",
                "ワンタイムパスワード 送信確認画面",
                session,
                status_code=502,
                errors=[msg.MAIL_FAILED],
                just_registered=False,
                masked_email=mask_email(issued.email),
            )
        log.info("web_otp_code_mail_sent", number=session.number)
        return self.redirect("/otp/code", session)

    async def otp_code_page(self, request: Request) -> Response:
        session = await self.require(request, {"otp_code"})
        return self.render(
            request,
            "otp_code.html",
            "ワンタイムパスワード 入力画面",
            session,
            code_seconds=self.policy.otp_code_validity_seconds,
        )

    async def otp_code_submit(self, request: Request) -> Response:
        session, form = await self.require_post(request, {"otp_code"})
        assert session is not None and session.number is not None
        code = unicodedata.normalize("NFKC", form.get("code", "")[:64]).strip()
        status = await run_in_threadpool(
            self.backend.otp_verify_code,
            number=session.number,
            login_attempt_id=session.data["login_attempt_id"],
            code=code,
            now=self.clock(),
        )
        if status == "ok":
            session.data["two_step"] = True
            session = self.complete_login(session)
            return self.redirect("/home", session)
        log.info("web_otp_code_refused", number=session.number, outcome_code=status)
        if status == "invalidated":
            return self.end_session_with(
                request,
                session,
                "ワンタイムパスワード 入力画面",
                msg.codes_invalidated(self.web.otp_wrong_codes_per_number, self.service_number),
            )
        if status == "too_many":
            return self.end_session_with(request, session, "ワンタイムパスワード 入力画面", msg.CODE_TOO_MANY)
        text = {
            "wrong": msg.CODE_WRONG,
            "expired": msg.CODE_EXPIRED,
            "used": msg.CODE_EXPIRED,
            "too_many": msg.CODE_TOO_MANY,
            "none": msg.CODE_NONE,
        }.get(status, msg.CODE_WRONG)
        return self.render(
            request,
            "otp_code.html",
            "ワンタイムパスワード 入力画面",
            session,
            status_code=400,
            errors=[text],
            code_seconds=self.policy.otp_code_validity_seconds,
        )

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

    async def _require_otp_settings(self, request: Request, session: WebSession) -> None:
        """The one-time-password settings pages: registered, and not locked for this number."""
        state = await self.refresh_otp(session)
        if state.email is None:
            raise Detour(self.redirect(STAGE_PAGES[session.stage], session))
        if await run_in_threadpool(self.backend.otp_settings_locked, number=session.number):
            raise Detour(self.otp_settings_locked_page(request, session))

    def _address_check_form(
        self, request: Request, session: WebSession, errors: list[str] | None = None, status: int = 200
    ) -> Response:
        return self.render(
            request,
            "otp_credentials_check.html",
            "ワンタイムパスワード受信メールアドレス変更",
            session,
            status_code=status,
            errors=errors,
            action="/otp/address-check",
            back_url="/otp/send" if session.stage == "otp_code" else "/home",
        )

    async def otp_address_check_page(self, request: Request) -> Response:
        session = await self.require(request, {"otp_code", "home"})
        await self._require_otp_settings(request, session)
        if session.stage == "home" and session.data.get("two_step"):
            return self.redirect("/otp/address", session)  # P23: straight to the new address
        return self._address_check_form(request, session)

    async def otp_address_check_submit(self, request: Request) -> Response:
        session, form = await self.require_post(request, {"otp_code", "home"})
        await self._require_otp_settings(request, session)
        cid, cpw = form.get("confirmation_id", ""), form.get("confirmation_password", "")
        if self.too_long(cid, cpw):
            return self._address_check_form(request, session, [msg.CONFIRMATION_WRONG], 400)
        status = await run_in_threadpool(
            self.backend.otp_check_confirmation,
            number=session.number,
            confirmation_id=cid,
            confirmation_password=cpw,
            now=self.clock(),
        )
        if status == "locked":
            return self.otp_settings_locked_page(request, session)
        if status != "ok":
            return self._address_check_form(request, session, [msg.CONFIRMATION_WRONG], 400)
        session.data["confirmation_checked"] = True
        return self.redirect("/otp/address", session)

    # ----------------------------------------------------------------- home and settings
    async def home(self, request: Request) -> Response:
        session = await self.require(request, {"home"})
        assert session is not None and session.number and session.contract_id is not None and session.unit
        numbers = await run_in_threadpool(
            self.backend.scope, contract_id=session.contract_id, unit=session.unit, number=session.number
        )
        await self.refresh_otp(session)
        session.data["bulk"] = session.role == "admin" and len(numbers) >= BULK_THRESHOLD
        return self.render(request, "home.html", "サービス選択", session, numbers=numbers)

    async def help_page(self, request: Request) -> Response:
        """ヘルプ (every page's footer): how to log in, the lockout rules, whom to call. Anyone."""
        ctx = await self.load(request)
        session = ctx.session if ctx.session and ctx.session.authenticated else None
        return self.render(request, "help.html", "ヘルプ", session)

    async def _otp_settings_unlocked(self, request: Request, session: WebSession) -> None:
        if await run_in_threadpool(self.backend.otp_settings_locked, number=session.number):
            raise Detour(self.otp_settings_locked_page(request, session))

    async def settings_otp_page(self, request: Request) -> Response:
        session = await self.require(request, {"home"})
        await self._otp_settings_unlocked(request, session)
        state = await self.refresh_otp(session)
        return self.render(
            request,
            "settings_otp.html",
            "ワンタイムパスワード 利用選択変更",
            session,
            enabled=state.status == "on",
            bulk=bool(await self.bulk_allowed(session)),
        )

    async def settings_otp_submit(self, request: Request) -> Response:
        session, form = await self.require_post(request, {"home"})
        await self._otp_settings_unlocked(request, session)
        state = await self.refresh_otp(session)
        if form.get("use") == "0" and state.status == "on" and form.get("agree") != "1":
            return self.redirect("/settings/otp", session)  # "not use" needs the explicit agreement
        if form.get("use") == "0" and state.status == "on":
            await run_in_threadpool(self.backend.otp_disable, number=session.number, now=self.clock())
            session.data["otp_status"] = "off"
            log.info("web_otp_disabled", number=session.number)
            return self.message_page(
                request,
                "ワンタイムパスワード 利用選択変更完了",
                ["「ワンタイムパスワードを利用しない」に変更しました。"],
                session,
                link_url="/home",
                link_text="サービス選択へ",
            )
        if form.get("use") == "1" and state.status != "on":
            state = await run_in_threadpool(self.backend.otp_enable, number=session.number, now=self.clock())
            session.data["otp_status"] = state.status
            log.info("web_otp_enabled", number=session.number, outcome_code=state.status)
            # P21: switching on always continues to the registration screens. A number that still
            # has its address goes to the address change (its confirmation ID and password first,
            # unless this login was two-step), so the address is proven again by its link.
            return self.message_page(
                request,
                "ワンタイムパスワード 利用選択変更完了",
                [
                    "「ワンタイムパスワードを利用する」に変更しました。以下の「次へ」ボタンよりメールアドレス等の登録画面に進んでください。",
                    "※本画面ではまだワンタイムパスワード利用の本登録が完了していません。",
                ],
                session,
                link_url="/otp/address" if state.status == "on" else "/otp/register",
                link_text="次へ",
            )
        return self.redirect("/settings/otp", session)

    async def settings_address(self, request: Request) -> Response:
        return self.redirect("/otp/address")  # its gate sends to the confirmation check when needed

    def _confirmation_form(
        self,
        request: Request,
        session: WebSession,
        kind: str,
        errors: list[str] | None = None,
        status: int = 200,
    ) -> Response:
        what = "確認用ID" if kind == "id" else "確認用パスワード"
        return self.render(
            request,
            "change_confirmation.html",
            f"{what}変更",
            session,
            status_code=status,
            errors=errors,
            kind=kind,
            what=what,
            input_type="text" if kind == "id" else "password",
            action="/settings/otp/confirmation-id" if kind == "id" else "/settings/otp/confirmation-password",
        )

    async def confirmation_page(self, request: Request) -> Response:
        kind = "id" if request.url.path.endswith("confirmation-id") else "password"
        session = await self.require(request, {"home"})
        await self._require_otp_settings(request, session)
        return self._confirmation_form(request, session, kind)

    async def confirmation_submit(self, request: Request) -> Response:
        kind = "id" if request.url.path.endswith("confirmation-id") else "password"
        session, form = await self.require_post(request, {"home"})
        await self._require_otp_settings(request, session)
        to_messages = msg.confirmation_id_messages if kind == "id" else msg.confirmation_password_messages
        new = form.get("new", "")
        if self.too_long(form.get("current", "")):
            return self._confirmation_form(request, session, kind, to_messages(["current_wrong"]), 400)
        codes = (
            self.backend.confirmation_id_violations(new)
            if kind == "id"
            else self.backend.confirmation_password_violations(new)
        )
        if not codes and new != form.get("new_confirm", ""):
            codes = ["mismatch"]
        if codes:
            return self._confirmation_form(request, session, kind, to_messages(codes, new), 400)
        change = (
            self.backend.otp_change_confirmation_id
            if kind == "id"
            else self.backend.otp_change_confirmation_password
        )
        codes = await run_in_threadpool(
            change, number=session.number, current=form.get("current", ""), new=new, now=self.clock()
        )
        if codes == ["locked"]:
            return self.otp_settings_locked_page(request, session)
        if codes:
            return self._confirmation_form(request, session, kind, to_messages(codes), 400)
        what = "確認用ID" if kind == "id" else "確認用パスワード"
        log.info("web_confirmation_changed", number=session.number, kind=kind)
        return self.message_page(
            request,
            f"{what}変更完了",
            [f"{what}を変更しました。"],
            session,
            link_url="/home",
            link_text="サービス選択へ",
        )

    # ----------------------------------------------------------------- bulk release (登録一括解除, P23 menu)
    @staticmethod
    def release_allowed(session: WebSession) -> bool:
        """The menu item of the seed's two-step screens: an admin (contract number, admin/user unit)
        who logged in with a one-time password and still uses them."""
        return (
            session.role == "admin"
            and session.stage == "home"
            and bool(session.data.get("two_step"))
            and session.data.get("otp_status") == "on"
        )

    async def _release_numbers(self, request: Request) -> tuple[WebSession, list[str]]:
        """The admin's numbers with a registration; a detour home for anyone else."""
        session = await self.require(request, {"home"})
        await self.refresh_otp(session)
        if not self.release_allowed(session):
            raise Detour(self.redirect("/home", session))
        covered = await self.password_targets(session)
        return session, await run_in_threadpool(self.backend.otp_registered_numbers, numbers=covered)

    def _release_form(
        self,
        request: Request,
        session: WebSession,
        numbers: list[str],
        errors: list[str] | None = None,
        status: int = 200,
    ) -> Response:
        return self.render(
            request,
            "otp_release.html",
            "ワンタイムパスワード登録一括解除",
            session,
            status_code=status,
            errors=errors,
            numbers=numbers,
            invalid_fields=["password"] if errors else [],
        )

    async def otp_release_page(self, request: Request) -> Response:
        session, numbers = await self._release_numbers(request)
        session.data.pop("release_checked", None)
        return self._release_form(request, session, numbers)

    async def otp_release_submit(self, request: Request) -> Response:
        """Step 1: the admin's current password, counted like a login."""
        session, form = await self.require_post(request, {"home"})
        session, numbers = await self._release_numbers(request)
        password = form.get("password", "")
        if not password:
            return self._release_form(request, session, numbers, [msg.RELEASE_PASSWORD_EMPTY], 400)
        if not numbers:
            return self._release_form(request, session, numbers, [msg.RELEASE_NOTHING], 400)
        status = await run_in_threadpool(
            self.backend.check_password, number=session.number, password=password, now=self.clock()
        )
        if status == "locked":
            return self.end_session_with(
                request, session, "ワンタイムパスワード登録一括解除", self.invalidated(False)
            )
        if status != "ok":
            log.info("web_otp_release_password_refused", number=session.number, outcome_code=status)
            return self._release_form(
                request,
                session,
                numbers,
                [msg.release_password_wrong(self.policy.permanent_max_failures)],
                400,
            )
        session.data["release_checked"] = True
        return self.render(
            request,
            "otp_release_confirm.html",
            "ワンタイムパスワード登録一括解除 確認",
            session,
            numbers=numbers,
        )

    async def otp_release_confirm(self, request: Request) -> Response:
        """Step 2: the admin confirms the list; the registrations are released."""
        session, _form = await self.require_post(request, {"home"})
        session, numbers = await self._release_numbers(request)
        if not session.data.pop("release_checked", False):
            return self.redirect("/settings/otp/release", session)
        released = await run_in_threadpool(self.backend.otp_release, numbers=numbers, now=self.clock())
        log.info("web_otp_released", number=session.number, released=len(released))
        await self.refresh_otp(session)
        return self.message_page(
            request,
            "ワンタイムパスワード登録一括解除完了",
            [
                f"{len(released)}件の電話番号のワンタイムパスワード登録を解除しました。",
                "解除した電話番号は、次回のログイン時にワンタイムパスワードの利用選択からやり直します。",
            ],
            session,
            link_url="/home",
            link_text="サービス選択へ",
        )

    # ----------------------------------------------------------------- authentication unit (P14–P21)
    def _unit_change_allowed(self, session: WebSession) -> bool:
        return session.role in {"line", "number", "admin"}

    async def unit_page(self, request: Request) -> Response:
        session = await self.require(request, {"home"})
        if not self._unit_change_allowed(session):
            return self.message_page(
                request,
                "認証単位変更",
                [],
                session,
                status_code=403,
                errors=["認証単位の変更は、お客様電話番号（契約電話番号）でログインして行ってください。"],
                link_url="/home",
                link_text="サービス選択へ",
            )
        choices = [(unit, label) for unit, label in UNIT_LABELS.items() if unit != session.unit]
        return self.render(request, "unit_select.html", "認証単位の選択", session, choices=choices)

    def _unit_form(
        self,
        request: Request,
        session: WebSession,
        new_unit: str,
        numbers: list[str],
        errors: list[str] | None = None,
        status: int = 200,
        *,
        bulk: bool = False,
    ) -> Response:
        return self.render(
            request,
            "unit_change.html",
            "認証単位変更",
            session,
            status_code=status,
            errors=errors,
            new_unit=new_unit,
            old_label=UNIT_LABELS.get(session.unit or "", ""),
            new_label=UNIT_LABELS[new_unit],
            numbers=numbers,
            bulk=bulk,
            notes=msg.unit_change_notes(session.unit or "", new_unit),
        )

    async def unit_bulk(self, session: WebSession) -> bool:
        """P15–P17: the bulk file for a contract of 33 numbers or more, whatever their credentials."""
        assert session.contract_id is not None
        size = await run_in_threadpool(self.backend.contract_size, contract_id=session.contract_id)
        return size >= BULK_THRESHOLD

    async def unit_change_page(self, request: Request) -> Response:
        new_unit = request.path_params["unit"]
        session = await self.require(request, {"home"})
        assert session is not None and session.number and session.contract_id is not None
        if new_unit not in UNIT_LABELS or new_unit == session.unit or not self._unit_change_allowed(session):
            return self.redirect("/settings/unit", session)
        numbers = await run_in_threadpool(
            self.backend.unit_change_numbers,
            contract_id=session.contract_id,
            new_unit=new_unit,
            login_number=session.number,
            now=self.clock(),
        )
        return self._unit_form(request, session, new_unit, numbers, bulk=await self.unit_bulk(session))

    async def unit_download(self, request: Request) -> Response:
        new_unit = request.path_params["unit"]
        session = await self.require(request, {"home"})
        assert session is not None and session.number and session.contract_id is not None
        if new_unit not in UNIT_LABELS or new_unit == session.unit or not self._unit_change_allowed(session):
            return self.redirect("/settings/unit", session)
        numbers = await run_in_threadpool(
            self.backend.unit_change_numbers,
            contract_id=session.contract_id,
            new_unit=new_unit,
            login_number=session.number,
            now=self.clock(),
        )
        if not await self.unit_bulk(session):
            return self.redirect(f"/settings/unit/{new_unit}", session)
        return await self.marks_csv(session, numbers, "unit-change.csv")

    async def unit_change_submit(self, request: Request) -> Response:
        new_unit = request.path_params["unit"]
        session, form = await self.require_post(request, {"home"})
        assert session is not None and session.number and session.contract_id is not None
        if new_unit not in UNIT_LABELS or new_unit == session.unit or not self._unit_change_allowed(session):
            return self.redirect("/settings/unit", session)
        now = self.clock()
        numbers = await run_in_threadpool(
            self.backend.unit_change_numbers,
            contract_id=session.contract_id,
            new_unit=new_unit,
            login_number=session.number,
            now=now,
        )

        bulk = await self.unit_bulk(session)

        def refused(errors: list[str]) -> Response:
            return self._unit_form(request, session, new_unit, numbers, errors, 400, bulk=bulk)

        passwords = {n: form.get(f"password_{n}", "") for n in numbers}
        upload = (await request.form()).get("csv")  # the bulk file (33 numbers or more, seed P15-P17)
        if isinstance(upload, UploadFile) and bulk:
            rows, errors = parse_bulk_csv(
                await upload.read(BULK_MAX_BYTES + 1), allowed=set(numbers), column="現在のパスワード"
            )
            if errors:
                return refused(bound_errors(errors))
            passwords = {number: password for _, number, password in rows}
            passwords.update({n: "" for n in numbers if n not in passwords})
        if self.too_long(*passwords.values()):
            too_long = {n: "wrong_password" for n, p in passwords.items() if self.too_long(p)}
            return refused(msg.unit_change_problems(too_long, self.service_number))
        missing = [n for n, p in passwords.items() if not p]
        if missing:
            return refused([f"{n} のパスワードを入力してください。" for n in missing])
        problems = await run_in_threadpool(
            self.backend.change_unit,
            contract_id=session.contract_id,
            new_unit=new_unit,
            login_number=session.number,
            passwords=passwords,
            now=now,
        )
        if problems:
            log.info("web_unit_change_refused", number=session.number, new_unit=new_unit, problems=problems)
            if problems.get(session.number) in {"locked", "expired"}:
                text = (
                    self.invalidated(None)
                    if problems[session.number] == "locked"
                    else msg.temporary_expired_message(self.service_number)
                )
                return self.end_session_with(request, session, "認証単位変更", text)
            return refused(msg.unit_change_problems(problems, self.service_number))
        log.info("web_unit_changed", number=session.number, old_unit=session.unit, new_unit=new_unit)
        old_label = UNIT_LABELS.get(session.unit or "", "")
        session.end()
        response = self.message_page(
            request,
            "認証単位変更完了",
            [
                f"認証単位を「{old_label}」から「{UNIT_LABELS[new_unit]}」に変更しました。",
                "新しい認証単位で、もう一度ログインしてください。",
                *msg.unit_change_notes("", new_unit),
            ],
            None,
            link_url="/login",
            link_text="ログイン画面へ",
        )
        self.clear_cookie(response)
        return response

    # ----------------------------------------------------------------- JSON API
    def _api_error(self, status: int, error: str, message: str) -> JSONResponse:
        return JSONResponse({"error": error, "message": message}, status_code=status)

    async def api_login(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return self._api_error(
                415, "unsupported_media_type", "Content-Type: application/json で送信してください。"
            )
        try:
            body = await request.json()
        except ValueError:
            return self._api_error(400, "bad_request", "JSON の形式が正しくありません。")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("number"), str)
            or not isinstance(body.get("password"), str)
        ):
            return self._api_error(
                400, "bad_request", '{"number": "...", "password": "..."} を送信してください。'
            )
        number = normalize_login_number(body["number"])
        outcome = await run_in_threadpool(
            self.backend.login,
            number=number,
            password=body["password"],
            now=self.clock(),
            client=self.client_of(request),
        )
        if outcome.status == "throttled":
            return self.throttled_page(request, outcome.retry_after_seconds)
        if outcome.status == "wrong":
            log.info("web_login_failed", outcome_code="wrong", api=True)
            return self._api_error(401, "invalid_credentials", msg.WRONG_CREDENTIALS)
        if outcome.status != "ok":
            log.info("web_login_refused", number=number, outcome_code=outcome.status, api=True)
            error = "temporary_expired" if outcome.status == "temporary_expired" else "credential_invalidated"
            return JSONResponse(
                {
                    "error": error,
                    "message": self.refused_message(outcome),
                    "set_temporary_password_by_phone": self.service_number,
                },
                status_code=403,
            )
        ctx = await self.load(request)
        if ctx.session is not None:
            ctx.session.end()
        session = self.begin_login(request, outcome)
        if session.stage == "home":
            session = self.complete_login(session)
        response = JSONResponse({"next": STAGE_API_NEXT[session.stage], "csrf_token": session.csrf_token})
        self.set_cookie(response, session)
        return response

    async def api_session(self, request: Request) -> Response:
        ctx = await self.load(request)
        session = ctx.session
        if session is None or not session.authenticated:
            return self._api_error(401, "not_logged_in", "ログインしていません。")
        body: dict[str, Any] = {
            "number": session.number,
            "unit": session.unit,
            "role": session.role,
            "next": STAGE_API_NEXT[session.stage],
        }
        if session.stage == "home":
            assert session.contract_id is not None and session.unit and session.number
            rows = await run_in_threadpool(
                self.backend.scope, contract_id=session.contract_id, unit=session.unit, number=session.number
            )
            body["numbers"] = [{"number": r.number, "services": r.services} for r in rows]
        return JSONResponse(body)

    async def api_logout(self, request: Request) -> Response:
        ctx = await self.load(request)
        session = ctx.session
        if session is None:
            response: Response = Response(status_code=204)
        elif not same_token(request.headers.get("x-csrf-token", ""), session.csrf_token):
            return self._api_error(403, "csrf", "X-CSRF-Token ヘッダが必要です。")
        else:
            session.end()
            response = Response(status_code=204)
        self.clear_cookie(response)
        return response

    # ----------------------------------------------------------------- routes
    def routes(self) -> list[Route | Mount]:
        return [
            Route(route.path, self.endpoint(route.endpoint), methods=route.methods)
            if isinstance(route, Route)
            else route
            for route in self._routes()
        ]

    def _routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.root),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login_submit, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/password/required", self.password_page, methods=["GET"]),
            Route("/password/required", self.password_submit, methods=["POST"]),
            Route("/password/bulk", self.bulk_page, methods=["GET"]),
            Route("/password/bulk", self.bulk_submit, methods=["POST"]),
            Route("/password/bulk/download", self.bulk_download, methods=["GET"]),
            Route("/password", self.password_page, methods=["GET"]),
            Route("/password", self.password_submit, methods=["POST"]),
            Route("/otp/choice", self.otp_choice_page, methods=["GET"]),
            Route("/otp/choice", self.otp_choice_submit, methods=["POST"]),
            Route("/otp/decline", self.otp_decline_page, methods=["GET"]),
            Route("/otp/decline", self.otp_decline_submit, methods=["POST"]),
            Route("/otp/register", self.otp_register_page, methods=["GET"]),
            Route("/otp/register", self.otp_register_submit, methods=["POST"]),
            Route("/otp/address", self.otp_register_page, methods=["GET"]),
            Route("/otp/address", self.otp_register_submit, methods=["POST"]),
            Route("/otp/register/confirm", self.otp_register_confirm_page, methods=["GET"]),
            Route("/otp/register/confirm", self.otp_register_confirm_submit, methods=["POST"]),
            Route("/otp/verify", self.otp_verify_page, methods=["GET"]),
            Route("/otp/verify", self.otp_verify_submit, methods=["POST"]),
            Route("/otp/send", self.otp_send_page, methods=["GET"]),
            Route("/otp/send", self.otp_send_submit, methods=["POST"]),
            Route("/otp/code", self.otp_code_page, methods=["GET"]),
            Route("/otp/code", self.otp_code_submit, methods=["POST"]),
            Route("/otp/address-check", self.otp_address_check_page, methods=["GET"]),
            Route("/otp/address-check", self.otp_address_check_submit, methods=["POST"]),
            Route("/home", self.home, methods=["GET"]),
            Route("/help", self.help_page, methods=["GET"]),
            Route("/settings/otp/bulk", self.otp_bulk_page, methods=["GET"]),
            Route("/settings/otp/bulk", self.otp_bulk_submit, methods=["POST"]),
            Route("/settings/otp/bulk/download", self.otp_bulk_download, methods=["GET"]),
            Route("/settings/otp/release", self.otp_release_page, methods=["GET"]),
            Route("/settings/otp/release", self.otp_release_submit, methods=["POST"]),
            Route("/settings/otp/release/confirm", self.otp_release_confirm, methods=["POST"]),
            Route("/settings/otp", self.settings_otp_page, methods=["GET"]),
            Route("/settings/otp", self.settings_otp_submit, methods=["POST"]),
            Route("/settings/otp/address", self.settings_address, methods=["GET"]),
            Route("/settings/otp/confirmation-id", self.confirmation_page, methods=["GET"]),
            Route("/settings/otp/confirmation-id", self.confirmation_submit, methods=["POST"]),
            Route("/settings/otp/confirmation-password", self.confirmation_page, methods=["GET"]),
            Route("/settings/otp/confirmation-password", self.confirmation_submit, methods=["POST"]),
            Route("/settings/unit", self.unit_page, methods=["GET"]),
            Route("/settings/unit/{unit}/download", self.unit_download, methods=["GET"]),
            Route("/settings/unit/{unit}", self.unit_change_page, methods=["GET"]),
            Route("/settings/unit/{unit}", self.unit_change_submit, methods=["POST"]),
            Route("/api/login", self.api_login, methods=["POST"]),
            Route("/api/session", self.api_session, methods=["GET"]),
            Route("/api/logout", self.api_logout, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    mailer: Mailer | None = None,
    backend: CredentialBackend | None = None,
) -> Starlette:
    """The ASGI app. Tests inject ``clock`` (24 h / 300 s / idle expiry), ``mailer`` or ``backend``."""
    if backend is None:
        from web_stub.core_backend import CoreBackend

        backend = CoreBackend.from_settings(settings)
    web = WebApp(
        settings,
        backend=backend,
        clock=clock or utc_now,
        mailer=mailer or SmtpMailer(settings.smtp),
    )
    app = Starlette(
        routes=web.routes(),
        middleware=[Middleware(SecurityHeaders), Middleware(BodyLimit, web=web)],
        exception_handlers={Exception: _error_page(web)},
    )
    app.state.web = web
    return app


def _error_page(web: WebApp) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        log.error("web_unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "server_error", "message": msg.SYSTEM_ERROR}, status_code=500)
        return web.message_page(
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
