"""Changing the authentication unit on the web (seed 003 P14–P21), against the real core."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.fixtures.web import WebDatabase
from tests.web.helpers import first_login, home_numbers, login, post_form

CONTRACT = "0300001111"
ADDITIONAL = "0300002222"
TEMP = "48151623"
NEW = "abc13579"
OTHER = "xyz24680"


def test_line_to_number_keeps_the_password_for_every_number(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    page = web_client.get("/settings/unit")
    assert "電話番号単位" in page.text and "管理者/ユーザ単位" in page.text
    page = web_client.get("/settings/unit/number")
    assert "「回線単位」から「電話番号単位」に変更します" in page.text
    assert 'name="password_0300001111"' in page.text and 'name="password_0300002222"' not in page.text
    page = post_form(web_client, page, "/settings/unit/number", {"password_0300001111": "wrong999"})
    assert page.status_code == 400 and "0300001111 のパスワードが正しくありません" in page.text
    page = post_form(web_client, page, "/settings/unit/number", {"password_0300001111": NEW})
    assert "「電話番号単位」に変更しました" in page.text
    assert web_client.get("/home").url.path == "/login"  # logged out: log in under the new unit
    page = login(web_client, ADDITIONAL, NEW)
    assert page.url.path == "/otp/choice"
    web_client.cookies.clear()
    page = login(web_client, CONTRACT, NEW)
    assert page.url.path == "/home" and home_numbers(page) == [CONTRACT]


def test_number_to_line_asks_every_numbers_password(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="number")
    web_database.set_temporary_password(ADDITIONAL, "62840517", unit="number")
    first_login(web_client, CONTRACT, TEMP, NEW)
    web_client.cookies.clear()
    first_login(web_client, ADDITIONAL, "62840517", OTHER)
    page = web_client.get("/settings/unit/line")
    assert 'name="password_0300001111"' in page.text and 'name="password_0300002222"' in page.text
    page = post_form(web_client, page, "/settings/unit/line", {"password_0300001111": NEW})
    assert page.status_code == 400 and "0300002222 のパスワードを入力してください" in page.text
    page = post_form(
        web_client,
        page,
        "/settings/unit/line",
        {"password_0300001111": "bad12345", "password_0300002222": OTHER},
    )
    assert page.status_code == 400 and "0300001111 のパスワードが正しくありません" in page.text
    page = post_form(
        web_client, page, "/settings/unit/line", {"password_0300001111": NEW, "password_0300002222": OTHER}
    )
    assert "「回線単位」に変更しました" in page.text
    # Line unit: the contract number logs in, with the password the login used (0300002222's).
    page = login(web_client, CONTRACT, OTHER)
    assert page.url.path == "/home" and home_numbers(page) == [CONTRACT, ADDITIONAL]
    web_client.cookies.clear()
    assert login(web_client, ADDITIONAL, OTHER).status_code == 401


def test_a_user_cannot_change_the_unit(web_client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(ADDITIONAL, "62840517", unit="admin_user")
    page = first_login(web_client, ADDITIONAL, "62840517", OTHER)
    assert "/settings/unit" not in page.text
    assert web_client.get("/settings/unit").status_code == 403
    page = web_client.get("/home")
    page = post_form(web_client, page, "/settings/unit/line", {"password_0300002222": OTHER})
    assert page.url.path == "/settings/unit"
    web_client.cookies.clear()
    assert login(web_client, ADDITIONAL, OTHER).url.path == "/home"  # still admin/user unit
