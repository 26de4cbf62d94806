"""Tables of email sharing (issue #7): one row per email per org, and who shared it.

Registered on the reconciler's `metadata` (adapters/tables.py imports this module), so the
migrations test compares them like every other table.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from concord_reconciler.adapters.tables import metadata

__all__ = ["email_share_mailboxes", "email_shares"]

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
