from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_rpc import RpcFailure, from_rpc_error

from .conftest import add_versions

pytestmark = pytest.mark.integration

Stub = pb_grpc.MappingServiceStub
TASKS = "orgs/demo/mappingTables/task"


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


async def test_nothing_to_map_is_an_empty_answer(stub: Stub) -> None:
    assert await stub.MapToCrm(pb.MapToCrmRequest(org="orgs/demo")) == pb.MapToCrmResponse()
    assert await stub.MapToMail(pb.MapToMailRequest(org="orgs/demo")) == pb.MapToMailResponse()


async def test_org_without_override_reads_the_default(stub: Stub) -> None:
    table = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=TASKS))).table
    assert (table.name, table.is_default, table.version) == (TASKS, True, 0)
    assert table.target_sobject == "Task"
    assert table.direction == resources_pb2.SYNC_DIRECTION_TWO_WAY
    assert {r.crm_field for r in table.rules} >= {"Subject", "ActivityDate", "Status", "Priority"}
    got = await failure(stub.GetMappingTable(pb.GetMappingTableRequest(name=TASKS, version=4)))
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert got.reason == "MAPPING_TABLE_NOT_FOUND"
    assert got.metadata == {"name": TASKS}
    listed = await stub.ListMappingTableVersions(pb.ListMappingTableVersionsRequest(name=TASKS))
    assert listed == pb.ListMappingTableVersionsResponse()


async def test_override_versions_are_read_and_paged(stub: Stub, api_engine: AsyncEngine) -> None:
    await add_versions(api_engine, "demo", "task", 3)
    table = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=TASKS))).table
    assert (table.name, table.kind, table.version) == (TASKS, resources_pb2.OBJECT_KIND_TASK, 3)
    assert table.target_sobject == "Task"
    assert table.rules[0].crm_field == "Subject"
    assert not table.is_default
    request = pb.ListMappingTableVersionsRequest(name=TASKS, page_size=2)
    first = await stub.ListMappingTableVersions(request)
    assert [t.version for t in first.tables] == [3, 2]
    request.page_token = first.next_page_token
    second = await stub.ListMappingTableVersions(request)
    assert [t.version for t in second.tables] == [1]
    assert second.next_page_token == ""


async def test_malformed_requests_name_the_field(stub: Stub) -> None:
    cases: list[tuple[Awaitable[object], str]] = [
        (stub.GetMappingTable(pb.GetMappingTableRequest(name="orgs/demo/mappingTables/x")), "name"),
        (stub.MapToCrm(pb.MapToCrmRequest(org="demo")), "org"),
        (
            stub.ListMappingTableVersions(
                pb.ListMappingTableVersionsRequest(name=TASKS, page_token="zz")
            ),
            "page_token",
        ),
    ]
    for call, field in cases:
        got = await failure(call)
        assert got.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in got.field_violations] == [field]
