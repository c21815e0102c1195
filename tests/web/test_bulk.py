"""Contracts with 33 numbers or more (seed P12–P13): number search, bulk download, bulk password change."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from starlette.testclient import TestClient

from tests.fixtures.web import MailSink, SmtpServer, WebDatabase
from tests.web.helpers import csrf_of, first_login, login

ADMIN = "0355501000"  # sample contract, admin/user unit, 40 numbers
TEMP = "48151623"
NEW = "abc13579"


def options(page_text: str) -> list[str]:
    return re.findall(r'<option value="(\d+)"', page_text)


def upload(client: TestClient, rows: list[str], encoding: str = "utf-8") -> Any:
    page = client.get("/password/bulk")
    body = "\r\n".join(rows).encode(encoding) + b"\r\n"
    return client.post(
        "/password/bulk",
        data={"csrf_token": csrf_of(page)},
        files={"csv": ("passwords.csv", body, "text/csv")},
    )


def admin_home(client: TestClient, db: WebDatabase) -> None:
    db.set_temporary_password(ADMIN, TEMP, unit="admin_user")
    first_login(client, ADMIN, TEMP, NEW)


def test_number_search_by_prefix_and_wildcard(web_client: TestClient, web_database: WebDatabase) -> None:
    admin_home(web_client, web_database)
    page = web_client.get("/password")
    assert 'id="number-search"' in page.text and len(options(page.text)) == 40
    assert options(web_client.get("/password", params={"q": "035550101"}).text) == [
        f"03555010{n}" for n in range(10, 20)
    ]
    assert options(web_client.get("/password", params={"q": "03555010*5"}).text) == [
        "0355501005",
        "0355501015",
        "0355501025",
        "0355501035",
    ]
    page = web_client.get("/password", params={"q": "0399"})
    assert options(page.text) == [] and "該当する電話番号がありません" in page.text


def test_search_and_bulk_are_only_for_an_admin_of_33_numbers_or_more(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password("0300001111", TEMP, unit="admin_user")
    first_login(web_client, "0300001111", TEMP, NEW)
    assert 'id="number-search"' not in web_client.get("/password").text
    assert web_client.get("/password/bulk").url.path == "/password"
    assert web_client.get("/password/bulk/download").url.path == "/password"


def test_bulk_download_marks_temporary_and_unset_passwords(
    web_client: TestClient, web_database: WebDatabase
) -> None:
    web_database.set_temporary_password("0355501007", "62840517", unit="admin_user")
    admin_home(web_client, web_database)
    response = web_client.get("/password/bulk/download")
    assert response.headers["content-type"].startswith("text/csv")
    assert b"\r\n" in response.content
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))
    assert len(rows) == 40
    marks = dict(rows)
    assert marks[ADMIN] == ""  # a real password now
    assert marks["0355501007"] == "*"  # temporary
    assert marks["0355501039"] == "*"  # never set


def test_bulk_change_is_all_or_nothing_with_errors_by_line(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    admin_home(web_client, web_database)
    page = upload(
        web_client, ['"0355501001","def13579"', '"0355501002","13572468"', '"0300001111","ghi13579"']
    )
    assert page.status_code == 400
    assert "3行目: 0300001111 は、この手続きの対象の電話番号ではありません" in page.text
    page = upload(web_client, ['"0355501001","def13579"', '"0355501002","13572468"'])
    assert page.status_code == 400 and "2行目（0355501002）: 数字のみ" in page.text
    assert "いずれの電話番号のパスワードも変更していません" in page.text
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as user:
        assert login(user, "0355501001", "def13579").status_code == 401  # row 1 was not applied either
    page = upload(web_client, ["0355501001,def13579", "0355501002,ghj24680", ""], encoding="cp932")
    assert page.status_code == 200 and "2件の電話番号のパスワードを変更しました" in page.text
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as user:
        assert login(user, "0355501002", "ghj24680").url.path == "/otp/choice"


def test_bulk_upload_needs_the_csrf_token(web_client: TestClient, web_database: WebDatabase) -> None:
    admin_home(web_client, web_database)
    response = web_client.post(
        "/password/bulk",
        files={"csv": ("p.csv", b"0355501001,def13579\r\n", "text/csv")},
        data={"csrf_token": "x"},
    )
    assert response.status_code == 403


def test_unit_change_of_a_large_contract_by_csv(
    web_app: Any, web_client: TestClient, web_database: WebDatabase
) -> None:
    """Number unit -> line unit for 40 numbers: every number's current password, by file (P15)."""
    numbers = [f"03555010{n:02d}" for n in range(40)]
    for number in numbers[:35]:
        web_database.set_temporary_password(number, TEMP, unit="number")
    first_login(web_client, ADMIN, TEMP, NEW)  # the contract number now has a real password
    page = web_client.get("/settings/unit/line")
    assert 'id="unit-bulk-form"' in page.text
    download = web_client.get("/settings/unit/line/download")
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8"))))
    assert [r[0] for r in rows] == numbers[:35]  # the numbers with a usable password
    assert rows[0] == [ADMIN, ""] and rows[1] == ["0355501001", "*"]
    lines = [f"{ADMIN},{NEW}"] + [f"{n},{TEMP}" for n in numbers[1:34]]  # one missing
    page = web_client.get("/settings/unit/line")
    response = web_client.post(
        "/settings/unit/line",
        data={"csrf_token": csrf_of(page)},
        files={"csv": ("unit.csv", ("\r\n".join(lines) + "\r\n").encode(), "text/csv")},
    )
    assert response.status_code == 400 and "0355501034 のパスワードを入力してください" in response.text
    lines.append(f"0355501034,{TEMP}")
    response = web_client.post(
        "/settings/unit/line",
        data={"csrf_token": csrf_of(response)},
        files={"csv": ("unit.csv", ("\r\n".join(lines) + "\r\n").encode(), "text/csv")},
    )
    assert response.status_code == 200 and "「回線単位」に変更しました" in response.text
    assert login(web_client, ADMIN, NEW).url.path == "/home"


