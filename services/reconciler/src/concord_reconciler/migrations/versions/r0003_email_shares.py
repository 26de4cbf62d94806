"""Email sharing: one row per email per org, and the mailboxes that shared it (issue #7)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_shares",
        sa.Column("org_id", sa.String(63), nullable=False),
        sa.Column("share_key", sa.String(64), nullable=False),
        sa.Column("key_source", sa.String(16), nullable=False),
        sa.Column("link_id", sa.String(64), nullable=False),
        sa.Column("email_message_id", sa.String(18), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("attachments_done", sa.Boolean, nullable=False),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("claim_until_us", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "share_key"),
    )
    op.create_table(
        "email_share_mailboxes",
        sa.Column("org_id", sa.String(63), nullable=False),
        sa.Column("share_key", sa.String(64), nullable=False),
        sa.Column(
            "mailbox_id",
            sa.String(63),
            sa.ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("native_id", sa.Text, nullable=False),
        sa.Column("thread", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("relations", sa.Integer, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org_id", "share_key", "mailbox_id"),
        sa.ForeignKeyConstraint(
            ["org_id", "share_key"],
            ["email_shares.org_id", "email_shares.share_key"],
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_email_share_mailboxes_mailbox", "email_share_mailboxes", ["mailbox_id"])


def downgrade() -> None:
    op.drop_index("ix_email_share_mailboxes_mailbox", table_name="email_share_mailboxes")
    op.drop_table("email_share_mailboxes")
    op.drop_table("email_shares")
