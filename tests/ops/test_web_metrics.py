"""The web process's /metrics (bearer token), /readyz, and the counts behind them, on the real core
(SQLite) and a real SMTP server: logins by outcome, lockouts, 429s, OTP mails, live sessions."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text
from starlette.testclient import TestClient

from core.db import make_engine
from tests.fixtures.web import FakeClock, SmtpServer, WebDatabase, make_app
from tests.web.helpers import login
from tests.web.test_otp import MAIL, registered_home
from web_stub.ops import area_of

TOKEN = "metrics-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTRACT = "0300001111"
TEMP = "48151623"


def app_with(settings: Any, clock: FakeClock, **web: Any) -> Any:
    web = {"metrics_token": SecretStr(TOKEN), **web}
    return make_app(settings.model_copy(update={"web": settings.web.model_copy(update=web)}), clock=clock)


@pytest.fixture
def client(web_settings: Any, web_clock: FakeClock) -> Any:
    with TestClient(app_with(web_settings, web_clock), base_url="http://127.0.0.1") as the_client:
        yield the_client


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200, answer.text
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_answer_only_the_bearer_token(web_client: TestClient, client: TestClient) -> None:
    assert web_client.get("/metrics").status_code == 404  # no token configured: not served at all
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 200


def test_logins_lockouts_and_sessions_are_counted(client: TestClient, web_database: WebDatabase) -> None:
    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")
    assert value(samples(client), "ivr_web_logins_total", outcome="wrong") == 0  # from 0
    for _ in range(3):  # the third wrong try locks the temporary password
        login(client, CONTRACT, "00000000")
    login(client, CONTRACT, TEMP)  # the right one, too late: no new lockout
    found = samples(client)
    assert value(found, "ivr_web_lockouts_total") == 1
    # the third wrong try is answered "invalidated" (locked now), as is the right one after it
    assert value(found, "ivr_web_logins_total", outcome="wrong") == 2
    assert value(found, "ivr_web_logins_total", outcome="invalidated") == 2
    assert value(found, "ivr_web_sessions") == 0

    web_database.set_temporary_password(CONTRACT, TEMP, unit="line")  # a new one from the phone
    login(client, CONTRACT, TEMP)
    found = samples(client)
    assert value(found, "ivr_web_logins_total", outcome="ok") == 1
    assert value(found, "ivr_web_sessions") == 1
    assert value(found, "ivr_web_lockouts_total") == 1
    body = client.get("/metrics", headers=AUTH).text
    assert CONTRACT not in body and TEMP not in body and "@" not in body


def test_429s_are_counted_by_area(web_settings: Any, web_clock: FakeClock) -> None:
    app = app_with(web_settings, web_clock, login_failures_per_client=2)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        codes = [login(client, "0399999999", "wrong123").status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        found = samples(client)
        assert value(found, "ivr_web_throttled_requests_total", area="login") == 1
        assert value(found, "ivr_web_logins_total", outcome="throttled") == 1
        assert "0399999999" not in client.get("/metrics", headers=AUTH).text


def test_otp_mails_are_counted(
    client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    registered_home(client, web_database, smtp_server)  # a registration link, then a code
    found = samples(client)
    assert value(found, "ivr_web_otp_mails_total", result="sent") == 2
    assert value(found, "ivr_web_otp_mails_total", result="failed") == 0
    assert MAIL not in client.get("/metrics", headers=AUTH).text


def test_readyz_follows_the_database_schema(client: TestClient, web_database: WebDatabase) -> None:
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/healthz").status_code == 200
    engine = make_engine(web_database.url)
    with engine.begin() as connection:
        (revision,) = connection.execute(text("SELECT version_num FROM alembic_version")).one()
        connection.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "not_ready", "reason": "schema_not_current"}
        assert value(samples(client), "ivr_web_ready") == 0
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
        engine.dispose()
    assert client.get("/readyz").status_code == 200


def test_areas_are_fixed_words() -> None:
    assert area_of("/login") == area_of("/api/login") == "login"
    assert area_of("/otp/send") == "otp" and area_of("/settings/unit/line") == "settings"
    assert area_of("/0300001111") == "other" and area_of("/otpx") == "other"
