"""Markup for screen readers, over HTTP (axe-core on every page is in test_every_page.py): errors
tied to the inputs they are about, hints tied to theirs, required inputs, the radio group's legend,
the skip link."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tests.fixtures.web import WebDatabase
from tests.web.helpers import change_required_password, login, post_form
from tests.web.test_otp import register_form

NUMBER = "0300002222"
TEMP = "48151623"
NEW = "abc13579"


def input_tag(html: str, name: str) -> str:
    found = re.search(rf'<input type="[^"]+" id="{name}"[^>]*>', html, re.S)
    assert found, f"no input {name}"
    return found.group(0)


def test_login_errors_are_tied_to_both_inputs_and_inputs_are_required(web_client: TestClient) -> None:
    page = web_client.get("/login")
    assert 'href="#main"' in page.text and '<main class="content" id="main"' in page.text
    for name in ("number", "password"):
        tag = input_tag(page.text, name)
        assert " required" in tag and "aria-invalid" not in tag
    page = login(web_client, "0300001111", "wrong123")
    assert 'role="alert" id="form-errors"' in page.text
    for name in ("number", "password"):
        tag = input_tag(page.text, name)
        assert 'aria-invalid="true"' in tag and 'aria-describedby="form-errors"' in tag


def test_registration_marks_only_the_inputs_in_error_and_keeps_their_hints(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password(NUMBER, TEMP, unit="number")
    page = login(web_client, NUMBER, TEMP)
    page = change_required_password(web_client, page, TEMP, NEW)
    assert "<fieldset" in page.text and "<legend>ワンタイムパスワードの利用</legend>" in page.text
    page = post_form(web_client, page, "/otp/choice", {"choice": "use"})
    tag = input_tag(page.text, "email")
    assert 'aria-describedby="email-hint"' in tag and 'id="email-hint"' in page.text
    page = post_form(
        web_client, page, "/otp/register", register_form(email="nobody", confirmation_password_confirm="x")
    )
    assert page.status_code == 400
    assert 'aria-describedby="email-hint form-errors"' in input_tag(page.text, "email")
    assert 'aria-invalid="true"' in input_tag(page.text, "confirmation_password_confirm")
    for fine in ("email_confirm", "confirmation_id", "confirmation_password"):
        assert "aria-invalid" not in input_tag(page.text, fine), fine
