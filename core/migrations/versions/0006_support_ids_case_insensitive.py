"""Support IDs: one per address compared case-insensitively (``login_key``, unique). IDs that already
differ only by case are reported and marked ``case_conflict`` (merged with nothing: an operator
resolves them with `ivr notices case-conflicts` / `ivr notices resolve-case-conflict --keep ID`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("support_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("login_key", sa.String(length=254), nullable=True))
        batch_op.add_column(
            sa.Column("case_conflict", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE support_accounts SET login_key = lower(login_email)")
    bind = op.get_bind()
    groups = bind.execute(
        sa.text("SELECT login_key, count(*) FROM support_accounts GROUP BY login_key HAVING count(*) > 1")
    ).all()
    if groups:
        keys = [key for key, _ in groups]
        ids = (
            bind.execute(
                sa.text("SELECT id FROM support_accounts WHERE login_key IN :keys ORDER BY id").bindparams(
                    sa.bindparam("keys", expanding=True)
                ),
                {"keys": keys},
            )
            .scalars()
            .all()
        )
        bind.execute(
            sa.text("UPDATE support_accounts SET case_conflict = :yes WHERE login_key IN :keys").bindparams(
                sa.bindparam("keys", expanding=True)
            ),
            {"yes": True, "keys": keys},
        )
        print(
            f"0006: {len(groups)} address(es) have support IDs that differ only by case "
            f"(support IDs {', '.join(str(i) for i in ids)}); nothing merged. "
            "List them: ivr notices case-conflicts; keep one: ivr notices resolve-case-conflict --keep ID",
            file=sys.stderr,
        )
    with op.batch_alter_table("support_accounts", schema=None) as batch_op:
        batch_op.alter_column("login_key", existing_type=sa.String(length=254), nullable=False)
        batch_op.alter_column("case_conflict", server_default=None, existing_type=sa.Boolean())
    op.create_index(
        "ux_support_accounts_login_key",
        "support_accounts",
        ["login_key"],
        unique=True,
        sqlite_where=sa.text("case_conflict = 0"),
        postgresql_where=sa.text("NOT case_conflict"),
    )


def downgrade() -> None:
    op.drop_index("ux_support_accounts_login_key", table_name="support_accounts")
    with op.batch_alter_table("support_accounts", schema=None) as batch_op:
        batch_op.drop_column("case_conflict")
        batch_op.drop_column("login_key")
