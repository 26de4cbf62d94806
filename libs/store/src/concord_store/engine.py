"""Async SQLAlchemy engines for SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from concord_store import sqlite_driver

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_engine", "normalize_url", "ping"]

# Writers from several tasks (and the CLI) share the file; waiting beats failing with
# "database is locked" the moment two transactions overlap.
SQLITE_BUSY_TIMEOUT_MS = 10_000

_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def normalize_url(url: str) -> str:
    """Pick the async driver: `postgresql://` -> `postgresql+asyncpg://`, `sqlite://` -> aiosqlite.

    So DATABASE_URL can be spelled as PostgreSQL tools spell it.
    """
    scheme, sep, rest = url.partition("://")
    return f"{_DRIVERS.get(scheme, scheme)}{sep}{rest}"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Connections die under a long-lived pool (failovers, idle timeouts); check on checkout.
        return create_async_engine(url, pool_pre_ping=True, **kwargs)

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_driver_name() == "aiosqlite":
        # One trip to the connection's thread per statement instead of four (sqlite_driver).
        kwargs.setdefault("module", sqlite_driver.dbapi())
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers run while one writer writes; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Safe with WAL (a power loss may lose the last commits, never corrupt the file).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


async def ping(engine: AsyncEngine) -> None:
    """Readiness check: raises unless the database answers `SELECT 1`."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
