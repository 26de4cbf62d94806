from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.__main__ import MIGRATIONS, SERVICE_NAME
from concord_linker.adapters.crm_grpc import GrpcCrmDirectory
from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.store import SqlLinkerStore
from concord_linker.adapters.tables import blacklist_entries
from concord_linker.api.servicer import LinkerServicer
from concord_linker.domain.service import Linker
from concord_rpc import RpcFailure, from_rpc_error
from concord_rpc.identity import Identity
from concord_store import create_engine, migrate
from concord_testing import (
    ServiceProcess,
    assert_process_lifecycle,
    free_port,
    identity_env,
    serving_in_process,
    vouched,
)

pytestmark = pytest.mark.integration

Stub = pb_grpc.LinkerServiceStub
TASK = resources_pb2.OBJECT_KIND_TASK


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def stub(tmp_path: Path, crm_stub: crm_grpc.CrmConnectorServiceStub) -> AsyncIterator[Stub]:
    engine = create_engine(f"sqlite:///{tmp_path}/api.db")
    await migrate(engine, MIGRATIONS)
    rules = PublicSuffixRules()
    linker = Linker(SqlLinkerStore(engine), GrpcCrmDirectory(crm_stub, rules), rules)
    servicer = LinkerServicer(linker)
    try:
        async with serving_in_process(
            "linker",
            SERVICE_NAME,
            lambda s: pb_grpc.add_LinkerServiceServicer_to_server(servicer, s),
        ) as chan:
            yield pb_grpc.LinkerServiceStub(chan)
    finally:
        await engine.dispose()


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


async def test_blacklist_merges_org_and_user_entries(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    rows = [("demo", "", "Example.com"), ("demo", "u1", "ann@x.org"), ("demo", "u2", "b@y.org")]
    async with engine.begin() as conn:
        for org, user, entry in [*rows, ("other", "", "z.org")]:
            await conn.execute(
                insert(blacklist_entries).values(
                    org=org, user_id=user, entry=entry, create_time=now
                )
            )
    assert await SqlLinkerStore(engine).blacklist("demo", "u1") == {"example.com", "ann@x.org"}


async def test_no_participants_is_an_empty_answer(stub: Stub) -> None:
    request = pb.ResolveParticipantsRequest(org="orgs/demo", user_id="005x", kind=TASK)
    assert await stub.ResolveParticipants(request) == pb.ResolveParticipantsResponse()


async def test_malformed_request_names_every_field(stub: Stub) -> None:
    request = pb.ResolveParticipantsRequest(
        org="demo", participants=[resources_pb2.Participant(email="nobody")]
    )
    got = await failure(stub.ResolveParticipants(request))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in got.field_violations] == [
        "org",
        "user_id",
        "kind",
        "participants[0].email",
    ]


async def test_process_serves_without_crm_connector_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    async def call(chan: grpc.aio.Channel) -> None:
        request = pb.ResolveParticipantsRequest(org="orgs/demo", user_id="005x", kind=TASK)
        response = await pb_grpc.LinkerServiceStub(chan).ResolveParticipants(request, timeout=5)
        assert response == pb.ResolveParticipantsResponse()

    await assert_process_lifecycle(
        service_process,
        "concord_linker",
        port_variable="LINKER_PORT",
        health_service=SERVICE_NAME,
        var_dir=tmp_path / "var",
        call=call,
        # Nothing listens there: the linker must not wait for it to report SERVING.
        env={"CRM_CONNECTOR_ADDR": f"127.0.0.1:{free_port()}"},
        caller=Identity(subject="demo-admin", org="demo", role="admin"),
    )


async def test_a_caller_for_another_org_is_refused(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    port = free_port()
    process = service_process(
        "concord_linker",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "LINKER_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            "CRM_CONNECTOR_ADDR": f"127.0.0.1:{free_port()}",
            **identity_env(),
        },
    )
    addr = f"127.0.0.1:{port}"
    process.wait_serving(addr, service=SERVICE_NAME)
    stranger = Identity(subject="mallory", org="globex", role="admin")
    request = pb.ResolveParticipantsRequest(org="orgs/demo", user_id="005x", kind=TASK)
    async with grpc.aio.insecure_channel(addr, interceptors=vouched(caller=stranger)) as chan:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.LinkerServiceStub(chan).ResolveParticipants(request, timeout=5)
    failure = from_rpc_error(raised.value)
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_IN_ORG",
    )
    assert process.stop() == 0
