"""The small JSON API (login, session, logout) and the health check."""

from __future__ import annotations

from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from web_stub import messages as msg
from web_stub.csv_files import (
    normalize_login_number,
)
from web_stub.site import (
    STAGE_API_NEXT,
    Site,
    same_token,
)

log = structlog.get_logger("web")


class ApiPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/api/login", self.api_login, methods=["POST"]),
            Route("/api/session", self.api_session, methods=["GET"]),
            Route("/api/logout", self.api_logout, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
        ]

    async def api_login(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return self.site.api_error(
                415, "unsupported_media_type", "Content-Type: application/json で送信してください。"
            )
        try:
            body = await request.json()
        except ValueError:
            return self.site.api_error(400, "bad_request", "JSON の形式が正しくありません。")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("number"), str)
            or not isinstance(body.get("password"), str)
        ):
            return self.site.api_error(
                400, "bad_request", '{"number": "...", "password": "..."} を送信してください。'
            )
        number = normalize_login_number(body["number"])
        outcome = await run_in_threadpool(
            self.site.backend.login,
            number=number,
            password=body["password"],
            now=self.site.clock(),
            client=self.site.client_of(request),
        )
        if outcome.status == "throttled":
            return self.site.throttled_page(request, outcome.retry_after_seconds)
        if outcome.status == "wrong":
            log.info("web_login_failed", outcome_code="wrong", api=True)
            return self.site.api_error(401, "invalid_credentials", msg.WRONG_CREDENTIALS)
        if outcome.status != "ok":
            log.info("web_login_refused", number=number, outcome_code=outcome.status, api=True)
            error = "temporary_expired" if outcome.status == "temporary_expired" else "credential_invalidated"
            return JSONResponse(
                {
                    "error": error,
                    "message": self.site.refused_message(outcome),
                    "set_temporary_password_by_phone": self.site.service_number,
                },
                status_code=403,
            )
        ctx = await self.site.load(request)
        if ctx.session is not None:
            ctx.session.end()
        session = self.site.begin_login(request, outcome)
        response = JSONResponse({"next": STAGE_API_NEXT[session.stage], "csrf_token": session.csrf_token})
        self.site.set_cookie(response, session)
        return response

    async def api_session(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        session = ctx.session
        if session is None or not session.authenticated:
            return self.site.api_error(401, "not_logged_in", "ログインしていません。")
        body: dict[str, Any] = {
            "number": session.number,
            "unit": session.unit,
            "role": session.role,
            "next": STAGE_API_NEXT[session.stage],
        }
        if session.stage == "home":
            rows = await run_in_threadpool(
                self.site.backend.scope,
                contract_id=session.contract_id,
                unit=session.unit,
                number=session.number,
            )
            body["numbers"] = [{"number": r.number, "services": r.services} for r in rows]
        return JSONResponse(body)

    async def api_logout(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        session = ctx.session
        if session is None:
            response: Response = Response(status_code=204)
        elif not same_token(request.headers.get("x-csrf-token", ""), session.csrf_token):
            return self.site.api_error(403, "csrf", "X-CSRF-Token ヘッダが必要です。")
        else:
            session.end()
            response = Response(status_code=204)
        self.site.clear_cookie(response)
        return response

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})
