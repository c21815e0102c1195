"""The seed's screens exactly (issue 11): menu items and order per unit and OTP state, ヘルプ and
the copyright line, P11's wording, P21, P23, the bulk release, bulk CSV errors, the bulk unit
change of a large contract, lockout messages, one 全角 message, the sender domain from settings."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from tests.fixtures.web import FakeClock, SmtpServer, WebDatabase
from tests.web.helpers import change_required_password, csrf_of, first_login, login, post_form
from tests.web.test_otp import open_link, path_of, register_form, web_database_otp_status

LINE = "0300001111"
ADDITIONAL = "0300002222"
ADMIN = "0355501000"  # sample contract: admin/user unit, 40 numbers
TEMP = "48151623"
NEW = "abc13579"
MAIL = "taro@example.jp"

MENU_WITHOUT_OTP = ["サービス選択", "パスワード変更", "認証単位変更", "ワンタイムパスワード利用選択変更"]
MENU_OTP = ["ワンタイムパスワード受信用メールアドレス変更", "確認用ID変更", "確認用パスワード変更"]


def menu(page: Any) -> list[str]:
    found = re.search(r'<ul class="menu" id="menu">(.*?)</ul>', page.text, re.S)
    assert found, "no menu on " + str(page.url)
    return re.findall(r"<a href=\"[^\"]+\">([^<]+)</a>", found.group(1))


def client_for(app: Any) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=True)


def two_step_home(client: TestClient, db: WebDatabase, smtp: SmtpServer, number: str, unit: str) -> Any:
    """First login with a one-time password registered, then a second, two-step login: home."""
    db.set_temporary_password(number, TEMP, unit=unit)
    page = login(client, number, TEMP)
    page = change_required_password(client, page, TEMP, NEW)
    page = post_form(client, page, "/otp/choice", {"choice": "use"})
    page = post_form(client, page, "/otp/register", register_form())
    before = len(smtp.sink.messages)
    post_form(client, page, "/otp/register/confirm", {})
    smtp.sink.wait_for(before + 1)
    link = smtp.sink.last_link()
    page = open_link(client, link)
    page = post_form(client, page, "/otp/send", {})
    smtp.sink.wait_for(before + 2)
    page = post_form(client, page, "/otp/code", {"code": smtp.sink.last_code()})
    assert page.url.path == "/home", page.text
    client.cookies.clear()
    page = login(client, number, NEW)
    assert page.url.path == "/otp/send"
    count = len(smtp.sink.messages)
    page = post_form(client, page, "/otp/send", {})
    smtp.sink.wait_for(count + 1)
    page = post_form(client, page, "/otp/code", {"code": smtp.sink.last_code()})
    assert page.url.path == "/home", page.text
    return page


# ------------------------------------------------------------------ menu, help, footer
def test_menu_without_otp_per_unit_with_help_and_copyright(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(LINE, TEMP, unit="admin_user")
    page = first_login(web_client, LINE, TEMP, NEW)
    assert menu(page) == MENU_WITHOUT_OTP
    assert 'href="/help" id="help-link">ヘルプ</a>' in page.text
    assert "Copyright © 1999-2022 東日本電信電話株式会社" in page.text
    web_client.cookies.clear()
    web_database.set_temporary_password(ADDITIONAL, TEMP, unit="admin_user")
    page = first_login(web_client, ADDITIONAL, TEMP, NEW)  # a user: no unit change
    assert menu(page) == ["サービス選択", "パスワード変更", "ワンタイムパスワード利用選択変更"]
    help_page = web_client.get("/help")
    assert help_page.status_code == 200 and "03-6304-4747" in help_page.text
    assert "3回" in help_page.text and "10回" in help_page.text


def test_help_is_open_without_a_login(web_client: TestClient) -> None:
    page = web_client.get("/help")
    assert page.status_code == 200 and page.url.path == "/help"
    assert 'href="/login" id="help-back"' in page.text


def test_menu_after_a_two_step_login_of_an_admin_of_40_numbers(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = two_step_home(web_client, web_database, smtp_server, ADMIN, "admin_user")
    assert menu(page) == [
        *MENU_WITHOUT_OTP,
        *MENU_OTP,
        "ワンタイムパスワード各種一括設定",
        "ワンタイムパスワード登録一括解除",
    ]


def test_menu_after_a_two_step_login_of_a_small_line_contract(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = two_step_home(web_client, web_database, smtp_server, LINE, "line")
    assert menu(page) == [*MENU_WITHOUT_OTP, *MENU_OTP]  # not an admin: no bulk items
    assert web_client.get("/settings/otp/release").url.path == "/home"


# ------------------------------------------------------------------ P11
def test_home_lists_each_numbers_services_and_promises_no_service_settings(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(LINE, TEMP, unit="line")
    page = first_login(web_client, LINE, TEMP, NEW)
    assert "サービスを選択してください" not in page.text
    assert "この画面からは行えません" in page.text
    rows = re.findall(r'data-number="(\d+)">.*?<td class="services">(.*?)</td>', page.text, re.S)
    assert [number for number, _ in rows] == [LINE, ADDITIONAL]
    assert all(re.search(r'<li class="service">[^<]+</li>', cell) for _, cell in rows)


# ------------------------------------------------------------------ bulk release
def test_bulk_release_needs_the_password_again_and_a_confirmation(
    web_app: Any, web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = two_step_home(web_client, web_database, smtp_server, ADMIN, "admin_user")
    page = web_client.get("/settings/otp/bulk")
    web_client.post(
        "/settings/otp/bulk",
        data={"csrf_token": csrf_of(page)},
        files={"csv": ("otp.csv", b"0355501001,1,one@example.jp,abcd1234,pass1word\r\n", "text/csv")},
    )
    assert web_database_otp_status(web_database, "0355501001") == "pending"
    page = web_client.get("/settings/otp/release")
    assert "登録がある電話番号: 2件" in page.text
    # Straight to the confirmation without the password: back to the first step, nothing released.
    early = post_form(web_client, page, "/settings/otp/release/confirm", {})
    assert early.url.path == "/settings/otp/release"
    assert web_database_otp_status(web_database, ADMIN) == "on"
    wrong = post_form(web_client, page, "/settings/otp/release", {"password": "wrong1234"})
    assert wrong.status_code == 400 and "連続して10回誤ると" in wrong.text
    assert 'aria-invalid="true"' in wrong.text
    confirm = post_form(web_client, wrong, "/settings/otp/release", {"password": NEW})
    assert confirm.status_code == 200 and 'id="release-numbers"' in confirm.text
    assert re.findall(r'data-number="(\d+)"', confirm.text) == [ADMIN, "0355501001"]
    assert web_database_otp_status(web_database, "0355501001") == "pending"  # not yet
    done = post_form(web_client, confirm, "/settings/otp/release/confirm", {})
    assert "2件の電話番号のワンタイムパスワード登録を解除しました" in done.text
    assert web_database_otp_status(web_database, ADMIN) == "unchosen"
    assert web_database_otp_status(web_database, "0355501001") == "unchosen"
    # The confirmation cannot be replayed, and the next login chooses again (P9).
    assert post_form(web_client, confirm, "/settings/otp/release/confirm", {}).url.path == "/home"
    web_client.cookies.clear()
    assert login(web_client, ADMIN, NEW).url.path == "/otp/choice"


def test_bulk_release_password_counts_like_a_login(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = two_step_home(web_client, web_database, smtp_server, ADMIN, "admin_user")
    page = web_client.get("/settings/otp/release")
    for _ in range(9):
        page = post_form(web_client, page, "/settings/otp/release", {"password": "wrong1234"})
        assert page.status_code == 400
    page = post_form(web_client, page, "/settings/otp/release", {"password": "wrong1234"})
    assert page.status_code == 403
    assert "パスワードの入力を連続して10回誤ったため、パスワードは無効になりました" in page.text
    web_client.cookies.clear()
    assert "無効" in login(web_client, ADMIN, NEW).text


# ------------------------------------------------------------------ P21, P23, sender domain
def test_switching_otp_back_on_always_continues_to_registration(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = two_step_home(web_client, web_database, smtp_server, ADDITIONAL, "number")
    page = web_client.get("/settings/otp")
    post_form(web_client, page, "/settings/otp", {"use": "0", "agree": "1"})
    web_client.cookies.clear()
    page = login(web_client, ADDITIONAL, NEW)
    assert page.url.path == "/home"  # one step now
    page = post_form(web_client, web_client.get("/settings/otp"), "/settings/otp", {"use": "1"})
    assert "登録画面に進んでください" in page.text and "本登録が完了していません" in page.text
    assert 'href="/otp/address" id="message-link">次へ</a>' in page.text
    # A one-step login proves itself with the confirmation ID and password first (P22).
    assert web_client.get("/otp/address").url.path == "/otp/address-check"


def test_address_change_from_the_menu_after_two_steps_skips_the_check(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    two_step_home(web_client, web_database, smtp_server, ADDITIONAL, "number")
    page = web_client.get("/otp/address-check")
    assert page.url.path == "/otp/address"  # P23: no confirmation ID and password asked
    assert "confirmation_id" not in page.text
    assert "「settings.example.jp」ドメインのメール" in page.text


def test_sender_domain_shown_comes_from_the_settings(
    web_settings: Any, web_clock: FakeClock, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    from tests.fixtures.web import make_app

    settings = web_settings.model_copy(
        update={"smtp": web_settings.smtp.model_copy(update={"sender": "info@mail.hikari.example.com"})}
    )
    with client_for(make_app(settings, clock=web_clock)) as client:
        web_database.set_temporary_password(ADDITIONAL, TEMP, unit="number")
        page = login(client, ADDITIONAL, TEMP)
        page = change_required_password(client, page, TEMP, NEW)
        page = post_form(client, page, "/otp/choice", {"choice": "use"})
        page = post_form(client, page, "/otp/register", register_form())
        sent = post_form(client, page, "/otp/register/confirm", {})
        assert "[mail.hikari.example.com]からのメール受信が可能な設定" in sent.text
        assert "settings.example.jp" not in sent.text
        assert smtp_server.sink.wait_for(1)["From"] == "info@mail.hikari.example.com"


# ------------------------------------------------------------------ lockouts
def test_lockout_messages_name_the_password_the_tries_and_the_number(
    web_settings: Any, web_clock: FakeClock, web_database: WebDatabase
) -> None:
    """The number customers call comes from WebSettings, not from the lab's settings."""
    from tests.fixtures.web import make_app

    settings = web_settings.model_copy(
        update={"web": web_settings.web.model_copy(update={"service_number": "0312345678"})}
    )
    assert settings.lab.service_number == "0363044747"
    with client_for(make_app(settings, clock=web_clock)) as client:
        web_database.set_temporary_password(LINE, TEMP, unit="line")
        for _ in range(3):
            page = login(client, LINE, "11112222")
        assert page.status_code == 403
        assert "仮パスワードの入力を連続して3回誤ったため、仮パスワードは無効になりました" in page.text
        assert "契約回線から仮パスワード設定番号 03-1234-5678" in page.text
        web_database.set_temporary_password(LINE, TEMP, unit="line")
        first_login(client, LINE, TEMP, NEW)
        client.cookies.clear()
        for _ in range(10):
            page = login(client, LINE, "wrong1234")
        assert "パスワードの入力を連続して10回誤ったため、パスワードは無効になりました" in page.text
        assert "仮パスワードは無効" not in page.text
        assert "契約回線から仮パスワード設定番号 03-1234-5678" in page.text


