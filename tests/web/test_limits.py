"""The limits of issue 10, each against the real core on SQLite: the per-client login throttle,
one-time codes and confirmation secrets counted per number across logins, request sizes, bounded
error pages, CSV formula injection and UTF-16 uploads."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from starlette.testclient import TestClient

from core.models import OtpSettings, PhoneNumber
from tests.fixtures.web import FakeClock, SmtpServer, WebDatabase, make_app
from tests.web.helpers import csrf_of, first_login, login, post_form
from tests.web.test_otp import CID, CPW, MAIL, NEW, NUMBER, register_form, registered_home, send_code
from web_stub.app import client_address

CONTRACT = "0300001111"
TEMP = "48151623"


def app_with(settings: Any, clock: FakeClock, **web: Any) -> Any:
    return make_app(settings.model_copy(update={"web": settings.web.model_copy(update=web)}), clock=clock)


def client_for(app: Any, address: str = "testclient") -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=True, client=(address, 50000))


# ------------------------------------------------------------------ per-client login throttle
def test_over_its_budget_a_client_gets_429_without_any_password_check(
    web_settings: Any, web_clock: FakeClock, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    app = app_with(web_settings, web_clock, login_failures_per_client=3)
    with client_for(app) as client:
        for number in ("0399999999", "0300002222", "0422001234"):  # any numbers count
            assert login(client, number, "wrong123").status_code == 401
        page = login(client, CONTRACT, TEMP)  # the right password, but over the budget
        assert page.status_code == 429
        assert page.headers["retry-after"] == "300"
        assert "しばらくの間ログインを受け付けていません" in page.text and "約5分" in page.text
        assert web_database.credential(CONTRACT).failures == 0  # not checked, not counted
        api = client.post("/api/login", json={"number": CONTRACT, "password": TEMP})
        assert api.status_code == 429 and api.json()["error"] == "too_many_attempts"
        assert api.headers["retry-after"] == "300"
        with client_for(app, "192.0.2.7") as neighbour:  # another client is not held up
            assert login(neighbour, CONTRACT, TEMP).url.path == "/password/required"
        web_clock.advance(seconds=300)
        assert login(client, CONTRACT, TEMP).url.path == "/password/required"


def test_successful_logins_do_not_spend_the_budget(
    web_settings: Any, web_clock: FakeClock, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    app = app_with(web_settings, web_clock, login_failures_per_client=3)
    with client_for(app) as client:
        first_login(client, CONTRACT, TEMP, NEW)
        for _ in range(5):
            client.cookies.clear()
            assert login(client, CONTRACT, NEW).url.path == "/home"
        for _ in range(3):
            client.cookies.clear()
            assert login(client, CONTRACT, "wrong123").status_code == 401
        assert login(client, CONTRACT, NEW).status_code == 429


def test_x_forwarded_for_is_believed_only_from_configured_proxies(
    web_settings: Any, web_clock: FakeClock, web_database: WebDatabase
) -> None:
    app = app_with(web_settings, web_clock, login_failures_per_client=2, trusted_proxies=["10.0.0.0/8"])
    with client_for(app, "203.0.113.9") as direct:  # not a proxy: its header is its own claim
        for hop in ("198.51.100.1", "198.51.100.2"):
            response = direct.post(
                "/api/login", json={"number": CONTRACT, "password": "x"}, headers={"x-forwarded-for": hop}
            )
            assert response.status_code == 401
        refused = direct.post(
            "/api/login",
            json={"number": CONTRACT, "password": "x"},
            headers={"x-forwarded-for": "198.51.100.3"},
        )
        assert refused.status_code == 429
    with client_for(app, "10.0.0.5") as proxy:  # a proxy: each forwarded client has its own budget
        for hop in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
            response = proxy.post(
                "/api/login", json={"number": CONTRACT, "password": "x"}, headers={"x-forwarded-for": hop}
            )
            assert response.status_code == 401
        spoofed = proxy.post(  # a forged left-most hop does not buy a new budget
            "/api/login",
            json={"number": CONTRACT, "password": "x"},
            headers={"x-forwarded-for": "1.2.3.4, 198.51.100.1"},
        )
        assert spoofed.status_code == 429


def test_client_address_rules() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert client_address("203.0.113.9", "1.1.1.1", trusted) == "203.0.113.9"
    assert client_address("10.1.1.1", "9.9.9.9, 198.51.100.1, 10.2.2.2", trusted) == "198.51.100.1"
    assert client_address("10.1.1.1", None, trusted) == "10.1.1.1"
    assert client_address("2001:db8:1:2:3:4:5:6", None, trusted) == "2001:db8:1:2::/64"
    assert client_address("::1", "garbage", trusted) == "garbage"


# ------------------------------------------------------------------ one-time codes across logins
def wrong_code(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def test_ten_wrong_codes_across_logins_invalidate_the_password(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    mails = 2
    for attempt in range(4):
        web_client.cookies.clear()
        page = login(web_client, NUMBER, NEW)
        assert page.url.path == "/otp/send", attempt
        mails += 1
        page, code = send_code(web_client, page, smtp_server, mails)
        for _ in range(3 if attempt < 3 else 1):
            page = post_form(web_client, page, "/otp/code", {"code": wrong_code(code)})
    assert page.status_code == 403 and "24時間に10回誤った" in page.text and "03-6304-4747" in page.text
    web_client.cookies.clear()
    refused = login(web_client, NUMBER, NEW)
    assert refused.status_code == 403 and "無効" in refused.text
    # The seed's way back: a new temporary password by phone; the count starts again.
    web_database.set_temporary_password(NUMBER, "62840517", unit="number")
    page = login(web_client, NUMBER, "62840517")
    assert page.url.path == "/password/required"


def test_code_mails_per_number_per_hour_are_limited(
    web_settings: Any, web_clock: FakeClock, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    app = app_with(web_settings, web_clock, otp_mails_per_number=2)
    with client_for(app) as client:
        registered_home(client, web_database, smtp_server)  # one code mail
        client.cookies.clear()
        page = login(client, NUMBER, NEW)
        page, _code = send_code(client, page, smtp_server, 3)  # the second
        page = client.get("/otp/send")
        refused = post_form(client, page, "/otp/send", {})
        assert refused.status_code == 429 and "1時間に2通まで" in refused.text
        assert len(smtp_server.sink.messages) == 3
        web_clock.advance(hours=1)  # (the idle session is gone by then: log in again)
        client.cookies.clear()
        page, code = send_code(client, login(client, NUMBER, NEW), smtp_server, 4)
        assert post_form(client, page, "/otp/code", {"code": code}).url.path == "/home"


# ------------------------------------------------------------------ confirmation ID / password
def check(client: TestClient, cid: str, cpw: str) -> Any:
    page = client.get("/otp/address-check")
    return post_form(
        client, page, "/otp/address-check", {"confirmation_id": cid, "confirmation_password": cpw}
    )


def test_five_wrong_confirmation_tries_across_logins_lock_the_settings_until_a_phone_reset(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    web_client.cookies.clear()
    assert login(web_client, NUMBER, NEW).url.path == "/otp/send"
    for _ in range(3):
        assert check(web_client, CID, "wrong1234").status_code == 400
    web_client.cookies.clear()  # a new login does not reset the count
    assert login(web_client, NUMBER, NEW).url.path == "/otp/send"
    page = web_client.get("/settings/otp/confirmation-id")  # not reachable before the code anyway
    assert check(web_client, CID, "wrong1234").status_code == 400
    locked = check(web_client, CID, "wrong1234")
    assert locked.status_code == 423 and "24時間に5回誤った" in locked.text
    assert check(web_client, CID, CPW).status_code == 423  # even the right ones now
    page, code = send_code(web_client, web_client.get("/otp/send"), smtp_server, 3)
    assert post_form(web_client, page, "/otp/code", {"code": code}).url.path == "/home"
    for path in ("/settings/otp/confirmation-id", "/settings/otp/confirmation-password", "/otp/address"):
        assert web_client.get(path).status_code == 423, path
    # A new temporary password by phone lifts the lock.
    web_database.set_temporary_password(NUMBER, "62840517", unit="number")
    web_client.cookies.clear()
    page = login(web_client, NUMBER, "62840517")
    page = post_form(
        web_client,
        page,
        "/password/required",
        {"current_password": "62840517", "new_password": "qwe97531", "new_password_confirm": "qwe97531"},
    )
    page, code = send_code(web_client, page, smtp_server, 4)
    assert post_form(web_client, page, "/otp/code", {"code": code}).url.path == "/home"
    assert web_client.get("/settings/otp/confirmation-id").status_code == 200


def test_changing_the_password_on_the_web_does_not_restart_the_confirmation_count(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    """The security round: the count restarted with each password change of the session, so a
    session could guess the confirmation ID and password 5 at a time, forever."""

    def wrong_current_id() -> Any:
        page = web_client.get("/settings/otp/confirmation-id")
        return post_form(
            web_client,
            page,
            "/settings/otp/confirmation-id",
            {"current": "wrong1234", "new": "newid5678", "new_confirm": "newid5678"},
        )

    registered_home(web_client, web_database, smtp_server)
    for _ in range(3):
        assert wrong_current_id().status_code == 400
    password = NEW
    for newer in ("xyz24680", "qrs13570"):  # two password changes in the same session
        page = post_form(
            web_client,
            web_client.get("/password"),
            "/password",
            {"current_password": password, "new_password": newer, "new_password_confirm": newer},
        )
        assert page.status_code == 200, page.text[-500:]
        password = newer
    assert wrong_current_id().status_code == 400  # the 4th
    assert wrong_current_id().status_code == 423  # the 5th locks, password changes or not


def test_wrong_current_confirmation_ids_on_the_change_page_count_too(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    for _ in range(5):
        page = web_client.get("/settings/otp/confirmation-id")
        page = post_form(
            web_client,
            page,
            "/settings/otp/confirmation-id",
            {"current": "wrong1234", "new": "newid5678", "new_confirm": "newid5678"},
        )
    assert page.status_code == 423
    assert web_client.get("/settings/otp/confirmation-password").status_code == 423


# ------------------------------------------------------------------ registration cannot be replaced
def test_a_registered_number_cannot_be_registered_again_by_post(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    page = registered_home(web_client, web_database, smtp_server)
    mails = len(smtp_server.sink.messages)
    assert web_client.get("/otp/register").url.path == "/home"
    page = post_form(
        web_client,
        page,
        "/otp/register",
        register_form(email="evil@example.jp", cid="evil1234", cpw="evil5678"),
    )
    assert page.url.path == "/home"
    confirm = web_client.post("/otp/register/confirm", data={"csrf_token": csrf_of(page)})
    assert confirm.url.path == "/home"
    assert len(smtp_server.sink.messages) == mails  # no link was mailed
    with web_database.session_factory() as session:
        settings = session.scalars(
            select(OtpSettings).join(PhoneNumber).where(PhoneNumber.number == NUMBER)
        ).one()
        assert settings.mail_address == MAIL
    assert check(web_client, CID, CPW).url.path == "/otp/address"  # the old secrets still hold


def test_the_core_refuses_a_second_registration() -> None:
    import inspect

    from core.otp import registration

    assert "replace_registered" in inspect.signature(registration.start_registration).parameters


def test_switching_off_needs_the_agreement_on_the_post(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(web_client, web_database, smtp_server)
    page = web_client.get("/settings/otp")
    page = post_form(web_client, page, "/settings/otp", {"use": "0"})
    assert page.url.path == "/settings/otp" and "同意する" in page.text


# ------------------------------------------------------------------ request sizes
def test_bodies_are_capped_by_route_before_parsing(web_client: TestClient, web_database: WebDatabase) -> None:
    page = web_client.get("/login")
    big = web_client.post(
        "/login", data={"csrf_token": csrf_of(page), "number": CONTRACT, "password": "x" * 10_000}
    )
    assert big.status_code == 413 and "大きすぎます" in big.text
    api = web_client.post("/api/login", json={"number": CONTRACT, "password": "x" * 200_000})
    assert api.status_code == 413 and api.json()["error"] == "payload_too_large"
    upload = web_client.post(
        "/password/bulk", data={"csrf_token": "x"}, files={"csv": ("a.csv", b"0" * 3_000_000, "text/csv")}
    )
    assert upload.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while it streams
        yield b"csrf_token=x&number=0300001111&password="
        for _ in range(100):
            yield b"y" * 1024

    streamed = web_client.post(
        "/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert streamed.status_code == 413


def test_a_password_longer_than_any_is_refused_without_hashing(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    refused = web_client.post("/api/login", json={"number": CONTRACT, "password": "1" * 2000})
    assert refused.status_code == 401
    assert web_database.credential(CONTRACT).failures == 0  # no check was made


# ------------------------------------------------------------------ bulk pages and downloads
ADMIN = "0355501000"


def admin_home(client: TestClient, db: WebDatabase) -> None:
    db.set_temporary_password(ADMIN, TEMP, unit="admin_user")
    first_login(client, ADMIN, TEMP, NEW)


def upload(client: TestClient, path: str, body: bytes) -> Any:
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_of(page)}, files={"csv": ("x.csv", body, "text/csv")})


def test_bulk_error_pages_are_bounded(web_client: TestClient, web_database: WebDatabase) -> None:
    admin_home(web_client, web_database)
    body = "".join(f"0399{n:06d},abc13579\r\n" for n in range(3000)).encode()
    page = upload(web_client, "/password/bulk", body)
    assert page.status_code == 400
    assert page.text.count("この手続きの対象の電話番号ではありません") == 1000
    assert "ほか2000件のエラーがあります" in page.text


def test_utf16_uploads_are_refused_as_an_encoding_error(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    admin_home(web_client, web_database)
    page = upload(web_client, "/password/bulk", "0355501001,def13579\r\n".encode("utf-16"))
    assert page.status_code == 400 and "文字コード" in page.text and "UTF-16" in page.text


FORMULA = "=cmd|'/Ccalc'!A1@evil.example"


def test_formula_addresses_are_refused_and_neutralised_in_downloads(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    admin_home(web_client, web_database)
    page = upload(
        web_client, "/settings/otp/bulk", f'"0355501001","1","{FORMULA}","abcd1234","pass1word"\r\n'.encode()
    )
    assert page.status_code == 400 and "メールアドレスの形式" in page.text
    # An address stored before this rule (or by another tool) is exported harmless.
    with web_database.session_factory() as session, session.begin():
        phone = session.scalars(select(PhoneNumber).where(PhoneNumber.number == "0355501001")).one()
        session.add(
            OtpSettings(
                phone_number_id=phone.id,
                usage="used",
                mail_address=FORMULA,
                registered_at=web_database.clock(),
            )
        )
    download = web_client.get("/settings/otp/bulk/download").content.decode()
    assert f'"\'{FORMULA}"' in download and f'"{FORMULA}"' not in download


def test_the_registration_form_refuses_a_formula_address(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    from tests.web.test_otp import start_with_otp

    page = start_with_otp(web_client, web_database)
    page = post_form(web_client, page, "/otp/register", register_form(email=FORMULA))
    assert page.status_code == 400 and "メールアドレスの形式" in page.text
