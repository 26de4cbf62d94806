"""Creation claims (one auto-created record per org and address or domain) and outcomes."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "creation_claims",
        sa.Column("org", sa.String(63), primary_key=True),
        sa.Column("subject", sa.String(330), primary_key=True),
        sa.Column("idempotency_key", sa.String(36), nullable=False),
        sa.Column("sobject_type", sa.String(40), nullable=False, server_default=""),
        sa.Column("record_id", sa.String(18), nullable=False, server_default=""),
        sa.Column("claim_time", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("resolutions") as batch:
        batch.add_column(sa.Column("outcome", sa.String(20), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("resolutions") as batch:
        batch.drop_column("outcome")
    op.drop_table("creation_claims")
