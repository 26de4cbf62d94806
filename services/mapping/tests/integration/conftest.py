from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_mapping.__main__ import MIGRATIONS, SERVICE_NAME
from concord_mapping.adapters.packaged import table_data
from concord_mapping.adapters.store import SqlMappingTableStore
from concord_mapping.adapters.tables import mapping_tables
from concord_mapping.api.servicer import MappingServicer
from concord_mapping.domain.service import MappingTables
from concord_store import create_engine, migrate
from concord_testing import serving_in_process

CONTENT = {
    "target_sobject": "Task",
    "direction": "SYNC_DIRECTION_TWO_WAY",
    "rules": [{"mail_field": "task.subject", "crm_field": "Subject"}],
}


async def add_versions(engine: AsyncEngine, org: str, kind: str, count: int) -> None:
    """Rows written directly, as a store that already holds versions has them."""
    async with engine.begin() as conn:
        for version in range(1, count + 1):
            await conn.execute(
                insert(mapping_tables).values(
                    org=org,
                    kind=kind,
                    version=version,
                    content=CONTENT,
                    etag=f"e{version}",
                    create_time=datetime(2026, 1, version, tzinfo=UTC),
                    update_user_id="admin",
                )
            )


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def api_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path}/api.db")
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def stub(api_engine: AsyncEngine) -> AsyncIterator[pb_grpc.MappingServiceStub]:
    """The real servicer on SQLite behind a real server on port 0, through a real channel."""
    servicer = MappingServicer(MappingTables(SqlMappingTableStore(api_engine), table_data()))
    async with serving_in_process(
        "mapping",
        SERVICE_NAME,
        lambda s: pb_grpc.add_MappingServiceServicer_to_server(servicer, s),
    ) as chan:
        yield pb_grpc.MappingServiceStub(chan)
