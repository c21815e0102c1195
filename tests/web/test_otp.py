"""One-time passwords end to end over HTTP, with the real core and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import structlog
from starlette.testclient import TestClient

from tests.fixtures.web import FakeClock, SmtpServer, WebDatabase
from tests.web.helpers import change_required_password, csrf_of, login, post_form

NUMBER = "0300002222"
TEMP = "48151623"
NEW = "abc13579"
MAIL = "taro@example.jp"
CID = "abcd1234"
CPW = "pass1word"


def register_form(email: str = MAIL, cid: str = CID, cpw: str = CPW, **overrides: str) -> dict[str, str]:
    form = {
        "email": email,
        "email_confirm": email,
        "confirmation_id": cid,
        "confirmation_id_confirm": cid,
        "confirmation_password": cpw,
        "confirmation_password_confirm": cpw,
    }
    form.update(overrides)
    return form


def web_database_otp_status(db: WebDatabase, number: str) -> str:
    from core.otp.choice import otp_state

    with db.session_factory() as session:
        return otp_state(session, number=number).status


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def start_with_otp(client: TestClient, db: WebDatabase) -> Any:
    """Temporary password -> change -> "use" -> registration form shown."""
    db.set_temporary_password(NUMBER, TEMP, unit="number")
    page = login(client, NUMBER, TEMP)
    page = change_required_password(client, page, TEMP, NEW)
    assert page.url.path == "/otp/choice"
    page = post_form(client, page, "/otp/choice", {"choice": "use"})
    assert page.url.path == "/otp/register"
    return page


def register(client: TestClient, page: Any, smtp: SmtpServer, mails_before: int = 0) -> str:
    """Fill the registration, confirm it, and return the link from the mail."""
    page = post_form(client, page, "/otp/register", register_form())
    assert page.url.path == "/otp/register/confirm", page.text
    assert MAIL in page.text and CID in page.text and CPW not in page.text
    page = post_form(client, page, "/otp/register/confirm", {})
    assert page.status_code == 200, page.text
    assert "仮登録完了" in page.text
    mail = smtp.sink.wait_for(mails_before + 1)
    assert mail["To"] == MAIL
    return smtp.sink.last_link()


def open_link(client: TestClient, link: str) -> Any:
    page = client.get(path_of(link))
    assert page.status_code == 200
    return post_form(
        client, page, "/otp/verify", {"token": page.text.split('name="token" value="')[1].split('"')[0]}
    )


def send_code(client: TestClient, page: Any, smtp: SmtpServer, count: int) -> tuple[Any, str]:
    page = post_form(client, page, "/otp/send", {})
    assert page.url.path == "/otp/code", page.text
    smtp.sink.wait_for(count)
    return page, smtp.sink.last_code()


def test_registration_link_code_and_login(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer, web_app: Any
) -> None:
    page = start_with_otp(web_client, web_database)
    link = register(web_client, page, smtp_server)
    assert link.startswith("http://127.0.0.1:")
    page = open_link(web_client, link)
    assert "本登録が完了しました" in page.text
    page, code = send_code(web_client, page, smtp_server, 2)
    assert smtp_server.sink.messages[1]["Subject"] == "【ひかり電話設定サイト】ワンタイムパスワードのお知らせ"
    page = post_form(web_client, page, "/otp/code", {"code": code})
    assert page.url.path == "/home"
    # Next login: password, then a code by mail.
    web_client.cookies.clear()
    page = login(web_client, NUMBER, NEW)
    assert page.url.path == "/otp/send"
    assert web_client.get("/home").url.path == "/otp/send"  # nothing before the code
    page, code = send_code(web_client, page, smtp_server, 3)
    page = post_form(web_client, page, "/otp/code", {"code": "000000" if code != "000000" else "111111"})
    assert page.status_code == 400 and "正しくありません" in page.text
    page = post_form(web_client, page, "/otp/code", {"code": code})
    assert page.url.path == "/home"
    api = TestClient(web_app, base_url="http://127.0.0.1").post(
        "/api/login", json={"number": NUMBER, "password": NEW}
    )
    assert api.json()["next"] == "otp_code"


def test_code_is_refused_at_301_seconds_and_accepted_at_299(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer, web_clock: FakeClock
) -> None:
    page = start_with_otp(web_client, web_database)
    page = open_link(web_client, register(web_client, page, smtp_server))
    page, code = send_code(web_client, page, smtp_server, 2)
    web_clock.advance(seconds=301)
    page = post_form(web_client, page, "/otp/code", {"code": code})
    assert page.status_code == 400
    assert "有効時間" in page.text
    # Resend: a new code, valid for its own 300 s.
    page = web_client.get("/otp/send")
    page, code = send_code(web_client, page, smtp_server, 3)
    web_clock.advance(seconds=299)
    page = post_form(web_client, page, "/otp/code", {"code": code})
    assert page.url.path == "/home"


def test_a_code_works_once(
    web_app: Any, web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = start_with_otp(web_client, web_database)
    page = open_link(web_client, register(web_client, page, smtp_server))
    page, code = send_code(web_client, page, smtp_server, 2)
    assert post_form(web_client, page, "/otp/code", {"code": code}).url.path == "/home"
    # The same code in a new login (another browser) is refused.
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as other:
        page = login(other, NUMBER, NEW)
        assert page.url.path == "/otp/send"
        page = other.get("/otp/code")
        page = post_form(other, page, "/otp/code", {"code": code})
        assert page.status_code == 400
        page, fresh = send_code(other, other.get("/otp/send"), smtp_server, 3)
        if fresh != code:
            page = post_form(other, page, "/otp/code", {"code": code})
            assert page.status_code == 400
        assert post_form(other, page, "/otp/code", {"code": fresh}).url.path == "/home"


def test_three_wrong_codes_end_the_login(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = start_with_otp(web_client, web_database)
    page = open_link(web_client, register(web_client, page, smtp_server))
    page, code = send_code(web_client, page, smtp_server, 2)
    wrong = "123456" if code != "123456" else "654321"
    for _ in range(2):
        page = post_form(web_client, page, "/otp/code", {"code": wrong})
        assert page.status_code == 400
    page = post_form(web_client, page, "/otp/code", {"code": wrong})
    assert page.status_code == 403 and "もう一度ログイン" in page.text
    assert web_client.get("/home").url.path == "/login"


def test_link_is_refused_after_24_hours(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer, web_clock: FakeClock
) -> None:
    page = start_with_otp(web_client, web_database)
    link = register(web_client, page, smtp_server)
    web_clock.advance(hours=24)
    page = web_client.get(path_of(link))
    token = page.text.split('name="token" value="')[1].split('"')[0]
    page = post_form(web_client, page, "/otp/verify", {"token": token})
    assert page.status_code == 410
    assert "有効期限（24時間）が切れています" in page.text
    # Logging in again leads back to the registration.
    web_client.cookies.clear()
    page = login(web_client, NUMBER, NEW)
    assert page.url.path == "/otp/register"


def test_link_works_once_and_a_forged_one_not(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer, web_app: Any
) -> None:
    page = start_with_otp(web_client, web_database)
    link = register(web_client, page, smtp_server)
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as phone_browser:
        page = open_link(phone_browser, link)  # opened on another device: registered, then log in
        assert "本登録が完了しました" in page.text and "ログイン" in page.text
        page = open_link(phone_browser, link)
        assert page.status_code == 400 and "すでに使用されています" in page.text
        page = open_link(phone_browser, link[:-3] + "xyz")
        assert page.status_code == 400
    # The first browser, still at the registration step, moves on to sending the code.
    assert web_client.get("/otp/register").url.path == "/otp/send"


def test_mail_failure_is_shown_and_logged_without_the_link(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = start_with_otp(web_client, web_database)
    smtp_server.sink.refuse = True
    page = post_form(web_client, page, "/otp/register", register_form())
    with structlog.testing.capture_logs() as logs:
        page = post_form(web_client, page, "/otp/register/confirm", {})
    assert page.status_code == 502
    assert "メールを送信できませんでした" in page.text
    failures = [e for e in logs if e["event"] == "web_mail_failed"]
    assert failures and failures[0]["log_level"] == "error"
    assert "token" not in repr(logs) and "otp/verify" not in repr(logs)
    # It can be sent again once the server accepts mail.
    smtp_server.sink.refuse = False
    page = post_form(web_client, page, "/otp/register/confirm", {})
    assert page.status_code == 200 and "仮登録完了" in page.text


def test_registration_input_errors_in_the_users_terms(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    page = start_with_otp(web_client, web_database)
    cases = [
        (register_form(email="taro@"), "メールアドレスの形式"),
        (register_form(email_confirm="jiro@example.jp"), "一致しません"),
        (register_form(cid="12345678"), "数字のみの確認用ID"),
        (register_form(cid="ABCDEFGH"), "英字大文字のみ"),
        (register_form(cid="abcdefgh"), "英字小文字のみ"),
        (register_form(cid="abc"), "8～12桁"),
        (register_form(cpw="abcdefgh"), "英字と数字の両方"),
        (register_form(confirmation_password_confirm="other1234"), "一致しません"),
    ]
    for form, expected in cases:
        page = post_form(web_client, page, "/otp/register", form)
        assert page.status_code == 400, form
        assert expected in page.text, (form, expected)


def test_decline_then_switch_on_later(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    web_database.set_temporary_password(NUMBER, TEMP, unit="number")
    page = login(web_client, NUMBER, TEMP)
    page = change_required_password(web_client, page, TEMP, NEW)
    page = post_form(web_client, page, "/otp/choice", {"choice": "not_use"})
    assert "利用しない" in page.text and "同意する" in page.text
    page = post_form(web_client, page, "/otp/decline", {"agree": "1"})
    assert page.url.path == "/home"
    web_client.cookies.clear()
    page = login(web_client, NUMBER, NEW)
    assert page.url.path == "/home"  # no code asked
    page = web_client.get("/settings/otp")
    page = post_form(web_client, page, "/settings/otp", {"use": "1"})
    assert "本登録が完了していません" in page.text
    page = web_client.get("/otp/register")
    link = register(web_client, page, smtp_server)
    page = open_link(web_client, link)
    assert "本登録が完了しました" in page.text
    web_client.cookies.clear()
    assert login(web_client, NUMBER, NEW).url.path == "/otp/send"


def registered_home(client: TestClient, db: WebDatabase, smtp: SmtpServer) -> Any:
    page = start_with_otp(client, db)
    page = open_link(client, register(client, page, smtp))
    page, code = send_code(client, page, smtp, 2)
    page = post_form(client, page, "/otp/code", {"code": code})
    assert page.url.path == "/home"
    return page


def test_switch_off_needs_agreement_and_then_no_code(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    page = web_client.get("/settings/otp")
    assert "同意する" in page.text
    page = post_form(web_client, page, "/settings/otp", {"use": "0"})  # without the agreement
    assert "利用しない」に変更しました" not in page.text
    assert web_database_otp_status(web_database, NUMBER) == "on"
    page = post_form(web_client, page, "/settings/otp", {"use": "0", "agree": "1"})
    assert "利用しない」に変更しました" in page.text
    web_client.cookies.clear()
    assert login(web_client, NUMBER, NEW).url.path == "/home"


def test_address_change_from_the_menu_after_a_two_step_login(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    """P23: after a two-step login the menu goes straight to the new address."""
    registered_home(web_client, web_database, smtp_server)
    page = web_client.get("/settings/otp/address")
    assert page.url.path == "/otp/address"
    page = post_form(
        web_client, page, "/otp/address", {"email": "new@example.jp", "email_confirm": "new@example.jp"}
    )
    assert page.url.path == "/otp/register/confirm" and "new@example.jp" in page.text
    page = post_form(web_client, page, "/otp/register/confirm", {})
    assert "仮登録完了" in page.text
    assert smtp_server.sink.wait_for(3)["To"] == "new@example.jp"
    page = open_link(web_client, smtp_server.sink.last_link())
    assert "本登録が完了しました" in page.text
    # The next code goes to the new address.
    web_client.cookies.clear()
    page = login(web_client, NUMBER, NEW)
    post_form(web_client, page, "/otp/send", {})
    assert smtp_server.sink.wait_for(4)["To"] == "new@example.jp"


def test_address_change_needs_confirmation_id_and_password_from_the_send_page(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    """P22: before the code, the confirmation ID and password first."""
    registered_home(web_client, web_database, smtp_server)
    web_client.cookies.clear()
    page = login(web_client, NUMBER, NEW)
    assert page.url.path == "/otp/send"
    assert web_client.get("/otp/address").url.path == "/otp/address-check"
    # the POST is held to the same rule as the page
    refused = web_client.post(
        "/otp/address",
        data={"csrf_token": csrf_of(page), "email": "evil@example.jp", "email_confirm": "evil@example.jp"},
    )
    assert refused.url.path == "/otp/address-check"
    page = web_client.get("/otp/address-check")
    page = post_form(
        web_client, page, "/otp/address-check", {"confirmation_id": CID, "confirmation_password": "x"}
    )
    assert page.status_code == 400 and "確認用IDまたは確認用パスワードが正しくありません" in page.text
    page = post_form(
        web_client, page, "/otp/address-check", {"confirmation_id": CID, "confirmation_password": CPW}
    )
    assert page.url.path == "/otp/address"
    page = post_form(
        web_client, page, "/otp/address", {"email": "new@example.jp", "email_confirm": "new@example.jp"}
    )
    page = post_form(web_client, page, "/otp/register/confirm", {})
    assert "仮登録完了" in page.text
    assert smtp_server.sink.wait_for(3)["To"] == "new@example.jp"


def test_address_change_before_the_code(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    web_client.cookies.clear()
    page = login(web_client, NUMBER, NEW)
    assert page.url.path == "/otp/send" and "メールアドレスの変更" in page.text
    page = web_client.get("/otp/address-check")
    page = post_form(
        web_client, page, "/otp/address-check", {"confirmation_id": CID, "confirmation_password": CPW}
    )
    assert page.url.path == "/otp/address"


def test_confirmation_id_and_password_changes(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    page = web_client.get("/settings/otp/confirmation-id")
    page = post_form(
        web_client,
        page,
        "/settings/otp/confirmation-id",
        {"current": "wrong123", "new": "newid5678", "new_confirm": "newid5678"},
    )
    assert page.status_code == 400 and "変更前の確認用IDが誤っています" in page.text
    page = post_form(
        web_client,
        page,
        "/settings/otp/confirmation-id",
        {"current": CID, "new": "12345678", "new_confirm": "12345678"},
    )
    assert page.status_code == 400 and "数字のみ" in page.text
    page = post_form(
        web_client,
        page,
        "/settings/otp/confirmation-id",
        {"current": CID, "new": "newid5678", "new_confirm": "newid5678"},
    )
    assert page.status_code == 200 and "確認用IDを変更しました" in page.text
    page = web_client.get("/settings/otp/confirmation-password")
    page = post_form(
        web_client,
        page,
        "/settings/otp/confirmation-password",
        {"current": CPW, "new": "newpw5678", "new_confirm": "newpw5679"},
    )
    assert page.status_code == 400 and "一致しません" in page.text
    page = post_form(
        web_client,
        page,
        "/settings/otp/confirmation-password",
        {"current": CPW, "new": "newpw5678", "new_confirm": "newpw5678"},
    )
    assert page.status_code == 200 and "確認用パスワードを変更しました" in page.text
    page = web_client.get("/otp/address-check")
    page = post_form(
        web_client,
        page,
        "/otp/address-check",
        {"confirmation_id": "newid5678", "confirmation_password": "newpw5678"},
    )
    assert page.url.path == "/otp/address"


def test_back_from_the_registration_form_to_the_choice(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    page = start_with_otp(web_client, web_database)
    assert 'href="/otp/choice"' in page.text
    page = web_client.get("/otp/choice")
    assert page.url.path == "/otp/choice"
    page = post_form(web_client, page, "/otp/choice", {"choice": "not_use"})
    page = post_form(web_client, page, "/otp/decline", {"agree": "1"})
    assert page.url.path == "/home"


def test_code_mail_failure_is_shown_and_resend_works(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = start_with_otp(web_client, web_database)
    page = open_link(web_client, register(web_client, page, smtp_server))
    smtp_server.sink.refuse = True
    with structlog.testing.capture_logs() as logs:
        page = post_form(web_client, page, "/otp/send", {})
    assert page.status_code == 502 and "メールを送信できませんでした" in page.text
    assert any(e["event"] == "web_mail_failed" and e["kind"] == "otp_code" for e in logs)
    assert not any(str(v).isdigit() and len(str(v)) == 6 for e in logs for v in e.values())
    smtp_server.sink.refuse = False
    page, code = send_code(web_client, page, smtp_server, 2)
    assert post_form(web_client, page, "/otp/code", {"code": code}).url.path == "/home"


def test_no_secret_reaches_the_log(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    with structlog.testing.capture_logs() as logs:
        page = start_with_otp(web_client, web_database)
        link = register(web_client, page, smtp_server)
        page = open_link(web_client, link)
        page, code = send_code(web_client, page, smtp_server, 2)
        post_form(web_client, page, "/otp/code", {"code": code})
    assert any(e["event"] == "web_login_completed" for e in logs)
    logged = repr(logs)
    token = link.split("token=")[1]
    for secret in (TEMP, NEW, CID, CPW, code, token, token.split(".")[-1]):
        assert secret not in logged, secret
