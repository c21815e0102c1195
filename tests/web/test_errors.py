"""An unexpected failure of the credential store shows an apology page, never a traceback."""

from __future__ import annotations

from typing import Any

import structlog
from starlette.testclient import TestClient

from tests.fixtures.web import make_app


class BrokenStore:
    """A backend whose database is down (unit-test fake: every call raises)."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("database is down: password=hunter2")

        return fail


def test_store_failure_is_an_apology_page_and_a_log_without_details(web_settings: Any) -> None:
    app = make_app(web_settings, backend=BrokenStore())  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        page = client.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        with structlog.testing.capture_logs() as logs:
            page = client.post("/login", data={"csrf_token": token, "number": "0300001111", "password": "x"})
        assert page.status_code == 500
        assert "しばらく時間をおいてから" in page.text
        assert "hunter2" not in page.text and "Traceback" not in page.text
        assert [e["error_type"] for e in logs if e["event"] == "web_unhandled_error"] == ["RuntimeError"]
        assert "hunter2" not in repr(logs)
        api = client.post("/api/login", json={"number": "0300001111", "password": "x"})
        assert api.status_code == 500 and api.json()["error"] == "server_error"