# ------------------------------------------------------------------ 全角
def test_full_width_input_gets_one_clear_message(web_client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(ADDITIONAL, TEMP, unit="number")
    page = login(web_client, ADDITIONAL, TEMP)
    page = change_required_password(web_client, page, TEMP, "ａｂｃ１３５７９")
    errors = re.findall(r"<li>([^<]+)</li>", page.text.split('id="form-errors"')[1].split("</ul>")[0])
    assert len(errors) == 1 and "全角文字が含まれています" in errors[0], errors
    assert 'id="new_password"' in page.text
    page = change_required_password(web_client, page, TEMP, NEW)
    page = post_form(web_client, page, "/otp/choice", {"choice": "use"})
    page = post_form(web_client, page, "/otp/register", register_form(cid="ａｂｃｄ１２３４"))
    errors = re.findall(r"<li>([^<]+)</li>", page.text.split('id="form-errors"')[1].split("</ul>")[0])
    assert errors == [
        "確認用IDに全角文字が含まれています。確認用IDは半角英数字で入力してください（入力モードを半角英数に切り替えてください）。"
    ]


# ------------------------------------------------------------------ bulk CSVs
def admin_home(client: TestClient, db: WebDatabase) -> None:
    db.set_temporary_password(ADMIN, TEMP, unit="admin_user")
    first_login(client, ADMIN, TEMP, NEW)


def upload(client: TestClient, path: str, body: bytes) -> Any:
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_of(page)}, files={"csv": ("f.csv", body, "text/csv")})


