"""The bulk CSV files (seed P13, P15–P17, P27) as pure functions: bytes in, rows and every error of
the file out (each with its line, in file order), and the download side. No HTTP, no database: the
rules that need the database (the current password, the contract's other numbers) run when a file
is applied."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable

from starlette.responses import Response

from core.mail_address import FORMULA_PREFIXES, mail_address_problems
from core.password_rules import (
    confirmation_id_violations,
    confirmation_password_violations,
    password_rule_violations,
)
from web_stub import messages as msg

MAX_SECRET_CHARS_IN_FILE = 64  # a longer cell is not a password: not checked further
MAX_ERROR_LINES = 1000  # a bulk page shows at most this many errors, then how many more
BULK_THRESHOLD = 33  # seed P12: number search and bulk settings for 33 numbers or more
BULK_MAX_BYTES = 1024 * 1024

#: A row of the one-time-password file: (line, number, use, address, confirmation ID, password).
OtpRow = tuple[int, str, bool, str, str, str]


def normalize_login_number(raw: str) -> str:
    """Full-width digits and hyphens are forgiven; the result is what core looks up."""
    text = unicodedata.normalize("NFKC", raw or "")
    return re.sub(r"[\s\-‐ー－]", "", text)


def email_ok(email: str) -> bool:
    """A receiving address the site accepts: core's one rule (`core.mail_address`)."""
    return not mail_address_problems(email)


def number_matches(number: str, pattern: str) -> bool:
    """Number search (seed P12): a prefix (市外局番等), with ``*`` matching any digits."""
    cleaned = normalize_login_number(pattern)
    if not cleaned or not re.fullmatch(r"[0-9*]+", cleaned):
        return False
    regex = "".join(r"\d*" if c == "*" else c for c in cleaned)
    return re.match(regex, number) is not None


def decode_csv(raw: bytes) -> tuple[str, list[str]]:
    """A bulk file's text: UTF-8 (with or without BOM) or Shift_JIS (Excel on Japanese Windows)."""
    if len(raw) > BULK_MAX_BYTES:
        return "", ["ファイルが大きすぎます（1MBまで）。"]
    if not raw.strip():
        return "", ["CSVファイルを指定してください。"]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        return "", [
            "ファイルの文字コードを読み取れません（UTF-16には対応していません）。UTF-8またはShift_JISで保存してください。"
        ]
    for encoding in ("utf-8-sig", "cp932"):
        try:
            return raw.decode(encoding), []
        except UnicodeDecodeError:
            continue
    return "", ["ファイルの文字コードを読み取れません。UTF-8またはShift_JISで保存してください。"]


def parse_bulk_csv(
    raw: bytes,
    *,
    allowed: set[str],
    column: str = "新規パスワード",
    rules: Callable[[str, str], list[str]] | None = None,
) -> tuple[list[tuple[int, str, str]], list[str]]:
    """Rows ``(line, number, password)`` of a bulk file ("電話番号","新規パスワード", CRLF), and every
    error of the file: structural ones and, with ``rules`` (number, password -> messages), the
    password rules of each well-formed row, each with its line, in the order of the file.

    UTF-8 (with or without BOM) or Shift_JIS (what Excel writes on Japanese Windows)."""
    text, errors = decode_csv(raw)
    rows: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    for line, record in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != 2:
            errors.append(f"{line}行目: 「電話番号」,「{column}」の2項目で記載してください。")
            continue
        number = normalize_login_number(record[0])
        password = record[1]
        if number not in allowed:
            errors.append(f"{line}行目: {number} は、この手続きの対象の電話番号ではありません。")
        elif number in seen:
            errors.append(f"{line}行目: {number} が複数回記載されています。")
        elif not password:
            errors.append(f"{line}行目: {number} の{column}が空欄です。")
        else:
            seen.add(number)
            broken = rules(number, password) if rules is not None else []
            if broken:
                errors += [f"{line}行目（{number}）: {text}" for text in broken]
                continue
            rows.append((line, number, password))
    if not rows and not errors:
        errors.append("CSVファイルに変更する電話番号がありません。")
    return rows, errors


def new_password_rules(number: str, password: str) -> list[str]:
    """The rules a new password of ``number`` breaks that need no database (the current password
    and the contract's other numbers are checked when the file is applied)."""
    if len(password) > MAX_SECRET_CHARS_IN_FILE:
        return msg.password_messages(["length"])
    return msg.password_messages(
        password_rule_violations(password, current_hash=None, customer_numbers=[number]), password
    )


def bound_errors(errors: list[str], limit: int = MAX_ERROR_LINES) -> list[str]:
    """Every error up to ``limit`` lines, then how many more there are."""
    if len(errors) <= limit:
        return errors
    return [*errors[:limit], f"ほか{len(errors) - limit}件のエラーがあります。"]


#: OWASP "CSV injection": a cell a spreadsheet would read as a formula gets a leading quote.


def csv_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def csv_download(rows: list[list[str]], filename: str) -> Response:
    """Every download: quoted cells, CRLF, formula cells neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row])
    return Response(
        out.getvalue().encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def parse_otp_bulk_csv(
    raw: bytes, *, allowed: set[str], max_secret_chars: int = MAX_SECRET_CHARS_IN_FILE
) -> tuple[list[OtpRow], list[str]]:
    """Rows of the one-time-password bulk file ("電話番号","0/1","メールアドレス","確認用ID",
    "確認用パスワード") and every error of the file, each with its line. A "1" row needs a valid
    address and confirmation ID and password (core's rules); a "0" row may leave them empty."""
    text, errors = decode_csv(raw)
    rows: list[OtpRow] = []
    seen: set[str] = set()
    for line, record in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not record or all(not cell.strip() for cell in record):
            continue
        cells = [c.strip() for c in record] + [""] * (5 - len(record))
        if len(record) > 5:
            errors.append(f"{line}行目: 項目は5つまでです。")
            continue
        number, use, mail, cid, cpw = cells[:5]
        number = normalize_login_number(number)
        problems: list[str] = []
        if number not in allowed:
            problems.append(f"{number} は、この手続きの対象の電話番号ではありません。")
        elif number in seen:
            problems.append(f"{number} が複数回記載されています。")
        if use not in ("0", "1"):
            problems.append(
                "ワンタイムパスワード利用設定は「0:利用なし、1:利用あり」のいずれかを設定してください。"
            )
        elif use == "1":
            if not email_ok(mail):
                problems.append(msg.EMAIL_INVALID)
            if len(cid) > max_secret_chars or len(cpw) > max_secret_chars:
                problems.append(msg.SECRET_TOO_LONG)
            problems += msg.confirmation_id_messages(confirmation_id_violations(cid), cid)
            problems += msg.confirmation_password_messages(confirmation_password_violations(cpw), cpw)
        if problems:
            errors += [f"{line}行目: {p}" for p in problems]
            continue
        seen.add(number)
        rows.append((line, number, use == "1", mail, cid, cpw))
    if not rows and not errors:
        errors.append("CSVファイルに設定する電話番号がありません。")
    return rows, errors
