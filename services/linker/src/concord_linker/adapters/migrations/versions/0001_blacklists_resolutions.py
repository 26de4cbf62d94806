"""Blacklist entries and participant resolutions."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blacklist_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("org", sa.String(63), nullable=False, index=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("entry", sa.String(320), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("org", "user_id", "entry"),
    )
    op.create_table(
        "resolutions",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("who_id", sa.String(18), nullable=False),
        sa.Column("who_type", sa.String(40), nullable=False),
        sa.Column("explanation", sa.Text, nullable=False),
        sa.Column("resolve_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("resolutions")
    op.drop_table("blacklist_entries")
