from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.adapters.store import SqlStreamReports
from concord_crm_connector.adapters.tables import change_streams
from concord_crm_connector.changes.model import StreamMode, StreamState
from concord_rpc import RpcFailure, from_rpc_error

pytestmark = pytest.mark.integration

Stub = pb_grpc.CrmConnectorServiceStub
CONNECTION = pb.OrgConnection(
    name="orgs/demo/connection",
    login_url="https://login.example.com",
    auth_flow=pb.AUTH_FLOW_PASSWORD,
    client_id="cid",
    secret=b"s3cret",
)


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


async def test_empty_org_lists_no_changes_and_keeps_the_cursor(stub: Stub) -> None:
    response = await stub.ListChanges(
        pb.ListChangesRequest(
            org="orgs/demo", sobject_type="Event", cursor=resources_pb2.Cursor(token="t1")
        )
    )
    assert list(response.changes) == []
    assert response.next_cursor == resources_pb2.Cursor(collection="Event", token="t1")


async def test_budget_of_an_unmeasured_org_is_zero(stub: Stub) -> None:
    budget = (await stub.GetBudget(pb.GetBudgetRequest(org="orgs/demo"))).budget
    assert (budget.org, budget.used, budget.limit, budget.concord_used) == ("orgs/demo", 0, 0, 0)
    assert budget.concord_share == 0.5
    assert not budget.HasField("measure_time")


async def test_malformed_names_are_invalid_with_field_violations(stub: Stub) -> None:
    got = await failure(stub.ListChanges(pb.ListChangesRequest(org="demo", sobject_type="1x")))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in got.field_violations] == ["org", "sobject_type"]
    got = await failure(
        stub.UpsertOrgConnection(pb.UpsertOrgConnectionRequest(connection=pb.OrgConnection()))
    )
    assert [field for field, _ in got.field_violations] == [
        "connection.name",
        "connection.login_url",
        "connection.auth_flow",
        "connection.client_id",
    ]


async def test_connection_round_trip_never_returns_the_secret(stub: Stub) -> None:
    upserted = await stub.UpsertOrgConnection(pb.UpsertOrgConnectionRequest(connection=CONNECTION))
    got = await stub.GetOrgConnection(pb.GetOrgConnectionRequest(name="orgs/demo/connection"))
    assert got.connection == upserted.connection
    assert got.connection.secret == b""
    assert got.connection.has_secret
    # With a connection but no Salesforce adapter, listing says which issue brings it.
    failed = await failure(
        stub.ListChanges(pb.ListChangesRequest(org="orgs/demo", sobject_type="Event"))
    )
    assert failed.code == grpc.StatusCode.UNIMPLEMENTED
    assert "(issue #3)" in failed.message


async def test_missing_connection_is_not_found(stub: Stub) -> None:
    got = await failure(stub.GetOrgConnection(pb.GetOrgConnectionRequest(name="orgs/x/connection")))
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert got.reason == "ORG_CONNECTION_NOT_FOUND"
    assert got.domain == "crm-connector.concord.dev"


async def test_an_empty_batch_is_a_no_op_and_without_an_adapter_calls_say_so(stub: Stub) -> None:
    assert await stub.ApplyBatch(pb.ApplyBatchRequest(org="orgs/demo")) == pb.ApplyBatchResponse()
    write = pb.CrmWrite(operation=pb.CRM_WRITE_OPERATION_CREATE, sobject_type="Event")
    target = pb.SearchTarget(sobject_type="Contact")
    calls: list[Awaitable[object]] = [
        stub.ApplyBatch(pb.ApplyBatchRequest(org="orgs/demo", writes=[write])),
        stub.Search(pb.SearchRequest(org="orgs/demo", emails=["a@b.example"], targets=[target])),
        stub.DescribeObject(pb.DescribeObjectRequest(org="orgs/demo", sobject_type="Event")),
        stub.GetRecords(
            pb.GetRecordsRequest(org="orgs/demo", sobject_type="Event", ids=["00U000000000001"])
        ),
        stub.QueryRecords(pb.QueryRecordsRequest(org="orgs/demo", sobject_type="Event")),
    ]
    for call in calls:
        got = await failure(call)
        assert got.code == grpc.StatusCode.UNIMPLEMENTED
        assert got.metadata == {"issue": "3"}


async def test_batches_are_validated_before_any_call(stub: Stub) -> None:
    writes = [
        pb.CrmWrite(sobject_type="Event"),
        pb.CrmWrite(operation=pb.CRM_WRITE_OPERATION_UPSERT, sobject_type="not valid"),
    ]
    got = await failure(stub.ApplyBatch(pb.ApplyBatchRequest(org="orgs/demo", writes=writes)))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in got.field_violations] == [
        "writes[0].operation",
        "writes[1].sobject_type",
    ]
    too_big = [pb.CrmWrite(operation=pb.CRM_WRITE_OPERATION_UPSERT, sobject_type="Event")] * 1001
    got = await failure(
        stub.ApplyBatch(pb.ApplyBatchRequest(org="orgs/demo", writes=too_big, all_or_none=True))
    )
    assert [field for field, _ in got.field_violations] == ["writes"]


async def test_the_change_stream_shows_its_holders_report_and_silence_once_it_stops(
    stub: Stub, api_engine: AsyncEngine
) -> None:
    never = (await stub.GetChangeStream(pb.GetChangeStreamRequest(org="orgs/demo"))).stream
    assert never.state == resources_pb2.CHANGE_STREAM_STATE_SILENT
    assert "no replica" in never.reason
    now = datetime.now(UTC)
    await SqlStreamReports(api_engine).put(
        "demo",
        StreamState(
            StreamMode.STREAMING,
            last_commit=now - timedelta(seconds=2),
            last_event=now - timedelta(seconds=1, milliseconds=500),
            resync_reason="/data/EventChangeEvent: replay id expired",
            resync_time=now - timedelta(minutes=1),
        ),
    )
    live = (await stub.GetChangeStream(pb.GetChangeStreamRequest(org="orgs/demo"))).stream
    assert (live.org, live.state, live.reason) == (
        "orgs/demo",
        resources_pb2.CHANGE_STREAM_STATE_STREAMING,
        "",
    )
    assert live.lag.ToTimedelta() == timedelta(milliseconds=500)
    assert live.resync_reason == "/data/EventChangeEvent: replay id expired"
    assert live.resync_time.ToDatetime(UTC) == now - timedelta(minutes=1)
    assert live.report_time.ToDatetime(UTC) >= now
    # The holder dies: its last report ages past the bound.
    async with api_engine.begin() as conn:
        await conn.execute(update(change_streams).values(report_time=now - timedelta(minutes=5)))
    silent = (await stub.GetChangeStream(pb.GetChangeStreamRequest(org="orgs/demo"))).stream
    assert silent.state == resources_pb2.CHANGE_STREAM_STATE_SILENT
    assert "no report from the streaming replica for 30" in silent.reason
    assert silent.lag.ToTimedelta() == timedelta(milliseconds=500)
