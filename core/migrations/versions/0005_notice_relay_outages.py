"""Notices: the relay's outages (the give-up clock of waiting mails stops while the relay is down);
a destination's unfinished notices by age (each destination gets its notices in posting order).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notice_relay_outages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_relay_outages")),
    )
    with op.batch_alter_table("notice_relay_outages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notice_relay_outages_started_at"), ["started_at"], unique=False)
    with op.batch_alter_table("notice_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notice_deliveries_destination_pending", ["destination_id", "state", "notice_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notice_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_notice_deliveries_destination_pending")
    with op.batch_alter_table("notice_relay_outages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notice_relay_outages_started_at"))
    op.drop_table("notice_relay_outages")
