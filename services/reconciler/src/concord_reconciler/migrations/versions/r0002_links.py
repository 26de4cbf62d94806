"""Links, sync cursors and the write journal (issue #5)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None


def _mailbox() -> sa.Column[str]:
    return sa.Column(
        "mailbox_id",
        sa.String(63),
        sa.ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("link_id", sa.String(36), primary_key=True),
        _mailbox(),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("mail_id", sa.Text, nullable=True),
        sa.Column("crm_id", sa.String(255), nullable=True),
        sa.Column("mail_version", sa.Text, nullable=False),
        sa.Column("crm_version", sa.Text, nullable=False),
        sa.Column("mail_hash", sa.String(64), nullable=False),
        sa.Column("crm_hash", sa.String(64), nullable=False),
        sa.Column("base", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tombstone", sa.String(16), nullable=False),
        sa.Column("conflicts", sa.JSON, nullable=False),
        sa.Column("held_mail", sa.JSON, nullable=True),
        sa.Column("held_crm", sa.JSON, nullable=True),
        sa.Column("series_link_id", sa.String(36), nullable=False),
        sa.Column("original_start_us", sa.BigInteger, nullable=True),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("uq_links_mail_id", "links", ["mailbox_id", "mail_id"], unique=True)
    op.create_index("uq_links_crm_id", "links", ["mailbox_id", "crm_id"], unique=True)
    op.create_index("ix_links_mailbox_kind", "links", ["mailbox_id", "kind", "state"])
    op.create_table(
        "sync_cursors",
        _mailbox(),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("collection", sa.String(255), nullable=False),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", "kind", "side", "collection"),
    )
    op.create_table(
        "write_journal",
        sa.Column("link_id", sa.String(36), primary_key=True),
        _mailbox(),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("intent", sa.JSON, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_write_journal_mailbox_kind", "write_journal", ["mailbox_id", "kind"])


def downgrade() -> None:
    op.drop_table("write_journal")
    op.drop_table("sync_cursors")
    op.drop_table("links")
