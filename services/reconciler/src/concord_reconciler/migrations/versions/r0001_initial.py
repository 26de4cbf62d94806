"""Mailboxes, sessions, item errors, settings and request ids."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 1")


def upgrade() -> None:
    op.create_table(
        "mailboxes",
        sa.Column("mailbox_id", sa.String(63), primary_key=True),
        sa.Column("org_id", sa.String(63), nullable=False),
        sa.Column("owner_user_id", sa.String(255), nullable=False),
        sa.Column("crm_user_id", sa.String(18), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("provider", sa.Integer, nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("suspended_reason", sa.Text, nullable=False),
        sa.Column("sync_interval_seconds", sa.Float, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_mailboxes_org_id", "mailboxes", ["org_id"])
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(36), primary_key=True),
        sa.Column(
            "mailbox_id",
            sa.String(63),
            sa.ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("trigger", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("failure_reason", sa.Text, nullable=False),
        sa.Column("failure_code", sa.String(63), nullable=False),
        sa.Column("counts", sa.LargeBinary, nullable=False),
        sa.Column("request_time_us", sa.BigInteger, nullable=False),
        sa.Column("start_time_us", sa.BigInteger, nullable=True),
        sa.Column("end_time_us", sa.BigInteger, nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
    )
    op.create_index(
        "ix_sessions_mailbox_newest", "sessions", ["mailbox_id", "request_time_us", "session_id"]
    )
    op.create_index(
        "uq_sessions_one_queued_per_mailbox",
        "sessions",
        ["mailbox_id"],
        unique=True,
        sqlite_where=_QUEUED,
        postgresql_where=_QUEUED,
    )
    op.create_table(
        "item_errors",
        sa.Column("item_error_id", sa.String(36), primary_key=True),
        sa.Column(
            "mailbox_id",
            sa.String(63),
            sa.ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("native_id", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("link_id", sa.String(36), nullable=False),
        sa.Column("collection", sa.Text, nullable=False),
        sa.Column("crm_record_id", sa.String(18), nullable=False),
        sa.Column("side", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(63), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_seen_time_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_time_us", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("quarantined", sa.Boolean, nullable=False),
    )
    op.create_index(
        "ix_item_errors_mailbox_recent",
        "item_errors",
        ["mailbox_id", "last_seen_time_us", "item_error_id"],
    )
    op.create_table(
        "org_settings",
        sa.Column("org_id", sa.String(63), primary_key=True),
        sa.Column("settings", sa.LargeBinary, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "mailbox_settings",
        sa.Column(
            "mailbox_id",
            sa.String(63),
            sa.ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("settings", sa.LargeBinary, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "requests",
        sa.Column("method", sa.String(63), primary_key=True),
        sa.Column("request_id", sa.String(255), primary_key=True),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_requests_create_time_us", "requests", ["create_time_us"])


def downgrade() -> None:
    op.drop_table("requests")
    op.drop_table("mailbox_settings")
    op.drop_table("org_settings")
    op.drop_table("item_errors")
    op.drop_table("sessions")
    op.drop_table("mailboxes")
