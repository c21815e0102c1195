"""The web tests run with the strict hash guard: no password hash or check inside a write
transaction, in the app under test (in this process) or in an ``ivr web`` subprocess
(``IVR_HASH_GUARD=raise``, see tests/fixtures/web.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_hash_in_write_transaction(no_hash_in_write_transaction: None) -> None:
    """Unless marked ``hash_in_transaction``."""
