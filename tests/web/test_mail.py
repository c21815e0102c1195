"""Mail through a real SMTP server (aiosmtpd on loopback); failures raise, without the content."""

from __future__ import annotations

import pytest

from tests.fixtures.web import SmtpServer, free_port
from web_stub.mail import MailSendError, SmtpMailer, code_mail, registration_mail
from web_stub.settings import SmtpSettings


async def test_code_mail_is_delivered_in_japanese(smtp_server: SmtpServer) -> None:
    mailer = SmtpMailer(SmtpSettings(host=smtp_server.host, port=smtp_server.port))
    await mailer.send(
        code_mail(
            sender="noreply@settings.example.jp",
            recipient="user@example.jp",
            number="0300001111",
            code="482913",
            valid_seconds=300,
        )
    )
    received = smtp_server.sink.wait_for(1)
    assert received["To"] == "user@example.jp"
    assert received["Subject"] == "【ひかり電話設定サイト】ワンタイムパスワードのお知らせ"
    assert smtp_server.sink.last_code() == "482913"
    assert "300秒" in smtp_server.sink.body(received)


async def test_registration_mail_carries_the_link(smtp_server: SmtpServer) -> None:
    mailer = SmtpMailer(SmtpSettings(host=smtp_server.host, port=smtp_server.port))
    link = "http://127.0.0.1:8080/otp/verify?token=abcDEF123_-"
    await mailer.send(
        registration_mail(
            sender="noreply@settings.example.jp",
            recipient="user@example.jp",
            number="0300001111",
            link=link,
            valid_hours=24,
        )
    )
    smtp_server.sink.wait_for(1)
    assert smtp_server.sink.last_link() == link
    assert "24時間" in smtp_server.sink.body(smtp_server.sink.messages[0])


async def test_unreachable_server_raises_without_the_code() -> None:
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=free_port(), timeout_seconds=2))
    with pytest.raises(MailSendError) as excinfo:
        await mailer.send(
            code_mail(
                sender="noreply@settings.example.jp",
                recipient="user@example.jp",
                number="0300001111",
                code="482913",
                valid_seconds=300,
            )
        )
    assert "482913" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


async def test_refused_recipient_raises(smtp_server: SmtpServer) -> None:
    smtp_server.sink.refuse = True
    mailer = SmtpMailer(SmtpSettings(host=smtp_server.host, port=smtp_server.port))
    with pytest.raises(MailSendError):
        await mailer.send(
            code_mail(
                sender="noreply@settings.example.jp",
                recipient="user@example.jp",
                number="0300001111",
                code="482913",
                valid_seconds=300,
            )
        )
