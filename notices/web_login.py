"""The support site's login and My menu (マイメニュー), with the settings site's protections, shared:

- sessions in the database keyed by the SHA-256 of a random cookie value
  (``core.web_sessions.session_id_hash``, ``web_stub.sessions.new_cookie_value``), idle logout,
  an absolute lifetime, every session ended by a password change;
- CSRF: forms carry ``web_stub.sessions.FormToken`` tokens, bound to the session cookie (logged
  in) or to a random form cookie (anonymous);
- throttles (``core.throttle``): failed logins per client address (then 429 without checking
  the password), wrong passwords per support ID (then locked for the window), mails per address;
- passwords: ``core.password_rules`` (the settings site's rules), argon2id through
  ``core.secrets`` (hashed and checked outside any write transaction).

Mail (provisional registration, password reset, destination confirmation) goes through
``web_stub.mail`` (aiosmtplib).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import structlog
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from core import throttle
from core.notice_models import NoticeDestination, SupportAccount
from core.password_rules import password_rule_violations
from core.secrets import SecretHasher, default_hasher
from core.web_sessions import session_id_hash
from notices import accounts, queue, rules
from notices.rules import AddOutcome
from web_stub.mail import MailSendError, SmtpMailer, build_message
from web_stub.sessions import FormToken, new_cookie_value

log = structlog.get_logger("notices.web")

SESSION_COOKIE = "support_session"
FORM_COOKIE = "support_form"
STATE_LABELS = {"pending": "仮登録中（確認待ち）", "delivering": "配信中", "stopped": "配信停止"}
RULE_MESSAGES = {
    "length": "パスワードは8桁～12桁で入力してください。",
    "charset": "パスワードは半角英数字で入力してください。",
    "letters_and_digits": "パスワードは英字と数字を両方含めてください（英字のみ・数字のみは使えません）。",
    "repeated_characters": "同じ文字を4回以上続けないでください（0000、aaaa など）。",
    "sequential_run": "連続した文字列を含めないでください（1234、abcd、4321、dcba など）。",
    "same_as_current": "現在と同じパスワードは使えません。",
    "contains_phone_number": "電話番号を含むパスワードは使えません。",
}


def _password_messages(reasons: list[str]) -> list[str]:
    return [RULE_MESSAGES.get(r, "パスワードが条件を満たしていません。") for r in reasons]


@dataclass(frozen=True)
class MailReservation:
    """What reserving one mail took from the budgets (scope, key, the counter's answer), so that
    it can be given back when no mail goes; more budgets (per client, a global cap) add entries."""

    taken: tuple[tuple[str, str, throttle.Taken], ...]


class LoginPages:
    """Mixed into ``notices.web.SupportSite`` (uses its ``db``, ``render``, ``clock``, ``s``)."""

    settings: Any
    s: Any
    hasher: SecretHasher
    forms: FormToken
    mailer: Any

    def _init_login(self, hasher: SecretHasher | None, mailer: Any) -> None:
        self.hasher = hasher or default_hasher()
        self.forms = FormToken(self.settings.web.secret_key.get_secret_value() + "\x00support")
        self.mailer = mailer or SmtpMailer(self.settings.smtp)

    # ----------------------------------------------------------------------------- plumbing
    # provided by notices.web.SupportSite
    clock: Callable[[], datetime]

    async def db(self, work: Callable[[Session], Any]) -> Any:
        raise NotImplementedError

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        raise NotImplementedError

    def _client(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def _cookie_args(self) -> dict[str, Any]:
        return {
            "httponly": True,
            "samesite": "lax",
            "secure": self.settings.web.cookie_secure,
            "path": "/support",
        }

    async def _form(self, request: Request, *, limit: int | None = None) -> dict[str, str] | None:
        """The form, or None if it is larger than ``limit`` (the site's form limit unless given)."""
        declared = request.headers.get("content-length")
        limit = limit or self.settings.web.max_form_bytes
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            return None
        form = {k: v[0] for k, v in parsed.items()}
        for key in ("product", "day", "hour"):
            form[key + "[]"] = "\x00".join(parsed.get(key, []))
        return form

    def _anonymous_token(self, request: Request) -> tuple[str, str | None]:
        """(form token, new form cookie value or None when the browser has one)."""
        value = request.cookies.get(FORM_COOKIE)
        fresh = None
        if not value or len(value) > 128:
            value = fresh = FormToken.new_value()
        return self.forms.token_for(value), fresh

    def _anonymous_ok(self, request: Request, form: dict[str, str]) -> bool:
        return self.forms.valid(request.cookies.get(FORM_COOKIE), form.get("csrf_token", ""))

    def _page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        token, fresh = self._anonymous_token(request)
        response = self.render(template, status_code=status_code, csrf_token=token, **context)
        if fresh:
            response.set_cookie(FORM_COOKIE, fresh, **self._cookie_args())
        return response

    def _refused(self) -> Response:
        return self.render(
            "message.html",
            status_code=403,
            page_title="もう一度お試しください",
            lines=["画面の有効期限が切れました。もう一度操作してください。"],
            next_url="/support/login",
            next_label="ログイン画面へ",
        )

    async def _mail(self, *, to: str, subject: str, body: str) -> bool:
        message = build_message(sender=self.s.sender, recipient=to, subject=subject, body=body)
        mailbox = rules.smtp_mailbox(to)  # a carrier's taro..yamada@ in quotes, as the relay expects
        try:
            if mailbox != to:
                await self.mailer.send(message, recipients=[mailbox])
            else:
                await self.mailer.send(message)
        except MailSendError as exc:
            log.warning("support_mail_failed", reason=exc.reason)
            return False
        return True

    def _mail_budget(self, session: Session, address: str) -> MailReservation | None:
        """Reserve one mail of the address's budget (``mails_per_address`` an hour); None: spent.
        A reservation that sends nothing goes back (:meth:`_unspend`): only a mail actually sent
        spends the budget, so retries refused by the 30-minute rule cost nothing."""
        key = hashlib.sha256(address.lower().encode()).hexdigest()[:40]
        budget = throttle.Budget(self.s.mails_per_address, 3600)
        taken = throttle.take(session, scope="support_mail", key=key, now=self.clock(), budget=budget)
        if not taken.allowed:
            return None
        return MailReservation((("support_mail", key, taken),))

    @staticmethod
    def _unspend(session: Session, reservation: MailReservation | None) -> None:
        """No mail went after all: give the reservation back (within its window)."""
        if reservation is None:
            return
        for scope, key, taken in reservation.taken:
            throttle.give_back(session, scope=scope, key=key, taken=taken)

    # --------------------------------------------------------------------------- session

    async def current_account(self, request: Request) -> Any:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or len(cookie) > 128:
            return None
        id_hash = session_id_hash(cookie)
        idle = self.s.session_idle_timeout_seconds
        return await self.db(lambda s: accounts.load_session(s, id_hash=id_hash, now=self.clock(), idle=idle))

    def _session_token(self, request: Request) -> str:
        return self.forms.token_for(request.cookies.get(SESSION_COOKIE, ""))

    async def _logged_in(self, request: Request) -> tuple[Any, Response | None]:
        account = await self.current_account(request)
        if account is None:
            had = bool(request.cookies.get(SESSION_COOKIE))
            response = RedirectResponse("/support/login" + ("?ended=1" if had else ""), status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/support")
            return None, response
        return account, None

    # ---------------------------------------------------------------------- registration

    async def register_form(self, request: Request) -> Response:
        return self._page(request, "register.html", page_title="お客さまサポートID登録")

    async def register_post(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        email = form.get("email", "")
        try:
            address = rules.normalize_address(email)
        except rules.AddressError as exc:
            return self._page(
                request,
                "register.html",
                400,
                page_title="お客さまサポートID登録",
                email=email,
                errors=[str(exc)],
            )
        validity = timedelta(seconds=self.s.confirmation_validity_seconds)

        def start(session: Session) -> tuple[MailReservation | None, str | None]:
            reservation = self._mail_budget(session, address)
            if reservation is None:
                return None, None
            return reservation, accounts.start_registration(
                session, email=address, now=self.clock(), validity=validity
            )

        reservation, token = await self.db(start)
        if reservation is None:
            return self._page(
                request,
                "register.html",
                429,
                page_title="お客さまサポートID登録",
                email=email,
                errors=["メールの送信回数が上限に達しました。しばらくしてからお試しください。"],
            )
        if token is not None:
            link = f"{self.s.base_url}/support/register/complete?token={token}"
            mailed = await self._mail(
                to=address,
                subject="【お客さまサポート】仮登録確認メール",
                body=(
                    "お客さまサポートIDの仮登録を受け付けました。\n"
                    "24時間以内に次のリンクから本登録（パスワード、お名前、生年月日の登録）を行ってください。\n\n"
                    f"{link}\n\nお心当たりのない場合は、このメールを破棄してください。\n"
                ),
            )
        else:  # already a support ID: the page says the same; the owner learns it by mail
            mailed = await self._mail(
                to=address,
                subject="【お客さまサポート】お客さまサポートIDはすでに登録されています",
                body=(
                    "このメールアドレスは、すでにお客さまサポートIDとして登録されています。\n"
                    f"パスワードを忘れた場合は、次のページから再設定してください。\n\n{self.s.base_url}/support/password/forgot\n"
                ),
            )
        if not mailed:
            await self.db(lambda session: self._unspend(session, reservation))
        log.info("support_registration_started", already_registered=token is None)
        return self.render(
            "message.html",
            page_title="仮登録確認メールを送信しました",
            lines=[
                f"{address} 宛に仮登録確認メールを送信しました。",
                "メールに記載のリンク（有効期限24時間）から本登録を行ってください。",
            ],
        )

    async def complete_form(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        account = await self.db(
            lambda s: accounts.link_account(s, token=token, purpose="register", now=self.clock())
        )
        if account is None or account.state != "provisional":
            return self._expired_link()
        return self._page(
            request, "register_complete.html", page_title="本登録", email=account.login_email, token=token
        )

    def _expired_link(self) -> Response:
        return self.render(
            "message.html",
            status_code=400,
            page_title="リンクが無効です",
            lines=[
                "このリンクは有効期限（24時間）が切れたか、すでに使用されています。",
                "お手数ですが、もう一度お手続きください。",
            ],
            next_url="/support/register",
            next_label="お客さまサポートID登録へ",
        )

    async def complete_post(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        token = form.get("token", "")
        account = await self.db(
            lambda s: accounts.link_account(s, token=token, purpose="register", now=self.clock())
        )
        if account is None or account.state != "provisional":
            return self._expired_link()
        password, name, birth = (
            form.get("password", ""),
            form.get("name", "").strip(),
            form.get("birth_date", "").strip(),
        )
        errors = []
        if len(password) > self.settings.web.max_secret_chars:
            errors.append(RULE_MESSAGES["length"])
        else:
            errors += _password_messages(
                password_rule_violations(password, current_hash=None, customer_numbers=[])
            )
        if password != form.get("password_confirm", ""):
            errors.append("パスワードと確認用パスワードが一致しません。")
        if not name or len(name) > 100:
            errors.append("お名前を100文字以内で入力してください。")
        born = _birth_date(birth, self.clock().date())
        if born is None:
            errors.append("生年月日を 1985-04-01 の形で正しく入力してください。")
        if errors:
            return self._page(
                request,
                "register_complete.html",
                400,
                page_title="本登録",
                email=account.login_email,
                token=token,
                name=name,
                birth_date=birth,
                errors=errors,
            )
        password_hash = await asyncio.to_thread(self.hasher.hash, password)  # outside any transaction
        assert born is not None
        done = await self.db(
            lambda s: accounts.complete_registration(
                s, token=token, password_hash=password_hash, name=name, birth_date=born, now=self.clock()
            )
        )
        if done is None:
            return self._expired_link()
        log.info("support_registration_completed", account_id=done.id)
        return self.render(
            "message.html",
            page_title="本登録が完了しました",
            lines=[
                "お客さまサポートIDの登録が完了しました。ログインして、マイメニューから工事・故障情報メールの配信設定を行ってください。"
            ],
            next_url="/support/login",
            next_label="ログイン画面へ",
        )

    # ----------------------------------------------------------------------- login / logout

    async def login_form(self, request: Request) -> Response:
        notice = None
        if request.query_params.get("ended"):
            notice = "一定時間操作がなかったため、ログアウトしました。もう一度ログインしてください。"
        return self._page(request, "login.html", page_title="ログイン", notice=notice)

    async def login_post(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        email, password = form.get("email", ""), form.get("password", "")
        client = self._client(request)
        now = self.clock()
        client_budget = throttle.Budget(self.s.login_failures_per_client, 300)
        account_budget = throttle.Budget(
            self.s.login_failures_per_account, self.s.login_failure_window_seconds
        )
        try:
            address = rules.normalize_address(email)
        except rules.AddressError:
            address = None

        def before(session: Session) -> tuple[throttle.Taken, Any, throttle.Taken | None]:
            throttle.sweep(session, now=now, batch=50)  # expired counters, bounded (as the settings site)
            taken = throttle.take(
                session, scope="support_login", key=client[:80], now=now, budget=client_budget
            )
            account = None
            locked = None
            if taken.allowed and address is not None:
                account = accounts.account_by_email(session, address)  # whatever the case
                if account is not None and account.state == "active":
                    locked = throttle.current(
                        session, scope="support_acct", key=str(account.id), now=now, budget=account_budget
                    )
            return taken, account, locked

        taken, account, locked = await self.db(before)
        if not taken.allowed:
            response = self._page(
                request,
                "login.html",
                429,
                page_title="ログイン",
                email=email,
                errors=["ログインの失敗が続いたため、しばらくの間ログインできません。"],
            )
            response.headers["Retry-After"] = str(taken.retry_after_seconds)
            return response
        if locked is not None and not locked.allowed:
            return self._page(
                request,
                "login.html",
                403,
                page_title="ログイン",
                email=email,
                errors=[
                    "パスワードの誤りが続いたため、このお客さまサポートIDはしばらくログインできません。パスワードを忘れた方は再設定してください。"
                ],
            )
        ok = False
        if len(password) <= self.settings.web.max_secret_chars:
            if account is not None and account.state == "active" and account.password_hash:
                ok = await asyncio.to_thread(self.hasher.verify, account.password_hash, password)
            else:
                await asyncio.to_thread(self.hasher.dummy_verify, password)
        if not ok:
            if account is not None and account.state == "active":
                await self.db(
                    lambda s: throttle.take(
                        s, scope="support_acct", key=str(account.id), now=now, budget=account_budget
                    )
                )
            log.info("support_login_failed", known=account is not None)
            return self._page(
                request,
                "login.html",
                401,
                page_title="ログイン",
                email=email,
                errors=["お客さまサポートIDまたはパスワードが正しくありません。"],
            )
        cookie = new_cookie_value()
        id_hash = session_id_hash(cookie)

        def opened(session: Session) -> None:
            throttle.give_back(session, scope="support_login", key=client[:80], taken=taken)
            throttle.forget(session, scope="support_acct", key=str(account.id))
            fresh = session.get(SupportAccount, account.id)
            assert fresh is not None
            accounts.open_session(
                session,
                id_hash=id_hash,
                account=fresh,
                now=now,
                idle=self.s.session_idle_timeout_seconds,
                lifetime=self.s.session_lifetime_seconds,
            )

        await self.db(opened)
        log.info("support_login", account_id=account.id)
        response = RedirectResponse("/support/mymenu", status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, **self._cookie_args())
        return response

    async def logout(self, request: Request) -> Response:
        form = await self._form(request)
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if form is None or not cookie or not self.forms.valid(cookie, form.get("csrf_token", "")):
            return self._refused()
        await self.db(lambda s: accounts.end_session(s, id_hash=session_id_hash(cookie)))
        response = self.render(
            "message.html",
            page_title="ログアウトしました",
            lines=["ログアウトしました。"],
            next_url="/support/login",
            next_label="ログイン画面へ",
        )
        response.delete_cookie(SESSION_COOKIE, path="/support")
        return response

    # ------------------------------------------------------------------- forgotten password

    async def forgot_form(self, request: Request) -> Response:
        return self._page(request, "forgot.html", page_title="パスワード再設定")

    async def forgot_post(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        email = form.get("email", "")
        validity = timedelta(seconds=self.s.confirmation_validity_seconds)

        def issue(session: Session) -> str | None:
            # every request spends here, sent or not: an unknown address must cost the same as a
            # known one, or the 429 would tell which addresses are support IDs
            if self._mail_budget(session, email.strip()) is None:
                return None
            return accounts.password_reset_link(session, email=email, now=self.clock(), validity=validity)

        token = await self.db(issue)
        if token is not None:
            await self._mail(
                to=rules.normalize_address(email),
                subject="【お客さまサポート】パスワード再設定のご案内",
                body=f"次のリンク（有効期限24時間）からパスワードを再設定してください。\n\n{self.s.base_url}/support/password/reset?token={token}\n",
            )
        return self.render(
            "message.html",
            page_title="パスワード再設定メール",
            lines=["ご登録のお客さまサポートIDであれば、パスワード再設定用のメールを送信しました。"],
        )

    async def reset_form(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        account = await self.db(
            lambda s: accounts.link_account(s, token=token, purpose="password_reset", now=self.clock())
        )
        if account is None:
            return self._expired_link()
        return self._page(
            request,
            "new_password.html",
            page_title="パスワード再設定",
            action="/support/password/reset",
            token=token,
        )

    async def reset_post(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        token = form.get("token", "")
        account = await self.db(
            lambda s: accounts.link_account(s, token=token, purpose="password_reset", now=self.clock())
        )
        if account is None:
            return self._expired_link()
        errors = await self._new_password_errors(form, current_hash=account.password_hash)
        if errors:
            return self._page(
                request,
                "new_password.html",
                400,
                page_title="パスワード再設定",
                action="/support/password/reset",
                token=token,
                errors=errors,
            )
        password_hash = await asyncio.to_thread(self.hasher.hash, form["password"])

        def apply(session: Session) -> bool:
            used = accounts.use_link(session, token=token, purpose="password_reset", now=self.clock())
            if used is None:
                return False
            accounts.set_password(session, account_id=used.id, password_hash=password_hash)
            throttle.forget(session, scope="support_acct", key=str(used.id))
            return True

        if not await self.db(apply):
            return self._expired_link()
        return self.render(
            "message.html",
            page_title="パスワードを再設定しました",
            lines=["新しいパスワードでログインしてください。"],
            next_url="/support/login",
            next_label="ログイン画面へ",
        )

    async def _new_password_errors(self, form: dict[str, str], *, current_hash: str | None) -> list[str]:
        password = form.get("password", "")
        if len(password) > self.settings.web.max_secret_chars:
            return [RULE_MESSAGES["length"]]
        reasons = await asyncio.to_thread(
            password_rule_violations,
            password,
            current_hash=current_hash,
            customer_numbers=[],
            verify=self.hasher.verify,
        )
        errors = _password_messages(reasons)
        if password != form.get("password_confirm", ""):
            errors.append("パスワードと確認用パスワードが一致しません。")
        return errors

    async def password_form(self, request: Request) -> Response:
        account, redirect = await self._logged_in(request)
        if redirect:
            return redirect
        return self.render(
            "new_password.html",
            page_title="パスワード変更",
            action="/support/password",
            ask_current=True,
            account=account,
            csrf_token=self._session_token(request),
        )

    async def password_post(self, request: Request) -> Response:
        account, redirect = await self._logged_in(request)
        if redirect:
            return redirect
        form = await self._form(request)
        if form is None or not self.forms.valid(
            request.cookies.get(SESSION_COOKIE), form.get("csrf_token", "")
        ):
            return self._refused()
        current = form.get("current_password", "")
        ok = len(current) <= self.settings.web.max_secret_chars and await asyncio.to_thread(
            self.hasher.verify, account.password_hash or "", current
        )
        errors = [] if ok else ["現在のパスワードが正しくありません。"]
        errors += await self._new_password_errors(form, current_hash=account.password_hash)
        if errors:
            return self.render(
                "new_password.html",
                400,
                page_title="パスワード変更",
                action="/support/password",
                ask_current=True,
                account=account,
                csrf_token=self._session_token(request),
                errors=errors,
            )
        password_hash = await asyncio.to_thread(self.hasher.hash, form["password"])
        await self.db(lambda s: accounts.set_password(s, account_id=account.id, password_hash=password_hash))
        response = self.render(
            "message.html",
            page_title="パスワードを変更しました",
            lines=["パスワードを変更しました。新しいパスワードでログインしてください。"],
            next_url="/support/login",
            next_label="ログイン画面へ",
        )
        response.delete_cookie(SESSION_COOKIE, path="/support")
        return response

    # ----------------------------------------------------------------------------- My menu

    async def mymenu(
        self,
        request: Request,
        *,
        notice: str | None = None,
        errors: list[str] | None = None,
        status_code: int = 200,
    ) -> Response:
        account, redirect = await self._logged_in(request)
        if redirect:
            return redirect

        def load(session: Session) -> tuple[list[str], list[NoticeDestination]]:
            return accounts.products_of_account(session, account.id), accounts.destinations_of(
                session, account.id
            )

        chosen, destinations = await self.db(load)
        return self.render(
            "mymenu.html",
            status_code=status_code,
            page_title="マイメニュー",
            account=account,
            csrf_token=self._session_token(request),
            notice=notice,
            errors=errors or [],
            products=list(self.s.products.items()),
            chosen=set(chosen),
            days=[
                {"value": d, "label": rules.DAY_LABELS_JA[d], "on": bool(account.delivery_days & (1 << d))}
                for d in range(7)
            ],
            hours=[
                {"value": h, "label": f"{h}時台", "on": bool(account.delivery_hours & (1 << h))}
                for h in range(24)
            ],
            destinations=[
                {
                    "id": d.id,
                    "address": d.address,
                    "state": d.state,
                    "state_label": STATE_LABELS.get(d.state, d.state),
                }
                for d in destinations
            ],
        )

    async def mymenu_page(self, request: Request) -> Response:
        return await self.mymenu(request)

    async def _menu_form(self, request: Request) -> tuple[Any, dict[str, str] | None, Response | None]:
        account, redirect = await self._logged_in(request)
        if redirect:
            return None, None, redirect
        form = await self._form(request)
        if form is None or not self.forms.valid(
            request.cookies.get(SESSION_COOKIE), form.get("csrf_token", "")
        ):
            return None, None, self._refused()
        return account, form, None

    async def settings_post(self, request: Request) -> Response:
        account, form, refused = await self._menu_form(request)
        if refused:
            return refused
        assert form is not None
        try:
            products = [p for p in form["product[]"].split("\x00") if p]
            if any(p not in self.s.products for p in products):
                raise ValueError("unknown product")
            days = rules.days_mask(int(d) for d in form["day[]"].split("\x00") if d)
            hours = rules.hours_mask(int(h) for h in form["hour[]"].split("\x00") if h)
        except ValueError:
            return await self.mymenu(request, errors=["配信設定の内容が正しくありません。"], status_code=400)

        def save(session: Session) -> None:
            row = session.get(SupportAccount, account.id, with_for_update=True)
            assert row is not None
            accounts.set_notification_settings(session, row, products=products, days=days, hours=hours)

        await self.db(save)
        warnings = []
        if not products:
            warnings.append("商品が1つも選択されていないため、メールは配信されません。")
        if not days or not hours:
            warnings.append("配信を希望する曜日・時間帯が選択されていないため、メールは配信されません。")
        return await self.mymenu(request, notice="配信設定を保存しました。", errors=warnings)

    async def destination_add(self, request: Request) -> Response:
        account, form, refused = await self._menu_form(request)
        if refused:
            return refused
        assert form is not None
        try:
            address = rules.normalize_address(form.get("address", ""))
        except rules.AddressError as exc:
            return await self.mymenu(request, errors=[str(exc)], status_code=400)
        s = self.s

        def add(session: Session) -> tuple[accounts.AddResult | None, MailReservation | None]:
            reservation = self._mail_budget(session, address)
            if reservation is None:
                return None, None
            added = accounts.add_destination(
                session,
                account_id=account.id,
                address=address,
                now=self.clock(),
                validity=timedelta(seconds=s.confirmation_validity_seconds),
                retry_after=timedelta(seconds=s.pending_retry_seconds),
            )
            if added.outcome not in (AddOutcome.ADDED, AddOutcome.RESENT):
                self._unspend(session, reservation)  # refused (30 minutes, 3 at most…): no mail
                reservation = None
            return added, reservation

        result, reservation = await self.db(add)
        if result is None:
            return await self.mymenu(
                request,
                errors=["メールの送信回数が上限に達しました。しばらくしてからお試しください。"],
                status_code=429,
            )
        if result.outcome is AddOutcome.LIMIT_REACHED:
            return await self.mymenu(
                request,
                status_code=400,
                errors=[
                    "配信先メールアドレスは、お客さまサポートID1つにつき最大3つまでです（仮登録中・配信停止中のアドレスを含みます）。不要な配信先を削除してから追加してください。"
                ],
            )
        if result.outcome is AddOutcome.ALREADY_PENDING:
            minutes = s.pending_retry_seconds // 60
            return await self.mymenu(
                request,
                status_code=409,
                errors=[
                    f"{address} はすでに仮登録されています。"
                    f"仮登録確認メールが届かない場合は、{minutes}分経過後、もう一度お試しください。"
                ],
            )
        if result.outcome is AddOutcome.ALREADY_REGISTERED:
            return await self.mymenu(
                request, status_code=409, errors=[f"{address} はすでに配信先として登録されています。"]
            )
        link = f"{s.base_url}/support/destinations/confirm?token={result.token}"
        mailed = await self._mail(
            to=address,
            subject="【お客さまサポート】配信先メールアドレスの仮登録確認メール",
            body=(
                "工事・故障情報メールの配信先として、このメールアドレスが仮登録されました。\n"
                "24時間以内に次のリンクを開くと、配信先の登録が完了します。\n\n"
                f"{link}\n\nお心当たりのない場合は、このメールを破棄してください（配信されません）。\n"
            ),
        )
        if not mailed:
            await self.db(lambda session: self._unspend(session, reservation))
        message = f"{address} に仮登録確認メールを送信しました。メールのリンクを開くと配信が始まります。"
        return await self.mymenu(
            request,
            notice=message if mailed else None,
            errors=[] if mailed else ["確認メールを送信できませんでした。しばらくしてからお試しください。"],
        )

    async def destination_confirm(self, request: Request) -> Response:
        token = request.query_params.get("token", "")
        if request.method == "GET":
            # a mail scanner following the link must not confirm it: the page asks for one click
            return self._page(
                request,
                "message.html",
                page_title="配信先の登録",
                lines=["下のボタンを押すと、配信先の登録が完了します。"],
                confirm_token=token,
            )
        form = await self._form(request)
        if form is None or not self._anonymous_ok(request, form):
            return self._refused()
        done = await self.db(
            lambda s: accounts.confirm_destination(s, token=form.get("token", ""), now=self.clock())
        )
        if done is None:
            return self.render(
                "message.html",
                status_code=400,
                page_title="リンクが無効です",
                lines=[
                    "このリンクは有効期限（24時間）が切れたか、すでに使用されています。マイメニューからもう一度追加してください。"
                ],
            )
        log.info("notice_destination_confirmed", destination_id=done.id)
        return self.render(
            "message.html",
            page_title="配信先の登録が完了しました",
            lines=[f"{done.address} への工事・故障情報メールの配信を開始します。"],
            next_url="/support/mymenu",
            next_label="マイメニューへ",
        )

    async def destination_resume(self, request: Request) -> Response:
        account, _, refused = await self._menu_form(request)
        if refused:
            return refused
        destination_id = _int(request.path_params["destination_id"])
        resumed = await self.db(
            lambda s: queue.resume_destination(s, destination_id=destination_id, account_id=account.id)
        )
        if not resumed:
            return await self.mymenu(
                request, errors=["配信再開できる配信先ではありません。"], status_code=400
            )
        log.info("notice_destination_resumed", destination_id=destination_id)
        return await self.mymenu(request, notice="配信を再開しました。")

    async def destination_remove(self, request: Request) -> Response:
        account, _, refused = await self._menu_form(request)
        if refused:
            return refused
        destination_id = _int(request.path_params["destination_id"])
        removed = await self.db(
            lambda s: accounts.remove_destination(s, account_id=account.id, destination_id=destination_id)
        )
        return await self.mymenu(request, notice="配信先を削除しました。" if removed else None)

    def login_routes(self) -> list[Route]:
        return [
            Route("/support/register", self.register_form, methods=["GET"]),
            Route("/support/register", self.register_post, methods=["POST"]),
            Route("/support/register/complete", self.complete_form, methods=["GET"]),
            Route("/support/register/complete", self.complete_post, methods=["POST"]),
            Route("/support/login", self.login_form, methods=["GET"]),
            Route("/support/login", self.login_post, methods=["POST"]),
            Route("/support/logout", self.logout, methods=["POST"]),
            Route("/support/password/forgot", self.forgot_form, methods=["GET"]),
            Route("/support/password/forgot", self.forgot_post, methods=["POST"]),
            Route("/support/password/reset", self.reset_form, methods=["GET"]),
            Route("/support/password/reset", self.reset_post, methods=["POST"]),
            Route("/support/password", self.password_form, methods=["GET"]),
            Route("/support/password", self.password_post, methods=["POST"]),
            Route("/support/mymenu", self.mymenu_page, methods=["GET"]),
            Route("/support/mymenu/settings", self.settings_post, methods=["POST"]),
            Route("/support/mymenu/destinations", self.destination_add, methods=["POST"]),
            Route(
                "/support/mymenu/destinations/{destination_id}/resume",
                self.destination_resume,
                methods=["POST"],
            ),
            Route(
                "/support/mymenu/destinations/{destination_id}/remove",
                self.destination_remove,
                methods=["POST"],
            ),
            Route("/support/destinations/confirm", self.destination_confirm, methods=["GET", "POST"]),
        ]


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


def _birth_date(text: str, today: date) -> date | None:
    try:
        born = date.fromisoformat(text)
    except ValueError:
        return None
    if born.year < 1900 or born > today:
        return None
    return born
