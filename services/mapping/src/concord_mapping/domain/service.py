"""Reading an org's mapping tables; mapping itself and updates arrive with issue #6."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from concord_mapping.domain.model import MappingTableNotFound, TableName, TableVersion

__all__ = ["MappingTableStore", "MappingTables"]


class MappingTableStore(Protocol):
    async def version(self, name: TableName, version: int) -> TableVersion | None:
        """`version` 0 means the newest."""

    async def versions(self, name: TableName, before: int, limit: int) -> Sequence[TableVersion]:
        """Newest first, only versions below `before` (0: no bound)."""


class MappingTables:
    def __init__(self, store: MappingTableStore) -> None:
        self._store = store

    async def get(self, name: TableName, version: int) -> TableVersion:
        found = await self._store.version(name, version)
        if found is None:
            raise MappingTableNotFound(name, version)
        return found

    async def list_versions(
        self, name: TableName, before: int, page_size: int
    ) -> tuple[Sequence[TableVersion], int]:
        """A page of versions, newest first, and the `before` of the next page (0: none)."""
        # One more than asked tells whether another page exists without a count query.
        found = await self._store.versions(name, before, page_size + 1)
        page = found[:page_size]
        return page, page[-1].version if len(found) > page_size else 0