def post_otp_csv(client: TestClient, rows: list[str]) -> Any:
    page = client.get("/settings/otp/bulk")
    return client.post(
        "/settings/otp/bulk",
        data={"csrf_token": csrf_of(page)},
        files={"csv": ("otp.csv", ("\r\n".join(rows) + "\r\n").encode(), "text/csv")},
    )


def test_bulk_one_time_password_settings(
    web_app: Any, web_client: TestClient, web_database: WebDatabase, smtp_server: SmtpServer
) -> None:
    admin_home(web_client, web_database)
    assert 'id="otp-bulk-link"' in web_client.get("/settings/otp").text
    bad = post_otp_csv(
        web_client,
        [
            "0355501001,1,one@example.jp,abcd1234,pass1word",
            "0355501002,2,,,",
            "0355501003,1,three@,12345678,password",
        ],
    )
    assert bad.status_code == 400
    text = bad.text
    assert "2行目: ワンタイムパスワード利用設定は「0:利用なし、1:利用あり」" in text
    assert "3行目: メールアドレスの形式" in text and "3行目: 数字のみの確認用ID" in text
    assert "3行目: 確認用パスワードには英字と数字の両方" in text
    assert smtp_server.sink.messages == []  # nothing sent, nothing stored
    ok = post_otp_csv(
        web_client,
        [
            "0355501001,1,one@example.jp,abcd1234,pass1word",
            "0355501002,0,,,",
            "0355501003,1,three@example.jp,efgh5678,word2pass",
        ],
    )
    assert ok.status_code == 200 and "3件の電話番号" in ok.text
    first, second = smtp_server.sink.wait_for(1), smtp_server.sink.wait_for(2)
    assert {first["To"], second["To"]} == {"one@example.jp", "three@example.jp"}
    download = web_client.get("/settings/otp/bulk/download")
    rows = {r[0]: r for r in csv.reader(io.StringIO(download.content.decode("utf-8")))}
    assert rows["0355501001"][1] == "1" and rows["0355501002"][1] == "0" and rows["0355501039"][1] == ""
    # The additional number's own user completes the registration from the mail.
    mail = next(m for m in smtp_server.sink.messages if m["To"] == "one@example.jp")
    found = re.search(r"http\S+(/otp/verify\?token=\S+)", MailSink.body(mail))
    assert found
    with TestClient(web_app, base_url="http://127.0.0.1", follow_redirects=True) as browser:
        page = browser.get(found.group(1))
        token = page.text.split('name="token" value="')[1].split('"')[0]
        page = browser.post("/otp/verify", data={"csrf_token": csrf_of(page), "token": token})
        assert "本登録が完了しました" in page.text
