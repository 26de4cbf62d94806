from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_testing import ServiceProcess, assert_process_lifecycle

pytestmark = pytest.mark.integration


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    async def call(chan: grpc.aio.Channel) -> None:
        response = await pb_grpc.MappingServiceStub(chan).MapToCrm(
            pb.MapToCrmRequest(org="orgs/demo"), timeout=5
        )
        assert response == pb.MapToCrmResponse()

    await assert_process_lifecycle(
        service_process,
        "concord_mapping",
        port_variable="MAPPING_PORT",
        health_service="concord.mapping.v1.MappingService",
        var_dir=tmp_path / "var",
        call=call,
    )
    assert (tmp_path / "var" / "mapping.db").exists()
