"""Secrets are stored only as argon2id salted hashes and compared in constant time.

Hashing is slow on purpose: async callers run these functions in a thread
(``asyncio.to_thread``). The parameters live in a :class:`SecretHasher` so tests can use cheap ones
while production uses at least OWASP's (m=19 MiB, t=2, p=1); :meth:`SecretHasher.needs_rehash`
tells when a stored hash was made with other parameters.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets as _random
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class HashParameters:
    time_cost: int = 2
    memory_cost_kib: int = 19 * 1024
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16


#: OWASP Password Storage Cheat Sheet, argon2id second option (m=19 MiB, t=2, p=1).
PRODUCTION_PARAMETERS = HashParameters()
#: For unit tests only: valid argon2id, milliseconds per hash.
FAST_TEST_PARAMETERS = HashParameters(time_cost=1, memory_cost_kib=64, parallelism=1)


class SecretHasher:
    """argon2id with fixed parameters; never raises on a wrong or malformed hash."""

    def __init__(self, parameters: HashParameters = PRODUCTION_PARAMETERS) -> None:
        self.parameters = parameters
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost_kib,
            parallelism=parameters.parallelism,
            hash_len=parameters.hash_len,
            salt_len=parameters.salt_len,
            type=Type.ID,
        )
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretHasher({self.parameters!r})"

    def hash(self, plain: str) -> str:
        return self._hasher.hash(plain)

    def verify(self, stored_hash: str, plain: str) -> bool:
        """Constant-time check (argon2 compares digests with a constant-time compare)."""
        if not stored_hash or not stored_hash.startswith("$argon2"):
            self.dummy_verify(plain)  # keep the timing of a real check
            return False
        try:
            return self._hasher.verify(stored_hash, plain)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True

    def dummy_verify(self, plain: str) -> None:
        """Spend the time of a real verification (unknown number, missing credential)."""
        with self._lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(_random.token_hex(16))
            dummy = self._dummy_hash
        with contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
            self._hasher.verify(dummy, plain)


_default_hasher = SecretHasher()


def default_hasher() -> SecretHasher:
    return _default_hasher


def hash_secret(plain: str, hasher: SecretHasher | None = None) -> str:
    return (hasher or _default_hasher).hash(plain)


def verify_secret(stored_hash: str, plain: str, hasher: SecretHasher | None = None) -> bool:
    """Constant time; ``False`` on a malformed or empty hash."""
    return (hasher or _default_hasher).verify(stored_hash, plain)


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def mask(value: str | None) -> str:
    """What a secret looks like in a repr or a log."""
    return "<unset>" if not value else "***"
