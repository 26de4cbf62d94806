from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_mapping.__main__ import MIGRATIONS, SERVICE_NAME
from concord_mapping.adapters.crm_schema import GrpcOrgSchema
from concord_mapping.adapters.packaged import table_data
from concord_mapping.adapters.store import SqlMappingTableStore
from concord_mapping.adapters.tables import mapping_tables
from concord_mapping.api.servicer import MappingServicer
from concord_mapping.domain.describe import FieldDescribe
from concord_mapping.domain.service import MappingTables
from concord_store import create_engine, migrate
from concord_testing import serving_in_process
from concord_testing.peers import CrmPeer, serving_peers

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


# An org crm-connector has no connection for.
UNCONNECTED = "unconnected"
# The demo org's own fields on Event, beyond the shipped describe.
REGION_VALUES = ("EMEA", "Americas", "APAC")
ORG_EVENT_FIELDS = (
    crm.FieldDescription(
        name="Region__c",
        type="picklist",
        length=255,
        createable=True,
        updateable=True,
        custom=True,
        picklist_values=[crm.PicklistValue(value=v, active=True) for v in REGION_VALUES]
        + [crm.PicklistValue(value="Retired", active=False)],
    ),
    crm.FieldDescription(
        name="Meeting_Link__c",
        type="url",
        length=255,
        createable=True,
        updateable=True,
        custom=True,
    ),
    crm.FieldDescription(
        name="Score__c", type="string", length=80, createable=False, updateable=False, custom=True
    ),
)


def _field_proto(field: FieldDescribe) -> crm.FieldDescription:
    return crm.FieldDescription(
        name=field.name,
        type=field.type,
        length=field.length,
        createable=field.createable,
        updateable=field.updateable,
        picklist_values=[crm.PicklistValue(value=v, active=True) for v in field.picklist_values],
    )


def org_describes() -> dict[str, crm.ObjectDescription]:
    """The demo org's describes as crm-connector answers them: the shipped describes stand in
    for the org's standard fields, plus the org's own custom fields on Event."""
    described = {}
    for name, shipped in table_data().describes.items():
        fields = [_field_proto(f) for f in shipped.fields.values()]
        if name == "Event":
            fields += ORG_EVENT_FIELDS
        described[name] = crm.ObjectDescription(name=name, fields=fields)
    return described


@pytest.fixture
async def crm_connector() -> AsyncIterator[tuple[CrmPeer, grpc.aio.Channel]]:
    """crm-connector in memory with the demo org's describes; no connection for UNCONNECTED."""
    peer = CrmPeer()
    peer.describes.update(org_describes())
    peer.unconnected.add(UNCONNECTED)
    async with serving_peers(peer) as served, served.channel("crm-connector") as chan:
        yield peer, chan


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
async def stub(
    api_engine: AsyncEngine, crm_connector: tuple[CrmPeer, grpc.aio.Channel]
) -> AsyncIterator[pb_grpc.MappingServiceStub]:
    """The real servicer on SQLite behind a real server on port 0, through a real channel; the
    org's describe from crm-connector in memory, through a real channel too."""
    org_schema = GrpcOrgSchema(
        crm_grpc.CrmConnectorServiceStub(crm_connector[1]), timeout_seconds=5
    )
    servicer = MappingServicer(
        MappingTables(SqlMappingTableStore(api_engine), table_data(), org_schema)
    )
    async with serving_in_process(
        "mapping",
        SERVICE_NAME,
        lambda s: pb_grpc.add_MappingServiceServicer_to_server(servicer, s),
    ) as chan:
        yield pb_grpc.MappingServiceStub(chan)
