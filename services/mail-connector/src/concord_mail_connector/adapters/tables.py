"""The mail connector's tables (SQLAlchemy Core); migrations/ creates them."""

from __future__ import annotations

from sqlalchemy import JSON, Column, LargeBinary, MetaData, String, Table, Text

from concord_store import UtcDateTime

metadata = MetaData()

mailbox_accounts = Table(
    "mailbox_accounts",
    metadata,
    Column("mailbox", String(63), primary_key=True),
    Column("address", String(320), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_settings", JSON, nullable=False),
    # Fernet token; the plaintext is never stored.
    Column("secret_ciphertext", LargeBinary, nullable=True),
    Column("secret_update_time", UtcDateTime, nullable=True),
    Column("update_time", UtcDateTime, nullable=False),
    Column("etag", String(64), nullable=False),
    # The request id of the last applied upsert, so its retry changes nothing.
    Column("request_id", String(128), nullable=True),
    # The org of the caller that registered the account; null for accounts stored before
    # callers were vouched for, until one writes them.
    Column("org_id", String(63), nullable=True),
)

sync_cursors = Table(
    "sync_cursors",
    metadata,
    Column("mailbox", String(63), primary_key=True),
    Column("collection", String(512), primary_key=True),
    Column("token", Text, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("mailbox", String(63), primary_key=True),
    Column("subscription", String(63), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("collection", String(512), nullable=False),
    Column("provider_subscription_id", String(512), nullable=True),
    Column("expire_time", UtcDateTime, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    Column("request_id", String(128), nullable=True),
)
