"""Contracts CSV import (all or nothing), the contract view, and the `ivr contracts`/`ivr db` CLI."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.contracts import ContractImportError, contract_view, import_contracts, sample_csv_text
from core.enums import AuthUnit, Service
from core.models import Contract, PhoneNumber
from core.secrets import SecretHasher
from tests.core.conftest import BUSINESS_CONTRACT, SEED_ADDITIONAL, SEED_CONTRACT, SetTemporary

Sessions = sessionmaker[Session]


def counts(sessions: Sessions) -> tuple[int, int]:
    with sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Contract)) or 0,
            session.scalar(select(func.count()).select_from(PhoneNumber)) or 0,
        )


def test_sample_holds_the_seed_example_and_a_40_number_business(
    sample_db: Sessions, core_now: datetime
) -> None:
    assert counts(sample_db) == (3, 44)
    with sample_db() as session:
        view = contract_view(session, SEED_ADDITIONAL, now=core_now)
        assert view is not None and view["contract_number"] == SEED_CONTRACT
        services = {n["number"]: n["services"] for n in view["numbers"]}
        assert services == {
            SEED_CONTRACT: [Service.INCOMING_CALL_MAIL.value],
            SEED_ADDITIONAL: [Service.INCOMING_CALL_MAIL.value, Service.FAX_MAIL.value],
        }
        business = contract_view(session, BUSINESS_CONTRACT, now=core_now)
        assert business is not None and business["kind"] == "business" and len(business["numbers"]) == 40
        assert business["unit"] == AuthUnit.ADMIN_USER.value


def test_import_is_idempotent_and_updates(db_sessions: Sessions, core_now: datetime) -> None:
    with db_sessions() as session, session.begin():
        first = import_contracts(session, sample_csv_text(), now=core_now)
    with db_sessions() as session, session.begin():
        second = import_contracts(session, sample_csv_text(), now=core_now)
    assert (first.contracts_created, first.numbers_created) == (3, 44)
    assert (second.contracts_created, second.contracts_updated, second.numbers_updated) == (0, 3, 44)
    update = (
        "contract_number,number,services\r\n"
        "0300001111,0300002222,voice_warp\r\n"
        "0300001111,0300003333,FAXお知らせメール\r\n"
    )
    with db_sessions() as session, session.begin():
        import_contracts(session, update, now=core_now)
    with db_sessions() as session:
        view = contract_view(session, SEED_CONTRACT, now=core_now)
        assert view is not None
        services = {n["number"]: n["services"] for n in view["numbers"]}
        assert services["0300002222"] == ["voice_warp"]
        assert services["0300003333"] == ["fax_mail"]
        assert services[SEED_CONTRACT] == ["incoming_call_mail"]  # not in the file: untouched


def test_bad_rows_are_reported_by_line_and_nothing_is_written(
    db_sessions: Sessions, core_now: datetime
) -> None:
    bad = (
        "contract_number,number,services,name,kind,unit\n"
        "0311112222,0311112222,incoming_call_mail,ok,residential,line\n"  # line 2 fine
        "0311112222,12345,fax_mail,,,\n"  # line 3
        "0311112222,0311113333,bogus,,,\n"  # line 4
        "0311112222,0311114444,,,shop,\n"  # line 5
        "0311112222,0311115555,,,,everything\n"  # line 6
        "0311112222,0311112222,,,,\n"  # line 7 duplicate
    )
    with db_sessions() as session, session.begin(), pytest.raises(ContractImportError) as info:
        import_contracts(session, bad, now=core_now)
    lines = [p.line for p in info.value.problems]
    assert lines == [3, 4, 5, 6, 7]
    assert counts(db_sessions) == (0, 0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("number,services\n0311112222,\n", "missing column(s) contract_number"),
        ("contract_number,number,services,colour\n", "unknown column(s) colour"),
        ("contract_number,number,services\n", "no rows"),
        ("contract_number,number,services\n0311112222,0311113333,\n", "must list its contract number"),
    ],
)
def test_file_level_problems(db_sessions: Sessions, core_now: datetime, text: str, fragment: str) -> None:
    with db_sessions() as session, pytest.raises(ContractImportError) as info:
        import_contracts(session, text, now=core_now)
    assert fragment in str(info.value)


def test_number_of_another_contract_is_refused(sample_db: Sessions, core_now: datetime) -> None:
    steal = f"contract_number,number,services\n0311112222,0311112222,\n0311112222,{SEED_ADDITIONAL},\n"
    with sample_db() as session, pytest.raises(ContractImportError) as info:
        import_contracts(session, steal, now=core_now)
    assert f"already belongs to contract {SEED_CONTRACT}" in str(info.value)
    assert counts(sample_db) == (3, 44)


def test_view_shows_state_but_no_secret(
    sample_db: Sessions, set_temporary: SetTemporary, fast_hasher: SecretHasher, core_now: datetime
) -> None:
    set_temporary(SEED_ADDITIONAL, "24681357", unit=AuthUnit.ADMIN_USER, at=core_now)
    with sample_db() as session:
        view = contract_view(session, SEED_CONTRACT, now=core_now)
    assert view is not None and view["unit"] == "admin_user"
    extra = next(n for n in view["numbers"] if n["number"] == SEED_ADDITIONAL)
    assert extra["credential"]["state"] == "temporary"
    assert extra["credential"]["valid_until"].startswith("2026-04-02T09:00:00")
    dumped = json.dumps(view)
    assert "24681357" not in dumped and "argon2" not in dumped


# --- the CLI (SQLite through IVR_DATABASE_URL; the settings object picks it up) -----------------


def run_cli(monkeypatch: pytest.MonkeyPatch, url: str, *argv: str) -> int:
    from stack.cli.main import main

    monkeypatch.setenv("IVR_DATABASE_URL", url)
    return main(list(argv))


def test_cli_upgrade_import_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ivr.sqlite3'}"
    with pytest.raises(SystemExit, match="ivr db upgrade"):
        run_cli(monkeypatch, url, "contracts", "show", SEED_CONTRACT)
    assert run_cli(monkeypatch, url, "db", "upgrade") == 0
    assert run_cli(monkeypatch, url, "db", "current") == 0
    assert run_cli(monkeypatch, url, "contracts", "import", "--sample") == 0
    assert "3 contract(s) created" in capsys.readouterr().out
    assert run_cli(monkeypatch, url, "contracts", "show", "03-0000-2222", "--json") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["contract_number"] == SEED_CONTRACT and len(view["numbers"]) == 2
    assert run_cli(monkeypatch, url, "contracts", "show", SEED_CONTRACT) == 0
    out = capsys.readouterr().out
    assert "unit: line" in out and SEED_ADDITIONAL in out
    assert run_cli(monkeypatch, url, "contracts", "show", "0399999999") == 1
    assert run_cli(monkeypatch, url, "contracts", "show", "hello") == 2

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "contract_number,number,services\r\n0311112222,0311112222,\r\n0311112222,0311,\r\n", encoding="utf-8"
    )
    capsys.readouterr()
    assert run_cli(monkeypatch, url, "contracts", "import", str(bad)) == 1
    out = capsys.readouterr().out
    assert "line 3" in out and "not imported" in out
    assert run_cli(monkeypatch, url, "contracts", "show", "0311112222") == 1  # nothing written
    assert run_cli(monkeypatch, url, "contracts", "import", str(tmp_path / "missing.csv")) == 2
