from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_testing import ServiceProcess, assert_process_lifecycle, free_port

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


async def test_with_the_requirement_off_anyone_may_call(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # For running the service alone, without a gateway: it answers an unvouched call and says
    # in its log that calls are not authenticated.
    port = free_port()
    process = service_process(
        "concord_mapping",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "MAPPING_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            "MAPPING_REQUIRE_CALLER_IDENTITY": "false",
        },
    )
    addr = f"127.0.0.1:{port}"
    process.wait_serving(addr, service="concord.mapping.v1.MappingService")
    async with grpc.aio.insecure_channel(addr) as chan:
        response = await pb_grpc.MappingServiceStub(chan).MapToCrm(
            pb.MapToCrmRequest(org="orgs/demo"), timeout=5
        )
    assert response == pb.MapToCrmResponse()
    assert "MAPPING_REQUIRE_CALLER_IDENTITY is off" in process.log_tail(200)
    assert process.stop() == 0
