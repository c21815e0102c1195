"""The operator's ways in: the JSON API with an operator token, and `ivr notices …` with --json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from notices.web import create_support_app
from stack.settings import Settings

from .conftest import Customer

TOKEN = "operator-test-token-0123456789"
NOTICE = {
    "kind": "maintenance",
    "status": "scheduled",
    "title": "設備工事のお知らせ",
    "area": "大阪府",
    "body": "下記日程で設備工事を行います。",
    "products": ["hikari-denwa"],
    "starts_at": "2026-12-10T01:00+09:00",
    "ends_at": "2026-12-10T05:00+09:00",
}


@pytest.fixture
def client(db_url: str, db_sessions: sessionmaker[Session]) -> TestClient:
    settings = Settings(database_url=db_url, notices={"operator_token": TOKEN})
    return TestClient(create_support_app(settings, db_sessions))


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_posting_through_the_api_needs_the_operator_token(client: TestClient, customer: Customer) -> None:
    customer("c@example.jp", ["c@example.jp"])
    assert client.post("/support/api/notices", json=NOTICE).status_code == 401
    assert client.post("/support/api/notices", json=NOTICE, headers=auth("wrong")).status_code == 401
    assert client.get("/support/api/notices", headers=auth("wrong")).status_code == 401
    created = client.post("/support/api/notices", json=NOTICE, headers=auth())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["recipients"] == 1 and body["products"] == ["hikari-denwa"]
    assert created.headers["location"] == f"/support/api/notices/{body['id']}"
    got = client.get(f"/support/api/notices/{body['id']}", headers=auth()).json()
    assert got["deliveries"] == {"queued": 1}
    # an update (復旧 / 完了) posts again and follows the first
    update = dict(NOTICE, status="completed", title="設備工事完了のお知らせ", follows=body["id"])
    again = client.post("/support/api/notices", json=update, headers=auth())
    assert (
        again.status_code == 201 and again.json()["follows"] == body["id"] and again.json()["recipients"] == 1
    )
    listed = client.get("/support/api/notices", headers=auth()).json()["notices"]
    assert [n["id"] for n in listed] == [again.json()["id"], body["id"]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "rumour"}, "kind must be one of"),
        ({"products": "hikari-denwa"}, "products must be a list"),
        ({"starts_at": "2026-12-10T01:00"}, "needs an offset"),
        ({"starts_at": "tomorrow"}, "not an ISO 8601"),
        ({"colour": "red"}, "unknown fields: colour"),
        ({"follows": 424242}, "no notice 424242"),
    ],
)
def test_bad_input_is_400_and_nothing_is_written(
    client: TestClient, change: dict[str, object], message: str
) -> None:
    response = client.post("/support/api/notices", json=dict(NOTICE, **change), headers=auth())
    assert response.status_code == 400 and message in response.json()["error"]
    assert client.get("/support/api/notices", headers=auth()).json()["notices"] == []


def test_not_json_and_too_large_bodies(client: TestClient) -> None:
    bad = client.post("/support/api/notices", content=b"\xff{", headers=auth())
    assert bad.status_code == 400
    # the notices' own request limit (queue.MAX_NOTICE_REQUEST_BYTES), far beyond 20,000 characters
    huge = client.post("/support/api/notices", json=dict(NOTICE, body="あ" * 100_000), headers=auth())
    assert huge.status_code == 413


def test_the_public_list_shows_public_notices_only(client: TestClient) -> None:
    client.post("/support/api/notices", json=NOTICE, headers=auth())
    members = client.post(
        "/support/api/notices", json=dict(NOTICE, title="会員向けの情報", public=False), headers=auth()
    )
    page = client.get("/support/notices")
    assert page.status_code == 200 and "設備工事のお知らせ" in page.text and "会員向けの情報" not in page.text
    assert "2026/12/10 01:00" in page.text  # Tokyo time
    assert client.get(f"/support/notices/{members.json()['id']}").status_code == 404
    assert client.get("/support/faq").status_code == 200
    assert "最大3つまで" in client.get("/support/faq").text


def test_the_api_is_off_without_a_token(db_url: str, db_sessions: sessionmaker[Session]) -> None:
    client = TestClient(create_support_app(Settings(database_url=db_url), db_sessions))
    assert client.post("/support/api/notices", json=NOTICE).status_code == 404


def ivr_process(
    db_url: str, tmp_path: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``ivr notices ARGS`` as an operator runs it: a process of its own."""
    env = dict(os.environ, IVR_DATABASE_URL=db_url, IVR_DATA_DIR=str(tmp_path), IVR_LOG_FORMAT="console")
    return subprocess.run(
        [sys.executable, "-m", "stack.cli.main", "notices", *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


@pytest.fixture
def ivr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``ivr(db_url, tmp_path, *args)``: ``ivr notices ARGS`` run in this process (the console
    script's ``main``, with the same environment as ``ivr_process``): its exit status and output."""
    from stack.cli.main import main

    def run(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("IVR_DATABASE_URL", db_url)
        monkeypatch.setenv("IVR_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("IVR_LOG_FORMAT", "console")
        capsys.readouterr()
        try:
            status = main(["notices", *args])
        except SystemExit as exit_:  # argparse's usage errors, a missing schema
            status = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["ivr", "notices", *args], status, out, err)

    return run


def test_the_cli_posts_lists_shows_and_resumes(
    db_url: str,
    tmp_path: Path,
    customer: Customer,
    db_sessions: sessionmaker[Session],
    ivr: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    _, (dest_id,) = customer("c@example.jp", ["c@example.jp"], state="stopped")
    customer("d@example.jp", ["d@example.jp"])
    posted = ivr_process(  # the first through the real console entry point, the body on stdin
        db_url,
        tmp_path,
        "post",
        "--kind",
        "outage",
        "--status",
        "occurring",
        "--title",
        "障害",
        "--area",
        "全国",
        "--product",
        "hikari-denwa",
        "--body-file",
        "-",
        "--json",
        stdin="ただいま障害が発生しています。\n",
    )
    assert posted.returncode == 0, posted.stderr
    notice = json.loads(posted.stdout)
    assert notice["recipients"] == 1 and notice["posted_by"].startswith("cli:")
    listed = [json.loads(line) for line in ivr(db_url, tmp_path, "list", "--json").stdout.splitlines()]
    assert [n["id"] for n in listed] == [notice["id"]] and listed[0]["deliveries"] == {"queued": 1}
    shown = json.loads(ivr(db_url, tmp_path, "show", str(notice["id"]), "--json").stdout)
    assert shown["body"].startswith("ただいま")
    deliveries = [
        json.loads(x)
        for x in ivr(
            db_url, tmp_path, "deliveries", "--notice", str(notice["id"]), "--json"
        ).stdout.splitlines()
    ]
    assert [(d["address"], d["state"]) for d in deliveries] == [("d@example.jp", "queued")]
    stopped = [
        json.loads(x)
        for x in ivr(db_url, tmp_path, "destinations", "--state", "stopped", "--json").stdout.splitlines()
    ]
    assert [d["id"] for d in stopped] == [dest_id]
    resumed = ivr(db_url, tmp_path, "resume", str(dest_id), "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout) == {
        "destination_id": dest_id,
        "resumed": True,
    }
    assert ivr(db_url, tmp_path, "resume", str(dest_id)).returncode == 1
    bad = ivr(
        db_url,
        tmp_path,
        "post",
        "--kind",
        "outage",
        "--status",
        "nope",
        "--title",
        "x",
        "--product",
        "p",
        "--body",
        "b",
    )
    assert bad.returncode == 2 and "status must be one of" in bad.stderr
    purged = ivr(db_url, tmp_path, "purge", "--older-than", "90d", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout)["deleted"] == 0  # nothing that old
    assert ivr(db_url, tmp_path, "purge", "--older-than", "soon").returncode == 2
    table = ivr(db_url, tmp_path, "list")
    assert table.returncode == 0 and "障害" in table.stdout


def test_guessing_the_operator_token_is_throttled(db_url: str, db_sessions: sessionmaker[Session]) -> None:
    settings = Settings(
        database_url=db_url, notices={"operator_token": TOKEN, "login_failures_per_client": 3}
    )
    client = TestClient(create_support_app(settings, db_sessions))
    for _ in range(3):
        assert client.get("/support/api/notices", headers=auth("guess")).status_code == 401
    blocked = client.get("/support/api/notices", headers=auth())  # even the right one, for the window
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0


def test_the_operator_page_posts_a_notice_with_tokyo_times(client: TestClient, customer: Customer) -> None:
    import re

    customer("c@example.jp", ["c@example.jp"])
    page = client.get("/support/operator")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {
        "csrf_token": token,
        "kind": "maintenance",
        "status": "scheduled",
        "title": "夜間工事",
        "area": "神奈川県",
        "product": ["hikari-denwa"],
        "starts_at": "2026-12-10 01:00",
        "ends_at": "2026-12-10 05:00",
        "body": "工事を行います。",
    }
    wrong = client.post("/support/operator", data=form | {"token": "guess"})
    assert (
        wrong.status_code == 401 and "トークンが正しくありません" in wrong.text and "夜間工事" in wrong.text
    )
    bad = client.post("/support/operator", data=form | {"token": TOKEN, "ends_at": "2026-12-09 05:00"})
    assert bad.status_code == 400 and "the end is before the start" in bad.text
    done = client.post("/support/operator", data=form | {"token": TOKEN})
    assert "配信先 1 件にメールを配信します" in done.text
    (posted,) = client.get("/support/api/notices", headers=auth()).json()["notices"]
    assert posted["starts_at"] == "2026-12-09T16:00:00+00:00"  # 01:00 in Tokyo
    assert client.post("/support/operator", data={"token": TOKEN, "csrf_token": "x"}).status_code == 403


def test_a_product_typo_is_refused_the_same_way_by_the_cli_the_api_and_the_page(
    db_url: str,
    tmp_path: Path,
    client: TestClient,
    customer: Customer,
    ivr: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    customer("c@example.jp", ["c@example.jp"])
    typo = ["--kind", "outage", "--status", "occurring", "--title", "障害", "--product", "hikari-dnwa"]
    by_cli = ivr(db_url, tmp_path, "post", *typo, "--body", "障害が発生しています。")
    assert by_cli.returncode == 2 and "unknown product code: hikari-dnwa" in by_cli.stderr
    assert "queued for" not in by_cli.stdout
    by_api = client.post("/support/api/notices", json=dict(NOTICE, products=["hikari-dnwa"]), headers=auth())
    assert by_api.status_code == 400 and "unknown product code: hikari-dnwa" in by_api.json()["error"]
    page = client.get("/support/operator")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {
        "csrf_token": token,
        "token": TOKEN,
        "kind": "outage",
        "status": "occurring",
        "title": "障害",
        "product": ["hikari-dnwa"],
        "body": "障害が発生しています。",
    }
    by_page = client.post("/support/operator", data=form)
    assert by_page.status_code == 400 and "unknown product code: hikari-dnwa" in by_page.text
    # nothing was published
    assert client.get("/support/api/notices", headers=auth()).json()["notices"] == []
    assert "障害" not in client.get("/support/notices").text

    # the same text limit, in characters, on all three: 20,000 kanji pass, 20,001 do not
    longest, too_long = "障" * 20_000, "障" * 20_001
    assert ivr(db_url, tmp_path, "post", *typo[:-1], "hikari-denwa", "--body", longest).returncode == 0
    refused = ivr(db_url, tmp_path, "post", *typo[:-1], "hikari-denwa", "--body", too_long)
    assert refused.returncode == 2 and "body must be 1 to 20000 characters" in refused.stderr
    ok = client.post("/support/api/notices", json=dict(NOTICE, body=longest), headers=auth())
    assert ok.status_code == 201, ok.text
    assert (
        client.post("/support/api/notices", json=dict(NOTICE, body=too_long), headers=auth()).status_code
        == 400
    )
    escaped = json.dumps(dict(NOTICE, body=longest), ensure_ascii=True)  # \\uXXXX: 6 bytes a kanji
    assert (
        client.post(
            "/support/api/notices", content=escaped, headers=auth() | {"Content-Type": "application/json"}
        ).status_code
        == 201
    )
    assert (
        "配信先 1 件"
        in client.post("/support/operator", data=form | {"product": ["hikari-denwa"], "body": longest}).text
    )
    assert (
        client.post(
            "/support/operator", data=form | {"product": ["hikari-denwa"], "body": too_long}
        ).status_code
        == 400
    )
    assert len(client.get("/support/api/notices", headers=auth()).json()["notices"]) == 4
