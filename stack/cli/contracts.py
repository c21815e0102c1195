"""`ivr contracts`: import contracts from CSV, show one contract (never a secret)."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stack.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "contracts", help="contracts, numbers and services: import from CSV, show one"
    )
    commands = parser.add_subparsers(dest="contracts_command", required=True, metavar="ACTION")

    importer = commands.add_parser(
        "import",
        help="create or update contracts from a CSV file (all rows or none)",
        description="CSV columns: contract_number,number,services[,name,kind,unit]; one row per number; "
        "services separated by ';'. Bad rows are reported by line number and nothing is written.",
    )
    source = importer.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help="the CSV file")
    source.add_argument("--sample", action="store_true", help="load the sample contracts shipped with ivr")
    importer.set_defaults(func=_import)

    show = commands.add_parser("show", help="a contract: unit, numbers, credential and OTP state")
    show.add_argument("number", help="the contract number or any of its numbers")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)


def _session_factory(settings: Settings) -> Any:
    from sqlalchemy.exc import OperationalError

    from core.db import make_engine, make_session_factory, schema_is_current, sqlite_path

    logging.getLogger("alembic").setLevel(logging.WARNING)
    url = settings.effective_database_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise SystemExit(f"ivr contracts: no database at {path}; run `ivr db upgrade` first")
    engine = make_engine(url)
    try:
        current = schema_is_current(engine)
    except OperationalError as exc:
        engine.dispose()
        raise SystemExit(f"ivr contracts: cannot open the database: {exc.orig}") from None
    if not current:
        engine.dispose()
        raise SystemExit("ivr contracts: the database schema is missing or old; run `ivr db upgrade` first")
    return make_session_factory(engine)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from core.contracts import ContractImportError, import_contracts, read_csv_file, sample_csv_text

    try:
        text = sample_csv_text() if args.sample else read_csv_file(args.file)
    except OSError as exc:
        print(f"ivr contracts import: cannot read {args.file}: {exc.strerror}")
        return 2
    except ContractImportError as exc:
        print(f"ivr contracts import: {exc}")
        return 2
    sessions = _session_factory(settings)
    name = "the sample contracts" if args.sample else str(args.file)
    try:
        with sessions() as session, session.begin():
            summary = import_contracts(session, text, now=datetime.now(UTC))
    except ContractImportError as exc:
        print(f"ivr contracts import: {name} was not imported ({len(exc.problems)} problem(s)):")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    print(
        f"imported {name}: {summary.contracts_created} contract(s) created, "
        f"{summary.contracts_updated} updated; {summary.numbers_created} number(s) created, "
        f"{summary.numbers_updated} updated"
    )
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from core.contracts import contract_view
    from core.phone import InvalidPhoneNumber, normalize_number

    try:
        number = normalize_number(args.number)
    except InvalidPhoneNumber as exc:
        print(f"ivr contracts show: {args.number!r} is not a phone number ({exc.reason})")
        return 2
    sessions = _session_factory(settings)
    with sessions() as session:
        view = contract_view(session, number, now=datetime.now(UTC), policy=settings.credentials)
    if view is None:
        if args.json:
            print(json.dumps({"error": "not_found", "number": number}))
        else:
            print(f"{number} is not on any contract")
        return 1
    if args.json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
        return 0
    print(_render(view))
    return 0


def _render(view: dict[str, Any]) -> str:
    lines = [
        f"contract {view['contract_number']}  {view['name']}  ({view['kind']})",
        f"unit: {view['unit']} ({view['unit_label']})",
        f"{'number':<12} {'role':<10} {'credential':<34} {'fails':>5}  {'otp':<10} services",
    ]
    for item in view["numbers"]:
        credential = item["credential"]
        state = credential["state"]
        if state == "temporary":
            state = f"temporary until {credential['valid_until'][:19]}Z"
        if not item["logs_in"]:
            state = "(line unit: contract's password)"
        otp = item["otp"]["usage"]
        lines.append(
            f"{item['number']:<12} {'contract' if item['is_contract_number'] else 'additional':<10} "
            f"{state:<34} {credential['consecutive_failures']:>5}  {otp:<10} {','.join(item['services'])}"
        )
    return "\n".join(lines)
