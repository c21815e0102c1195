"""Support site: support IDs and sessions, destinations, notices and the notice delivery queue.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("area", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("follows_id", sa.Integer(), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("posted_by", sa.String(length=80), nullable=False),
        sa.Column("message_token", sa.String(length=32), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["follows_id"], ["notices.id"], name=op.f("fk_notices_follows_id_notices"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notices_posted_at"), ["posted_at"], unique=False)

    op.create_table(
        "support_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login_email", sa.String(length=254), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("credential_generation", sa.Integer(), nullable=False),
        sa.Column("delivery_days", sa.Integer(), nullable=False),
        sa.Column("delivery_hours", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_support_accounts")),
        sa.UniqueConstraint("login_email", name=op.f("uq_support_accounts_login_email")),
    )
    op.create_table(
        "notice_destinations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("confirmation_hash", sa.String(length=64), nullable=True),
        sa.Column("confirmation_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmation_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["support_accounts.id"],
            name=op.f("fk_notice_destinations_account_id_support_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_destinations")),
        sa.UniqueConstraint("account_id", "address", name=op.f("uq_notice_destinations_account_id")),
        sa.UniqueConstraint("confirmation_hash", name=op.f("uq_notice_destinations_confirmation_hash")),
    )
    with op.batch_alter_table("notice_destinations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notice_destinations_account_id"), ["account_id"], unique=False)
        batch_op.create_index("ix_notice_destinations_state_account", ["state", "account_id"], unique=False)

    op.create_table(
        "notice_products",
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("product", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["notices.id"],
            name=op.f("fk_notice_products_notice_id_notices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("notice_id", "product", name=op.f("pk_notice_products")),
    )
    op.create_table(
        "support_account_products",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("product", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["support_accounts.id"],
            name=op.f("fk_support_account_products_account_id_support_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "product", name=op.f("pk_support_account_products")),
    )
    with op.batch_alter_table("support_account_products", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_support_account_products_product"), ["product"], unique=False)

    op.create_table(
        "support_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["support_accounts.id"],
            name=op.f("fk_support_links_account_id_support_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_support_links")),
    )
    with op.batch_alter_table("support_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_support_links_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_support_links_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "support_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("credential_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("absolute_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["support_accounts.id"],
            name=op.f("fk_support_sessions_account_id_support_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_support_sessions")),
    )
    with op.batch_alter_table("support_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_support_sessions_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_support_sessions_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "notice_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.Integer(), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("domain", sa.String(length=254), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_status", sa.String(length=20), nullable=True),
        sa.Column("last_detail", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["notice_destinations.id"],
            name=op.f("fk_notice_deliveries_destination_id_notice_destinations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notice_id"],
            ["notices.id"],
            name=op.f("fk_notice_deliveries_notice_id_notices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_deliveries")),
        sa.UniqueConstraint("notice_id", "destination_id", name=op.f("uq_notice_deliveries_notice_id")),
    )
    with op.batch_alter_table("notice_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notice_deliveries_destination_id"), ["destination_id"], unique=False
        )
        batch_op.create_index("ix_notice_deliveries_due", ["state", "next_attempt_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("notice_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_notice_deliveries_due")
        batch_op.drop_index(batch_op.f("ix_notice_deliveries_destination_id"))

    op.drop_table("notice_deliveries")
    with op.batch_alter_table("support_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_support_sessions_account_id"))

    op.drop_table("support_sessions")
    with op.batch_alter_table("support_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_links_expires_at"))
        batch_op.drop_index(batch_op.f("ix_support_links_account_id"))

    op.drop_table("support_links")
    with op.batch_alter_table("support_account_products", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_support_account_products_product"))

    op.drop_table("support_account_products")
    op.drop_table("notice_products")
    with op.batch_alter_table("notice_destinations", schema=None) as batch_op:
        batch_op.drop_index("ix_notice_destinations_state_account")
        batch_op.drop_index(batch_op.f("ix_notice_destinations_account_id"))

    op.drop_table("notice_destinations")
    op.drop_table("support_accounts")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notices_posted_at"))

    op.drop_table("notices")
