"""The support site's pages over HTTP (Starlette's test client; mail through a real aiosmtpd server):
registration with a 24 h link, login, idle logout, forgotten password, My menu settings, the
3-destination limit, the 30-minute rule, confirmation, 配信再開, CSRF and lockout."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.notice_models import NoticeDestination, SupportAccount
from core.secrets import SecretHasher
from notices import accounts, rules
from notices.web import create_support_app
from stack.settings import Settings
from tests.fixtures.web import FakeClock, SmtpServer
from web_stub.settings import SmtpSettings

from .test_delivery import CATALOG

EMAIL = "yamada.taro@example.ne.jp"
PASSWORD = "abc13579"


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url  # pages over one backend; the queue runs on both elsewhere


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(
    db_url: str,
    db_sessions: sessionmaker[Session],
    smtp_server: SmtpServer,
    clock: FakeClock,
    fast_hasher: SecretHasher,
) -> Iterator[TestClient]:
    settings = Settings(
        database_url=db_url,
        smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port, timeout_seconds=5),
        notices={"base_url": "http://testserver"},
    )
    app = create_support_app(settings, db_sessions, clock=clock, hasher=fast_hasher)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def link_in(smtp: SmtpServer, n: int, path: str) -> str:
    body = smtp.sink.body(smtp.sink.wait_for(n))
    found = re.search(rf"http://testserver({re.escape(path)}\?token=[A-Za-z0-9_-]+)", body)
    assert found, body
    return found.group(1)


def register(client: TestClient, smtp: SmtpServer, email: str = EMAIL, mail_no: int = 1) -> None:
    page = client.get("/support/register")
    sent = client.post("/support/register", data={"email": email, "csrf_token": csrf(page.text)})
    assert sent.status_code == 200 and "仮登録確認メールを送信しました" in sent.text
    link = link_in(smtp, mail_no, "/support/register/complete")
    form = client.get(link)
    assert form.status_code == 200 and email in form.text
    token = link.split("token=")[1]
    done = client.post(
        "/support/register/complete",
        data={
            "csrf_token": csrf(form.text),
            "token": token,
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "name": "山田 太郎",
            "birth_date": "1985-04-01",
        },
    )
    assert done.status_code == 200 and "本登録が完了しました" in done.text, done.text


def login(client: TestClient, email: str = EMAIL, password: str = PASSWORD) -> object:
    page = client.get("/support/login")
    return client.post(
        "/support/login", data={"email": email, "password": password, "csrf_token": csrf(page.text)}
    )


def menu_token(client: TestClient) -> str:
    page = client.get("/support/mymenu")
    assert page.status_code == 200 and "マイメニュー" in page.text
    return csrf(page.text)


def test_registration_login_settings_and_logout(
    client: TestClient,
    smtp_server: SmtpServer,
    db_sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    register(client, smtp_server)
    with db_sessions() as session:
        account = session.scalars(select(SupportAccount).where(SupportAccount.login_email == EMAIL)).one()
        assert account.state == "active" and account.password_hash and PASSWORD not in account.password_hash
    assert login(client, password="wrong1234").status_code == 401  # type: ignore[attr-defined]
    menu = login(client)
    assert menu.status_code == 200 and "マイメニュー" in menu.text  # type: ignore[attr-defined]
    assert "商品が1つも選択されていないと、メールは配信されません" in menu.text  # type: ignore[attr-defined]
    saved = client.post(
        "/support/mymenu/settings",
        data={
            "csrf_token": menu_token(client),
            "product": ["hikari-denwa"],
            "day": ["0", "4"],
            "hour": ["9", "10"],
        },
    )
    assert "配信設定を保存しました" in saved.text and 'id="no-products"' not in saved.text
    with db_sessions() as session:
        account = session.scalars(select(SupportAccount).where(SupportAccount.login_email == EMAIL)).one()
        assert (account.delivery_days, account.delivery_hours) == (
            rules.days_mask([0, 4]),
            rules.hours_mask([9, 10]),
        )
        assert accounts.products_of_account(session, account.id) == ["hikari-denwa"]
    # an unknown product or hour is refused, nothing changed
    bad = client.post("/support/mymenu/settings", data={"csrf_token": menu_token(client), "product": ["x"]})
    assert bad.status_code == 400
    # a form without the session's CSRF token is refused
    assert client.post("/support/mymenu/settings", data={"csrf_token": "forged"}).status_code == 403
    out = client.post("/support/logout", data={"csrf_token": menu_token(client)})
    assert "ログアウトしました" in out.text
    assert client.get("/support/mymenu", follow_redirects=False).status_code == 303
    logged = capsys.readouterr()
    assert "support_login" in logged.out + logged.err and PASSWORD not in logged.out + logged.err
    assert "token=" not in logged.out + logged.err  # no link token in any log line


def test_members_only_notices_show_after_login(
    client: TestClient, smtp_server: SmtpServer, db_sessions: sessionmaker[Session]
) -> None:
    from datetime import UTC, datetime

    from notices import queue

    with db_sessions() as session, session.begin():
        draft = queue.NoticeDraft(
            kind="maintenance",
            status="scheduled",
            title="会員向け工事",
            area="",
            body="本文",
            products=("hikari-denwa",),
            public=False,
        )
        notice_id = queue.post_notice(
            session, draft, posted_by="t", now=datetime.now(UTC), catalog=CATALOG
        ).id
    assert "会員向け工事" not in client.get("/support/notices").text
    assert client.get(f"/support/notices/{notice_id}").status_code == 404
    register(client, smtp_server)
    login(client)
    assert "会員向け工事" in client.get("/support/notices").text
    assert client.get(f"/support/notices/{notice_id}").status_code == 200


def test_registering_an_existing_support_id_reveals_nothing_on_the_page(
    client: TestClient, smtp_server: SmtpServer
) -> None:
    register(client, smtp_server)
    page = client.get("/support/register")
    again = client.post("/support/register", data={"email": EMAIL, "csrf_token": csrf(page.text)})
    assert "仮登録確認メールを送信しました" in again.text  # the same page as for a new address
    mail = smtp_server.sink.body(smtp_server.sink.wait_for(2))
    assert "すでにお客さまサポートIDとして登録されています" in mail and "token=" not in mail


def test_the_registration_link_is_valid_24_hours_and_once(
    client: TestClient, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    page = client.get("/support/register")
    client.post("/support/register", data={"email": EMAIL, "csrf_token": csrf(page.text)})
    link = link_in(smtp_server, 1, "/support/register/complete")
    clock.advance(hours=24, seconds=1)
    assert client.get(link).status_code == 400
    assert "有効期限" in client.get(link).text


def test_idle_logout_and_password_reset_end_sessions(
    client: TestClient, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    register(client, smtp_server)
    login(client)
    clock.advance(minutes=16)
    ended = client.get("/support/mymenu")
    assert "一定時間操作がなかったため、ログアウトしました" in ended.text
    login(client)
    page = client.get("/support/password/forgot")
    client.post("/support/password/forgot", data={"email": EMAIL, "csrf_token": csrf(page.text)})
    link = link_in(smtp_server, 2, "/support/password/reset")
    form = client.get(link)
    weak = client.post(
        "/support/password/reset",
        data={
            "csrf_token": csrf(form.text),
            "token": link.split("token=")[1],
            "password": "abcd1234",
            "password_confirm": "abcd1234",
        },
    )
    assert weak.status_code == 400 and "連続した文字列" in weak.text
    reset = client.post(
        "/support/password/reset",
        data={
            "csrf_token": csrf(form.text),
            "token": link.split("token=")[1],
            "password": "xyz97531",
            "password_confirm": "xyz97531",
        },
    )
    assert "パスワードを再設定しました" in reset.text
    assert client.get("/support/mymenu", follow_redirects=False).status_code == 303  # the old session ended
    assert login(client, password=PASSWORD).status_code == 401  # type: ignore[attr-defined]
    assert login(client, password="xyz97531").status_code == 200  # type: ignore[attr-defined]
    # an unknown address gets the same page and no mail
    page = client.get("/support/password/forgot")
    same = client.post(
        "/support/password/forgot", data={"email": "nobody@example.jp", "csrf_token": csrf(page.text)}
    )
    assert "ご登録のお客さまサポートIDであれば" in same.text and len(smtp_server.sink.messages) == 2


def test_three_destinations_at_most_the_30_minute_rule_confirmation_and_resume(
    client: TestClient, smtp_server: SmtpServer, clock: FakeClock, db_sessions: sessionmaker[Session]
) -> None:
    register(client, smtp_server)
    login(client)
    add = lambda address: client.post(  # noqa: E731
        "/support/mymenu/destinations", data={"csrf_token": menu_token(client), "address": address}
    )
    first = add("one@example.jp")
    assert "仮登録確認メールを送信しました" in first.text and "仮登録中" in first.text
    link = link_in(smtp_server, 2, "/support/destinations/confirm")
    # the same address again within 30 minutes: already pending, try after 30 minutes; no new mail
    again = add("one@example.jp")
    assert again.status_code == 409 and "30分経過後、もう一度お試しください" in again.text
    assert len(smtp_server.sink.messages) == 2
    clock.advance(minutes=30)
    login(client)  # (idle logout after 15 minutes)
    resent = add("one@example.jp")
    assert "仮登録確認メールを送信しました" in resent.text
    assert client.get(link).status_code == 200  # the page asks for a click; the old link is void now
    page = client.get(link)
    void = client.post(
        "/support/destinations/confirm",
        data={"csrf_token": csrf(page.text), "token": link.split("token=")[1]},
    )
    assert void.status_code == 400
    new_link = link_in(smtp_server, 3, "/support/destinations/confirm")
    page = client.get(new_link)
    confirmed = client.post(
        "/support/destinations/confirm",
        data={"csrf_token": csrf(page.text), "token": new_link.split("token=")[1]},
    )
    assert "配信先の登録が完了しました" in confirmed.text
    add("two@example.jp")
    stopped_id = None
    with db_sessions() as session, session.begin():
        for dest in session.scalars(select(NoticeDestination)):
            if dest.address == "two@example.jp":
                dest.state, stopped_id = "stopped", dest.id  # as three failures leave it
    third = add("three@example.jp")
    assert "仮登録確認メールを送信しました" in third.text
    fourth = add("four@example.jp")
    assert fourth.status_code == 400 and "最大3つまで" in fourth.text
    page = client.get("/support/mymenu").text
    assert (
        page.count("<tr data-address=") == 3
        and "配信停止" in page
        and "配信中" in page
        and "仮登録中" in page
    )
    resumed = client.post(
        f"/support/mymenu/destinations/{stopped_id}/resume", data={"csrf_token": menu_token(client)}
    )
    assert "配信を再開しました" in resumed.text
    with db_sessions() as session:
        assert session.get(NoticeDestination, stopped_id).state == "delivering"  # type: ignore[union-attr]


def test_expired_links_and_abandoned_provisional_ids_are_swept(
    client: TestClient, smtp_server: SmtpServer, clock: FakeClock, db_sessions: sessionmaker[Session]
) -> None:
    from datetime import timedelta

    from core.notice_models import SupportLink

    page = client.get("/support/register")
    client.post("/support/register", data={"email": "abandoned@example.jp", "csrf_token": csrf(page.text)})
    register(client, smtp_server, mail_no=2)  # a completed one keeps its account
    with db_sessions() as session, session.begin():
        assert accounts.sweep_expired(session, now=clock() + timedelta(hours=47)) == 0  # < 1 day past
    with db_sessions() as session, session.begin():
        assert accounts.sweep_expired(session, now=clock() + timedelta(days=6)) == 2  # the two links
    with db_sessions() as session, session.begin():
        assert accounts.sweep_expired(session, now=clock() + timedelta(days=8)) == 1  # the abandoned ID
    with db_sessions() as session:
        assert [a.login_email for a in session.scalars(select(SupportAccount))] == [EMAIL]
        assert session.scalars(select(SupportLink)).all() == []


def test_wrong_passwords_lock_the_support_id_for_the_window(
    client: TestClient, smtp_server: SmtpServer
) -> None:
    register(client, smtp_server)
    for _ in range(10):
        assert login(client, password="wrong1234").status_code == 401  # type: ignore[attr-defined]
    locked = login(client)
    assert locked.status_code == 403 and "しばらくログインできません" in locked.text  # type: ignore[attr-defined]


def test_anonymous_forms_need_their_token(client: TestClient) -> None:
    refused = client.post("/support/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": "x"})
    assert refused.status_code == 403


def test_a_customer_retrying_as_the_faq_says_is_not_refused_by_the_mail_budget(
    client: TestClient, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """「もう一度操作をおこなうと、すでに登録されているというメッセージが表示されます」→
    「30分経過後、もう一度お試しください」: the refused retries sent nothing, so they spent nothing
    of the address's budget (5 mails an hour); the retry after 30 minutes mails a new link."""
    register(client, smtp_server)
    login(client)
    add = lambda: client.post(  # noqa: E731
        "/support/mymenu/destinations", data={"csrf_token": menu_token(client), "address": "one@example.jp"}
    )
    assert "仮登録確認メールを送信しました" in add().text
    for _ in range(4):  # the confirmation mail does not come; the customer tries again and again
        again = add()
        assert again.status_code == 409 and "30分経過後、もう一度お試しください" in again.text
    assert len(smtp_server.sink.messages) == 2  # the registration's and the first confirmation
    clock.advance(minutes=30)
    login(client)
    after = add()
    assert after.status_code == 200 and "仮登録確認メールを送信しました" in after.text
    assert link_in(smtp_server, 3, "/support/destinations/confirm")