def test_bulk_file_reports_structural_and_rule_errors_together_by_line(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    admin_home(web_client, web_database)
    body = "\r\n".join(
        [
            "0355501001,def13579",
            "0355501002,13572468",  # digits only
            "0355501003,abc,extra",  # three columns
            "0300001111,ghi13579",  # not this contract's
            "0355501004,ａｂｃ１３５７９",  # full-width
            "0355501001,xyz13579",  # twice
        ]
    ).encode()
    page = upload(web_client, "/password/bulk", body + b"\r\n")
    assert page.status_code == 400
    errors = re.findall(r"<li>([^<]+)</li>", page.text.split('id="form-errors"')[1].split("</ul>")[0])
    assert [e.split(":")[0].split("（")[0] for e in errors] == [
        "2行目",
        "3行目",
        "4行目",
        "5行目",
        "6行目",
        "エラーがあったため、いずれの電話番号のパスワードも変更していません。",
    ], errors
    assert "数字のみ" in errors[0] and "全角" in errors[3]


def test_bulk_file_errors_stop_at_1000_lines_then_a_count(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    admin_home(web_client, web_database)
    body = b"".join(b"0399999999,abc13579\r\n" for _ in range(1005))
    page = upload(web_client, "/password/bulk", body)
    errors = re.findall(r"<li>([^<]+)</li>", page.text.split('id="form-errors"')[1].split("</ul>")[0])
    assert len(errors) == 1002 and errors[0].startswith("1行目") and errors[999].startswith("1000行目")
    assert errors[1000] == "ほか5件のエラーがあります。"


def test_bulk_unit_change_form_for_33_numbers_whatever_their_credentials(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    """Only the contract number has a password (number unit): the 40-number contract still gets
    the bulk form and its download (P15)."""
    web_database.set_temporary_password(ADMIN, TEMP, unit="number")
    first_login(web_client, ADMIN, TEMP, NEW)
    page = web_client.get("/settings/unit/line")
    assert 'id="unit-bulk-form"' in page.text
    download = web_client.get("/settings/unit/line/download")
    assert download.headers["content-type"].startswith("text/csv")
    assert download.content.decode().strip() == f'"{ADMIN}",""'
    web_client.cookies.clear()
    web_database.set_temporary_password(LINE, TEMP, unit="number")
    first_login(web_client, LINE, TEMP, NEW)
    assert 'id="unit-bulk-form"' not in web_client.get("/settings/unit/line").text
    assert web_client.get("/settings/unit/line/download").url.path == "/settings/unit/line"


# ------------------------------------------------------------------ the mailed link
def test_opening_the_mailed_link_does_not_register_until_the_button(
    web_app: Any, web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    """A mail scanner that fetches the link must not complete a registration (docs/web.md)."""
    web_database.set_temporary_password(ADDITIONAL, TEMP, unit="number")
    page = login(web_client, ADDITIONAL, TEMP)
    page = change_required_password(web_client, page, TEMP, NEW)
    page = post_form(web_client, page, "/otp/choice", {"choice": "use"})
    page = post_form(web_client, page, "/otp/register", register_form())
    post_form(web_client, page, "/otp/register/confirm", {})
    smtp_server.sink.wait_for(1)
    link = smtp_server.sink.last_link()
    with client_for(web_app) as scanner:
        fetched = scanner.get(path_of(link))
        assert fetched.status_code == 200 and 'id="verify-submit"' in fetched.text
    assert web_database_otp_status(web_database, ADDITIONAL) == "pending"
    assert "本登録が完了しました" in open_link(web_client, link).text
    assert web_database_otp_status(web_database, ADDITIONAL) == "on"
