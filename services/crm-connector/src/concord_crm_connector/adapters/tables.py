"""The CRM connector's tables (SQLAlchemy Core); migrations/ creates them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from concord_store import UtcDateTime

metadata = MetaData()

org_connections = Table(
    "org_connections",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("login_url", String(2048), nullable=False),
    Column("instance_url", String(2048), nullable=False, default=""),
    Column("organization_id", String(18), nullable=False, default=""),
    Column("auth_flow", String(32), nullable=False),
    # client_id, username, api_version: what the auth flow needs besides the secret.
    Column("auth_settings", JSON, nullable=False),
    # Fernet token; the plaintext is never stored.
    Column("secret_ciphertext", LargeBinary, nullable=True),
    Column("secret_update_time", UtcDateTime, nullable=True),
    Column("update_time", UtcDateTime, nullable=False),
    Column("etag", String(64), nullable=False),
    # The request id of the last applied upsert, so its retry changes nothing.
    Column("request_id", String(128), nullable=True),
)

sync_cursors = Table(
    "sync_cursors",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("sobject_type", String(80), primary_key=True),
    Column("token", Text, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
)

api_budget = Table(
    "api_budget",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("used", BigInteger, nullable=False),
    Column("limit", BigInteger, nullable=False),
    Column("concord_used", BigInteger, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    # When Concord's own count (`concord_used`) started; it restarts after 24 hours.
    Column("window_start", UtcDateTime, nullable=True),
)

# Where each org's change stream stopped, per channel (issue #19): the replay id of the last
# event whose hint went out. Empty: start from now on (an expired one was given up).
change_replays = Table(
    "change_replays",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("channel", String(255), primary_key=True),
    Column("replay_id", LargeBinary, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
)

# Each org's change stream as the replica holding it last reported it (the dashboard's view).
change_streams = Table(
    "change_streams",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("last_commit", UtcDateTime),
    Column("last_event", UtcDateTime),
    Column("resync_reason", Text, nullable=False),
    Column("resync_time", UtcDateTime),
    Column("report_time", UtcDateTime, nullable=False),
)
