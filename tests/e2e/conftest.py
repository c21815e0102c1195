"""When the session ends: no password any e2e test typed is in any log, call record or Asterisk log.

A session fixture every e2e test uses; its check runs at the end of the whole session (after the
web tests that also place calls), and its failure fails the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.voice import PASSWORDS_USED

_DTMF_LINE = re.compile(r"DTMF[^\n]*?'([0-9*#A-D])'")


def _asterisk_logs(lab: Any) -> list[Path]:
    directory = Path(lab.asterisk_log_path).parent
    return [p for p in directory.rglob("*") if p.is_file()]


@pytest.fixture(scope="session", autouse=True)
def no_password_in_any_log_or_record(
    e2e_log_path: Path, lab: Any, e2e_sessions: sessionmaker[Session]
) -> Iterator[None]:
    yield
    if not PASSWORDS_USED or not e2e_log_path.exists():
        return  # no e2e call placed a password (a selection of tests): nothing to scan
    sources: dict[str, str] = {"daemon log": e2e_log_path.read_text(errors="replace")}
    assert "call_finished" in sources["daemon log"]  # the calls did happen
    for path in _asterisk_logs(lab):
        sources[f"asterisk {path.name}"] = path.read_bytes().decode("utf-8", errors="replace")
    with e2e_sessions() as session:
        for table in ("call_records", "audit_events"):
            rows = session.execute(text(f"SELECT * FROM {table}")).all()
            sources[table] = "\n".join(repr(tuple(row)) for row in rows)
    assert sources["call_records"]
    for name, content in sources.items():
        for password in PASSWORDS_USED:
            assert password not in content, f"a password is in {name}"
        # per-key DTMF lines must not spell one either
        keys = "".join(_DTMF_LINE.findall(content))
        for password in PASSWORDS_USED:
            assert password not in keys, f"DTMF lines in {name} spell a password"
