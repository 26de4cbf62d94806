"""Mailbox accounts, sync cursors, push subscriptions."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_accounts",
        sa.Column("mailbox", sa.String(63), primary_key=True),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_settings", sa.JSON, nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("secret_update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
    )
    op.create_table(
        "sync_cursors",
        sa.Column("mailbox", sa.String(63), primary_key=True),
        sa.Column("collection", sa.String(512), primary_key=True),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("mailbox", sa.String(63), primary_key=True),
        sa.Column("subscription", sa.String(63), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("collection", sa.String(512), nullable=False),
        sa.Column("provider_subscription_id", sa.String(512), nullable=True),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("subscriptions")
    op.drop_table("sync_cursors")
    op.drop_table("mailbox_accounts")
