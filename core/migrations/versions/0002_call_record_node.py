"""Call records carry the node (daemon) that took the call.

A daemon that starts closes the records its own node left open (outcome ``system_error``); with
several daemons sharing one PostgreSQL, the column keeps them from closing each other's live calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_call_records_node"), ["node"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("call_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_records_node"))
        batch_op.drop_column("node")
