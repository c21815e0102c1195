"""認証単位変更 (P14–P21), with the bulk file for a contract of 33 numbers or more."""

from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web_stub import messages as msg
from web_stub.csv_files import (
    BULK_MAX_BYTES,
    BULK_THRESHOLD,
    bound_errors,
    parse_bulk_csv,
)
from web_stub.sessions import WebSession
from web_stub.site import (
    UNIT_LABELS,
    Detour,
    Site,
)
from web_stub.stages import Stage

log = structlog.get_logger("web")


class UnitPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/settings/unit", self.unit_page, methods=["GET"]),
            Route("/settings/unit/{unit}/download", self.unit_download, methods=["GET"]),
            Route("/settings/unit/{unit}", self.unit_change_page, methods=["GET"]),
            Route("/settings/unit/{unit}", self.unit_change_submit, methods=["POST"]),
        ]

    # ----------------------------------------------------------------- authentication unit (P14–P21)
    def problems(self, problems: dict[str, str]) -> list[str]:
        return msg.unit_change_problems(
            problems,
            self.site.service_number,
            temporary_tries=self.site.policy.temporary_max_failures,
            permanent_tries=self.site.policy.permanent_max_failures,
        )

    def _unit_change_allowed(self, session: WebSession) -> bool:
        return session.role in {"line", "number", "admin"}

    async def unit_page(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.HOME)
        if not self._unit_change_allowed(session):
            return self.site.message_page(
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
        return self.site.render(request, "unit_select.html", "認証単位の選択", session, choices=choices)

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
        return self.site.render(
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
        size = await run_in_threadpool(self.site.backend.contract_size, contract_id=session.contract_id)
        return size >= BULK_THRESHOLD

    async def _unit_change_target(self, request: Request) -> tuple[WebSession, str, list[str]]:
        """The logged-in session, the unit it may change to (else back to the unit page) and the
        numbers whose passwords that change asks for."""
        new_unit = request.path_params["unit"]
        session = await self.site.logged_in(request, Stage.HOME)
        if new_unit not in UNIT_LABELS or new_unit == session.unit or not self._unit_change_allowed(session):
            raise Detour(self.site.redirect("/settings/unit", session))
        numbers = await run_in_threadpool(
            self.site.backend.unit_change_numbers,
            contract_id=session.contract_id,
            new_unit=new_unit,
            login_number=session.number,
            now=self.site.clock(),
        )
        return session, new_unit, numbers

    async def unit_change_page(self, request: Request) -> Response:
        session, new_unit, numbers = await self._unit_change_target(request)
        return self._unit_form(request, session, new_unit, numbers, bulk=await self.unit_bulk(session))

    async def unit_download(self, request: Request) -> Response:
        session, new_unit, numbers = await self._unit_change_target(request)
        if not await self.unit_bulk(session):
            return self.site.redirect(f"/settings/unit/{new_unit}", session)
        return await self.site.marks_csv(session, numbers, "unit-change.csv")

    async def unit_change_submit(self, request: Request) -> Response:
        new_unit = request.path_params["unit"]
        session, form = await self.site.logged_in_form(request, Stage.HOME)
        if new_unit not in UNIT_LABELS or new_unit == session.unit or not self._unit_change_allowed(session):
            return self.site.redirect("/settings/unit", session)
        now = self.site.clock()
        numbers = await run_in_threadpool(
            self.site.backend.unit_change_numbers,
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
        if self.site.too_long(*passwords.values()):
            too_long = {n: "wrong_password" for n, p in passwords.items() if self.site.too_long(p)}
            return refused(self.problems(too_long))
        missing = [n for n, p in passwords.items() if not p]
        if missing:
            return refused([f"{n} のパスワードを入力してください。" for n in missing])
        problems = await run_in_threadpool(
            self.site.backend.change_unit,
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
                    self.site.invalidated(None)
                    if problems[session.number] == "locked"
                    else msg.temporary_expired_message(self.site.service_number)
                )
                return self.site.end_session_with(request, session, "認証単位変更", text)
            return refused(self.problems(problems))
        log.info("web_unit_changed", number=session.number, old_unit=session.unit, new_unit=new_unit)
        old_label = UNIT_LABELS.get(session.unit or "", "")
        session.end()
        response = self.site.message_page(
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
        self.site.clear_cookie(response)
        return response
