"""The support site (Japanese), its own Starlette app under ``/support``, and the operator JSON API.

Public without login: the notice list and pages (工事情報 / 故障情報; members-only notices are
left out for visitors), the FAQ. The operator API (``/support/api/notices``) takes a Bearer token
(``notices.operator_token``; unset: the API answers 404) and JSON bodies of at most
``web.max_form_bytes``; bad input gets 400 with the reason, nothing written.

The stylesheet is the settings site's (``/static/site.css``, served from web_stub/static) plus
``/support/static/support.css``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from core import throttle
from core.notice_models import Notice
from core.secrets import SecretHasher, constant_time_equals
from notices import queue, rules
from notices.metrics import NoticeMetrics
from notices.web_login import LoginPages

log = structlog.get_logger("notices.web")

HERE = Path(__file__).resolve().parent


@functools.cache
def support_templates() -> Environment:
    """The support pages' templates, one environment for every app of the process, built at the
    first app: each template is compiled once (the tests build an app per test)."""
    return Environment(
        loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"])
    )


SHARED_STATIC = HERE.parent / "web_stub" / "static"


def _tokyo(moment: datetime | None) -> str:
    if moment is None:
        return "未定"
    return moment.astimezone(rules.TOKYO).strftime("%Y/%m/%d %H:%M")


def _parse_time(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise queue.NoticeError(f"{field} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise queue.NoticeError(f"{field} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise queue.NoticeError(f"{field} needs an offset, e.g. +09:00")
    return parsed


def _tokyo_input(value: str) -> datetime | None:
    """``2026-12-10 01:00`` typed on the operator page, in Tokyo time."""
    text = value.strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise queue.NoticeError(f"not a time: {text} (2026-12-10 01:00)") from None
    return parsed.replace(tzinfo=rules.TOKYO) if parsed.tzinfo is None else parsed


def draft_from_json(body: Any) -> queue.NoticeDraft:
    if not isinstance(body, dict):
        raise queue.NoticeError("the body must be a JSON object")
    unknown = set(body) - {
        "kind",
        "status",
        "title",
        "area",
        "body",
        "products",
        "starts_at",
        "ends_at",
        "public",
        "follows",
    }
    if unknown:
        raise queue.NoticeError(f"unknown fields: {', '.join(sorted(unknown))}")
    products = body.get("products")
    if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
        raise queue.NoticeError("products must be a list of product codes")
    for name in ("kind", "status", "title", "body"):
        if not isinstance(body.get(name), str):
            raise queue.NoticeError(f"{name} is required (a string)")
    area = body.get("area", "")
    public = body.get("public", True)
    follows = body.get("follows")
    if (
        not isinstance(area, str)
        or not isinstance(public, bool)
        or not (follows is None or type(follows) is int)
    ):
        raise queue.NoticeError("area must be a string, public a boolean, follows a notice id")
    return queue.NoticeDraft(
        kind=body["kind"],
        status=body["status"],
        title=body["title"],
        area=area,
        body=body["body"],
        products=tuple(products),
        starts_at=_parse_time(body.get("starts_at"), "starts_at"),
        ends_at=_parse_time(body.get("ends_at"), "ends_at"),
        public=public,
        follows_id=follows,
    )


def notice_json(n: Notice, products: list[str], counts: dict[str, int] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": n.id,
        "kind": n.kind,
        "status": n.status,
        "title": n.title,
        "area": n.area,
        "body": n.body,
        "products": products,
        "starts_at": n.starts_at.isoformat() if n.starts_at else None,
        "ends_at": n.ends_at.isoformat() if n.ends_at else None,
        "public": n.public,
        "follows": n.follows_id,
        "posted_at": n.posted_at.isoformat(),
        "recipients": n.recipients,
    }
    if counts is not None:
        found["deliveries"] = counts
    return found


class SupportSite(LoginPages):
    def __init__(
        self,
        settings: Any,
        sessions: sessionmaker[Session],
        *,
        clock: Callable[[], datetime] | None = None,
        hasher: SecretHasher | None = None,
        mailer: Any = None,
    ) -> None:
        self.settings = settings
        self.s = settings.notices
        self.sessions = sessions
        self.clock = clock or (lambda: datetime.now(UTC))
        self.templates = support_templates()
        self._init_login(hasher, mailer)

    # ------------------------------------------------------------------------------ helpers

    def _db(self, work: Callable[[Session], Any]) -> Any:
        with self.sessions() as session, session.begin():
            return work(session)

    async def db(self, work: Callable[[Session], Any]) -> Any:
        return await asyncio.to_thread(self._db, work)

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("account", None)
        context.setdefault("sender_domain", self.s.sender.rpartition("@")[2])
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=self.security_headers())

    @staticmethod
    def security_headers() -> dict[str, str]:
        return {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        }

    def _notice_rows(
        self, session: Session, *, include_members_only: bool, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(Notice).order_by(Notice.posted_at.desc(), Notice.id.desc()).limit(limit)
        if not include_members_only:
            query = query.where(Notice.public.is_(True))
        notices = list(session.scalars(query))
        products = queue.products_of(session, [n.id for n in notices])
        return [self._view(n, products[n.id]) for n in notices]

    def _view(self, n: Notice, products: list[str]) -> dict[str, Any]:
        """A notice as the pages show it: labels (ひかり電話), not the codes (hikari-denwa)."""
        return {
            "id": n.id,
            "kind": n.kind,
            "kind_label": rules.KINDS.get(n.kind, n.kind),
            "status_label": rules.STATUSES.get(n.status, n.status),
            "title": n.title,
            "area": n.area,
            "body": n.body,
            "products": [self.s.products.get(p, p) for p in products],
            "public": n.public,
            "follows": n.follows_id,
            "starts": _tokyo(n.starts_at),
            "ends": _tokyo(n.ends_at),
            "posted": _tokyo(n.posted_at),
        }

    # ------------------------------------------------------------------------- public pages

    async def index(self, request: Request) -> Response:
        return RedirectResponse("/support/notices", status_code=303)

    async def notice_list(self, request: Request) -> Response:
        account = await self.current_account(request)
        rows = await self.db(lambda s: self._notice_rows(s, include_members_only=account is not None))
        return self.render("notices.html", page_title="工事・故障情報", rows=rows, account=account)

    async def notice_page(self, request: Request) -> Response:
        account = await self.current_account(request)
        try:
            notice_id = int(request.path_params["notice_id"])
        except ValueError:
            notice_id = -1

        def load(session: Session) -> dict[str, Any] | None:
            n = session.get(Notice, notice_id)
            if n is None or (not n.public and account is None):
                return None
            return self._view(n, queue.products_of(session, [n.id])[n.id])

        view = await self.db(load)
        if view is None:
            return self.render(
                "notices.html",
                status_code=404,
                page_title="工事・故障情報",
                rows=[],
                account=account,
                errors=["お探しの情報は見つかりませんでした。掲載が終了したか、ログインが必要な情報です。"],
            )
        return self.render(
            "notice.html", page_title=f"{view['kind_label']}：{view['title']}", n=view, account=account
        )

    async def to_mymenu(self, request: Request) -> Response:
        return RedirectResponse("/support/mymenu", status_code=303)

    async def faq(self, request: Request) -> Response:
        account = await self.current_account(request)
        return self.render("faq.html", page_title="よくあるご質問", account=account)

    # --------------------------------------------------------------------------- operator API

    async def _operator_check(self, request: Request, given: str) -> int | None:
        """None if ``given`` is the operator token; else the status to answer (401, or 429 when the
        client has failed too often: then the token is not even compared)."""
        token = self.s.operator_token
        assert token is not None
        client = (request.client.host if request.client else "unknown")[:80]
        budget = throttle.Budget(self.s.login_failures_per_client, 300)
        now = self.clock()
        current = await self.db(
            lambda s: throttle.current(s, scope="support_api", key=client, now=now, budget=budget)
        )
        if not current.allowed:
            return 429
        if not constant_time_equals(given.strip(), token.get_secret_value()):
            await self.db(lambda s: throttle.take(s, scope="support_api", key=client, now=now, budget=budget))
            log.warning("operator_unauthorized", path=request.url.path)
            return 401
        return None

    async def _operator(self, request: Request) -> Response | None:
        token = self.s.operator_token
        if token is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        client = (request.client.host if request.client else "unknown")[:80]
        budget = throttle.Budget(self.s.login_failures_per_client, 300)
        now = self.clock()
        current = await self.db(
            lambda s: throttle.current(s, scope="support_api", key=client, now=now, budget=budget)
        )
        if not current.allowed:  # a script guessing tokens gets 429 before any comparison
            return JSONResponse(
                {"error": "too many failed attempts; try again later"},
                status_code=429,
                headers={"Retry-After": str(current.retry_after_seconds)},
            )
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not constant_time_equals(value.strip(), token.get_secret_value()):
            await self.db(lambda s: throttle.take(s, scope="support_api", key=client, now=now, budget=budget))
            log.warning("operator_api_unauthorized", path=request.url.path)
            return JSONResponse(
                {"error": "an operator token is needed (Authorization: Bearer …)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    async def _json_body(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        limit = queue.MAX_NOTICE_REQUEST_BYTES  # the notices' own limit, in characters (queue.MAX_TEXT)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _TooLarge
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise _TooLarge
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise queue.NoticeError("the body is not JSON (UTF-8)") from None

    async def api_post(self, request: Request) -> Response:
        refused = await self._operator(request)
        if refused is not None:
            return refused
        try:
            draft = draft_from_json(await self._json_body(request))
            now = self.clock()

            def post(session: Session) -> dict[str, Any]:
                notice = queue.post_notice(session, draft, posted_by="api", now=now, catalog=self.s.products)
                return notice_json(notice, sorted(set(draft.products)))

            row = await self.db(post)
        except _TooLarge:
            return JSONResponse(
                {"error": f"the request is larger than {queue.MAX_NOTICE_REQUEST_BYTES} bytes"},
                status_code=413,
            )
        except queue.NoticeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        log.info(
            "notice_posted", notice_id=row["id"], kind=row["kind"], recipients=row["recipients"], by="api"
        )
        return JSONResponse(row, status_code=201, headers={"Location": f"/support/api/notices/{row['id']}"})

    async def api_list(self, request: Request) -> Response:
        refused = await self._operator(request)
        if refused is not None:
            return refused
        try:
            limit = max(1, min(500, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return JSONResponse({"error": "limit must be a number"}, status_code=400)

        def load(session: Session) -> list[dict[str, Any]]:
            notices = list(session.scalars(select(Notice).order_by(Notice.id.desc()).limit(limit)))
            products = queue.products_of(session, [n.id for n in notices])
            return [notice_json(n, products[n.id]) for n in notices]

        return JSONResponse({"notices": await self.db(load)})

    async def api_get(self, request: Request) -> Response:
        refused = await self._operator(request)
        if refused is not None:
            return refused
        try:
            notice_id = int(request.path_params["notice_id"])
        except ValueError:
            return JSONResponse({"error": "not found"}, status_code=404)

        def load(session: Session) -> dict[str, Any] | None:
            n = session.get(Notice, notice_id)
            if n is None:
                return None
            return notice_json(
                n, queue.products_of(session, [n.id])[n.id], queue.delivery_counts(session, notice_id=n.id)
            )

        row = await self.db(load)
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(row)

    # --------------------------------------------------------------------------- operator page

    def _operator_page(self, request: Request, status_code: int = 200, **context: Any) -> Response:
        context.setdefault("form", {"products": []})
        return self._page(
            request,
            "operator.html",
            status_code,
            page_title="工事・故障情報の掲載",
            kinds=list(rules.KINDS.items()),
            statuses=list(rules.STATUSES.items()),
            products=list(self.s.products.items()),
            **context,
        )

    async def operator_form(self, request: Request) -> Response:
        if self.s.operator_token is None:
            return self.render("notices.html", status_code=404, page_title="工事・故障情報", rows=[])
        return self._operator_page(request)

    async def operator_post(self, request: Request) -> Response:
        if self.s.operator_token is None:
            return self.render("notices.html", status_code=404, page_title="工事・故障情報", rows=[])
        form = await self._form(request, limit=queue.MAX_NOTICE_REQUEST_BYTES)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        products = [p for p in form["product[]"].split("\x00") if p]
        shown: dict[str, Any] = {
            k: form.get(k, "")
            for k in ("kind", "status", "title", "area", "body", "starts_at", "ends_at", "follows")
        }
        shown |= {"products": products, "members_only": bool(form.get("members_only"))}
        refused = await self._operator_check(request, form.get("token", ""))
        if refused is not None:
            return self._operator_page(
                request, refused, form=shown, errors=["オペレーター用トークンが正しくありません。"]
            )
        try:
            follows = int(shown["follows"]) if shown["follows"].strip() else None
            draft = queue.NoticeDraft(
                kind=shown["kind"],
                status=shown["status"],
                title=shown["title"],
                area=shown["area"],
                body=shown["body"].replace("\r\n", "\n"),
                products=tuple(products),
                starts_at=_tokyo_input(shown["starts_at"]),
                ends_at=_tokyo_input(shown["ends_at"]),
                public=not shown["members_only"],
                follows_id=follows,
            )
            now = self.clock()
            row = await self.db(
                lambda s: notice_json(
                    queue.post_notice(s, draft, posted_by="operator-page", now=now, catalog=self.s.products),
                    [],
                )
            )
        except (queue.NoticeError, ValueError) as exc:
            return self._operator_page(request, 400, form=shown, errors=[f"掲載できません: {exc}"])
        log.info(
            "notice_posted", notice_id=row["id"], kind=row["kind"], recipients=row["recipients"], by="page"
        )
        return self.render(
            "message.html",
            page_title="掲載しました",
            lines=[
                f"情報番号 {row['id']} を掲載しました。配信先 {row['recipients']} 件にメールを配信します。"
            ],
            next_url=f"/support/notices/{row['id']}",
            next_label="掲載した情報を見る",
        )

    # ------------------------------------------------------------------------------- routes

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/support", self.index),
            Route("/support/", self.index),
            Route("/support/notices", self.notice_list),
            Route("/support/notices/{notice_id}", self.notice_page),
            Route("/support/faq", self.faq),
            Route("/support/mysupport", self.to_mymenu),  # the address the seed's FAQ gives
            *self.login_routes(),
            Route("/support/operator", self.operator_form, methods=["GET"]),
            Route("/support/operator", self.operator_post, methods=["POST"]),
            Route("/support/api/notices", self.api_post, methods=["POST"]),
            Route("/support/api/notices", self.api_list, methods=["GET"]),
            Route("/support/api/notices/{notice_id}", self.api_get, methods=["GET"]),
            Mount("/support/static", StaticFiles(directory=str(HERE / "static")), name="support-static"),
        ]


def _metrics_page(s: Any, metrics: NoticeMetrics) -> Callable[[Request], Any]:
    """/metrics (notices.metrics): only with ``metrics_token`` set (404 otherwise), bearer token
    compared in constant time."""
    token = s.metrics_token.get_secret_value() if s.metrics_token else None

    async def page(request: Request) -> Response:
        if token is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not constant_time_equals(given.strip(), token):
            return Response(
                "Unauthorized",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return page


class _TooLarge(Exception):
    pass


def create_support_app(
    settings: Any, sessions: sessionmaker[Session], *, metrics: NoticeMetrics | None = None, **kw: Any
) -> Starlette:
    site = SupportSite(settings, sessions, **kw)
    routes = site.routes()
    routes.append(
        Route("/metrics", _metrics_page(settings.notices, metrics or NoticeMetrics()), methods=["GET"])
    )
    if SHARED_STATIC.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=str(SHARED_STATIC)), name="static"))
    app = Starlette(routes=routes)
    app.state.site = site
    return app
