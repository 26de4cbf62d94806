"""The reconciler's tables (SQLAlchemy Core); the migrations create exactly these.

Times are integer microseconds since the epoch (UTC): one exact, ordered representation on
SQLite and PostgreSQL alike, with no time-zone conversions between drivers.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "item_errors",
    "mailbox_settings",
    "mailboxes",
    "metadata",
    "org_settings",
    "requests",
    "sessions",
]

metadata = MetaData()

# Numeric states mirror concord.common.v1.SessionState; QUEUED = 1.
SESSION_QUEUED = 1

mailboxes = Table(
    "mailboxes",
    metadata,
    Column("mailbox_id", String(63), primary_key=True),
    Column("org_id", String(63), nullable=False, index=True),
    Column("owner_user_id", String(255), nullable=False),
    Column("crm_user_id", String(18), nullable=False),
    Column("address", String(320), nullable=False),
    Column("provider", Integer, nullable=False),
    Column("state", Integer, nullable=False),
    Column("suspended_reason", Text, nullable=False, default=""),
    Column("sync_interval_seconds", Float, nullable=False, default=0.0),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(36), primary_key=True),
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("state", Integer, nullable=False),
    Column("trigger", Integer, nullable=False),
    Column("request_id", String(255), nullable=False, default=""),
    Column("failure_reason", Text, nullable=False, default=""),
    Column("failure_code", String(63), nullable=False, default=""),
    # concord.common.v1.SessionCounts, serialized: the counts grow with issue #5.
    Column("counts", LargeBinary, nullable=False, default=b""),
    Column("request_time_us", BigInteger, nullable=False),
    Column("start_time_us", BigInteger, nullable=True),
    Column("end_time_us", BigInteger, nullable=True),
    Column("trace_id", String(32), nullable=False, default=""),
    Index("ix_sessions_mailbox_newest", "mailbox_id", "request_time_us", "session_id"),
    # At most one QUEUED session per mailbox: concurrent RequestSession calls (from any
    # replica) race on this index, and the loser coalesces with the winner's session.
    Index(
        "uq_sessions_one_queued_per_mailbox",
        "mailbox_id",
        unique=True,
        sqlite_where=text(f"state = {SESSION_QUEUED}"),
        postgresql_where=text(f"state = {SESSION_QUEUED}"),
    ),
)

item_errors = Table(
    "item_errors",
    metadata,
    Column("item_error_id", String(36), primary_key=True),
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", Integer, nullable=False),
    Column("native_id", Text, nullable=False),
    Column("version", Text, nullable=False, default=""),
    Column("link_id", String(36), nullable=False, default=""),
    Column("collection", Text, nullable=False, default=""),
    Column("crm_record_id", String(18), nullable=False, default=""),
    Column("side", Integer, nullable=False),
    Column("reason", String(63), nullable=False),
    Column("message", Text, nullable=False),
    Column("first_seen_time_us", BigInteger, nullable=False),
    Column("last_seen_time_us", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("quarantined", Boolean, nullable=False),
    Index("ix_item_errors_mailbox_recent", "mailbox_id", "last_seen_time_us", "item_error_id"),
)

# Settings are stored as their proto messages: they are read and written whole, and new
# fields need no migration.
org_settings = Table(
    "org_settings",
    metadata,
    Column("org_id", String(63), primary_key=True),
    Column("settings", LargeBinary, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
)

mailbox_settings = Table(
    "mailbox_settings",
    metadata,
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("settings", LargeBinary, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
)

# Responses of mutations by request_id, so a retried mutation returns the first answer.
requests = Table(
    "requests",
    metadata,
    Column("method", String(63), primary_key=True),
    Column("request_id", String(255), primary_key=True),
    Column("response", LargeBinary, nullable=False),
    Column("create_time_us", BigInteger, nullable=False, index=True),
)
