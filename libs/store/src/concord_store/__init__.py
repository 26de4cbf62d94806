"""Database engines and per-service Alembic migrations for Concord services.

SQLite (aiosqlite) is the embedded default, PostgreSQL (asyncpg) the production store::

    engine = create_engine(settings.database_url)
    await migrate(engine, "concord_linker.migrations")
    service.add_readiness_check(lambda: ping(engine))
    service.on_shutdown(engine.dispose)
"""

from __future__ import annotations

from concord_store.engine import create_engine, normalize_url, ping
from concord_store.migrations import migrate, version_table
from concord_store.types import UtcDateTime

__all__ = [
    "UtcDateTime",
    "create_engine",
    "migrate",
    "normalize_url",
    "ping",
    "version_table",
]
