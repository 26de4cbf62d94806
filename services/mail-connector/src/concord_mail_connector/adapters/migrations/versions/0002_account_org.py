"""The org an account belongs to, so a caller acting for another org is refused."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: accounts stored before this know no org until a vouched caller next writes them.
    op.add_column("mailbox_accounts", sa.Column("org_id", sa.String(63), nullable=True))


def downgrade() -> None:
    op.drop_column("mailbox_accounts", "org_id")
