"""The bulk CSV files as pure functions (web_stub.csv_files): no app, no database."""

from __future__ import annotations

import csv
import io

import pytest

from web_stub.csv_files import (
    MAX_ERROR_LINES,
    bound_errors,
    csv_download,
    decode_csv,
    new_password_rules,
    number_matches,
    parse_bulk_csv,
    parse_otp_bulk_csv,
)

ALLOWED = {"0355501001", "0355501002", "0355501003"}


def test_decode_accepts_utf8_with_or_without_bom_and_shift_jis() -> None:
    text = "0355501001,パスワード\r\n"
    assert decode_csv(text.encode("utf-8")) == (text, [])
    assert decode_csv(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, [])
    assert decode_csv(text.encode("cp932")) == (text, [])


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "CSVファイルを指定してください"),
        (b"  \r\n", "CSVファイルを指定してください"),
        ("0355501001,a".encode("utf-16"), "UTF-16には対応していません"),
        (b"\x80\xff\xfe\x81\x00", "UTF-16"),
        (b"x" * (1024 * 1024 + 1), "1MBまで"),
    ],
)
def test_decode_refuses_what_it_cannot_read(raw: bytes, fragment: str) -> None:
    text, errors = decode_csv(raw)
    assert text == "" and len(errors) == 1 and fragment in errors[0]


def test_password_file_rows_and_every_error_in_file_order() -> None:
    raw = "\r\n".join(
        [
            '"0355501001","def13579"',
            "",  # blank lines are skipped, not counted as errors
            "0355501002,13572468",
            "0355501003,abc,extra",
            "0300001111,ghi13579",
            "０３５５５０１００３,ｄｅｆ２４６８０",  # full-width number is forgiven, password not
            "0355501001,xyz13579",
            "0355501003,",
        ]
    ).encode()
    rows, errors = parse_bulk_csv(raw, allowed=ALLOWED, rules=new_password_rules)
    assert rows == [(1, "0355501001", "def13579")]
    assert errors == [
        "3行目（0355501002）: 数字のみのパスワードは設定できません。英字と数字の両方を含めてください。",
        "4行目: 「電話番号」,「新規パスワード」の2項目で記載してください。",
        "5行目: 0300001111 は、この手続きの対象の電話番号ではありません。",
        "6行目（0355501003）: パスワードに全角文字が含まれています。"
        "パスワードは半角英数字で入力してください（入力モードを半角英数に切り替えてください）。",
        "7行目: 0355501001 が複数回記載されています。",
        "8行目: 0355501003 が複数回記載されています。",
    ]


def test_password_file_without_rules_checks_structure_only() -> None:
    rows, errors = parse_bulk_csv(b"0355501001,1\r\n", allowed=ALLOWED, column="現在のパスワード")
    assert rows == [(1, "0355501001", "1")] and errors == []
    rows, errors = parse_bulk_csv(b"0355501001\r\n", allowed=ALLOWED, column="現在のパスワード")
    assert errors == ["1行目: 「電話番号」,「現在のパスワード」の2項目で記載してください。"]


def test_a_file_with_no_row_says_so() -> None:
    assert parse_bulk_csv(b"\r\n\r\n", allowed=ALLOWED) == (
        [],
        ["CSVファイルを指定してください。"],
    )
    assert parse_bulk_csv(b" , \r\n", allowed=ALLOWED)[1] == ["CSVファイルに変更する電話番号がありません。"]


def test_otp_file_rows_and_errors() -> None:
    raw = "\r\n".join(
        [
            "0355501001,1,one@example.jp,abcd1234,pass1word",
            "0355501002,0,,,",
            "0355501003,2,,,",
            "0355501003,1,=cmd@example.jp,12345678,password",
            "0355501001,0,,,,extra",
        ]
    ).encode()
    rows, errors = parse_otp_bulk_csv(raw, allowed=ALLOWED)
    assert rows == [
        (1, "0355501001", True, "one@example.jp", "abcd1234", "pass1word"),
        (2, "0355501002", False, "", "", ""),
    ]
    assert errors[0].startswith("3行目: ワンタイムパスワード利用設定は「0:利用なし、1:利用あり」")
    assert [e.split(":")[0] for e in errors[1:]] == ["4行目", "4行目", "4行目", "5行目"]
    assert "メールアドレスの形式" in errors[1] and "数字のみの確認用ID" in errors[2]
    assert errors[4] == "5行目: 項目は5つまでです。"


def test_otp_file_long_secrets_are_refused_without_checking_them() -> None:
    rows, errors = parse_otp_bulk_csv(
        f"0355501001,1,one@example.jp,{'a1' * 40},pass1word\r\n".encode(),
        allowed=ALLOWED,
        max_secret_chars=64,
    )
    assert rows == [] and errors[0].startswith("1行目: ")


def test_errors_are_bounded_then_counted() -> None:
    errors = [f"{n}行目: x" for n in range(1, 1006)]
    shown = bound_errors(errors)
    assert shown[:MAX_ERROR_LINES] == errors[:MAX_ERROR_LINES]
    assert shown[MAX_ERROR_LINES:] == ["ほか5件のエラーがあります。"]
    assert bound_errors(errors[:1000]) == errors[:1000]


def test_download_quotes_every_cell_uses_crlf_and_neutralises_formulas() -> None:
    response = csv_download([["0355501001", "*"], ["=1+1", "@SUM(A1)"]], "p.csv")
    body = bytes(response.body).decode("utf-8")
    assert body == '"0355501001","*"\r\n"\'=1+1","\'@SUM(A1)"\r\n'
    assert list(csv.reader(io.StringIO(body)))[1] == ["'=1+1", "'@SUM(A1)"]
    assert response.headers["content-disposition"] == 'attachment; filename="p.csv"'


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("0355", True),
        ("03555010*5", True),
        ("*1005", True),
        ("0399", False),
        ("03-5550", True),
        ("abc", False),
    ],
)
def test_number_search_by_prefix_and_wildcard(pattern: str, matches: bool) -> None:
    assert number_matches("0355501005", pattern) is matches
