from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest

from concord_mapping.adapters.packaged import table_data
from concord_mapping.domain.model import (
    InvalidRequest,
    Kind,
    MappingTableNotFound,
    TableName,
    TableVersion,
    parse_table_name,
)
from concord_mapping.domain.service import MappingTables

pytestmark = pytest.mark.unit

NAME = TableName("demo", Kind.TASK)


class MemoryStore:
    def __init__(self, count: int) -> None:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        self.rows = [TableVersion(NAME, v, {}, f"e{v}", now, "u") for v in range(1, count + 1)]

    async def version(self, name: TableName, version: int) -> TableVersion | None:
        matching = [r for r in self.rows if version in (0, r.version)]
        return matching[-1] if matching else None

    async def newest(self, org: str) -> Mapping[Kind, int]:
        return {NAME.kind: self.rows[-1].version} if self.rows else {}

    async def versions(self, name: TableName, before: int, limit: int) -> Sequence[TableVersion]:
        return [r for r in reversed(self.rows) if not before or r.version < before][:limit]

    async def add(self, version: TableVersion) -> None:
        self.rows.append(version)


def make_tables(count: int) -> MappingTables:
    return MappingTables(MemoryStore(count), table_data())


def test_table_names() -> None:
    assert parse_table_name("orgs/demo/mappingTables/calendar-item") == TableName(
        "demo", Kind.CALENDAR_ITEM
    )
    assert str(NAME) == "orgs/demo/mappingTables/task"
    for bad in ("", "orgs/demo", "orgs/demo/mappingTables/meeting", "orgs/demo/mappingTables/"):
        with pytest.raises(InvalidRequest) as caught:
            parse_table_name(bad, "table.name")
        assert caught.value.field_violations[0][0] == "table.name"


async def test_versions_page_newest_first_until_exhausted() -> None:
    tables = make_tables(5)
    first, before = await tables.list_versions(NAME, 0, 2)
    assert [v.version for v in first] == [5, 4]
    second, before = await tables.list_versions(NAME, before, 2)
    assert [v.version for v in second] == [3, 2]
    last, before = await tables.list_versions(NAME, before, 2)
    assert [v.version for v in last] == [1]
    assert before == 0


async def test_exact_page_has_no_next_page() -> None:
    page, before = await make_tables(2).list_versions(NAME, 0, 2)
    assert len(page) == 2
    assert before == 0


async def test_get_newest_or_pinned_version_else_the_default() -> None:
    tables = make_tables(3)
    assert (await tables.get(NAME, 0)).version == 3
    assert (await tables.get(NAME, 2)).version == 2
    with pytest.raises(MappingTableNotFound) as caught:
        await tables.get(NAME, 9)
    assert caught.value.reason == "MAPPING_TABLE_NOT_FOUND"
    default = await make_tables(0).get(NAME, 0)
    assert (default.is_default, default.version, default.content["target_sobject"]) == (
        True,
        0,
        "Task",
    )
    with pytest.raises(MappingTableNotFound):
        await make_tables(0).get(NAME, 1)
