from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_mapping.adapters.store import SqlMappingTableStore
from concord_mapping.domain.model import Kind, TableName

from .conftest import CONTENT, add_versions

pytestmark = pytest.mark.integration


async def test_versions_are_kept_and_read_newest_first(engine: AsyncEngine) -> None:
    await add_versions(engine, "demo", "task", 3)
    await add_versions(engine, "other", "task", 1)
    store = SqlMappingTableStore(engine)
    name = TableName("demo", Kind.TASK)
    newest = await store.version(name, 0)
    assert newest is not None
    assert (newest.version, newest.etag, newest.content) == (3, "e3", CONTENT)
    assert newest.create_time == datetime(2026, 1, 3, tzinfo=UTC)
    pinned = await store.version(name, 1)
    assert pinned is not None
    assert pinned.version == 1
    assert [v.version for v in await store.versions(name, 0, 10)] == [3, 2, 1]
    assert [v.version for v in await store.versions(name, 3, 1)] == [2]
    assert await store.version(TableName("demo", Kind.EMAIL), 0) is None


async def test_the_versions_in_force_of_all_an_orgs_tables_are_one_read(
    engine: AsyncEngine,
) -> None:
    await add_versions(engine, "demo", "task", 3)
    await add_versions(engine, "demo", "contact", 2)
    await add_versions(engine, "other", "task", 5)
    store = SqlMappingTableStore(engine)
    assert await store.newest("demo") == {Kind.TASK: 3, Kind.CONTACT: 2}
    assert await store.newest("nobody") == {}
