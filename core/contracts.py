"""Operators' contract data: CSV import (all or nothing) and a secret-free view of a contract.

CSV (UTF-8, a BOM is fine, CRLF or LF), one row per number, with a header row::

    contract_number,number,services,name,kind,unit
    0300001111,0300001111,incoming_call_mail,見本 一郎,residential,line
    0300001111,0300002222,incoming_call_mail;fax_mail,,,

- ``contract_number`` and ``number`` (required): 10/11 national digits; hyphens and ``+81`` are
  accepted and normalised. Each contract must list (here or already in the database) its contract
  number as one of its numbers.
- ``services`` (required column, may be empty): codes separated by ``;`` (``incoming_call_mail``,
  ``fax_mail``, ``voice_warp``, ``bulk_transfer``, ``fault_notification``; the Japanese names are
  accepted too). For a number in the file, its services become exactly this list.
- ``name``, ``kind`` (``residential`` | ``business``), ``unit`` (``line`` | ``number`` | ``admin_user``)
  are optional, given on any row of the contract; empty keeps the current value (new contracts:
  ``residential``, ``line``).

Existing contracts are updated, new ones created; numbers missing from the file are left alone.
A bad row is reported with its line number and nothing of the file is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.audit import Audit
from core.directory import find_number
from core.enums import AuditEventType, AuthUnit, Channel, CredentialState, OtpUsage, Service
from core.models import Contract, PhoneNumber, ServiceSubscription
from core.phone import InvalidPhoneNumber, normalize_number
from core.policy import DEFAULT_POLICY, PolicyLike
from core.rules import credential_state, identity_number_for

REQUIRED_COLUMNS = ("contract_number", "number", "services")
OPTIONAL_COLUMNS = ("name", "kind", "unit")
KINDS = ("residential", "business")
_SERVICE_BY_NAME: dict[str, Service] = {s.value: s for s in Service} | {s.label_ja: s for s in Service}


@dataclass
class CsvProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ContractImportError(ValueError):
    def __init__(self, problems: list[CsvProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems[:5]) + (" …" if len(problems) > 5 else ""))


@dataclass
class ContractSpec:
    contract_number: str
    first_line: int
    name: str | None = None
    kind: str | None = None
    unit: AuthUnit | None = None
    numbers: dict[str, list[Service]] = field(default_factory=dict)


@dataclass
class ImportSummary:
    contracts_created: int = 0
    contracts_updated: int = 0
    numbers_created: int = 0
    numbers_updated: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def sample_csv_text() -> str:
    return resources.files("core.data").joinpath("sample_contracts.csv").read_text(encoding="utf-8")


def parse_contracts_csv(text: str) -> list[ContractSpec]:
    """Validate the whole file; raises :class:`ContractImportError` listing every bad line."""
    problems: list[CsvProblem] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ContractImportError([CsvProblem(1, "the file is empty")]) from None
    except csv.Error as exc:
        raise ContractImportError([CsvProblem(1, f"unreadable CSV: {exc}")]) from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c and c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        message = []
        if missing:
            message.append("missing column(s) " + ", ".join(missing))
        if unknown:
            message.append("unknown column(s) " + ", ".join(unknown))
        raise ContractImportError([CsvProblem(1, "; ".join(message))])

    contracts: dict[str, ContractSpec] = {}
    owner_of: dict[str, str] = {}
    line_no = 1
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(CsvProblem(reader.line_num, f"unreadable CSV: {exc}"))
            break
        line_no = reader.line_num
        if not any(cell.strip() for cell in raw):
            continue
        if len(raw) > len(columns):
            problems.append(CsvProblem(line_no, f"{len(raw)} fields, the header has {len(columns)}"))
            continue
        row = {columns[i]: raw[i].strip() if i < len(raw) else "" for i in range(len(columns))}
        row_problems: list[str] = []
        contract_number = _number(row["contract_number"], "contract_number", row_problems)
        number = _number(row["number"], "number", row_problems)
        services: list[Service] = []
        for item in (s.strip() for s in row["services"].replace("|", ";").split(";")):
            if not item:
                continue
            service = _SERVICE_BY_NAME.get(item) or _SERVICE_BY_NAME.get(item.lower())
            if service is None:
                row_problems.append(f"unknown service {item!r}")
            elif service not in services:
                services.append(service)
        kind = row.get("kind", "") or None
        if kind is not None and kind not in KINDS:
            row_problems.append(f"kind must be one of {', '.join(KINDS)}")
        unit: AuthUnit | None = None
        if row.get("unit"):
            try:
                unit = AuthUnit(row["unit"])
            except ValueError:
                row_problems.append("unit must be one of " + ", ".join(u.value for u in AuthUnit))
        if contract_number and number:
            previous_owner = owner_of.get(number)
            if previous_owner is not None:
                row_problems.append(f"number {number} is listed twice")
            owner_of[number] = contract_number
        if row_problems:
            problems.extend(CsvProblem(line_no, p) for p in row_problems)
            continue
        assert contract_number and number
        spec = contracts.setdefault(contract_number, ContractSpec(contract_number, line_no))
        spec.numbers[number] = services
        for attr, value in (("name", row.get("name") or None), ("kind", kind), ("unit", unit)):
            if value is None:
                continue
            current = getattr(spec, attr)
            if current is not None and current != value:
                problems.append(CsvProblem(line_no, f"{attr} differs from an earlier row of this contract"))
            setattr(spec, attr, value)
    if not contracts and not problems:
        problems.append(CsvProblem(line_no, "no rows"))
    if problems:
        raise ContractImportError(problems)
    return list(contracts.values())


def _number(value: str, column: str, problems: list[str]) -> str | None:
    try:
        return normalize_number(value)
    except InvalidPhoneNumber as exc:
        problems.append(f"{column} {value!r} is not a phone number ({exc.reason})")
        return None


def import_contracts(session: Session, text: str, *, now: datetime) -> ImportSummary:
    """Parse, check against the database, then write. Does NOT commit; raises before writing."""
    specs = parse_contracts_csv(text)
    problems: list[CsvProblem] = []
    existing_contracts = {
        c.contract_number: c
        for c in session.scalars(
            select(Contract)
            .where(Contract.contract_number.in_([s.contract_number for s in specs]))
            .options(selectinload(Contract.numbers).selectinload(PhoneNumber.services))
        )
    }
    all_numbers = [n for s in specs for n in s.numbers]
    existing_numbers = {
        p.number: p
        for p in session.scalars(
            select(PhoneNumber)
            .where(PhoneNumber.number.in_(all_numbers))
            .options(selectinload(PhoneNumber.contract), selectinload(PhoneNumber.services))
        )
    }
    for spec in specs:
        contract = existing_contracts.get(spec.contract_number)
        if spec.contract_number not in spec.numbers and (
            contract is None or all(p.number != spec.contract_number for p in contract.numbers)
        ):
            problems.append(
                CsvProblem(spec.first_line, f"contract {spec.contract_number} must list its contract number")
            )
        for number in spec.numbers:
            row = existing_numbers.get(number)
            if row is not None and row.contract.contract_number != spec.contract_number:
                problems.append(
                    CsvProblem(
                        spec.first_line,
                        f"number {number} already belongs to contract {row.contract.contract_number}",
                    )
                )
        owner = existing_numbers.get(spec.contract_number)
        if contract is None and owner is not None:
            problems.append(
                CsvProblem(
                    spec.first_line,
                    f"{spec.contract_number} is an additional number of contract "
                    f"{owner.contract.contract_number}",
                )
            )
    if problems:
        raise ContractImportError(problems)

    summary = ImportSummary()
    for spec in specs:
        contract = existing_contracts.get(spec.contract_number)
        if contract is None:
            contract = Contract(
                contract_number=spec.contract_number,
                name=spec.name or "",
                kind=spec.kind or "residential",
                auth_unit=spec.unit or AuthUnit.LINE,
            )
            session.add(contract)
            summary.contracts_created += 1
        else:
            if spec.name is not None:
                contract.name = spec.name
            if spec.kind is not None:
                contract.kind = spec.kind
            if spec.unit is not None and spec.unit != contract.auth_unit:
                contract.auth_unit = spec.unit
                contract.unit_changed_at = now
            summary.contracts_updated += 1
        for number, services in spec.numbers.items():
            row = existing_numbers.get(number)
            if row is None:
                row = PhoneNumber(number=number, contract=contract)
                session.add(row)
                summary.numbers_created += 1
            else:
                summary.numbers_updated += 1
            wanted = set(services)
            row.services = [s for s in row.services if s.service in wanted] + [
                ServiceSubscription(service=s) for s in services if s not in {x.service for x in row.services}
            ]
        session.flush()
        Audit(session, now, Channel.CLI, spec.contract_number, contract.id).record(
            AuditEventType.CONTRACT_IMPORTED, "ok", f"numbers={len(spec.numbers)}"
        )
    session.flush()
    return summary


def contract_view(
    session: Session, number: str, *, now: datetime, policy: PolicyLike = DEFAULT_POLICY
) -> dict[str, Any] | None:
    """The contract of ``number``: unit and, per number, services, credential state, failures and
    OTP state. Never a secret. None when the number is on no contract."""
    row = find_number(session, number)
    if row is None:
        return None
    contract = session.scalars(
        select(Contract)
        .where(Contract.id == row.contract_id)
        .options(
            selectinload(Contract.numbers).selectinload(PhoneNumber.services),
            selectinload(Contract.numbers).selectinload(PhoneNumber.credential),
            selectinload(Contract.numbers).selectinload(PhoneNumber.otp_settings),
        )
    ).one()
    numbers = sorted(contract.numbers, key=lambda p: (p.number != contract.contract_number, p.number))
    items = []
    for phone in numbers:
        identity = identity_number_for(contract.auth_unit, contract.contract_number, phone.number)
        credential = phone.credential
        state = credential_state(credential, now, policy)
        items.append(
            {
                "number": phone.number,
                "is_contract_number": phone.number == contract.contract_number,
                "services": [s.value for s in phone.service_codes],
                "logs_in": identity is not None,
                "credential": {
                    "state": state.value,
                    "kind": credential.kind.value if credential else None,
                    "set_at": credential.set_at.isoformat() if credential else None,
                    "valid_until": (
                        credential.expires_at.isoformat()
                        if credential and credential.expires_at and state is CredentialState.TEMPORARY
                        else None
                    ),
                    "consecutive_failures": credential.failures if credential else 0,
                },
                "otp": {
                    "usage": (phone.otp_settings.usage if phone.otp_settings else OtpUsage.UNDECIDED).value,
                    "mail_address": phone.otp_settings.mail_address if phone.otp_settings else None,
                    "registered": bool(phone.otp_settings and phone.otp_settings.registered_at),
                },
            }
        )
    return {
        "contract_number": contract.contract_number,
        "name": contract.name,
        "kind": contract.kind,
        "unit": contract.auth_unit.value,
        "unit_label": contract.auth_unit.label_ja,
        "numbers": items,
    }


def read_csv_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp932")
        except UnicodeDecodeError as exc:
            raise ContractImportError([CsvProblem(1, "the file is neither UTF-8 nor Shift_JIS")]) from exc
