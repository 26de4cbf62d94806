"""The linker's tables (SQLAlchemy Core); migrations/ creates them."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, UniqueConstraint

from concord_store import UtcDateTime

metadata = MetaData()

blacklist_entries = Table(
    "blacklist_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org", String(63), nullable=False, index=True),
    # Empty for org-wide entries, else the user whose own blacklist it is.
    Column("user_id", String(255), nullable=False, default=""),
    # An address (`ann@example.com`) or a domain (`example.com`), lowercased.
    Column("entry", String(320), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    UniqueConstraint("org", "user_id", "entry"),
)

# The last decision per address, so repeated activities resolve alike and the dashboard can
# say why an activity was linked where it was.
resolutions = Table(
    "resolutions",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("address", String(320), primary_key=True),
    # Empty when the address was blacklisted, unresolved or internal.
    Column("who_id", String(18), nullable=False),
    Column("who_type", String(40), nullable=False),
    Column("explanation", Text, nullable=False),
    Column("resolve_time", UtcDateTime, nullable=False),
    # The ResolutionOutcome name, e.g. MATCHED_CONTACT, BLACKLISTED.
    Column("outcome", String(20), nullable=False, server_default=""),
)

# Claimed before an auto-create calls Salesforce: the primary key lets one session per org and
# subject (`address:<addr>` or `domain:<domain>`) create; the others wait for `record_id`.
creation_claims = Table(
    "creation_claims",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("subject", String(330), primary_key=True),
    Column("idempotency_key", String(36), nullable=False),
    Column("sobject_type", String(40), nullable=False, server_default=""),
    Column("record_id", String(18), nullable=False, server_default=""),
    Column("claim_time", UtcDateTime, nullable=False),
)
