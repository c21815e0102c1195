"""The support site in Debian's chromium (Playwright): registration by the mailed link, My menu
settings, the 3-destination limit, the 30-minute rule, a stopped destination and 配信再開; the
same pages on a 375 px phone screen. Mail goes through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.notice_models import NoticeDestination
from core.secrets import SecretHasher
from notices.web import create_support_app
from stack.settings import Settings
from tests.fixtures.web import FakeClock, SmtpServer, free_port, screenshot
from web_stub.settings import SmtpSettings

pytestmark = pytest.mark.browser

EMAIL = "hanako.suzuki@example.jp"
PASSWORD = "hk24680s"


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def site(
    db_url: str,
    db_sessions: sessionmaker[Session],
    smtp_server: SmtpServer,
    clock: FakeClock,
    fast_hasher: SecretHasher,
) -> Iterator[str]:
    import uvicorn

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=db_url,
        smtp=SmtpSettings(host=smtp_server.host, port=smtp_server.port, timeout_seconds=5),
        notices={"base_url": base},
    )
    app = create_support_app(settings, db_sessions, clock=clock, hasher=fast_hasher)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def mailed_link(smtp: SmtpServer, n: int, path: str) -> str:
    body = smtp.sink.body(smtp.sink.wait_for(n))
    found = re.search(rf"(http://127\.0\.0\.1:\d+{re.escape(path)}\?token=[A-Za-z0-9_-]+)", body)
    assert found, body
    return found.group(1)


def add_destination(page: Any, address: str) -> str:
    page.fill("#address", address)
    page.click("#add-destination")
    page.wait_for_load_state()
    return str(page.locator("main").inner_text())


def test_register_set_up_notifications_and_destinations_in_chromium(
    site: str,
    smtp_server: SmtpServer,
    clock: FakeClock,
    db_sessions: sessionmaker[Session],
    new_browser_context: Callable[[], Any],
) -> None:
    page = new_browser_context().new_page()
    page.goto(f"{site}/support/register")
    page.fill("#email", EMAIL)
    page.click("#register-submit")
    assert "仮登録確認メールを送信しました" in page.inner_text("h1")
    page.goto(mailed_link(smtp_server, 1, "/support/register/complete"))
    assert page.inner_text("#support-id") == EMAIL
    page.fill("#password", PASSWORD)
    page.fill("#password_confirm", PASSWORD)
    page.fill("#name", "鈴木 花子")
    page.fill("#birth_date", "1990-07-15")
    page.click("#complete-submit")
    assert "本登録が完了しました" in page.inner_text("h1")
    page.click("#next")
    page.fill("#email", EMAIL)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/support/mymenu")
    assert page.is_visible("#no-products")  # none selected: the page says no mail goes

    page.check("#product-hikari-denwa")
    for day in ("5", "6"):
        page.uncheck(f"#day-{day}")  # weekdays only
    for hour in range(24):
        if not 9 <= hour <= 17:
            page.uncheck(f"#hour-{hour}")
    page.click("#settings-submit")
    assert "配信設定を保存しました" in page.inner_text("[role=status]")
    assert not page.is_visible("#no-products")
    assert page.is_checked("#hour-9") and not page.is_checked("#hour-8") and not page.is_checked("#day-6")

    assert "仮登録確認メールを送信しました" in add_destination(page, EMAIL)
    text = add_destination(page, EMAIL)  # again at once: pending, try after 30 minutes
    assert "30分経過後、もう一度お試しください" in text
    confirm = mailed_link(smtp_server, 2, "/support/destinations/confirm")
    other = new_browser_context().new_page()  # the mail opened elsewhere
    other.goto(confirm)
    other.click("#confirm-destination")
    assert "配信先の登録が完了しました" in other.inner_text("h1")

    add_destination(page, "mobile@example.jp")
    add_destination(page, "office@example.co.jp")
    text = add_destination(page, "fourth@example.jp")
    assert "最大3つまで" in text
    rows = page.locator("#destinations tbody tr")
    assert rows.count() == 3
    screenshot(page, "support-mymenu")

    with db_sessions() as session, session.begin():  # three failed deliveries stopped it
        session.execute(
            update(NoticeDestination).where(NoticeDestination.address == EMAIL).values(state="stopped")
        )
    page.goto(f"{site}/support/mymenu")
    row = page.locator(f"tr[data-address='{EMAIL}']")
    assert "配信停止" in row.inner_text()
    row.locator("button.resume").click()
    page.wait_for_load_state()
    assert "配信を再開しました" in page.inner_text("[role=status]")
    assert "配信中" in page.locator(f"tr[data-address='{EMAIL}']").inner_text()
    with db_sessions() as session:
        assert (
            session.scalars(select(NoticeDestination.state).where(NoticeDestination.address == EMAIL)).one()
            == "delivering"
        )

    clock.advance(minutes=16)  # idle logout
    page.goto(f"{site}/support/mymenu")
    assert "一定時間操作がなかったため" in page.inner_text("main")


def test_the_pages_fit_a_375_px_phone(
    site: str, chromium_browser: Any, db_sessions: sessionmaker[Session], fast_hasher: SecretHasher
) -> None:
    from datetime import UTC, date, datetime

    from notices import accounts, queue

    password_hash = fast_hasher.hash(PASSWORD)
    with db_sessions() as session, session.begin():
        account = accounts.create_active_account(
            session,
            email=EMAIL,
            name="鈴木 花子",
            birth_date=date(1990, 7, 15),
            password_hash=password_hash,
            now=datetime.now(UTC),
        )
        for address in ("a-very-long-address.for-a-phone@example.co.jp", "b@example.jp"):
            accounts.add_confirmed_destination(
                session, account_id=account.id, address=address, now=datetime.now(UTC)
            )
        queue.post_notice(
            session,
            queue.NoticeDraft(
                kind="maintenance",
                status="scheduled",
                title="設備工事のお知らせ",
                area="東京都港区",
                body="工事を行います。",
                products=("hikari-denwa",),
                starts_at=datetime(2026, 12, 9, 16, 0, tzinfo=UTC),  # 12-10 01:00 in Tokyo
                ends_at=datetime(2026, 12, 9, 20, 0, tzinfo=UTC),  # 05:00
            ),
            posted_by="t",
            now=datetime.now(UTC),
            catalog={"hikari-denwa": "ひかり電話"},
        )
    context = chromium_browser.new_context(locale="ja-JP", viewport={"width": 375, "height": 740})
    try:
        page = context.new_page()
        for path in ("/support/notices", "/support/faq", "/support/register", "/support/login"):
            page.goto(f"{site}{path}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{path} scrolls sideways ({width} px)"
            if path == "/support/notices":  # no header row on a phone: each cell names itself
                row = page.locator("#notice-list tbody tr").first.inner_text()
                assert re.search(r"開始日時\s*2026/12/10 01:00", row), row
                assert re.search(r"終了日時\s*2026/12/10 05:00", row), row
                assert re.search(r"対象商品\s*ひかり電話", row) and "hikari-denwa" not in row, row
                screenshot(page, "support-notices-375")
        screenshot(page, "support-login-375")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_url("**/support/mymenu")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"My menu scrolls sideways ({width} px)"
        screenshot(page, "support-mymenu-375")
    finally:
        context.close()
