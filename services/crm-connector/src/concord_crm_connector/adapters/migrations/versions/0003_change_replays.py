"""Replay ids of the orgs' change streams (Change Data Capture, issue #19)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_replays",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("channel", sa.String(255), primary_key=True),
        sa.Column("replay_id", sa.LargeBinary, nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("change_replays")
