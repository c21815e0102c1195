"""Every page of the site in chromium, at a phone's width and a desktop's (issue 11).

The walk visits every GET route of the app's route table in each state that shows it (a login
step, OTP off and on, a small contract and one of 40 numbers) and checks each page at 375 × 812 and
1280 × 900: nothing overflows sideways (``scrollWidth <= clientWidth``), the main heading and the
primary button are on screen, and axe-core (bundled by axe-playwright-python, nothing fetched at run
time) finds no serious or critical violation. A GET route the walk never reached fails the test:
a new page must be added to the walk (or, if it answers no HTML, to ``NOT_PAGES``).

One browser, one page per login, the viewport resized in place: the walk costs about 35 s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.routing import Route

from tests.fixtures.web import LiveServer, SmtpServer, WebDatabase, screenshot
from tests.web.test_browser import (
    change_password,
    confirm_link,
    decline_otp,
    enter_code,
    log_in,
    log_out,
    path,
    send_and_read_code,
)

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
TEMP = "48151623"
NEW = "abc13579"
LINE = "0300001111"  # sample contract: 0300001111 and 0300002222
ADMIN = "0355501000"  # sample contract: admin/user unit, 40 numbers

#: GET routes that answer no HTML page of their own (a redirect, a file, JSON), with what they do.
NOT_PAGES = {
    "/": "redirects to the login or the session's page",
    "/settings/otp/address": "redirects to /otp/address (or its confirmation check)",
    "/password/bulk/download": "CSV file",
    "/settings/otp/bulk/download": "CSV file",
    "/settings/unit/{unit}/download": "CSV file",
    "/api/session": "JSON",
    "/healthz": "JSON (operations)",
    "/readyz": "JSON (operations)",
    "/metrics": "Prometheus text (operations)",
}
#: The primary action of a page: its first submit button or non-secondary button link.
PRIMARY = "main .actions button:not(.secondary), main .actions a.button:not(.secondary)"
#: Pages that offer nothing to press (a list to read), by route.
NO_PRIMARY = {"/home"}

_OVERFLOW = """() => {
  const d = document.documentElement;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1)
    .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
  return {scroll: d.scrollWidth, client: d.clientWidth, wide};
}"""


@dataclass
class Walk:
    """What the walk saw: the routes it covered (by route path) and every problem it found."""

    routes: list[Any]
    axe: Any
    covered: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    pages: int = 0

    def route_of(self, url: str, method: str = "GET") -> str:
        here = urlsplit(url).path
        for route in self.routes:
            if isinstance(route, Route) and method in (route.methods or ()) and route.path_regex.match(here):
                return str(route.path)
        raise AssertionError(f"{here} matches no {method} route")

    def check(self, page: Any, state: str, *, shot: str | None = None, posted: bool = False) -> None:
        """The page now shown, at both widths (``state`` names it in the report); ``posted``: it is
        the answer to a form of a POST-only route (it covers no GET route)."""
        route = self.route_of(page.url, "POST" if posted else "GET")
        if not posted:
            self.covered.add(route)
        self.pages += 1
        where = f"{route} ({state})"
        for viewport in (PHONE, DESKTOP):
            page.set_viewport_size(viewport)
            at = f"{where} at {viewport['width']}px"
            width = page.evaluate(_OVERFLOW)
            if width["scroll"] > width["client"]:
                self.problems.append(
                    f"{at}: {width['scroll']}px wide in {width['client']}px: {width['wide']}"
                )
            if not page.locator("main h1").is_visible():
                self.problems.append(f"{at}: no visible main heading")
            if route not in NO_PRIMARY:
                primary = page.locator(PRIMARY).first
                if not primary.count() or not primary.is_visible():
                    self.problems.append(f"{at}: no visible primary button")
                else:
                    box = primary.bounding_box()
                    if box is None or box["x"] < 0 or box["x"] + box["width"] > viewport["width"]:
                        self.problems.append(f"{at}: primary button outside the screen: {box}")
            results = self.axe.run(page)
            for violation in results.response["violations"]:
                if violation["impact"] in ("serious", "critical"):
                    targets = [", ".join(node["target"]) for node in violation["nodes"][:3]]
                    self.problems.append(f"{at}: axe {violation['id']} ({violation['impact']}): {targets}")
            if shot:
                screenshot(page, f"{shot}-{viewport['width']}")


def go(page: Any, base_url: str, url: str) -> None:
    page.goto(f"{base_url}{url}")
    page.wait_for_load_state()


def click(page: Any, selector: str) -> None:
    page.click(selector)
    page.wait_for_load_state()


@pytest.fixture
def walk(live_web: LiveServer) -> Walk:
    from axe_playwright_python.sync_playwright import Axe

    return Walk(routes=list(live_web.app.routes), axe=Axe())


def test_every_page_at_phone_and_desktop_width_with_axe(
    new_browser_context: Callable[[], Any],
    live_web: LiveServer,
    web_database: WebDatabase,
    smtp_server: SmtpServer,
    walk: Walk,
) -> None:
    base = live_web.base_url
    page = new_browser_context().new_page()

    # Anonymous: the login form, with an error, after an idle logout; help; a mailed link.
    go(page, base, "/login")
    walk.check(page, "anonymous", shot="login")
    log_in(page, base, LINE, "wrong123")
    walk.check(page, "wrong password")
    go(page, base, "/login?timeout=1")
    walk.check(page, "idle logout notice")
    go(page, base, "/help")
    walk.check(page, "anonymous")
    go(page, base, "/otp/verify?token=unknown")
    walk.check(page, "anonymous link")

    # The contract number as admin: the forced change, the OTP choice both ways, home without OTP.
    web_database.set_temporary_password(LINE, TEMP, unit="admin_user")
    log_in(page, base, LINE, TEMP)
    walk.check(page, "must change", shot="password-required")
    change_password(page, TEMP, NEW)
    walk.check(page, "first login", shot="otp-choice")
    page.check("#choice-use")
    click(page, "#choice-next")
    walk.check(page, "first login registration")
    go(page, base, "/otp/choice")
    page.check("#choice-not-use")
    click(page, "#choice-next")
    walk.check(page, "confirm not using")
    click(page, "#agree")
    walk.check(page, "OTP off", shot="home")
    for url, state in [
        ("/password", "own number"),
        ("/settings/unit", "admin/user unit"),
        ("/settings/unit/number", "admin/user to number"),
        ("/settings/unit/line", "admin/user to line"),
        ("/settings/otp", "OTP off"),
        ("/help", "logged in"),
    ]:
        go(page, base, url)
        walk.check(page, state)

    # Switching OTP on from the menu continues to the registration (P21), then the mailed link.
    go(page, base, "/settings/otp")
    click(page, "#otp-enable")
    walk.check(page, "OTP switched on")
    click(page, "#message-link")
    walk.check(page, "registration from home", shot="otp-register")
    for selector, value in [
        ("#email", "hanako@example.jp"),
        ("#email_confirm", "hanako@example.jp"),
        ("#confirmation_id", "abcd1234"),
        ("#confirmation_id_confirm", "abcd1234"),
        ("#confirmation_password", "pass1word"),
        ("#confirmation_password_confirm", "pass1word"),
    ]:
        page.fill(selector, value)
    click(page, "#register-next")
    walk.check(page, "registration to confirm")
    click(page, "#register-submit")
    walk.check(page, "registration sent")
    smtp_server.sink.wait_for(1)
    link = smtp_server.sink.last_link()
    page.goto(link)
    walk.check(page, "link opened logged in")
    confirm_link(page)
    walk.check(page, "link confirmed")
    log_out(page)
    walk.check(page, "logged out", posted=True)

    # The two-step login, then every OTP settings page from the menu.
    log_in(page, base, LINE, NEW)
    walk.check(page, "second step", shot="otp-send")
    click(page, "#change-address")
    walk.check(page, "before the code")
    go(page, base, "/otp/send")
    send_and_read_code(page, smtp_server)
    walk.check(page, "code sent")
    enter_code(page, smtp_server.sink.last_code())
    assert path(page) == "/home"
    walk.check(page, "OTP on")
    for url, state in [
        ("/settings/otp", "OTP on"),
        ("/settings/otp/confirmation-id", "OTP on"),
        ("/settings/otp/confirmation-password", "OTP on"),
        ("/otp/address", "after a two-step login (P23)"),
        ("/settings/otp/release", "admin after a two-step login"),
    ]:
        go(page, base, url)
        walk.check(page, state)
    page.fill("#password", NEW)
    click(page, "#release-next")
    walk.check(page, "release to confirm")
    go(page, base, "/otp/address")
    page.fill("#email", "hanako2@example.jp")
    page.fill("#email_confirm", "hanako2@example.jp")
    click(page, "#register-next")
    walk.check(page, "address change")
    log_out(page)

    # An admin of 40 numbers: the number list, search, bulk pages, the bulk unit change.
    page = new_browser_context().new_page()
    web_database.set_temporary_password(ADMIN, TEMP, unit="admin_user")
    log_in(page, base, ADMIN, TEMP)
    change_password(page, TEMP, NEW)
    decline_otp(page)
    walk.check(page, "40 numbers")
    for url, state, shot in [
        ("/password", "40 numbers: search", "password-search"),
        ("/password?q=03555010*7", "search result", None),
        ("/password/bulk", "40 numbers", None),
        ("/settings/otp/bulk", "40 numbers", None),
        ("/settings/otp", "OTP off, bulk", None),
        ("/settings/unit/line", "40 numbers: bulk file", None),
    ]:
        go(page, base, url)
        walk.check(page, state, shot=shot)

    get_routes = {str(r.path) for r in walk.routes if isinstance(r, Route) and "GET" in (r.methods or ())}
    missing = sorted(get_routes - walk.covered - set(NOT_PAGES))
    assert not missing, f"GET routes the walk does not visit: {missing}"
    assert not walk.problems, "\n".join(walk.problems)
    assert walk.pages >= 40


def test_the_walk_fails_on_a_page_that_overflows(
    new_browser_context: Callable[[], Any], live_web: LiveServer, walk: Walk
) -> None:
    """The checks can fail: a 600 px wide element at 375 px, a missing button, a nameless input."""
    page = new_browser_context().new_page()
    go(page, live_web.base_url, "/login")
    page.evaluate(
        """() => {
      const wide = document.createElement('div');  // CSSOM: the page's CSP refuses style attributes
      wide.style.width = '600px';
      wide.textContent = 'x';
      document.querySelector('main').append(wide);
      document.querySelector('#login-submit').remove();
      document.querySelector('label[for=password]').remove();
    }"""
    )
    walk.check(page, "broken on purpose")
    text = "\n".join(walk.problems)
    assert re.search(r"/login \(broken on purpose\) at 375px: \d+px wide in 375px", text), text
    assert "at 375px: no visible primary button" in text
    assert "axe label (critical)" in text
    assert "at 1280px" in text and "1280px wide" not in text
