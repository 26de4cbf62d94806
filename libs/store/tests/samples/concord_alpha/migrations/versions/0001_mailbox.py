"""A sample service's first revision: one table."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alpha_mailbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
    )
    op.create_table(
        "alpha_session",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox_id", sa.Integer, sa.ForeignKey("alpha_mailbox.id"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alpha_session")
    op.drop_table("alpha_mailbox")
