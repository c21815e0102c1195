"""Helpers of the core tests (fixtures themselves are in tests/fixtures/db.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.enums import AuthUnit
from core.models import Contract, Credential, PhoneNumber
from core.phone_line import set_temporary_password
from core.secrets import SecretHasher

SEED_CONTRACT = "0300001111"
SEED_ADDITIONAL = "0300002222"
BUSINESS_CONTRACT = "0355501000"


def contract_id_of(session: Session, number: str) -> int:
    row = session.scalars(select(PhoneNumber).where(PhoneNumber.number == number)).one()
    return row.contract_id


def credential_of(session: Session, number: str) -> Credential | None:
    row = session.scalars(select(PhoneNumber).where(PhoneNumber.number == number)).one()
    return session.scalars(
        select(Credential)
        .where(Credential.phone_number_id == row.id)
        .execution_options(populate_existing=True)
    ).one_or_none()


def unit_of(session: Session, number: str) -> AuthUnit:
    contract = session.get(Contract, contract_id_of(session, number), populate_existing=True)
    assert contract is not None
    return contract.auth_unit


@pytest.fixture(autouse=True)
def _no_hash_in_write_transaction(no_hash_in_write_transaction: None) -> None:
    """Every core test runs with the strict hash guard (unless marked ``hash_in_transaction``)."""


SetTemporary = Callable[..., None]


@pytest.fixture
def set_temporary(sample_db: sessionmaker[Session], fast_hasher: SecretHasher) -> SetTemporary:
    """``set_temporary(number, digits, unit=AuthUnit.NUMBER, at=now)``, as the phone line does."""

    def apply(number: str, digits: str, *, unit: AuthUnit = AuthUnit.NUMBER, at: datetime) -> None:
        password_hash = fast_hasher.hash(digits)  # hashed first, as the phone line does
        with sample_db() as session, session.begin():
            set_temporary_password(
                session,
                contract_id=contract_id_of(session, number),
                unit=unit,
                target_number=number,
                password_hash=password_hash,
                now=at,
            )

    return apply
