from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_rpc import channel
from concord_testing import ServiceProcess, free_port

pytestmark = pytest.mark.integration


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    port = free_port()
    process = service_process(
        "concord_crm_connector",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "CRM_CONNECTOR_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
        },
    )
    addr = f"127.0.0.1:{port}"
    await asyncio.to_thread(
        process.wait_serving, addr, service="concord.crm.v1.CrmConnectorService"
    )
    async with channel(addr, retry=False) as chan:
        response = await pb_grpc.CrmConnectorServiceStub(chan).ListChanges(
            pb.ListChangesRequest(org="orgs/demo", sobject_type="Task"),
            timeout=5,
        )
    assert response.next_cursor.collection == "Task"
    # The embedded default: a dev key was generated where the service's state lives.
    key = tmp_path / "var" / "secrets" / "crm-connector.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert process.stop() == 0
