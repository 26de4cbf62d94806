"""The mapping service's tables (SQLAlchemy Core); migrations/ creates them."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, MetaData, String, Table

from concord_store import UtcDateTime

metadata = MetaData()

# Every version is kept: links remember the version they were mapped with.
mapping_tables = Table(
    "mapping_tables",
    metadata,
    Column("org", String(63), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("content", JSON, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_user_id", String(255), nullable=False),
)
