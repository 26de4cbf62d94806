"""A second sample service sharing the database, with its own revision ids."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("beta_link", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("beta_link")
