"""The reconciler's tables (SQLAlchemy Core), every room's in one schema; the migrations create
exactly these.

Times are integer microseconds since the epoch (UTC): one exact, ordered representation on
SQLite and PostgreSQL alike, with no time-zone conversions between drivers.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "email_share_mailboxes",
    "email_shares",
    "item_errors",
    "links",
    "mailbox_settings",
    "mailboxes",
    "metadata",
    "org_settings",
    "requests",
    "sessions",
    "sync_cursors",
    "write_journal",
]

metadata = MetaData()

# Numeric states mirror concord.reconciler.v1.SessionState (and sessions.domain.model.SessionState),
# for the partial index below and for rooms that count sessions without owning them (health).
SESSION_QUEUED = 1
SESSION_FAILED = 4

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
    # concord.reconciler.v1.SessionCounts, serialized: the counts grow with issue #5.
    Column("counts", LargeBinary, nullable=False, default=b""),
    Column("request_time_us", BigInteger, nullable=False),
    Column("start_time_us", BigInteger, nullable=True),
    Column("end_time_us", BigInteger, nullable=True),
    Column("trace_id", String(32), nullable=False, default=""),
    # A peer throttled the session: no session of the mailbox before then (RetryInfo).
    Column("retry_not_before_us", BigInteger, nullable=True),
    Index("ix_sessions_mailbox_newest", "mailbox_id", "request_time_us", "session_id"),
    # The schedule's reads of open sessions (QUEUED, RUNNING) and of a state's recent ones
    # (health's failures in 24 h, the retention's prune) read only those, not the history.
    Index("ix_sessions_state_end", "state", "end_time_us"),
    # The org-hold read (failed sessions whose throttled peer's retry-after is still ahead):
    # almost every failed session has none (NULL), which the range over the index skips.
    Index("ix_sessions_held", "state", "retry_not_before_us"),
    # The schedule's history read: each mailbox's newest completed session and the finished
    # ones since, by seeks per mailbox rather than through every finished session.
    Index("ix_sessions_mailbox_state_end", "mailbox_id", "state", "end_time_us"),
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


# One row per mirrored pair (issue #5). `link_id` is also the idempotency key every write
# carries. A native id names at most one link per mailbox and side (NULLs do not collide, on
# SQLite and PostgreSQL alike: a pending create has no id on the side it creates).
links = Table(
    "links",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", Integer, nullable=False),
    Column("mail_id", Text, nullable=True),
    Column("crm_id", String(255), nullable=True),
    Column("mail_version", Text, nullable=False, default=""),
    Column("crm_version", Text, nullable=False, default=""),
    Column("mail_hash", String(64), nullable=False, default=""),
    Column("crm_hash", String(64), nullable=False, default=""),
    # The mapped fields as both sides agreed at the last sync: the 3-way merge's base.
    Column("base", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("tombstone", String(16), nullable=False, default=""),
    Column("conflicts", JSON, nullable=False),
    Column("held_mail", JSON, nullable=True),
    Column("held_crm", JSON, nullable=True),
    # The user's choice for a held conflict, until a session applies it (r0004).
    Column("resolution", JSON, nullable=True),
    # The series master's native id in the mailbox (r0006: as long as the mailbox makes it).
    Column("series_link_id", Text, nullable=False, default=""),
    Column("original_start_us", BigInteger, nullable=True),
    Column("update_time_us", BigInteger, nullable=False),
    Index("uq_links_mail_id", "mailbox_id", "mail_id", unique=True),
    Index("uq_links_crm_id", "mailbox_id", "crm_id", unique=True),
    Index("ix_links_mailbox_kind", "mailbox_id", "kind", "state"),
)

# Where each side's listing of a pair stopped; moved only in the transaction that commits
# the links its changes produced.
sync_cursors = Table(
    "sync_cursors",
    metadata,
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", Integer, nullable=False),
    Column("side", String(8), nullable=False),
    # The folder/calendar/sObject the cursor covers; "" is the kind's default collection.
    Column("collection", String(255), nullable=False, default=""),
    Column("token", Text, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("mailbox_id", "kind", "side", "collection"),
)

# Intents written before a batch's writes and removed with the commit of their links; a row
# left here is a crash to recover from (look the writes up by link id).
write_journal = Table(
    "write_journal",
    metadata,
    Column("link_id", String(36), primary_key=True),
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", Integer, nullable=False),
    Column("intent", JSON, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Index("ix_write_journal_mailbox_kind", "mailbox_id", "kind"),
)

# -- email sharing (issue #7): one row per email per org, and who shared it -------------------

# One row per shared email per org. Its primary key is the exactly-once guarantee: whoever
# inserts it first writes the EmailMessage; everyone else waits for, or reads, its Id.
# `claim_token`/`claim_until_us` serialise writers (compare-and-set, no row locks, so SQLite
# and PostgreSQL behave alike); a claim past its time was a crash and may be taken over.
email_shares = Table(
    "email_shares",
    metadata,
    Column("org_id", String(63), nullable=False),
    # sha256 hex of org + normalised Message-ID (or of the content hash when there is none).
    Column("share_key", String(64), nullable=False),
    Column("key_source", String(16), nullable=False),
    # The EmailMessage's Concord_Link_Id__c.
    Column("link_id", String(64), nullable=False),
    Column("email_message_id", String(18), nullable=True),
    # EmailMessage creates sent so far; after one, a retry looks the record up before writing.
    Column("attempts", Integer, nullable=False, default=0),
    Column("attachments_done", Boolean, nullable=False, default=False),
    Column("claim_token", String(36), nullable=True),
    Column("claim_until_us", BigInteger, nullable=False, default=0),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "share_key"),
)

# Each mailbox that shared the email, once its relations are written: a mailbox with a row
# here has nothing left to do for that email (moves, re-categorising and retries are no-ops).
email_share_mailboxes = Table(
    "email_share_mailboxes",
    metadata,
    Column("org_id", String(63), nullable=False),
    Column("share_key", String(64), nullable=False),
    Column(
        "mailbox_id",
        String(63),
        ForeignKey("mailboxes.mailbox_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("native_id", Text, nullable=False),
    # Thread root Message-ID and provider conversation id: "save the rest of this thread".
    Column("thread", String(255), nullable=False),
    Column("conversation_id", Text, nullable=False),
    Column("relations", Integer, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("org_id", "share_key", "mailbox_id"),
    ForeignKeyConstraint(
        ["org_id", "share_key"],
        ["email_shares.org_id", "email_shares.share_key"],
        ondelete="CASCADE",
    ),
    Index("ix_email_share_mailboxes_mailbox", "mailbox_id"),
)
