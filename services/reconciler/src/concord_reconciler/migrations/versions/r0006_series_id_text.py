"""Links: a series is named by its master item's native id, as long as the mailbox makes it
(an EWS ItemId runs to 150+ characters), not a 36-character link id (issue #18: PostgreSQL
refused occurrences of a series that SQLite had taken)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0006"
down_revision = "r0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.alter_column(
            "series_link_id", type_=sa.Text, existing_type=sa.String(36), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.alter_column(
            "series_link_id", type_=sa.String(36), existing_type=sa.Text, existing_nullable=False
        )
