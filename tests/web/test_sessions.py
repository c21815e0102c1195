"""Sessions in the credential database: keyed by a hash of the cookie, ended when what they were
opened with changes (password, temporary password by phone, unit), idle and absolute expiry,
nothing secret in a row, and a cookieless flood costs no row."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, text
from starlette.testclient import TestClient

from core.web_models import LoginSession
from core.web_sessions import count_sessions, session_id_hash
from tests.fixtures.web import FakeClock, SmtpServer, WebDatabase
from tests.web.helpers import first_login, home_numbers, login, post_form

CONTRACT = "0300001111"
ADDITIONAL = "0300002222"
TEMP = "48151623"
NEW = "abc13579"
NEWER = "xyz24680"


def rows(db: WebDatabase) -> list[LoginSession]:
    with db.session_factory() as session:
        return list(session.scalars(select(LoginSession)))


def count(db: WebDatabase) -> int:
    with db.session_factory() as session:
        return count_sessions(session)


def browser(app: Any) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=True)


@contextmanager
def logged_in_twice(web_app: Any, web_client: TestClient, web_database: WebDatabase) -> Iterator[TestClient]:
    """The contract (line unit) logged in with its own password on ``web_client`` and in another
    browser, which is yielded."""
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    with browser(web_app) as other:
        assert login(other, CONTRACT, NEW).url.path == "/home"
        yield other


def test_the_row_is_keyed_by_a_hash_of_the_cookie_and_holds_no_cookie(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    cookie = web_client.cookies.get("ivr_session")
    assert cookie
    [row] = rows(web_database)
    assert row.id_hash == session_id_hash(cookie) and cookie not in repr(vars(row))
    with web_database.session_factory() as session:
        dump = repr(session.execute(text("SELECT * FROM web_sessions")).all())
    assert cookie not in dump


def test_a_password_change_ends_the_other_sessions_of_that_credential(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    with logged_in_twice(web_app, web_client, web_database) as other:
        page = web_client.get("/password")
        page = post_form(
            web_client,
            page,
            "/password",
            {"current_password": NEW, "new_password": NEWER, "new_password_confirm": NEWER},
        )
        assert "パスワードを変更しました" in page.text
        assert web_client.get("/home").url.path == "/home"  # the one making the change continues
        page = other.get("/home")
        assert page.url.path == "/login" and "パスワードが変更されたため" in page.text


def test_a_phone_reset_ends_that_numbers_sessions_and_the_contract_numbers_ends_all(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="number")
    web_database.set_temporary_password(ADDITIONAL, "62840517", unit="number")
    first_login(web_client, CONTRACT, TEMP, NEW)
    with browser(web_app) as additional:
        first_login(additional, ADDITIONAL, "62840517", NEWER)
        web_database.set_temporary_password(ADDITIONAL, "13572468", unit="number")  # reset of 2222
        assert additional.get("/home").url.path == "/login"
        assert web_client.get("/home").url.path == "/home"  # the contract number's session stays
        additional.cookies.clear()
        page = login(additional, ADDITIONAL, "13572468")
        assert page.url.path == "/password/required"
        page = post_form(
            additional,
            page,
            "/password/required",
            {"current_password": "13572468", "new_password": NEWER, "new_password_confirm": NEWER},
        )
        assert additional.get("/home").url.path == "/home"
        web_database.set_temporary_password(CONTRACT, "97531864", unit="number")  # reset of the contract
        assert web_client.get("/home").url.path == "/login"
        assert additional.get("/home").url.path == "/login"  # every session of the contract


def test_a_unit_change_ends_every_session_of_the_contract(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    with logged_in_twice(web_app, web_client, web_database) as other:
        page = web_client.get("/settings/unit/number")
        page = post_form(web_client, page, "/settings/unit/number", {"password_0300001111": NEW})
        assert "「電話番号単位」に変更しました" in page.text
        page = other.get("/home")
        assert page.url.path == "/login" and "認証単位が変更されたため" in page.text


def test_sessions_have_an_absolute_lifetime(
    web_client: TestClient, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    for _ in range(47):  # active every 10 minutes: never idle
        web_clock.advance(minutes=10)
        assert web_client.get("/home").url.path == "/home"
    web_clock.advance(minutes=10)  # 8 h after the login
    page = web_client.get("/home")
    assert page.url.path == "/login" and "一定の時間が経過したため" in page.text


def test_idle_expiry_and_bounded_sweep_of_expired_rows(
    web_app: Any, web_client: TestClient, web_database: WebDatabase, web_clock: FakeClock
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    for _ in range(5):
        with browser(web_app) as other:
            assert login(other, CONTRACT, NEW).url.path == "/home"
    assert count(web_database) == 6
    web_clock.advance(minutes=16)
    with browser(web_app) as late:
        assert login(late, CONTRACT, NEW).url.path == "/home"  # a login sweeps what has expired
    assert count(web_database) == 1


def test_a_cookieless_flood_costs_no_row_and_leaves_a_session_alive(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    """The store does not grow at all per cookieless request, so 2,000 requests stand for 100,000."""
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    before = count(web_database)
    with TestClient(web_app, base_url="http://127.0.0.1") as flood:
        for _ in range(2000):
            flood.cookies.clear()
            assert flood.get("/login").status_code == 200
    assert count(web_database) == before == 1
    assert web_client.get("/home").url.path == "/home"


def test_a_registration_draft_keeps_no_secret_in_plain_text(
    web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    from tests.web.test_otp import CID, CPW, register_form, start_with_otp

    page = start_with_otp(web_client, web_database)
    page = post_form(web_client, page, "/otp/register", register_form())
    assert page.url.path == "/otp/register/confirm" and CID in page.text  # shown to its browser
    with web_database.session_factory() as session:
        dump = repr(session.execute(text("SELECT * FROM web_sessions")).all())
    assert "taro@example.jp" in dump  # the draft is there …
    assert CID not in dump and CPW not in dump  # … but its secrets are sealed
    page = post_form(web_client, page, "/otp/register/confirm", {})
    assert "仮登録完了" in page.text


def test_home_still_lists_the_numbers_after_a_reload_from_the_store(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    first_login(web_client, CONTRACT, TEMP, NEW)
    assert home_numbers(web_client.get("/home")) == [CONTRACT, ADDITIONAL]


def test_sealed_drafts_are_aes_gcm_bound_to_their_cookie() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from web_stub.sessions import SEAL_VERSION, _derive, _unb64, new_cookie_value, seal, unseal

    cookie, other = new_cookie_value(), new_cookie_value()
    secret = "Abcd1234 確認".encode()
    sealed = seal(cookie, secret)
    raw = _unb64(sealed)
    assert raw[:1] == SEAL_VERSION and secret not in raw
    # it is AES-256-GCM, as the cryptography library opens it: nonce, then ciphertext and tag
    assert AESGCM(_derive(cookie, b"seal")).decrypt(raw[1:13], raw[13:], b"ivr-web-session-draft") == secret
    assert unseal(cookie, sealed) == secret
    assert seal(cookie, secret) != sealed  # a fresh nonce each time
    assert unseal(other, sealed) is None  # another session's cookie opens nothing
    tampered = bytearray(raw)
    tampered[-1] ^= 1
    assert unseal(cookie, base64.urlsafe_b64encode(bytes(tampered)).decode()) is None
    assert unseal(cookie, "not base64 !") is None and unseal(cookie, "AAAA") is None
    # a draft sealed by the hand-written cipher before the upgrade is dropped, not misread
    legacy = base64.urlsafe_b64encode(b"\x00" * 16 + b"x" * 10 + b"\x00" * 32).decode()
    assert unseal(cookie, legacy) is None
