"""ログイン (P7), ログアウト, サービス選択 (P11) and ヘルプ: the pages around the login itself."""

from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web_stub import messages as msg
from web_stub.csv_files import (
    BULK_THRESHOLD,
    normalize_login_number,
)
from web_stub.site import (
    SESSION_COOKIE,
    STAGE_PAGES,
    Site,
)
from web_stub.stages import Stage

log = structlog.get_logger("web")


class LoginPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login_submit, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/home", self.home, methods=["GET"]),
            Route("/help", self.help_page, methods=["GET"]),
        ]

    # ----------------------------------------------------------------- login
    async def root(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        if ctx.session and ctx.session.authenticated:
            return self.site.redirect(STAGE_PAGES[ctx.session.stage], ctx.session)
        return self.site.redirect("/login")

    async def login_page(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        session = ctx.session
        if session and session.authenticated:
            return self.site.redirect(STAGE_PAGES[session.stage], session)
        ended = (
            ctx.ended
            or request.query_params.get("ended")
            or ("idle" if request.query_params.get("timeout") else None)
        )
        response = self.site.login_form(request, notice=msg.session_ended_notice(ended))
        if request.cookies.get(SESSION_COOKIE):
            self.site.clear_cookie(response)
        return response

    async def login_submit(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        form = await self.site.form(request)
        if not self.site.anonymous_form_ok(request, form):
            return self.site.login_form(request, status_code=403, errors=[msg.FORM_EXPIRED])
        number = normalize_login_number(form.get("number", ""))
        password = form.get("password", "")
        if not number or not password:
            return self.site.login_form(
                request,
                status_code=400,
                errors=["電話番号（ハイフンなし）とパスワードを入力してください。"],
                number=number[:20],
                invalid_fields=[f for f, v in (("number", number), ("password", password)) if not v],
            )
        outcome = await run_in_threadpool(
            self.site.backend.login,
            number=number,
            password=password,
            now=self.site.clock(),
            client=self.site.client_of(request),
        )
        if outcome.status == "throttled":
            return self.site.throttled_page(request, outcome.retry_after_seconds)
        if outcome.status == "wrong":
            log.info("web_login_failed", outcome_code="wrong")
            return self.site.login_form(
                request,
                status_code=401,
                errors=[msg.WRONG_CREDENTIALS],
                number=number[:20],
                invalid_fields=["number", "password"],
            )
        if outcome.status != "ok":
            log.info("web_login_refused", number=number, outcome_code=outcome.status)
            return self.site.login_form(
                request, status_code=403, errors=[self.site.refused_message(outcome)], number=number[:20]
            )
        if ctx.session is not None:
            ctx.session.end()  # a new login replaces this browser's earlier session
        session = self.site.begin_login(request, outcome)
        log.info("web_login_password_ok", number=session.number, stage=session.stage)
        return self.site.redirect(STAGE_PAGES[session.stage], session)

    async def logout(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        form = await self.site.form(request)
        if ctx.session is not None and self.site.csrf_ok(ctx.session, form):
            log.info("web_logout", number=ctx.session.number)
            ctx.session.end()
        elif ctx.session is not None:
            return self.site.csrf_failed(request, ctx)
        response = self.site.message_page(
            request,
            "ログアウト",
            ["ログアウトしました。ブラウザを閉じて終了してください。"],
            None,
            link_url="/login",
            link_text="ログイン画面へ",
        )
        self.site.clear_cookie(response)
        return response

    # ----------------------------------------------------------------- home and settings
    async def home(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.HOME)
        numbers = await run_in_threadpool(
            self.site.backend.scope, contract_id=session.contract_id, unit=session.unit, number=session.number
        )
        await self.site.refresh_otp(session)
        session.data.bulk = session.role == "admin" and len(numbers) >= BULK_THRESHOLD
        return self.site.render(request, "home.html", "サービス選択", session, numbers=numbers)

    async def help_page(self, request: Request) -> Response:
        """ヘルプ (every page's footer): how to log in, the lockout rules, whom to call. Anyone."""
        ctx = await self.site.load(request)
        session = ctx.session if ctx.session and ctx.session.authenticated else None
        return self.site.render(request, "help.html", "ヘルプ", session)
