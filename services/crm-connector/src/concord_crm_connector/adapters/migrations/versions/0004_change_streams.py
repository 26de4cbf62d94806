"""Each org's change stream state as its holder reports it (the dashboard's view, issue #19)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_streams",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("last_commit", sa.DateTime(timezone=True)),
        sa.Column("last_event", sa.DateTime(timezone=True)),
        sa.Column("resync_reason", sa.Text, nullable=False),
        sa.Column("resync_time", sa.DateTime(timezone=True)),
        sa.Column("report_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("change_streams")
