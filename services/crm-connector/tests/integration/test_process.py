from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_testing import ServiceProcess, assert_process_lifecycle

pytestmark = pytest.mark.integration


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
    )
    # The embedded default: a dev key was generated where the service's state lives.
    key = tmp_path / "var" / "secrets" / "crm-connector.key"
    assert key.stat().st_mode & 0o777 == 0o600
