"""Org connections, sync cursors, API budget."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_connections",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("login_url", sa.String(2048), nullable=False),
        sa.Column("instance_url", sa.String(2048), nullable=False),
        sa.Column("organization_id", sa.String(18), nullable=False),
        sa.Column("auth_flow", sa.String(32), nullable=False),
        sa.Column("auth_settings", sa.JSON, nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("secret_update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
    )
    op.create_table(
        "sync_cursors",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("sobject_type", sa.String(80), primary_key=True),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_budget",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("limit", sa.BigInteger, nullable=False),
        sa.Column("concord_used", sa.BigInteger, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_budget")
    op.drop_table("sync_cursors")
    op.drop_table("org_connections")
