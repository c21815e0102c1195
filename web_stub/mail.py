"""Outgoing mail: the provisional-registration link and one-time passwords, sent with aiosmtplib.

A failure to send raises ``MailSendError``; the pages show it to the user and log it (never the
code or the link).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

import aiosmtplib

from web_stub.settings import SmtpSettings


class MailSendError(Exception):
    """The mail could not be handed to the SMTP server. The message never holds the mail's content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Sends through the configured SMTP server, one connection per message."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage, *, recipients: list[str] | None = None) -> None:
        """``recipients``: the envelope's, when the To header cannot say them as SMTP needs (the
        email package writes ``taro..yamada@…`` unquoted; the support site's carriers' addresses)."""
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
                recipients=recipients,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password.get_secret_value() if s.password else None,
                start_tls=s.start_tls,
                use_tls=s.use_tls,
                timeout=s.timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailSendError(type(exc).__name__) from None


def build_message(*, sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a no-reply sender
    message.set_content(body, charset="utf-8")
    return message


def registration_mail(
    *, sender: str, recipient: str, number: str, link: str, valid_hours: int
) -> EmailMessage:
    body = (
        f"ひかり電話設定サイトをご利用いただきありがとうございます。\n\n"
        f"電話番号 {number} のワンタイムパスワード受信用メールアドレスの仮登録を受け付けました。\n"
        f"以下の「メールアドレスの本登録お手続きURL」から本登録の手続きをしてください。\n\n"
        f"メールアドレスの本登録お手続きURL:\n{link}\n\n"
        f"※このURLの有効期限は{valid_hours}時間です。{valid_hours}時間を経過した場合は、"
        f"再度ひかり電話設定サイトにログインしてお手続きをお願いします。\n"
        f"※このメールにお心当たりのない場合は、破棄してください。\n"
    )
    return build_message(
        sender=sender,
        recipient=recipient,
        subject="【ひかり電話設定サイト】メールアドレス本登録のご案内",
        body=body,
    )


def code_mail(*, sender: str, recipient: str, number: str, code: str, valid_seconds: int) -> EmailMessage:
    body = (
        f"ひかり電話設定サイトのワンタイムパスワードをお知らせします。\n\n"
        f"電話番号: {number}\n"
        f"ワンタイムパスワード: {code}\n\n"
        f"※ワンタイムパスワードの有効時間は{valid_seconds}秒です。一度のみ使用できます。\n"
        f"※このメールにお心当たりのない場合は、第三者がログインを試みている可能性があります。"
        f"パスワードを変更してください。\n"
    )
    return build_message(
        sender=sender,
        recipient=recipient,
        subject="【ひかり電話設定サイト】ワンタイムパスワードのお知らせ",
        body=body,
    )
