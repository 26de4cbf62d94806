"""Blacklists and resolutions in SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_linker.adapters.tables import blacklist_entries

__all__ = ["SqlLinkerStore"]


class SqlLinkerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def blacklist(self, org: str, user_id: str) -> frozenset[str]:
        table = blacklist_entries
        query = select(table.c.entry).where(table.c.org == org, table.c.user_id.in_(("", user_id)))
        async with self._engine.connect() as conn:
            entries = (await conn.execute(query)).scalars().all()
        return frozenset(entry.lower() for entry in entries)
