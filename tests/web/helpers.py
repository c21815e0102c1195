"""Small helpers of the web tests: forms with their CSRF token, the login steps."""

from __future__ import annotations

import re
from typing import Any

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(response: Any) -> str:
    found = _CSRF.search(response.text)
    assert found, f"no CSRF token on {response.url}"
    return found.group(1)


def post_form(client: Any, page: Any, path: str, data: dict[str, str]) -> Any:
    """Submit a form of ``page`` (the response that showed it) the way a browser would."""
    return client.post(path, data={"csrf_token": csrf_of(page), **data})


def login(client: Any, number: str, password: str) -> Any:
    page = client.get("/login")
    return post_form(client, page, "/login", {"number": number, "password": password})


def change_required_password(client: Any, page: Any, current: str, new: str) -> Any:
    return post_form(
        client,
        page,
        "/password/required",
        {"current_password": current, "new_password": new, "new_password_confirm": new},
    )


def decline_otp(client: Any, page: Any) -> Any:
    assert page.url.path == "/otp/choice", page.url
    page = post_form(client, page, "/otp/choice", {"choice": "not_use"})
    assert page.url.path == "/otp/decline"
    return post_form(client, page, "/otp/decline", {"agree": "1"})


def first_login(client: Any, number: str, temporary: str, new: str) -> Any:
    """Temporary password -> forced change -> OTP not used -> home."""
    page = login(client, number, temporary)
    assert page.url.path == "/password/required", page.text
    page = change_required_password(client, page, temporary, new)
    assert page.url.path == "/otp/choice", page.text
    page = decline_otp(client, page)
    assert page.url.path == "/home", page.text
    return page


def home_numbers(page: Any) -> list[str]:
    return re.findall(r'<tr class="number-row" data-number="(\d+)">', page.text)
