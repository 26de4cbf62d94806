from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_rpc import from_rpc_error
from concord_rpc.identity import Identity
from concord_salesforce_emulator.app import Running
from concord_testing import (
    ServiceProcess,
    assert_process_lifecycle,
    free_port,
    identity_env,
    vouched,
)

pytestmark = pytest.mark.integration

# The org the calls below are for, and whom they are made as.
DEMO_ADMIN = Identity(subject="demo-admin", org="demo", role="admin")


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    async def call(chan: grpc.aio.Channel) -> None:
        response = await pb_grpc.CrmConnectorServiceStub(chan).ListChanges(
            pb.ListChangesRequest(org="orgs/demo", sobject_type="Task"), timeout=5
        )
        assert response.next_cursor.collection == "Task"

    await assert_process_lifecycle(
        service_process,
        "concord_crm_connector",
        port_variable="CRM_CONNECTOR_PORT",
        health_service="concord.crm.v1.CrmConnectorService",
        var_dir=tmp_path / "var",
        call=call,
        caller=DEMO_ADMIN,
    )
    # The embedded default: a dev key was generated where the service's state lives.
    key = tmp_path / "var" / "secrets" / "crm-connector.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_process_writes_to_salesforce_trusting_only_its_configured_ca(
    service_process: Callable[..., ServiceProcess], tmp_path: Path, emulator: Running
) -> None:
    settings = emulator.emulator.settings
    secret = {"client_secret": settings.client_secret, "password": settings.password}

    async def call(chan: grpc.aio.Channel) -> None:
        stub = pb_grpc.CrmConnectorServiceStub(chan)
        await stub.UpsertOrgConnection(
            pb.UpsertOrgConnectionRequest(
                connection=pb.OrgConnection(
                    name="orgs/demo/connection",
                    login_url=emulator.url,
                    auth_flow=pb.AUTH_FLOW_PASSWORD,
                    client_id=settings.client_id,
                    username=settings.username,
                    secret=json.dumps(secret).encode(),
                )
            ),
            timeout=10,
        )
        fields = struct_pb2.Struct()
        fields.update(
            {"StartDateTime": "2026-04-01T09:00:00Z", "EndDateTime": "2026-04-01T10:00:00Z"}
        )
        write = pb.CrmWrite(
            operation=pb.CRM_WRITE_OPERATION_UPSERT,
            sobject_type="Event",
            link_id="process-1",
            fields=fields,
        )
        response = await stub.ApplyBatch(
            pb.ApplyBatchRequest(org="orgs/demo", writes=[write]), timeout=10
        )
        assert [r.status for r in response.results] == [res.WRITE_STATUS_OK]
        budget = await stub.GetBudget(pb.GetBudgetRequest(org="orgs/demo"), timeout=5)
        assert budget.budget.limit == settings.daily_api_limit

    await assert_process_lifecycle(
        service_process,
        "concord_crm_connector",
        port_variable="CRM_CONNECTOR_PORT",
        health_service="concord.crm.v1.CrmConnectorService",
        var_dir=tmp_path / "var",
        call=call,
        env={"CRM_CONNECTOR_CA_BUNDLE": str(emulator.ca_cert)},
        caller=DEMO_ADMIN,
    )


async def test_a_caller_for_another_org_is_refused_before_anything_is_read(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # The service holds every org's Salesforce credentials: a call vouched for one org (a bug,
    # a mixed-up mailbox) must not reach another's.
    port = free_port()
    process = service_process(
        "concord_crm_connector",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "CRM_CONNECTOR_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            **identity_env(),
        },
    )
    addr = f"127.0.0.1:{port}"
    process.wait_serving(addr, service="concord.crm.v1.CrmConnectorService")
    stranger = Identity(subject="mallory", org="globex", role="admin")

    async def ask(caller: Identity) -> list[str]:
        """What GetBudget and GetOrgConnection of orgs/demo answer `caller`: OK or a reason."""
        answers = []
        async with grpc.aio.insecure_channel(addr, interceptors=vouched(caller=caller)) as ch:
            stub = pb_grpc.CrmConnectorServiceStub(ch)
            for call in (
                lambda: stub.GetBudget(pb.GetBudgetRequest(org="orgs/demo"), timeout=5),
                lambda: stub.GetOrgConnection(
                    pb.GetOrgConnectionRequest(name="orgs/demo/connection"), timeout=5
                ),
            ):
                try:
                    await call()
                    answers.append("OK")
                except grpc.aio.AioRpcError as error:
                    failure = from_rpc_error(error)
                    answers.append(f"{failure.code.name} {failure.reason}")
        return answers

    # The org's own admin: its budget, and no connection yet.
    assert await ask(DEMO_ADMIN) == ["OK", "NOT_FOUND ORG_CONNECTION_NOT_FOUND"]
    denied = "PERMISSION_DENIED CALLER_NOT_IN_ORG"
    assert await ask(stranger) == [denied, denied]
    assert process.stop() == 0
