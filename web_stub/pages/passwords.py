"""パスワード変更: the forced change after a temporary or expired password (P8) and the change from the menu,
an admin's for any number of the contract (P11–P12).
"""

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
    number_matches,
)
from web_stub.sessions import WebSession
from web_stub.site import (
    STAGE_PAGES,
    Site,
)
from web_stub.stages import Stage, password_done

log = structlog.get_logger("web")


class PasswordPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/password/required", self.forced_page, methods=["GET"]),
            Route("/password/required", self.forced_submit, methods=["POST"]),
            Route("/password", self.password_page, methods=["GET"]),
            Route("/password", self.password_submit, methods=["POST"]),
        ]

    # ----------------------------------------------------------------- passwords
    async def forced_page(self, request: Request) -> Response:
        """P8: the change a temporary or expired password must make before anything else."""
        return await self.password_page(request, forced=True)

    async def forced_submit(self, request: Request) -> Response:
        return await self.password_submit(request, forced=True)

    async def password_page(self, request: Request, *, forced: bool = False) -> Response:
        session = await self.site.logged_in(request, Stage.MUST_CHANGE if forced else Stage.HOME)
        targets = [] if forced else await self.site.password_targets(session)
        search = None
        if session.role == "admin" and len(targets) >= BULK_THRESHOLD:
            search = request.query_params.get("q", "").strip()
            targets = [n for n in targets if number_matches(n, search)] if search else targets
        return self._password_form(request, session, forced, targets=targets, search=search)

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
        invalid: list[str] | None = None,
    ) -> Response:
        reason = session.data.change_reason
        current_label = "仮パスワード" if forced and reason == "temporary" else "現在のパスワード"
        return self.site.render(
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
            invalid_fields=invalid or [],
        )

    async def password_submit(self, request: Request, *, forced: bool = False) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.MUST_CHANGE if forced else Stage.HOME)
        targets = [session.number] if forced else await self.site.password_targets(session)
        target = normalize_login_number(form.get("target", "")) or session.number
        if target not in targets:
            log.warning("web_password_target_refused", number=session.number, target=target)
            return self._password_form(
                request, session, forced, ["この電話番号のパスワードは変更できません。"], 403, targets=targets
            )
        own = target == session.number
        ws: WebSession = session
        reason_temporary = session.data.change_reason == "temporary"

        def again(errors: list[str], status: int = 400, invalid: tuple[str, ...] = ()) -> Response:
            return self._password_form(
                request, ws, forced, errors, status, targets=targets, target=target, invalid=list(invalid)
            )

        current = form.get("current_password", "")
        new = form.get("new_password", "")
        confirm = form.get("new_password_confirm", "")
        if not current or not new:
            empty = (("current_password",) if not current else ()) + (("new_password",) if not new else ())
            return again(["現在のパスワードと新しいパスワードを入力してください。"], invalid=empty)
        if new != confirm:
            return again(msg.password_messages(["mismatch"]), invalid=("new_password_confirm",))
        if self.site.too_long(current):
            return again(msg.password_messages(["current_wrong"]), invalid=("current_password",))
        if self.site.too_long(new):
            return again(msg.password_messages(["length"]), invalid=("new_password",))
        reasons = await run_in_threadpool(
            self.site.backend.change_password,
            number=target,
            current_password=current,
            new_password=new,
            now=self.site.clock(),
        )
        if reasons:
            log.info("web_password_change_refused", number=session.number, target=target, reasons=reasons)
            if own and "temporary_expired" in reasons:
                return self.site.end_session_with(
                    request,
                    session,
                    "パスワード変更",
                    msg.temporary_expired_message(self.site.service_number),
                )
            if own and "locked" in reasons:
                return self.site.end_session_with(
                    request, session, "パスワード変更", self.site.invalidated(forced and reason_temporary)
                )
            if "temporary_expired" in reasons:
                return again([f"{target} の" + msg.temporary_expired_message(self.site.service_number)], 403)
            if "locked" in reasons:
                return again([f"{target} の" + self.site.invalidated(None)], 403)
            wrong = ("current_password",) if "current_wrong" in reasons else ()
            rules = ("new_password",) if any(r != "current_wrong" for r in reasons) else ()
            return again(msg.password_messages(reasons, new), invalid=wrong + rules)
        log.info("web_password_changed", number=session.number, target=target, forced=forced)
        if own:
            session.resnapshot = True  # the other sessions of this credential end; this one continues
        if not forced:
            return self.site.message_page(
                request,
                "パスワード変更完了",
                [f"{target} のパスワードを変更しました。次回から新しいパスワードでログインしてください。"],
                session,
                link_url="/home",
                link_text="サービス選択へ",
            )
        session.data.change_reason = None
        otp = await self.site.refresh_otp(session)
        self.site.advance(session, password_done(otp.status))
        return self.site.redirect(STAGE_PAGES[session.stage], session)
