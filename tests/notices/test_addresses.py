"""Real addresses (issue 20, item 5): the legacy addresses Japanese carriers issued are support IDs and
destinations and get their mail (quoted where RFC 5321 needs it); one support ID per address
whatever its case; migration 0006 reports the IDs that already differ only by case, an operator
resolves them with a command, and the rule holds from then on."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.db import downgrade_database, upgrade_database
from core.notice_models import SupportAccount
from notices.settings import NoticeSettings
from notices.worker import DeliveryWorker
from tests.fixtures.web import SmtpServer

from .conftest import Customer, MailServer, async_wait_for
from .test_api_cli import ivr  # noqa: F401 (the fixture)
from .test_delivery import Running, all_final, draft, post
from .test_site import client, clock, link_in, login, menu_token, register  # noqa: F401 (fixtures)

DOCOMO = "taro..yamada@docomo.ne.jp"
EZWEB = "taro.@ezweb.ne.jp"


@pytest.fixture
def db_url(request: pytest.FixtureRequest) -> str:
    """The pages over SQLite; the migration test asks for both backends (``indirect``)."""
    url: str = request.getfixturevalue(f"{getattr(request, 'param', 'sqlite')}_url")
    return url


def test_a_carriers_legacy_address_is_a_support_id_and_a_destination(
    client: TestClient,  # noqa: F811
    smtp_server: SmtpServer,
) -> None:
    register(client, smtp_server, email=DOCOMO)
    assert smtp_server.sink.raw_rcpt[0].split()[0] == 'TO:<"taro..yamada"@docomo.ne.jp>'  # RFC 5321 quoting
    menu = login(client, email=DOCOMO)
    assert menu.status_code == 200 and "マイメニュー" in menu.text  # type: ignore[attr-defined]
    added = client.post(
        "/support/mymenu/destinations", data={"csrf_token": menu_token(client), "address": EZWEB}
    )
    assert added.status_code == 200 and "仮登録確認メールを送信しました" in added.text
    assert smtp_server.sink.wait_for(2)["To"] == EZWEB
    assert smtp_server.sink.raw_rcpt[1].split()[0] == 'TO:<"taro."@ezweb.ne.jp>'
    assert link_in(smtp_server, 2, "/support/destinations/confirm")
    # what is still refused: no local part at all, spaces, a spreadsheet formula
    for bad in ("...@docomo.ne.jp", "taro yamada@docomo.ne.jp", "=taro..x@docomo.ne.jp"):
        refused = client.post(
            "/support/mymenu/destinations", data={"csrf_token": menu_token(client), "address": bad}
        )
        assert refused.status_code == 400 and "形式が正しくありません" in refused.text


async def test_a_notice_reaches_a_carriers_legacy_address_quoted(
    db_sessions: sessionmaker[Session],
    customer: Customer,
    mail_server: MailServer,
    notice_settings: NoticeSettings,
) -> None:
    customer(DOCOMO, [DOCOMO, EZWEB])
    notice_id = post(db_sessions, draft())
    async with Running(DeliveryWorker(sessions=db_sessions, settings=notice_settings, worker_id="w1")):
        await async_wait_for(all_final(db_sessions, notice_id))
    assert sorted(r.rcpt for r in mail_server.received) == [DOCOMO, EZWEB]  # both delivered
    # on the wire, RFC 5321's quoted local part (a relay may refuse the bare form); the header too
    assert sorted(a.split()[0] for a in mail_server.raw_rcpt) == [
        'TO:<"taro."@ezweb.ne.jp>',
        'TO:<"taro..yamada"@docomo.ne.jp>',
    ]
    assert all(b'To: "taro' in r.data for r in mail_server.received)


def test_one_support_id_per_address_whatever_its_case(
    client: TestClient,  # noqa: F811
    smtp_server: SmtpServer,
    db_sessions: sessionmaker[Session],
) -> None:
    register(client, smtp_server, email="alice@example.jp")
    page = client.get("/support/register")
    from .test_site import csrf

    again = client.post(
        "/support/register", data={"email": "Alice@Example.JP", "csrf_token": csrf(page.text)}
    )
    assert again.status_code == 200
    pointer = smtp_server.sink.wait_for(2)
    assert "すでにお客さまサポートIDとして登録されています" in smtp_server.sink.body(pointer)
    with db_sessions() as session:
        assert [a.login_email for a in session.scalars(select(SupportAccount))] == ["alice@example.jp"]
    menu = login(client, email="ALICE@example.jp")
    assert menu.status_code == 200 and "マイメニュー" in menu.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_0006_reports_ids_differing_only_by_case_and_an_operator_resolves_them(
    db_url: str,
    db_engine: Engine,
    db_sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ivr: Callable[..., subprocess.CompletedProcess[str]],  # noqa: F811
) -> None:
    downgrade_database(db_url, "0005")
    db_engine.dispose()
    with db_engine.begin() as connection:
        for email in ("alice@example.jp", "Alice@example.jp", "bob@example.jp"):
            connection.execute(
                text(
                    "INSERT INTO support_accounts (login_email, state, credential_generation, delivery_days,"
                    " delivery_hours, created_at) VALUES (:e, 'active', 0, 127, 16777215, :now)"
                ),
                {"e": email, "now": datetime.now(UTC)},
            )
    capsys.readouterr()
    upgrade_database(db_url)
    db_engine.dispose()
    report = capsys.readouterr().err
    with db_sessions() as session:
        ids = {a.login_email: a.id for a in session.scalars(select(SupportAccount))}
    assert "0006: 1 address(es) have support IDs that differ only by case" in report
    assert f"support IDs {ids['alice@example.jp']}, {ids['Alice@example.jp']})" in report
    listed = ivr(db_url, tmp_path, "case-conflicts", "--json")
    assert listed.returncode == 0
    assert [[a["login_email"] for a in group] for group in map(eval_json, listed.stdout.splitlines())] == [
        ["alice@example.jp", "Alice@example.jp"]
    ]  # both kept: nothing merged
    assert (
        ivr(db_url, tmp_path, "resolve-case-conflict", "--keep", str(ids["bob@example.jp"])).returncode == 2
    )
    resolved = ivr(
        db_url, tmp_path, "resolve-case-conflict", "--keep", str(ids["alice@example.jp"]), "--json"
    )
    assert resolved.returncode == 0 and eval_json(resolved.stdout) == {
        "kept": ids["alice@example.jp"],
        "deleted": [ids["Alice@example.jp"]],
    }
    assert ivr(db_url, tmp_path, "case-conflicts", "--json").stdout == ""
    # from then on the database holds the rule too, whoever writes
    with pytest.raises(IntegrityError), db_sessions() as session, session.begin():
        session.add(
            SupportAccount(login_email="ALICE@example.jp", state="provisional", created_at=datetime.now(UTC))
        )


def eval_json(line: str) -> object:
    import json

    return json.loads(line)
