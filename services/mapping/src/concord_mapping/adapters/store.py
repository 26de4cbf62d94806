"""Mapping table versions in SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_mapping.adapters.tables import mapping_tables
from concord_mapping.domain.model import Kind, TableName, TableVersion
from concord_mapping.domain.service import VersionTaken

__all__ = ["SqlMappingTableStore"]


class SqlMappingTableStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def version(self, name: TableName, version: int) -> TableVersion | None:
        query = select(mapping_tables).where(*_of(name))
        if version:
            query = query.where(mapping_tables.c.version == version)
        query = query.order_by(mapping_tables.c.version.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _version(row) if row else None

    async def newest(self, org: str) -> Mapping[Kind, int]:
        query = (
            select(mapping_tables.c.kind, func.max(mapping_tables.c.version))
            .where(mapping_tables.c.org == org)
            .group_by(mapping_tables.c.kind)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        known = {kind.value: kind for kind in Kind}
        return {known[kind]: int(version) for kind, version in rows if kind in known}

    async def versions(self, name: TableName, before: int, limit: int) -> Sequence[TableVersion]:
        query = select(mapping_tables).where(*_of(name))
        if before:
            query = query.where(mapping_tables.c.version < before)
        query = query.order_by(mapping_tables.c.version.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_version(row) for row in rows]

    async def add(self, version: TableVersion) -> None:
        # The (org, kind, version) key makes two concurrent updates of one version collide.
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(mapping_tables).values(
                        org=version.name.org,
                        kind=version.name.kind.value,
                        version=version.version,
                        content=dict(version.content),
                        etag=version.etag,
                        create_time=version.create_time,
                        update_user_id=version.update_user_id,
                    )
                )
        except IntegrityError:
            raise VersionTaken(str(version.name)) from None


def _of(name: TableName) -> tuple[Any, ...]:
    return (mapping_tables.c.org == name.org, mapping_tables.c.kind == name.kind.value)


def _version(row: Row[Any]) -> TableVersion:
    return TableVersion(
        name=TableName(row.org, Kind(row.kind)),
        version=row.version,
        content=dict(row.content),
        etag=row.etag,
        create_time=row.create_time,
        update_user_id=row.update_user_id,
    )
