"""Two real `ivr web` processes on one SQLite file: they share the sessions and the per-client
throttle, and a restart keeps a customer logged in. The processes hash with the production argon2id
parameters (the in-process app of the other web tests uses cheap ones)."""

from __future__ import annotations

import re

import httpx

from core.secrets import PRODUCTION_PARAMETERS, SecretHasher
from tests.fixtures.web import WebDatabase, free_port, ivr_web

CONTRACT = "0300001111"
TEMP = "48151623"
NEW = "abc13579"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def submit(client: httpx.Client, page: httpx.Response, path: str, data: dict[str, str]) -> httpx.Response:
    found = _CSRF.search(page.text)
    assert found, page.text
    return client.post(path, data={"csrf_token": found.group(1), **data}, follow_redirects=True)


def test_two_processes_share_sessions_and_a_restart_keeps_the_login(web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    port_a, port_b = free_port(), free_port()
    with ivr_web(web_database.url, port=port_b) as b:
        with ivr_web(web_database.url, port=port_a) as a, httpx.Client(base_url=a) as browser:
            page = submit(browser, browser.get("/login"), "/login", {"number": CONTRACT, "password": TEMP})
            assert page.url.path == "/password/required"
            page = submit(
                browser,
                page,
                "/password/required",
                {"current_password": TEMP, "new_password": NEW, "new_password_confirm": NEW},
            )
            page = submit(browser, page, "/otp/choice", {"choice": "not_use"})
            page = submit(browser, page, "/otp/decline", {"agree": "1"})
            assert page.url.path == "/home"
            cookie = browser.cookies["ivr_session"]
        # the new password was hashed by `ivr web` with the production parameters
        production = SecretHasher(PRODUCTION_PARAMETERS)
        stored = web_database.credential(CONTRACT).secret_hash
        assert production.verify(stored, NEW) and not production.needs_rehash(stored)
        # the other process knows the session …
        other = httpx.get(f"{b}/home", cookies={"ivr_session": cookie})
        assert other.status_code == 200 and 'data-number="0300001111"' in other.text
        # … and so does the first one after a restart
        with ivr_web(web_database.url, port=port_a) as a:
            again = httpx.get(f"{a}/home", cookies={"ivr_session": cookie})
            assert again.status_code == 200 and 'data-number="0300001111"' in again.text
            # a logout on one process ends the session on both
            assert submit(httpx.Client(base_url=a, cookies={"ivr_session": cookie}), again, "/logout", {})
        assert httpx.get(f"{b}/home", cookies={"ivr_session": cookie}).headers.get("location") == "/login"


def test_the_login_throttle_holds_across_two_processes(web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    limit = {"IVR_WEB__LOGIN_FAILURES_PER_CLIENT": "3"}
    with (
        ivr_web(web_database.url, env=limit) as a,
        ivr_web(web_database.url, env=limit) as b,
    ):
        for base in (a, b, a):
            wrong = httpx.post(f"{base}/api/login", json={"number": CONTRACT, "password": "wrong123"})
            assert wrong.status_code in (401, 403)  # the third uses the temporary password's last try
        refused = httpx.post(f"{b}/api/login", json={"number": CONTRACT, "password": TEMP})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert web_database.credential(CONTRACT).failures == 3  # the refused one was never checked
