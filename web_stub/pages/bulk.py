"""An admin's pages for 33 numbers or more: パスワード一括変更 (P13),
ワンタイムパスワード各種一括設定 (P27), and ワンタイムパスワード登録一括解除.
"""

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
    bound_errors,
    csv_download,
    new_password_rules,
    parse_bulk_csv,
    parse_otp_bulk_csv,
)
from web_stub.mail import MailSendError, registration_mail
from web_stub.sessions import WebSession
from web_stub.site import (
    Detour,
    Site,
)
from web_stub.stages import Stage

log = structlog.get_logger("web")


class BulkPages:
    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[Route]:
        return [
            Route("/password/bulk", self.bulk_page, methods=["GET"]),
            Route("/password/bulk", self.bulk_submit, methods=["POST"]),
            Route("/password/bulk/download", self.bulk_download, methods=["GET"]),
            Route("/settings/otp/bulk", self.otp_bulk_page, methods=["GET"]),
            Route("/settings/otp/bulk", self.otp_bulk_submit, methods=["POST"]),
            Route("/settings/otp/bulk/download", self.otp_bulk_download, methods=["GET"]),
            Route("/settings/otp/release", self.otp_release_page, methods=["GET"]),
            Route("/settings/otp/release", self.otp_release_submit, methods=["POST"]),
            Route("/settings/otp/release/confirm", self.otp_release_confirm, methods=["POST"]),
        ]

    async def require_bulk(self, request: Request, fallback: str) -> tuple[WebSession, list[str]]:
        """A session at home whose login has the bulk pages, with its numbers; else a detour."""
        session = await self.site.logged_in(request, Stage.HOME)
        return session, await self._bulk_numbers(session, fallback)

    async def _bulk_numbers(self, session: WebSession, fallback: str) -> list[str]:
        numbers = await self.site.bulk_allowed(session)
        if not numbers:
            raise Detour(self.site.redirect(fallback, session))
        return numbers

    async def require_upload(self, request: Request, fallback: str) -> tuple[WebSession, list[str], bytes]:
        """A bulk upload (multipart, one file, capped): CSRF, stage and bulk rights, then the file."""
        ctx = await self.site.load(request)
        async with request.form(max_files=1, max_fields=10, max_part_size=BULK_MAX_BYTES) as data:
            token = data.get("csrf_token")
            upload = data.get("csv")
            raw = await upload.read(BULK_MAX_BYTES + 1) if isinstance(upload, UploadFile) else b""
        if not self.site.csrf_ok(ctx.session, {"csrf_token": token if isinstance(token, str) else ""}):
            raise Detour(self.site.csrf_failed(request, ctx))
        session = self.site.at_stage(request, ctx, (Stage.HOME,))
        return session, await self._bulk_numbers(session, fallback), raw

    def _bulk_page(
        self, request: Request, session: WebSession, errors: list[str] | None = None, status: int = 200
    ) -> Response:
        return self.site.render(
            request, "password_bulk.html", "パスワード一括変更", session, status_code=status, errors=errors
        )

    async def bulk_page(self, request: Request) -> Response:
        session, _numbers = await self.require_bulk(request, "/password")
        return self._bulk_page(request, session)

    async def bulk_download(self, request: Request) -> Response:
        session, numbers = await self.require_bulk(request, "/password")
        return await self.site.marks_csv(session, numbers, "passwords.csv")

    async def bulk_submit(self, request: Request) -> Response:
        session, numbers, raw = await self.require_upload(request, "/password")
        rows, errors = parse_bulk_csv(raw, allowed=set(numbers), rules=new_password_rules)
        if errors:
            errors = [*bound_errors(errors), msg.BULK_NOTHING_CHANGED]
            return self._bulk_page(request, session, errors, 400)
        if self.site.too_long(*(password for _, _, password in rows)):
            return self._bulk_page(request, session, [msg.password_messages(["length"])[0]], 400)
        problems = await run_in_threadpool(
            self.site.backend.bulk_change_passwords, rows=[(n, p) for _, n, p in rows], now=self.site.clock()
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
        return self.site.message_page(
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
        return self.site.render(
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
            state = await run_in_threadpool(self.site.backend.otp_state, number=number)
            use = {"on": "1", "pending": "1", "off": "0"}.get(state.status, "")
            rows.append([number, use, state.email or "", "", ""])
        log.info("web_otp_bulk_download", number=session.number, rows=len(numbers))
        return csv_download(rows, "one-time-password.csv")

    async def otp_bulk_submit(self, request: Request) -> Response:
        session, numbers, raw = await self.require_upload(request, "/settings/otp")
        rows, errors = parse_otp_bulk_csv(
            raw, allowed=set(numbers), max_secret_chars=self.site.web.max_secret_chars
        )
        if errors:
            errors = [*bound_errors(errors), msg.BULK_NOTHING_SET]
            return self._otp_bulk_page(request, session, errors, 400)
        problems, tokens = await run_in_threadpool(
            self.site.backend.bulk_otp_settings, rows=[r[1:] for r in rows], now=self.site.clock()
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
        hours = max(1, self.site.policy.registration_link_validity_seconds // 3600)
        failed: list[str] = []
        for index, link_token in tokens.items():
            line, number, _use, mail, _cid, _cpw = rows[index]
            try:
                await self.site.mailer.send(
                    registration_mail(
                        sender=self.site.smtp.sender,
                        recipient=mail,
                        number=number,
                        link=f"{self.site.web.base_url.rstrip('/')}/otp/verify?token={link_token}",
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
        return self.site.message_page(
            request,
            "ワンタイムパスワード各種一括設定",
            paragraphs,
            session,
            status_code=502 if failed else 200,
            errors=failed,
            link_url="/home",
            link_text="サービス選択へ",
        )

    async def _release_numbers(self, request: Request) -> tuple[WebSession, list[str]]:
        """The admin's numbers with a registration; a detour home for anyone else."""
        session = await self.site.logged_in(request, Stage.HOME)
        await self.site.refresh_otp(session)
        if not self.site.release_allowed(session):
            raise Detour(self.site.redirect("/home", session))
        covered = await self.site.password_targets(session)
        return session, await run_in_threadpool(self.site.backend.otp_registered_numbers, numbers=covered)

    def _release_form(
        self,
        request: Request,
        session: WebSession,
        numbers: list[str],
        errors: list[str] | None = None,
        status: int = 200,
    ) -> Response:
        return self.site.render(
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
        session.data.release_checked = False
        return self._release_form(request, session, numbers)

    async def otp_release_submit(self, request: Request) -> Response:
        """Step 1: the admin's current password, counted like a login."""
        session, form = await self.site.logged_in_form(request, Stage.HOME)
        session, numbers = await self._release_numbers(request)
        password = form.get("password", "")
        if not password:
            return self._release_form(request, session, numbers, [msg.RELEASE_PASSWORD_EMPTY], 400)
        if not numbers:
            return self._release_form(request, session, numbers, [msg.RELEASE_NOTHING], 400)
        status = await run_in_threadpool(
            self.site.backend.check_password, number=session.number, password=password, now=self.site.clock()
        )
        if status == "locked":
            return self.site.end_session_with(
                request, session, "ワンタイムパスワード登録一括解除", self.site.invalidated(False)
            )
        if status != "ok":
            log.info("web_otp_release_password_refused", number=session.number, outcome_code=status)
            return self._release_form(
                request,
                session,
                numbers,
                [msg.release_password_wrong(self.site.policy.permanent_max_failures)],
                400,
            )
        session.data.release_checked = True
        return self.site.render(
            request,
            "otp_release_confirm.html",
            "ワンタイムパスワード登録一括解除 確認",
            session,
            numbers=numbers,
        )

    async def otp_release_confirm(self, request: Request) -> Response:
        """Step 2: the admin confirms the list; the registrations are released."""
        session, _form = await self.site.logged_in_form(request, Stage.HOME)
        session, numbers = await self._release_numbers(request)
        checked, session.data.release_checked = session.data.release_checked, False
        if not checked:
            return self.site.redirect("/settings/otp/release", session)
        released = await run_in_threadpool(
            self.site.backend.otp_release, numbers=numbers, now=self.site.clock()
        )
        log.info("web_otp_released", number=session.number, released=len(released))
        await self.site.refresh_otp(session)
        return self.site.message_page(
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
