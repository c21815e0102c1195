"""The web login in Debian's chromium (Playwright), against the app under uvicorn on loopback.

Temporary passwords are set through core's ``set_temporary_password`` (what the phone line does);
mail goes through a real SMTP server (aiosmtpd). The clock is injected into the server (same
process), so 24 h and 300 s pass instantly. Screenshots of key pages land in
``$IVR_WEB_SCREENSHOTS`` (default /tmp/ivr-web-screenshots).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures.web import FakeClock, LiveServer, SmtpServer, WebDatabase, screenshot

pytestmark = pytest.mark.browser

CONTRACT = "0300001111"
ADDITIONAL = "0300002222"
TEMP = "48151623"
NEW = "abc13579"

# (bad new password, what the page must say) -- one per rule of seed 003 P8.
RULE_MESSAGES = [
    ("abc1357", "8桁～12桁"),
    ("abcdefghjk", "英字のみ"),
    ("13572468", "数字のみ"),
    ("abc1357!", "半角英数字"),
    ("a1111b2c", "0000、aaaa"),
    ("x1234y5z", "1234、abcd"),
    ("ab8765cd", "4321、dcba"),
    ("ab0300002222", "電話番号を含む"),
]


def path(page: Any) -> str:
    return urlsplit(page.url).path


def errors(page: Any) -> str:
    return str(page.locator(".errors").inner_text())


def log_in(page: Any, base_url: str, number: str, password: str) -> None:
    page.goto(f"{base_url}/login")
    page.fill("#number", number)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_load_state()


def change_password(page: Any, current: str, new: str, confirm: str | None = None) -> None:
    page.fill("#current_password", current)
    page.fill("#new_password", new)
    page.fill("#new_password_confirm", new if confirm is None else confirm)
    page.click("#password-submit")
    page.wait_for_load_state()


def decline_otp(page: Any) -> None:
    assert path(page) == "/otp/choice"
    page.check("#choice-not-use")
    page.click("#choice-next")
    page.wait_for_load_state()
    assert path(page) == "/otp/decline"
    page.click("#agree")
    page.wait_for_load_state()


def listed_numbers(page: Any) -> list[str]:
    return [
        str(n) for n in page.locator("tr.number-row").evaluate_all("rows => rows.map(r => r.dataset.number)")
    ]


def log_out(page: Any) -> None:
    page.click("#logout")
    page.wait_for_load_state()
    assert "ログアウトしました" in page.content()


UNIT_CASES = [
    ("line", CONTRACT, [CONTRACT, ADDITIONAL]),
    ("number", CONTRACT, [CONTRACT]),
    ("number", ADDITIONAL, [ADDITIONAL]),
    ("admin_user", CONTRACT, [CONTRACT, ADDITIONAL]),
    ("admin_user", ADDITIONAL, [ADDITIONAL]),
]


@pytest.mark.parametrize(
    ("unit", "number", "expected"), UNIT_CASES, ids=lambda v: v if isinstance(v, str) else ""
)
def test_first_login_for_each_unit(
    page: Any, live_web: LiveServer, web_database: WebDatabase, unit: str, number: str, expected: list[str]
) -> None:
    web_database.set_temporary_password(number, TEMP, unit=unit)
    log_in(page, live_web.base_url, number, TEMP)
    assert path(page) == "/password/required"
    assert "仮パスワードで接続しました" in page.content()
    if unit == "line":
        screenshot(page, "forced-change")
    for bad, message in RULE_MESSAGES:
        change_password(page, TEMP, bad)
        assert path(page) == "/password/required"
        assert message in errors(page), (bad, errors(page))
    change_password(page, TEMP, NEW, confirm="abc13570")
    assert "一致しません" in errors(page)
    if unit == "line":
        screenshot(page, "forced-change-error")
    change_password(page, TEMP, NEW)
    if unit == "line":
        screenshot(page, "otp-choice")
    decline_otp(page)
    assert path(page) == "/home"
    assert listed_numbers(page) == expected
    assert page.locator("#login-number").inner_text() == number
    if unit == "admin_user" and number == CONTRACT:
        screenshot(page, "home-admin")
    log_out(page)
    log_in(page, live_web.base_url, number, TEMP)
    assert "正しくありません" in errors(page)
    log_in(page, live_web.base_url, number, NEW)
    assert path(page) == "/home"
    assert listed_numbers(page) == expected


def test_three_wrong_temporary_attempts_invalidate_it(
    page: Any, live_web: LiveServer, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    for _ in range(2):
        log_in(page, live_web.base_url, CONTRACT, "11112222")
        assert "電話番号またはパスワードが正しくありません" in errors(page)
    log_in(page, live_web.base_url, CONTRACT, "11112222")
    assert "無効" in errors(page)
    log_in(page, live_web.base_url, CONTRACT, TEMP)
    assert path(page) == "/login"
    assert "無効" in errors(page) and "03-6304-4747" in errors(page)
    screenshot(page, "login-invalidated")


def first_password(
    page: Any, live_web: LiveServer, web_database: WebDatabase, number: str = CONTRACT
) -> None:
    web_database.set_temporary_password(number, TEMP, unit="line")
    log_in(page, live_web.base_url, number, TEMP)
    change_password(page, TEMP, NEW)
    decline_otp(page)
    assert path(page) == "/home"
    log_out(page)


def test_ten_wrong_attempts_invalidate_the_password(
    page: Any, live_web: LiveServer, web_database: WebDatabase
) -> None:
    first_password(page, live_web, web_database)
    for _ in range(9):
        log_in(page, live_web.base_url, CONTRACT, "wrong1234")
        assert "正しくありません" in errors(page)
    log_in(page, live_web.base_url, CONTRACT, "wrong1234")
    assert "無効" in errors(page)
    log_in(page, live_web.base_url, CONTRACT, NEW)
    assert path(page) == "/login"
    assert "無効" in errors(page) and "仮パスワード" in errors(page)


def test_a_success_in_between_resets_the_count(
    page: Any, live_web: LiveServer, web_database: WebDatabase
) -> None:
    first_password(page, live_web, web_database)
    for _ in range(2):
        for _ in range(9):
            log_in(page, live_web.base_url, CONTRACT, "wrong1234")
            assert "正しくありません" in errors(page)
        log_in(page, live_web.base_url, CONTRACT, NEW)
        assert path(page) == "/home"
        log_out(page)


def test_closing_the_browser_does_not_reset_the_count(
    new_browser_context: Callable[[], Any], live_web: LiveServer, web_database: WebDatabase
) -> None:
    context = new_browser_context()
    first_password(context.new_page(), live_web, web_database)
    for _ in range(2):
        context = new_browser_context()
        page = context.new_page()
        for _ in range(5):
            log_in(page, live_web.base_url, CONTRACT, "wrong1234")
        context.close()  # the browser is closed: its session cookie is gone
    page = new_browser_context().new_page()
    log_in(page, live_web.base_url, CONTRACT, NEW)
    assert path(page) == "/login"
    assert "無効" in errors(page)


def test_temporary_password_past_24_hours_is_refused(
    page: Any, live_web: LiveServer, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    web_clock.advance(hours=24)
    log_in(page, live_web.base_url, CONTRACT, TEMP)
    assert path(page) == "/login"
    assert "有効期限（設定から24時間）が切れています" in errors(page)
    assert "03-6304-4747" in errors(page)
    screenshot(page, "login-temporary-expired")


def test_idle_logout(
    page: Any, live_web: LiveServer, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    first_password(page, live_web, web_database)
    log_in(page, live_web.base_url, CONTRACT, NEW)
    assert path(page) == "/home"
    web_clock.advance(minutes=16)
    page.reload()
    assert path(page) == "/login"
    assert "自動的にログアウト" in page.content()


def confirm_link(page: Any) -> None:
    page.click("#verify-submit")
    page.wait_for_load_state()


def register_otp(page: Any, smtp: SmtpServer, mail: str = "hanako@example.jp") -> str:
    page.check("#choice-use")
    page.click("#choice-next")
    page.wait_for_load_state()
    assert path(page) == "/otp/register"
    screenshot(page, "otp-register")
    page.fill("#email", mail)
    page.fill("#email_confirm", mail)
    page.fill("#confirmation_id", "abcd1234")
    page.fill("#confirmation_id_confirm", "abcd1234")
    page.fill("#confirmation_password", "pass1word")
    page.fill("#confirmation_password_confirm", "pass1word")
    page.click("#register-next")
    page.wait_for_load_state()
    assert page.locator("#confirm-email").inner_text() == mail
    screenshot(page, "otp-register-confirm")
    before = len(smtp.sink.messages)
    page.click("#register-submit")
    page.wait_for_load_state()
    assert "仮登録完了" in page.content()
    screenshot(page, "otp-register-sent")
    message = smtp.sink.wait_for(before + 1)
    assert message["To"] == mail
    return smtp.sink.last_link()


def send_and_read_code(page: Any, smtp: SmtpServer) -> str:
    count = len(smtp.sink.messages)
    page.click("#send-code")
    page.wait_for_load_state()
    assert path(page) == "/otp/code"
    smtp.sink.wait_for(count + 1)
    return smtp.sink.last_code()


def enter_code(page: Any, code: str) -> None:
    page.fill("#code", code)
    page.click("#code-submit")
    page.wait_for_load_state()


def test_one_time_password_end_to_end(
    new_browser_context: Callable[[], Any],
    live_web: LiveServer,
    web_database: WebDatabase,
    smtp_server: SmtpServer,
    web_clock: FakeClock,
) -> None:
    page = new_browser_context().new_page()
    web_database.set_temporary_password(ADDITIONAL, TEMP, unit="number")
    log_in(page, live_web.base_url, ADDITIONAL, TEMP)
    change_password(page, TEMP, NEW)
    link = register_otp(page, smtp_server)
    assert re.fullmatch(rf"{re.escape(live_web.base_url)}/otp/verify\?token=[\w.-]+", link)
    page.goto(link)  # the customer clicks the link in the mail
    confirm_link(page)
    assert "本登録が完了しました" in page.content()
    screenshot(page, "otp-send")
    code = send_and_read_code(page, smtp_server)
    screenshot(page, "otp-code")
    enter_code(page, code)
    assert path(page) == "/home"
    assert listed_numbers(page) == [ADDITIONAL]
    screenshot(page, "home-otp")
    log_out(page)

    # Next login: a code that is 301 s old is refused; a resent one works; it works only once.
    log_in(page, live_web.base_url, ADDITIONAL, NEW)
    assert path(page) == "/otp/send"
    old = send_and_read_code(page, smtp_server)
    web_clock.advance(seconds=301)
    enter_code(page, old)
    assert "有効時間" in errors(page)
    page.click("#resend")
    page.wait_for_load_state()
    fresh = send_and_read_code(page, smtp_server)
    web_clock.advance(seconds=299)
    enter_code(page, fresh)
    assert path(page) == "/home"
    log_out(page)

    other = new_browser_context().new_page()
    log_in(other, live_web.base_url, ADDITIONAL, NEW)
    assert path(other) == "/otp/send"
    third = send_and_read_code(other, smtp_server)
    if third != fresh:
        enter_code(other, fresh)  # the code already used by the other login
        assert path(other) == "/otp/code"
        assert "正しくありません" in errors(other)
    enter_code(other, third)
    assert path(other) == "/home"


def test_registration_link_refused_after_24_hours(
    page: Any, live_web: LiveServer, web_database: WebDatabase, smtp_server: SmtpServer, web_clock: FakeClock
) -> None:
    web_database.set_temporary_password(ADDITIONAL, TEMP, unit="number")
    log_in(page, live_web.base_url, ADDITIONAL, TEMP)
    change_password(page, TEMP, NEW)
    link = register_otp(page, smtp_server)
    web_clock.advance(hours=24)
    page.goto(link)
    confirm_link(page)
    assert "有効期限（24時間）が切れています" in errors(page)
    screenshot(page, "otp-link-expired")


def test_login_page_renders_in_japanese(page: Any, live_web: LiveServer) -> None:
    page.goto(f"{live_web.base_url}/login")
    assert page.title() == "ログイン | ひかり電話設定サイト"
    assert page.locator("label[for=number]").inner_text().startswith("電話番号（ハイフンなし）")
    # Japanese glyphs need a CJK font on the machine (Debian: fonts-noto-cjk), or chromium draws boxes.
    fonts = subprocess.run(
        ["fc-list", ":lang=ja", "family"], capture_output=True, text=True, check=True
    ).stdout
    assert fonts.strip(), "no Japanese font installed: apt-get install fonts-noto-cjk"
    screenshot(page, "login")


def test_admin_of_a_large_contract_searches_and_uploads_a_bulk_file(
    page: Any, live_web: LiveServer, web_database: WebDatabase, tmp_path: Any
) -> None:
    admin = "0355501000"  # sample contract: admin/user unit, 40 numbers
    web_database.set_temporary_password(admin, TEMP, unit="admin_user")
    log_in(page, live_web.base_url, admin, TEMP)
    change_password(page, TEMP, NEW)
    decline_otp(page)
    assert len(listed_numbers(page)) == 40
    page.click("text=パスワード変更")
    page.wait_for_load_state()
    page.fill("#q", "03555010*7")
    page.click("#search-submit")
    page.wait_for_load_state()
    assert page.locator("#target option").all_inner_texts() == [
        "0355501007",
        "0355501017",
        "0355501027",
        "0355501037",
    ]
    screenshot(page, "password-search")
    page.click("#bulk-link")
    page.wait_for_load_state()
    screenshot(page, "password-bulk")
    csv_file = tmp_path / "passwords.csv"
    csv_file.write_bytes(b'"0355501007","def13579"\r\n"0355501017","xyz1111a"\r\n')
    page.set_input_files("#csv", str(csv_file))
    page.click("#bulk-submit")
    page.wait_for_load_state()
    assert "2行目（0355501017）" in errors(page) and "0000、aaaa" in errors(page)
    csv_file.write_bytes(b'"0355501007","def13579"\r\n"0355501017","xyz2468a"\r\n')
    page.set_input_files("#csv", str(csv_file))
    page.click("#bulk-submit")
    page.wait_for_load_state()
    assert "2件の電話番号のパスワードを変更しました" in page.content()
    log_out(page)
    log_in(page, live_web.base_url, "0355501017", "xyz2468a")
    assert path(page) == "/otp/choice"
