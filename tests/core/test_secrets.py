from __future__ import annotations

from datetime import UTC, datetime

from argon2 import extract_parameters
from sqlalchemy.orm import Session, sessionmaker

from core.auth import log_in
from core.models import Credential
from core.secrets import (
    FAST_TEST_PARAMETERS,
    PRODUCTION_PARAMETERS,
    SecretHasher,
    default_hasher,
    hash_secret,
    verify_secret,
)
from tests.core.conftest import SEED_CONTRACT, SetTemporary, credential_of


def test_production_parameters_meet_owasp_and_rehash_on_change(
    sample_db: sessionmaker[Session], set_temporary: SetTemporary
) -> None:
    """The one test that uses production argon2id parameters."""
    assert PRODUCTION_PARAMETERS.memory_cost_kib >= 19 * 1024
    assert PRODUCTION_PARAMETERS.time_cost >= 2
    assert PRODUCTION_PARAMETERS.parallelism >= 1
    stored = hash_secret("12345678")
    parameters = extract_parameters(stored)
    assert stored.startswith("$argon2id$")
    assert parameters.memory_cost >= 19 * 1024 and parameters.time_cost >= 2 and parameters.parallelism >= 1
    assert default_hasher().parameters == PRODUCTION_PARAMETERS
    assert verify_secret(stored, "12345678")
    assert not verify_secret(stored, "12345679")
    assert hash_secret("12345678") != stored  # salted

    # A hash made with other (cheaper) parameters is rehashed on the next successful login.
    now = datetime(2026, 4, 1, tzinfo=UTC)
    set_temporary(SEED_CONTRACT, "24681357", at=now)  # stored with FAST_TEST_PARAMETERS
    with sample_db() as session:
        old = credential_of(session, SEED_CONTRACT)
        assert old is not None
        old_hash = old.secret_hash
    production = default_hasher()
    assert production.needs_rehash(old_hash)
    result = log_in(sample_db, number=SEED_CONTRACT, password="24681357", now=now, hasher=production)
    assert result.status == "ok"
    with sample_db() as session:
        new = credential_of(session, SEED_CONTRACT)
        assert isinstance(new, Credential)
        assert new.secret_hash != old_hash
        assert not production.needs_rehash(new.secret_hash)
        assert extract_parameters(new.secret_hash).memory_cost == PRODUCTION_PARAMETERS.memory_cost_kib
    assert production.verify(new.secret_hash, "24681357")  # checked with the session closed


def test_malformed_or_empty_hash_is_false_not_an_error() -> None:
    hasher = SecretHasher(FAST_TEST_PARAMETERS)
    assert hasher.verify("", "x") is False
    assert hasher.verify("not-a-hash", "x") is False
    assert hasher.verify("$argon2id$v=19$m=64,t=1,p=1$garbage", "x") is False
    assert hasher.needs_rehash("not-a-hash")


def test_reprs_mask_secrets() -> None:
    hasher = SecretHasher(FAST_TEST_PARAMETERS)
    stored = hasher.hash("12345678")
    credential = Credential(secret_hash=stored, failures=0)
    assert stored not in repr(credential)
    assert "***" in repr(credential)
    assert "12345678" not in repr(hasher)
