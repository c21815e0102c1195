"""ワンタイムパスワード利用選択変更 (P21) and the confirmation ID / password changes (P25–P26)
from the menu.
"""

from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web_stub import messages as msg
from web_stub.sessions import WebSession
from web_stub.site import (
    Detour,
    Site,
)
from web_stub.stages import Stage

log = structlog.get_logger("web")


class OtpSettingsPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/settings/otp", self.settings_otp_page, methods=["GET"]),
            Route("/settings/otp", self.settings_otp_submit, methods=["POST"]),
            Route("/settings/otp/address", self.settings_address, methods=["GET"]),
            Route("/settings/otp/confirmation-id", self.confirmation_id_page, methods=["GET"]),
            Route("/settings/otp/confirmation-id", self.confirmation_id_submit, methods=["POST"]),
            Route("/settings/otp/confirmation-password", self.confirmation_password_page, methods=["GET"]),
            Route("/settings/otp/confirmation-password", self.confirmation_password_submit, methods=["POST"]),
        ]

    async def _otp_settings_unlocked(self, request: Request, session: WebSession) -> None:
        if await run_in_threadpool(self.site.backend.otp_settings_locked, number=session.number):
            raise Detour(self.site.otp_settings_locked_page(request, session))

    async def settings_otp_page(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.HOME)
        await self._otp_settings_unlocked(request, session)
        state = await self.site.refresh_otp(session)
        return self.site.render(
            request,
            "settings_otp.html",
            "ワンタイムパスワード 利用選択変更",
            session,
            enabled=state.status == "on",
            bulk=bool(await self.site.bulk_allowed(session)),
        )

    async def settings_otp_submit(self, request: Request) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.HOME)
        await self._otp_settings_unlocked(request, session)
        state = await self.site.refresh_otp(session)
        if form.get("use") == "0" and state.status == "on" and form.get("agree") != "1":
            return self.site.redirect("/settings/otp", session)  # "not use" needs the explicit agreement
        if form.get("use") == "0" and state.status == "on":
            await run_in_threadpool(
                self.site.backend.otp_disable, number=session.number, now=self.site.clock()
            )
            session.data.otp_status = "off"
            log.info("web_otp_disabled", number=session.number)
            return self.site.message_page(
                request,
                "ワンタイムパスワード 利用選択変更完了",
                ["「ワンタイムパスワードを利用しない」に変更しました。"],
                session,
                link_url="/home",
                link_text="サービス選択へ",
            )
        if form.get("use") == "1" and state.status != "on":
            state = await run_in_threadpool(
                self.site.backend.otp_enable, number=session.number, now=self.site.clock()
            )
            session.data.otp_status = state.status
            log.info("web_otp_enabled", number=session.number, outcome_code=state.status)
            # P21: switching on always continues to the registration screens. A number that still
            # has its address goes to the address change (its confirmation ID and password first,
            # unless this login was two-step), so the address is proven again by its link.
            return self.site.message_page(
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
        return self.site.redirect("/settings/otp", session)

    async def settings_address(self, request: Request) -> Response:
        return self.site.redirect("/otp/address")  # its gate sends to the confirmation check when needed

    def _confirmation_form(
        self,
        request: Request,
        session: WebSession,
        kind: str,
        errors: list[str] | None = None,
        status: int = 200,
    ) -> Response:
        what = "確認用ID" if kind == "id" else "確認用パスワード"
        return self.site.render(
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

    async def confirmation_id_page(self, request: Request) -> Response:
        return await self.confirmation_page(request, "id")

    async def confirmation_id_submit(self, request: Request) -> Response:
        return await self.confirmation_submit(request, "id")

    async def confirmation_password_page(self, request: Request) -> Response:
        return await self.confirmation_page(request, "password")

    async def confirmation_password_submit(self, request: Request) -> Response:
        return await self.confirmation_submit(request, "password")

    async def confirmation_page(self, request: Request, kind: str) -> Response:
        session = await self.site.logged_in(request, Stage.HOME)
        await self.site.require_otp_settings(request, session)
        return self._confirmation_form(request, session, kind)

    async def confirmation_submit(self, request: Request, kind: str) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.HOME)
        await self.site.require_otp_settings(request, session)
        to_messages = msg.confirmation_id_messages if kind == "id" else msg.confirmation_password_messages
        new = form.get("new", "")
        if self.site.too_long(form.get("current", "")):
            return self._confirmation_form(request, session, kind, to_messages(["current_wrong"]), 400)
        codes = (
            self.site.backend.confirmation_id_violations(new)
            if kind == "id"
            else self.site.backend.confirmation_password_violations(new)
        )
        if not codes and new != form.get("new_confirm", ""):
            codes = ["mismatch"]
        if codes:
            return self._confirmation_form(request, session, kind, to_messages(codes, new), 400)
        change = (
            self.site.backend.otp_change_confirmation_id
            if kind == "id"
            else self.site.backend.otp_change_confirmation_password
        )
        codes = await run_in_threadpool(
            change, number=session.number, current=form.get("current", ""), new=new, now=self.site.clock()
        )
        if codes == ["locked"]:
            return self.site.otp_settings_locked_page(request, session)
        if codes:
            return self._confirmation_form(request, session, kind, to_messages(codes), 400)
        what = "確認用ID" if kind == "id" else "確認用パスワード"
        log.info("web_confirmation_changed", number=session.number, kind=kind)
        return self.site.message_page(
            request,
            f"{what}変更完了",
            [f"{what}を変更しました。"],
            session,
            link_url="/home",
            link_text="サービス選択へ",
        )
