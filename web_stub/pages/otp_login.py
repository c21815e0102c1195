"""The one-time-password steps of a login (P8–P10, P22): the choice, the registration and its mailed
link, the code, the address change before the code.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web_stub import messages as msg
from web_stub.backend import CodeUnavailable, InputRefused
from web_stub.csv_files import (
    email_ok,
)
from web_stub.mail import MailSendError, code_mail, registration_mail
from web_stub.sessions import Draft, WebSession
from web_stub.site import (
    STAGE_PAGES,
    Detour,
    Site,
    address_change_allowed,
    mask_email,
)
from web_stub.stages import Event, Stage

log = structlog.get_logger("web")


class OtpLoginPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/otp/choice", self.otp_choice_page, methods=["GET"]),
            Route("/otp/choice", self.otp_choice_submit, methods=["POST"]),
            Route("/otp/decline", self.otp_decline_page, methods=["GET"]),
            Route("/otp/decline", self.otp_decline_submit, methods=["POST"]),
            Route("/otp/register", self.otp_register_page, methods=["GET"]),
            Route("/otp/register", self.otp_register_submit, methods=["POST"]),
            Route("/otp/address", self.otp_address_page, methods=["GET"]),
            Route("/otp/address", self.otp_address_submit, methods=["POST"]),
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
        ]

    # ----------------------------------------------------------------- OTP choice at first login
    async def otp_choice_page(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.OTP_CHOICE, Stage.OTP_REGISTER)
        self.site.advance(session, Event.BACK_TO_CHOICE)  # back from the registration form: choose again
        self._drop_draft(session)
        return self.site.render(request, "otp_choice.html", "ワンタイムパスワード 利用選択画面", session)

    async def otp_choice_submit(self, request: Request) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.OTP_CHOICE)
        choice = form.get("choice")
        if choice == "use":
            self.site.advance(session, Event.CHOSE_OTP)
            return self.site.redirect("/otp/register", session)
        if choice == "not_use":
            return self.site.redirect("/otp/decline", session)
        return self.site.render(
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
        session = await self.site.logged_in(request, Stage.OTP_CHOICE)
        return self.site.render(
            request,
            "otp_decline.html",
            "ワンタイムパスワード 利用選択確認",
            session,
            action="/otp/decline",
            back_url="/otp/choice",
        )

    async def otp_decline_submit(self, request: Request) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.OTP_CHOICE)
        if form.get("agree") != "1":
            return self.site.redirect("/otp/choice", session)
        await run_in_threadpool(self.site.backend.otp_decline, number=session.number, now=self.site.clock())
        session.data.otp_status = "off"
        self.site.advance(session, Event.DECLINED_OTP)
        return self.site.redirect("/home", session)

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
        state = await self.site.refresh_otp(session)
        registered = state.email is not None
        if address_only:
            if not registered:
                raise Detour(self.site.redirect(STAGE_PAGES[session.stage], session))
            if await run_in_threadpool(self.site.backend.otp_settings_locked, number=session.number):
                raise Detour(self.site.otp_settings_locked_page(request, session))
            if not address_change_allowed(session.stage, session.data):
                raise Detour(self.site.redirect("/otp/address-check", session))
            return
        if registered:
            if session.stage == Stage.OTP_REGISTER:  # the link was opened in another browser meanwhile
                self.site.advance(session, Event.LINK_CONFIRMED)
            self._drop_draft(session)
            raise Detour(self.site.redirect(STAGE_PAGES[session.stage], session))

    @staticmethod
    def _draft(session: WebSession) -> dict[str, Any] | None:
        draft = session.data.draft
        if draft is None:
            return None
        return {**asdict(draft), **session.secrets}

    @staticmethod
    def _set_draft(session: WebSession, *, email: str, cid: str, cpw: str, address_only: bool) -> None:
        session.data.draft = Draft(
            email=email, confirmation_password_length=len(cpw), address_only=address_only
        )
        session.secrets = {"confirmation_id": cid, "confirmation_password": cpw} if not address_only else {}

    @staticmethod
    def _drop_draft(session: WebSession) -> None:
        session.data.draft = None
        session.secrets = {}

    async def otp_address_page(self, request: Request) -> Response:
        """The receiving-address change: the registration form with the address only (P22–P23)."""
        return await self.otp_register_page(request, address_only=True)

    async def otp_address_submit(self, request: Request) -> Response:
        return await self.otp_register_submit(request, address_only=True)

    async def otp_register_page(self, request: Request, *, address_only: bool = False) -> Response:
        stages = (Stage.OTP_CODE, Stage.HOME) if address_only else (Stage.OTP_REGISTER, Stage.HOME)
        session = await self.site.logged_in(request, *stages)
        await self._registration_gate(request, session, address_only)
        draft = self._draft(session) or {}
        form = {
            "email": draft.get("email", ""),
            "email_confirm": draft.get("email", ""),
            "confirmation_id": draft.get("confirmation_id", ""),
            "confirmation_id_confirm": draft.get("confirmation_id", ""),
        }
        return self.site.render(
            request,
            "otp_register.html",
            self._register_title(address_only),
            session,
            form=form,
            **self._register_context(session, address_only),
        )

    async def otp_register_submit(self, request: Request, *, address_only: bool = False) -> Response:
        stages = (Stage.OTP_CODE, Stage.HOME) if address_only else (Stage.OTP_REGISTER, Stage.HOME)
        session, form = await self.site.logged_in_form(request, *stages)
        await self._registration_gate(request, session, address_only)
        email = unicodedata.normalize("NFKC", form.get("email", "")).strip()
        email_confirm = unicodedata.normalize("NFKC", form.get("email_confirm", "")).strip()
        errors: list[str] = []
        invalid: list[str] = []  # the inputs the errors are about (aria-invalid)
        if not email_ok(email):
            errors.append(msg.EMAIL_INVALID)
            invalid.append("email")
        elif email != email_confirm:
            errors.append(msg.EMAIL_MISMATCH)
            invalid.append("email_confirm")
        cid = form.get("confirmation_id", "")
        cpw = form.get("confirmation_password", "")
        if not address_only:
            id_codes = self.site.backend.confirmation_id_violations(cid)
            if not id_codes and cid != form.get("confirmation_id_confirm", ""):
                id_codes = ["mismatch"]
            errors += msg.confirmation_id_messages(id_codes, cid)
            pw_codes = self.site.backend.confirmation_password_violations(cpw)
            if not pw_codes and cpw != form.get("confirmation_password_confirm", ""):
                pw_codes = ["mismatch"]
            errors += msg.confirmation_password_messages(pw_codes, cpw)
            for name, codes in (("confirmation_id", id_codes), ("confirmation_password", pw_codes)):
                if codes:
                    invalid.append(f"{name}_confirm" if codes == ["mismatch"] else name)
        if errors:
            shown = {
                k: v
                for k, v in form.items()
                if k in ("email", "email_confirm", "confirmation_id", "confirmation_id_confirm")
            }
            return self.site.render(
                request,
                "otp_register.html",
                self._register_title(address_only),
                session,
                status_code=400,
                errors=errors,
                form=shown,
                invalid_fields=invalid,
                **self._register_context(session, address_only),
            )
        self._set_draft(session, email=email, cid=cid, cpw=cpw, address_only=address_only)
        return self.site.redirect("/otp/register/confirm", session)

    async def otp_register_confirm_page(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.OTP_REGISTER, Stage.OTP_CODE, Stage.HOME)
        draft = self._draft(session)
        if not draft:
            return self.site.redirect(STAGE_PAGES[session.stage], session)
        address_only = bool(draft["address_only"])
        await self._registration_gate(request, session, address_only)
        title = (
            "ワンタイムパスワード受信用メールアドレス変更内容確認"
            if address_only
            else "ワンタイムパスワード利用情報 仮登録内容確認"
        )
        return self.site.render(
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
        session, _form = await self.site.logged_in_form(
            request, Stage.OTP_REGISTER, Stage.OTP_CODE, Stage.HOME
        )
        draft = self._draft(session)
        if not draft:
            return self.site.redirect(STAGE_PAGES[session.stage], session)
        address_only = bool(draft["address_only"])
        await self._registration_gate(request, session, address_only)
        now = self.site.clock()
        try:
            if address_only:
                token = await run_in_threadpool(
                    self.site.backend.otp_change_address, number=session.number, email=draft["email"], now=now
                )
            else:
                token = await run_in_threadpool(
                    self.site.backend.otp_register,
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
                return self.site.redirect(STAGE_PAGES[session.stage], session)
            errors: list[str] = []
            if "mail_address" in exc.problems:
                errors.append(msg.EMAIL_INVALID)
            errors += msg.confirmation_id_messages(exc.problems.get("confirmation_id", []))
            errors += msg.confirmation_password_messages(exc.problems.get("confirmation_password", []))
            return self.site.render(
                request,
                "otp_register.html",
                self._register_title(address_only),
                session,
                status_code=400,
                errors=errors,
                form={"email": draft["email"], "email_confirm": draft["email"]},
                **self._register_context(session, address_only),
            )
        link = f"{self.site.web.base_url.rstrip('/')}/otp/verify?token={token}"
        hours = max(1, self.site.policy.registration_link_validity_seconds // 3600)
        mail = registration_mail(
            sender=self.site.smtp.sender,
            recipient=draft["email"],
            number=session.number,
            link=link,
            valid_hours=hours,
        )
        try:
            await self.site.mailer.send(mail)
        except MailSendError as exc:
            log.error("web_mail_failed", kind="registration", number=session.number, reason_code=exc.reason)
            return self.site.render(
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
        session.data.confirmation_checked = False
        if not address_only and session.data.otp_status != "on":
            session.data.otp_status = "pending"
        return self.site.render(
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
            return self.site.render(request, "otp_verify.html", title, session, **kwargs)
        return self.site.render_anonymous(request, "otp_verify.html", title, **kwargs)

    async def otp_verify_page(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        token = request.query_params.get("token", "")
        if not token or len(token) > 256:
            return self.site.message_page(
                request, "メールアドレス本登録", [msg.LINK_UNKNOWN], ctx.session, status_code=400
            )
        return self._verify_form(request, ctx.session, token=token)

    async def otp_verify_submit(self, request: Request) -> Response:
        ctx = await self.site.load(request)
        form = await self.site.form(request)
        session = ctx.session
        if not (
            self.site.csrf_ok(session, form)
            or (session is None and self.site.anonymous_form_ok(request, form))
        ):
            return self._verify_form(
                request,
                session,
                status_code=403,
                errors=[msg.FORM_EXPIRED],
                token=form.get("token", "")[:256],
            )
        outcome = await run_in_threadpool(
            self.site.backend.otp_confirm_link, token=form.get("token", "")[:256], now=self.site.clock()
        )
        title = "ワンタイムパスワード利用情報 本登録"
        logged_in = session is not None and session.authenticated
        if outcome.status != "ok":
            log.info("web_registration_link_refused", outcome_code=outcome.status)
            text = {"expired": msg.LINK_EXPIRED, "used": msg.LINK_USED}.get(outcome.status, msg.LINK_UNKNOWN)
            link = STAGE_PAGES.get(session.stage, "/login") if session is not None and logged_in else "/login"
            return self.site.message_page(
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
            await self.site.refresh_otp(session)
            if session.stage in (Stage.OTP_REGISTER, Stage.OTP_CODE):
                self.site.advance(session, Event.LINK_CONFIRMED)
                return self.site.render(
                    request,
                    "otp_send.html",
                    title,
                    session,
                    just_registered=True,
                    masked_email=mask_email(session.data.otp_email),
                )
            if session.stage == "home":
                return self.site.message_page(
                    request,
                    title,
                    ["ワンタイムパスワードの本登録が完了しました。"],
                    session,
                    link_url="/home",
                    link_text="サービス選択へ",
                )
        return self.site.message_page(
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
        session = await self.site.logged_in(request, Stage.OTP_CODE)
        return self.site.render(
            request,
            "otp_send.html",
            "ワンタイムパスワード 送信確認画面",
            session,
            just_registered=False,
            masked_email=mask_email(session.data.otp_email),
        )

    async def otp_send_submit(self, request: Request) -> Response:
        session, _form = await self.site.logged_in_form(request, Stage.OTP_CODE)
        try:
            issued = await run_in_threadpool(
                self.site.backend.otp_issue_code,
                number=session.number,
                login_attempt_id=session.data.login_attempt_id or "",
                now=self.site.clock(),
            )
        except CodeUnavailable as exc:
            log.info("web_otp_code_unavailable", number=session.number, reason_code=exc.reason)
            if exc.reason == "too_many_mails":  # the number's mails per hour: wait, the login stays
                response = self.site.render(
                    request,
                    "otp_send.html",
                    "ワンタイムパスワード 送信確認画面",
                    session,
                    status_code=429,
                    errors=[
                        msg.code_mails_limited(self.site.web.otp_mails_per_number, exc.retry_after_seconds)
                    ],
                    just_registered=False,
                    masked_email=mask_email(session.data.otp_email),
                )
                response.headers["Retry-After"] = str(exc.retry_after_seconds)
                return response
            return self.site.end_session_with(
                request, session, "ワンタイムパスワード", msg.code_unavailable(exc.reason)
            )
        mail = code_mail(
            sender=self.site.smtp.sender,
            recipient=issued.email,
            number=session.number,
            code=issued.code,
            valid_seconds=self.site.policy.otp_code_validity_seconds,
        )
        try:
            await self.site.mailer.send(mail)
        except MailSendError as exc:
            log.error("web_mail_failed", kind="otp_code", number=session.number, reason_code=exc.reason)
            await run_in_threadpool(
                self.site.backend.otp_mail_failed, number=session.number, now=self.site.clock()
            )
            return self.site.render(
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
        return self.site.redirect("/otp/code", session)

    async def otp_code_page(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.OTP_CODE)
        return self.site.render(
            request,
            "otp_code.html",
            "ワンタイムパスワード 入力画面",
            session,
            code_seconds=self.site.policy.otp_code_validity_seconds,
        )

    async def otp_code_submit(self, request: Request) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.OTP_CODE)
        code = unicodedata.normalize("NFKC", form.get("code", "")[:64]).strip()
        status = await run_in_threadpool(
            self.site.backend.otp_verify_code,
            number=session.number,
            login_attempt_id=session.data.login_attempt_id or "",
            code=code,
            now=self.site.clock(),
        )
        if status == "ok":
            session.data.two_step = True
            self.site.advance(session, Event.CODE_ACCEPTED)
            return self.site.redirect("/home", session)
        log.info("web_otp_code_refused", number=session.number, outcome_code=status)
        if status == "invalidated":
            return self.site.end_session_with(
                request,
                session,
                "ワンタイムパスワード 入力画面",
                msg.codes_invalidated(self.site.web.otp_wrong_codes_per_number, self.site.service_number),
            )
        if status == "too_many":
            return self.site.end_session_with(
                request, session, "ワンタイムパスワード 入力画面", msg.CODE_TOO_MANY
            )
        text = {
            "wrong": msg.CODE_WRONG,
            "expired": msg.CODE_EXPIRED,
            "used": msg.CODE_EXPIRED,
            "too_many": msg.CODE_TOO_MANY,
            "none": msg.CODE_NONE,
        }.get(status, msg.CODE_WRONG)
        return self.site.render(
            request,
            "otp_code.html",
            "ワンタイムパスワード 入力画面",
            session,
            status_code=400,
            errors=[text],
            invalid_fields=["code"],
            code_seconds=self.site.policy.otp_code_validity_seconds,
        )

    def _address_check_form(
        self, request: Request, session: WebSession, errors: list[str] | None = None, status: int = 200
    ) -> Response:
        return self.site.render(
            request,
            "otp_credentials_check.html",
            "ワンタイムパスワード受信メールアドレス変更",
            session,
            invalid_fields=["confirmation_id", "confirmation_password"] if errors else [],
            status_code=status,
            errors=errors,
            action="/otp/address-check",
            back_url="/otp/send" if session.stage == "otp_code" else "/home",
        )

    async def otp_address_check_page(self, request: Request) -> Response:
        session = await self.site.logged_in(request, Stage.OTP_CODE, Stage.HOME)
        await self.site.require_otp_settings(request, session)
        if session.stage == "home" and session.data.two_step:
            return self.site.redirect("/otp/address", session)  # P23: straight to the new address
        return self._address_check_form(request, session)

    async def otp_address_check_submit(self, request: Request) -> Response:
        session, form = await self.site.logged_in_form(request, Stage.OTP_CODE, Stage.HOME)
        await self.site.require_otp_settings(request, session)
        cid, cpw = form.get("confirmation_id", ""), form.get("confirmation_password", "")
        if self.site.too_long(cid, cpw):
            return self._address_check_form(request, session, [msg.CONFIRMATION_WRONG], 400)
        status = await run_in_threadpool(
            self.site.backend.otp_check_confirmation,
            number=session.number,
            confirmation_id=cid,
            confirmation_password=cpw,
            now=self.site.clock(),
        )
        if status == "locked":
            return self.site.otp_settings_locked_page(request, session)
        if status != "ok":
            return self._address_check_form(request, session, [msg.CONFIRMATION_WRONG], 400)
        session.data.confirmation_checked = True
        return self.site.redirect("/otp/address", session)
