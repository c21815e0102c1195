"""The whole path once: a SIPp call through the lab Asterisk and the FastAGI daemon sets a temporary
password, and chromium logs in with it on the web (issue 4's last "Done when").

Needs the lab (Asterisk root filesystem from scripts/bootstrap) and the voice daemon, so it is marked
``e2e``, ``lab`` and ``browser``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from ivr.sipp import Caller, ExpectHangup, SendDigits, Wait, run_call
from tests.fixtures.voice import PASSWORDS_USED, VoiceDaemon
from tests.fixtures.web import LiveServer, free_port, screenshot
from tests.web.test_browser import change_password, decline_otp, listed_numbers, log_in, path

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.browser]

LINE = "0422001234"  # sample contract, line unit, with 0422005678
TEMPORARY = "70316249"
NEW = "web24680x"
PASSWORDS_USED.update({TEMPORARY, NEW})


@pytest.fixture(scope="module")
def phone_daemon(
    lab: Any, e2e_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoiceDaemon]:
    """`ivr serve` on the port the lab's dialplan calls (settings: IVR_AGI__PORT), on the e2e database."""
    from stack.settings import load_settings

    port = load_settings().agi.port
    daemon = VoiceDaemon(
        e2e_database, tmp_path_factory.mktemp("web-whole-path") / "daemon.log", {"IVR_AGI__PORT": str(port)}
    )
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def web_on_e2e_database(e2e_database: str) -> Iterator[LiveServer]:
    """`ivr web`'s app on the database the voice daemon writes, with the real clock."""
    import threading
    import time

    import uvicorn

    from stack.settings import Settings
    from tests.fixtures.web import make_app
    from web_stub.settings import WebSettings

    port = free_port()
    settings = Settings(
        database_url=e2e_database,
        web=WebSettings(host="127.0.0.1", port=port, base_url=f"http://127.0.0.1:{port}"),
    )
    app = make_app(settings, clock=lambda: datetime.now(UTC))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield LiveServer(base_url=settings.web.base_url, app=app)
    server.should_exit = True
    thread.join(timeout=10)


def test_a_password_set_by_phone_logs_in_on_the_web(
    phone_daemon: VoiceDaemon,
    web_on_e2e_database: LiveServer,
    new_browser_context: Callable[[], Any],
) -> None:
    caller = Caller(
        LINE,
        steps=[
            Wait(1.0),
            SendDigits("1"),  # 回線単位
            Wait(1.0),
            SendDigits(TEMPORARY + "#"),
            Wait(1.0),
            SendDigits(TEMPORARY + "#"),  # confirmation
            ExpectHangup(within=60),
        ],
    )
    # Playwright's sync API holds an event loop in this thread: SIPp runs from another one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(run_call, caller).result(timeout=120)
    assert result.error is None, result.error
    assert result.answered and result.hung_up_by == "remote", result
    assert not result.expectations_failed

    page = new_browser_context().new_page()
    base = web_on_e2e_database.base_url
    log_in(page, base, LINE, TEMPORARY)
    assert path(page) == "/password/required"
    change_password(page, TEMPORARY, NEW)
    decline_otp(page)
    assert path(page) == "/home"
    assert listed_numbers(page) == [LINE, "0422005678"]
    screenshot(page, "whole-path-home")
