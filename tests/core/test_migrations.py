"""The migrations build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from core.db import HEAD_REVISION, downgrade_database, head_revision, schema_is_current, upgrade_database
from core.schema import METADATA


def test_schema_matches_models(db_engine: Engine) -> None:
    assert schema_is_current(db_engine)
    with db_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), METADATA)
    assert differences == []


def test_the_head_constant_is_alembics_head() -> None:
    # schema_is_current compares with HEAD_REVISION (no alembic import on a call's start-up)
    assert head_revision() == HEAD_REVISION


def test_an_older_schema_is_not_current(db_url: str, db_engine: Engine) -> None:
    downgrade_database(db_url, "0001")
    db_engine.dispose()
    assert not schema_is_current(db_engine)
    upgrade_database(db_url)
    db_engine.dispose()


def test_downgrade_and_upgrade_again(db_url: str, db_engine: Engine) -> None:
    downgrade_database(db_url, "base")
    db_engine.dispose()
    assert set(inspect(db_engine).get_table_names()) <= {"alembic_version"}
    upgrade_database(db_url)
    db_engine.dispose()
    assert schema_is_current(db_engine)
    assert head_revision() is not None
    assert "credentials" in inspect(db_engine).get_table_names()


def test_0002_adds_the_call_record_node(db_url: str, db_engine: Engine) -> None:
    columns = {c["name"] for c in inspect(db_engine).get_columns("call_records")}
    indexes = {i["name"] for i in inspect(db_engine).get_indexes("call_records")}
    assert "node" in columns and "ix_call_records_node" in indexes
    downgrade_database(db_url, "0001")
    db_engine.dispose()
    assert "node" not in {c["name"] for c in inspect(db_engine).get_columns("call_records")}
    upgrade_database(db_url)
    db_engine.dispose()
    assert schema_is_current(db_engine)
