"""Secrets are stored only as argon2id salted hashes and compared in constant time.

Hashing is slow on purpose: async callers run these functions in a thread
(``asyncio.to_thread``). The parameters live in a :class:`SecretHasher` so tests can use cheap ones
while production uses at least OWASP's (m=19 MiB, t=2, p=1); :meth:`SecretHasher.needs_rehash`
tells when a stored hash was made with other parameters.

No database lock may be held across a hash (a hash takes tens of milliseconds; every writer, the
phone line's included, would wait for it). ``core.db`` tells this module when the current thread
opens and closes a write transaction (:func:`note_write_transaction`); every hash or check made
while one is open is counted (:func:`hash_guard_violations`), and with :func:`set_hash_guard`
(``"raise"``, used by the tests, or ``IVR_HASH_GUARD=raise``) it raises
:class:`HashInsideWriteTransaction` instead. The message never holds the secret.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets as _random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

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


GuardMode = Literal["count", "raise"]


class HashInsideWriteTransaction(RuntimeError):
    """A password hash or check ran while this thread held an open write transaction."""


class _TransactionState(threading.local):
    write_depth = 0


_state = _TransactionState()
_guard_mode: GuardMode = "raise" if os.environ.get("IVR_HASH_GUARD") == "raise" else "count"
_violations = 0
_violations_lock = threading.Lock()


def note_write_transaction(opened: bool) -> None:
    """Called by ``core.db`` when this thread begins (True) or ends (False) a write transaction."""
    _state.write_depth = max(0, _state.write_depth + (1 if opened else -1))


def in_write_transaction() -> bool:
    return _state.write_depth > 0


def set_hash_guard(mode: GuardMode) -> GuardMode:
    """``"raise"``: a hash inside a write transaction raises; ``"count"``: it is only counted.
    Returns the previous mode."""
    global _guard_mode
    previous, _guard_mode = _guard_mode, mode
    return previous


@contextlib.contextmanager
def strict_hash_guard() -> Iterator[None]:
    """For tests: hashing inside a write transaction raises within this block."""
    previous = set_hash_guard("raise")
    try:
        yield
    finally:
        set_hash_guard(previous)


def hash_guard_violations() -> int:
    """How many hashes or checks ran inside a write transaction in this process."""
    return _violations


def _check_no_write_transaction(operation: str) -> None:
    if _state.write_depth <= 0:
        return
    global _violations
    with _violations_lock:
        _violations += 1
    if _guard_mode == "raise":
        raise HashInsideWriteTransaction(
            f"password {operation} inside an open write transaction (the database lock is held)"
        )


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
        _check_no_write_transaction("hash")
        return self._hasher.hash(plain)

    def verify(self, stored_hash: str, plain: str) -> bool:
        """Constant-time check (argon2 compares digests with a constant-time compare)."""
        _check_no_write_transaction("check")
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
        _check_no_write_transaction("check")
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
    """Compare a secret the caller sent with the one expected, in time that does not tell how much
    of it matched (tokens, bearer headers, the FastAGI secret)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
