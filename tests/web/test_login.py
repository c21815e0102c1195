"""The web login over HTTP (Starlette TestClient) against the real credential core on SQLite.

Temporary passwords are set with core's ``set_temporary_password``, as the phone line does.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.fixtures.web import FakeClock, WebDatabase
from tests.web.helpers import (
    change_required_password,
    first_login,
    home_numbers,
    login,
    post_form,
)

CONTRACT = "0300001111"
ADDITIONAL = "0300002222"
TEMP = "48151623"
NEW = "abc13579"
NEWER = "xyz24680"
INVALIDATED = "credential_invalidated"


def api_login(client: Any, number: str, password: str) -> Any:
    return client.post("/api/login", json={"number": number, "password": password})


# ------------------------------------------------------------------ JSON API
def test_api_temporary_password_leads_to_change_with_a_safe_cookie(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    response = api_login(web_client, CONTRACT, TEMP)
    assert response.status_code == 200
    assert response.json()["next"] == "change_password"
    cookie = response.headers["set-cookie"]
    assert "ivr_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # WebSettings.cookie_secure is off by default (plain HTTP on loopback)
    session = web_client.get("/api/session").json()
    assert session["number"] == CONTRACT and session["next"] == "change_password"


def test_api_wrong_password_and_unknown_number_answer_alike(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    wrong = api_login(web_client, CONTRACT, "00000000")
    unknown = api_login(web_client, "0399999999", "00000000")
    garbage = api_login(web_client, "not-a-number", "00000000")
    assert wrong.status_code == unknown.status_code == garbage.status_code == 401
    assert wrong.content == unknown.content == garbage.content
    assert "set-cookie" not in wrong.headers


def test_api_rejects_non_json(web_client: TestClient) -> None:
    response = web_client.post("/api/login", data={"number": CONTRACT, "password": TEMP})
    assert response.status_code == 415
    response = web_client.post("/api/login", json={"number": CONTRACT})
    assert response.status_code == 400


def test_three_wrong_temporary_attempts_invalidate_it(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    for _ in range(2):
        assert api_login(web_client, CONTRACT, "11112222").status_code == 401
    third = api_login(web_client, CONTRACT, "11112222")  # the attempt that uses the last try says so
    assert third.status_code == 403 and third.json()["error"] == INVALIDATED
    refused = api_login(web_client, CONTRACT, TEMP)
    assert refused.status_code == 403
    assert refused.json()["error"] == INVALIDATED
    assert "03-6304-4747" in refused.json()["message"]
    # A new temporary password by phone is the way back.
    web_database.set_temporary_password(CONTRACT, "86420975", unit="line")
    assert api_login(web_client, CONTRACT, "86420975").json()["next"] == "change_password"


def test_two_wrong_then_right_temporary_password_still_works(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    for _ in range(2):
        assert api_login(web_client, CONTRACT, "11112222").status_code == 401
    assert api_login(web_client, CONTRACT, TEMP).status_code == 200


def test_temporary_password_expires_after_24_hours(
    web_client: TestClient, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    web_clock.advance(hours=23, minutes=59)
    assert api_login(web_client, CONTRACT, TEMP).status_code == 200
    web_client.cookies.clear()
    web_clock.advance(minutes=1)
    refused = api_login(web_client, CONTRACT, TEMP)
    assert refused.status_code == 403
    assert refused.json()["error"] == "temporary_expired"
    assert "24時間" in refused.json()["message"] and "03-6304-4747" in refused.json()["message"]


def test_ten_wrong_attempts_invalidate_a_password_and_the_right_one_then_fails(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    web_client.cookies.clear()
    for _ in range(9):
        assert api_login(web_client, CONTRACT, "wrong1234").status_code == 401
    assert api_login(web_client, CONTRACT, "wrong1234").status_code == 403
    refused = api_login(web_client, CONTRACT, NEW)
    assert refused.status_code == 403
    assert refused.json()["error"] == INVALIDATED


def test_nine_wrong_attempts_leave_the_password_usable(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    web_client.cookies.clear()
    for _ in range(9):
        assert api_login(web_client, CONTRACT, "wrong1234").status_code == 401
    assert api_login(web_client, CONTRACT, NEW).json()["next"] == "home"


def test_a_success_in_between_resets_the_count(web_client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    for _ in range(3):
        web_client.cookies.clear()
        for _ in range(9):
            assert api_login(web_client, CONTRACT, "wrong1234").status_code == 401
        web_client.cookies.clear()
        assert api_login(web_client, CONTRACT, NEW).status_code == 200


def test_a_new_browser_session_does_not_reset_the_count(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    for _ in range(5):
        with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as browser:
            for _ in range(2):
                assert login(browser, CONTRACT, "wrong1234").status_code in (401, 403)
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as browser:
        page = login(browser, CONTRACT, NEW)
        assert page.status_code == 403
        assert "無効" in page.text and "03-6304-4747" in page.text


# ------------------------------------------------------------------ forced change: every rule's message
RULE_CASES = [
    ("abc1357", "8桁～12桁"),
    ("abc1357924680", "8桁～12桁"),
    ("abcdefghjk", "英字のみ"),
    ("13572468", "数字のみ"),
    ("abc1357!", "半角英数字"),
    ("abc13５79", "半角英数字"),
    ("a1111b2c", "0000、aaaa"),
    ("xaaaa13b", "0000、aaaa"),
    ("x1234y5z", "1234、abcd"),
    ("ab8765cd", "4321、dcba"),
    ("abcd1357", "1234、abcd"),
    ("ab0300001111", "電話番号を含む"),
]


@pytest.mark.parametrize(("new_password", "expected"), RULE_CASES)
def test_forced_change_names_the_broken_rule(
    web_client: TestClient, web_database: WebDatabase, new_password: str, expected: str
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    page = login(web_client, CONTRACT, TEMP)
    assert page.url.path == "/password/required"
    page = change_required_password(web_client, page, TEMP, new_password)
    assert page.status_code == 400
    assert page.url.path == "/password/required"
    assert expected in page.text, page.text
    # Nothing was changed: the temporary password still logs in.
    web_client.cookies.clear()
    assert login(web_client, CONTRACT, TEMP).url.path == "/password/required"


def test_forced_change_refuses_the_same_password_and_a_mismatch(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    page = web_client.get("/password")
    page = post_form(
        web_client,
        page,
        "/password",
        {"current_password": NEW, "new_password": NEW, "new_password_confirm": NEW},
    )
    assert page.status_code == 400 and "現在のパスワードと同一" in page.text
    page = post_form(
        web_client,
        page,
        "/password",
        {"current_password": NEW, "new_password": NEWER, "new_password_confirm": "xyz24681"},
    )
    assert page.status_code == 400 and "一致しません" in page.text
    page = post_form(
        web_client,
        page,
        "/password",
        {"current_password": "abc99999", "new_password": NEWER, "new_password_confirm": NEWER},
    )
    assert page.status_code == 400 and "現在のパスワードが正しくありません" in page.text
    page = post_form(
        web_client,
        page,
        "/password",
        {"current_password": NEW, "new_password": NEWER, "new_password_confirm": NEWER},
    )
    assert page.status_code == 200 and "パスワードを変更しました" in page.text
    web_client.cookies.clear()
    assert login(web_client, CONTRACT, NEW).status_code == 401
    assert login(web_client, CONTRACT, NEWER).url.path == "/home"


def test_nothing_but_the_change_is_reachable_before_it(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    login(web_client, CONTRACT, TEMP)
    for path in ("/home", "/otp/choice", "/otp/send", "/settings/otp", "/password"):
        assert web_client.get(path).url.path == "/password/required"


# ------------------------------------------------------------------ home per unit (seed P3 example)
UNIT_CASES = [
    ("line", CONTRACT, [CONTRACT, ADDITIONAL], "回線単位"),
    ("number", CONTRACT, [CONTRACT], "電話番号単位"),
    ("number", ADDITIONAL, [ADDITIONAL], "電話番号単位"),
    ("admin_user", CONTRACT, [CONTRACT, ADDITIONAL], "管理者/ユーザ単位"),
    ("admin_user", ADDITIONAL, [ADDITIONAL], "管理者/ユーザ単位"),
]


@pytest.mark.parametrize(("unit", "number", "expected", "label"), UNIT_CASES)
def test_home_lists_exactly_the_numbers_of_the_login(
    web_client: TestClient,
    web_database: WebDatabase,
    unit: str,
    number: str,
    expected: list[str],
    label: str,
) -> None:
    web_database.set_temporary_password(number, TEMP, unit=unit)
    page = first_login(web_client, number, TEMP, NEW)
    assert home_numbers(page) == expected
    assert label in page.text
    if ADDITIONAL in expected:
        row = page.text.split(f'data-number="{ADDITIONAL}"')[1].split("</tr>")[0]
        assert "着信お知らせメール" in row and "FAXお知らせメール" in row
    if CONTRACT in expected:
        row = page.text.split(f'data-number="{CONTRACT}"')[1].split("</tr>")[0]
        assert "着信お知らせメール" in row and "FAXお知らせメール" not in row
    api = web_client.get("/api/session").json()
    assert [n["number"] for n in api["numbers"]] == expected


def test_line_unit_does_not_log_in_with_an_additional_number(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    assert api_login(web_client, ADDITIONAL, TEMP).status_code == 401


# ------------------------------------------------------------------ sessions, CSRF, logout
def test_login_gives_a_new_session_id(web_client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    page = web_client.get("/login")
    assert web_client.cookies.get("ivr_session") is None  # the login form needs no session
    post_form(web_client, page, "/login", {"number": CONTRACT, "password": TEMP})
    after = web_client.cookies.get("ivr_session")
    assert after
    # A planted value is worthless.
    web_client.cookies.clear()
    web_client.cookies.set("ivr_session", "planted-by-an-attacker")
    assert web_client.get("/password/required").url.path == "/login"
    web_client.cookies.clear()
    web_client.get("/login")
    # The login that completes gets yet another value; the one before it is worthless.
    web_client.cookies.set("ivr_session", after, domain="127.0.0.1")
    page = web_client.get("/password/required")
    page = change_required_password(web_client, page, TEMP, NEW)
    page = post_form(web_client, page, "/otp/choice", {"choice": "not_use"})
    page = post_form(web_client, page, "/otp/decline", {"agree": "1"})
    assert page.url.path == "/home"
    final = web_client.cookies.get("ivr_session")
    assert final and final != after
    web_client.cookies.clear()
    web_client.cookies.set("ivr_session", after)
    assert web_client.get("/home").url.path == "/login"


def test_forms_without_the_csrf_token_are_refused(web_client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    web_client.get("/login")
    refused = web_client.post("/login", data={"number": CONTRACT, "password": TEMP})
    assert refused.status_code == 403
    assert login(web_client, CONTRACT, TEMP).url.path == "/password/required"
    refused = web_client.post(
        "/password/required",
        data={
            "csrf_token": "forged",
            "current_password": TEMP,
            "new_password": NEW,
            "new_password_confirm": NEW,
        },
    )
    assert refused.status_code == 403
    web_client.cookies.clear()
    assert login(web_client, CONTRACT, TEMP).url.path == "/password/required"  # not changed


def test_idle_session_is_logged_out(
    web_client: TestClient, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    web_clock.advance(minutes=14)
    assert web_client.get("/home").url.path == "/home"
    web_clock.advance(minutes=15, seconds=1)
    page = web_client.get("/home")
    assert page.url.path == "/login"
    assert "自動的にログアウト" in page.text


def test_logout_ends_the_session(web_client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    page = first_login(web_client, CONTRACT, TEMP, NEW)
    cookie = web_client.cookies.get("ivr_session")
    page = post_form(web_client, page, "/logout", {})
    assert "ログアウトしました" in page.text
    web_client.cookies.set("ivr_session", cookie or "")
    assert web_client.get("/home").url.path == "/login"


def test_pages_carry_security_headers(web_client: TestClient) -> None:
    page = web_client.get("/login")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert '<html lang="ja">' in page.text


# ------------------------------------------------------------------ admin changes another number's (P12)
def test_admin_changes_the_password_of_an_additional_number(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="admin_user")
    web_database.set_temporary_password(ADDITIONAL, "62840517", unit="admin_user")
    first_login(web_client, CONTRACT, TEMP, NEW)
    page = web_client.get("/password")
    assert '<select id="target"' in page.text and ADDITIONAL in page.text
    page = post_form(
        web_client,
        page,
        "/password",
        {
            "target": ADDITIONAL,
            "current_password": "wrong123",
            "new_password": NEWER,
            "new_password_confirm": NEWER,
        },
    )
    assert page.status_code == 400 and "現在のパスワードが正しくありません" in page.text
    page = post_form(
        web_client,
        page,
        "/password",
        {
            "target": ADDITIONAL,
            "current_password": "62840517",
            "new_password": NEWER,
            "new_password_confirm": NEWER,
        },
    )
    assert page.status_code == 200 and f"{ADDITIONAL} のパスワードを変更しました" in page.text
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as user:
        page = login(user, ADDITIONAL, NEWER)
        assert page.url.path == "/otp/choice"  # a real password now: no forced change
    # The admin's own password is unchanged.
    web_client.cookies.clear()
    assert login(web_client, CONTRACT, NEW).url.path == "/home"


def test_a_user_cannot_change_another_numbers_password(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="admin_user")
    web_database.set_temporary_password(ADDITIONAL, "62840517", unit="admin_user")
    first_login(web_client, ADDITIONAL, "62840517", NEW)
    page = web_client.get("/password")
    assert '<select id="target"' not in page.text
    page = post_form(
        web_client,
        page,
        "/password",
        {"target": CONTRACT, "current_password": TEMP, "new_password": NEWER, "new_password_confirm": NEWER},
    )
    assert page.status_code == 403
    web_client.cookies.clear()
    assert login(web_client, CONTRACT, TEMP).url.path == "/password/required"  # untouched


def test_an_expired_password_forces_a_change(
    web_settings: Any, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    from stack.settings import CredentialPolicy
    from tests.fixtures.web import make_app

    settings = web_settings.model_copy(update={"credentials": CredentialPolicy(permanent_max_age_days=90)})
    app = make_app(settings, clock=web_clock)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=True) as client:
        web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
        first_login(client, CONTRACT, TEMP, NEW)
        client.cookies.clear()
        web_clock.advance(days=89)
        assert login(client, CONTRACT, NEW).url.path == "/home"
        client.cookies.clear()
        web_clock.advance(days=2)
        page = login(client, CONTRACT, NEW)
        assert page.url.path == "/password/required"
        assert "パスワードの有効期限が切れています" in page.text and "現在のパスワード" in page.text
        page = change_required_password(client, page, NEW, NEWER)
        assert page.url.path == "/home"  # OTP was already declined


def test_a_non_ascii_csrf_token_is_refused_not_a_crash(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_client.get("/login")
    refused = web_client.post("/login", data={"csrf_token": "トークン", "number": CONTRACT, "password": TEMP})
    assert refused.status_code == 403
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    assert api_login(web_client, CONTRACT, TEMP).status_code == 200
    logout = web_client.post("/api/logout", headers={"X-CSRF-Token": "é".encode("latin-1")})
    assert logout.status_code == 403
