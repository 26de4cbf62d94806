"""The start of Concord's own 24-hour count in api_budget."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_budget") as batch:
        batch.add_column(sa.Column("window_start", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_budget") as batch:
        batch.drop_column("window_start")
