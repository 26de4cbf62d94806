"""Blacklists, resolutions and creation claims in SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_linker.adapters.tables import blacklist_entries, creation_claims, resolutions
from concord_linker.domain.ports import CreationClaim, StoredDecision

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

    async def add_blacklist_entry(self, org: str, user_id: str, entry: str) -> bool:
        row = {
            "org": org,
            "user_id": user_id,
            "entry": entry.strip().lower(),
            "create_time": datetime.now(UTC),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(blacklist_entries).values(**row))
        except IntegrityError:
            return False
        return True

    async def remove_blacklist_entry(self, org: str, user_id: str, entry: str) -> bool:
        table = blacklist_entries
        query = delete(table).where(
            table.c.org == org, table.c.user_id == user_id, table.c.entry == entry.strip().lower()
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def record_decisions(self, org: str, decisions: Sequence[StoredDecision]) -> None:
        latest = {d.address: d for d in decisions}
        if not latest:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "org": org,
                "address": d.address[:320],
                "who_id": d.record_id,
                "who_type": d.sobject_type,
                "outcome": d.outcome.name,
                "explanation": d.explanation,
                "resolve_time": now,
            }
            for d in latest.values()
        ]
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(resolutions).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[resolutions.c.org, resolutions.c.address],
            set_={
                name: statement.excluded[name]
                for name in ("who_id", "who_type", "outcome", "explanation", "resolve_time")
            },
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def claim_creation(self, org: str, subject: str, idempotency_key: str) -> CreationClaim:
        now = datetime.now(UTC)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(creation_claims).values(
                        org=org, subject=subject, idempotency_key=idempotency_key, claim_time=now
                    )
                )
        except IntegrityError:
            # Someone claimed it first; their row says whether the record exists yet.
            pass
        else:
            return CreationClaim(subject, idempotency_key, True, now)
        table = creation_claims
        query = select(table).where(table.c.org == org, table.c.subject == subject)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().one_or_none()
        if row is None:
            # Released between our insert and our read: claim again.
            return await self.claim_creation(org, subject, idempotency_key)
        return CreationClaim(
            subject,
            row["idempotency_key"],
            False,
            row["claim_time"],
            row["sobject_type"],
            row["record_id"],
        )

    async def complete_creation(
        self, org: str, subject: str, sobject_type: str, record_id: str
    ) -> None:
        table = creation_claims
        query = (
            update(table)
            .where(table.c.org == org, table.c.subject == subject)
            .values(sobject_type=sobject_type, record_id=record_id)
        )
        async with self._engine.begin() as conn:
            await conn.execute(query)

    async def release_creation(self, org: str, subject: str) -> None:
        table = creation_claims
        query = delete(table).where(
            table.c.org == org, table.c.subject == subject, table.c.record_id == ""
        )
        async with self._engine.begin() as conn:
            await conn.execute(query)
