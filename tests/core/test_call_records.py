"""Call records in batches (one transaction per batch) and the closing of a dead node's records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.call_records import (
    CallFinish,
    CallStart,
    close_open_call_records,
    get_call_record,
    start_call_record,
    write_call_record_batch,
)
from core.phone_line import lookup_caller_line, number_on_contract
from tests.core.conftest import BUSINESS_CONTRACT, SEED_ADDITIONAL, SEED_CONTRACT, contract_id_of

Sessions = sessionmaker[Session]


def _start(call_id: str, at: datetime) -> CallStart:
    return CallStart(call_id=call_id, caller="0300001111", service_number="0363044747", started_at=at)


def _finish(call_id: str, at: datetime, outcome: str = "completed") -> CallFinish:
    return CallFinish(
        call_id=call_id,
        ended_at=at,
        outcome=outcome,
        unit="line",
        target_number="0300001111",
        last_step="farewell",
        wrong_entries=1,
    )


def test_a_batch_inserts_updates_and_merges(db_sessions: Sessions, core_now: datetime) -> None:
    later = core_now + timedelta(seconds=30)
    with db_sessions() as session, session.begin():
        start_call_record(
            session, call_id="old", caller="0300001111", service_number=None, started_at=core_now
        )
    batch = [
        _start("both", core_now),
        _finish("old", later, "caller_hung_up"),
        _start("open", core_now),
        _finish("both", later),
        _finish("no-start", later, "busy"),
        _start("old", later),  # a repeated start changes nothing
    ]
    with db_sessions() as session, session.begin():
        write_call_record_batch(session, batch, node="host:4573")
    with db_sessions() as session:
        both = get_call_record(session, "both")
        assert both is not None and both.outcome == "completed" and both.started_at == core_now
        assert both.ended_at == later and both.wrong_entries == 1 and both.node == "host:4573"
        old = get_call_record(session, "old")
        assert old is not None and old.outcome == "caller_hung_up" and old.started_at == core_now
        assert old.last_step == "farewell" and old.node is None  # written before, by no node
        opened = get_call_record(session, "open")
        assert opened is not None and opened.outcome is None and opened.ended_at is None
        no_start = get_call_record(session, "no-start")
        assert no_start is not None and no_start.outcome == "busy" and no_start.started_at == later


def test_500_records_cost_one_transaction(
    db_engine: Engine, db_sessions: Sessions, core_now: datetime
) -> None:
    begins: list[int] = []
    commits: list[int] = []

    @event.listens_for(db_engine, "begin")
    def _begin(_conn: Any) -> None:
        begins.append(1)

    @event.listens_for(db_engine, "commit")
    def _commit(_conn: Any) -> None:
        commits.append(1)

    batch: list[CallStart | CallFinish] = []
    for i in range(250):
        batch.append(_start(f"call-{i}", core_now))
        batch.append(_finish(f"call-{i}", core_now + timedelta(seconds=20)))
    batch += [_start(f"open-{i}", core_now) for i in range(500)]
    with db_sessions() as session, session.begin():
        write_call_record_batch(session, batch, node="n1")
    assert (len(begins), len(commits)) == (1, 1)
    with db_sessions() as session:
        record = get_call_record(session, "call-249")
        assert record is not None and record.outcome == "completed"
        assert get_call_record(session, "open-499") is not None


def test_a_starting_node_closes_only_its_own_open_records(db_sessions: Sessions, core_now: datetime) -> None:
    later = core_now + timedelta(minutes=5)
    with db_sessions() as session, session.begin():
        write_call_record_batch(
            session, [_start("mine", core_now), _start("mine-done", core_now)], node="a:4573"
        )
        write_call_record_batch(session, [_finish("mine-done", core_now)], node="a:4573")
        write_call_record_batch(session, [_start("theirs", core_now)], node="b:4573")
        write_call_record_batch(session, [_start("mine-new", later)], node="a:4573")
    with db_sessions() as session, session.begin():
        closed = close_open_call_records(
            session, node="a:4573", now=later, outcome="system_error", started_before=later
        )
    assert closed == 1
    with db_sessions() as session:
        mine = get_call_record(session, "mine")
        assert mine is not None and mine.outcome == "system_error" and mine.ended_at == later
        done = get_call_record(session, "mine-done")
        assert done is not None and done.outcome == "completed"
        theirs = get_call_record(session, "theirs")
        assert theirs is not None and theirs.outcome is None
        new = get_call_record(session, "mine-new")
        assert new is not None and new.outcome is None  # started after the restart: live


def test_the_caller_lookup_is_one_select(db_engine: Engine, sample_db: Sessions) -> None:
    selects: list[str] = []

    @event.listens_for(db_engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    with sample_db() as session:
        line = lookup_caller_line(session, SEED_ADDITIONAL)
        assert line is not None and line.contract_number == SEED_CONTRACT and not line.is_contract_number
        assert len(selects) == 1
        contract_id = contract_id_of(session, SEED_CONTRACT)
        selects.clear()
        assert number_on_contract(session, contract_id, SEED_ADDITIONAL)
        assert not number_on_contract(session, contract_id, BUSINESS_CONTRACT)
        assert len(selects) == 2
        assert lookup_caller_line(session, "0399999999") is None
        assert lookup_caller_line(session, "anonymous") is None
