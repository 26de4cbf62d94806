from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_rpc import channel
from concord_testing import ServiceProcess, free_port

pytestmark = pytest.mark.integration


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    port = free_port()
    process = service_process(
        "concord_mapping",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "MAPPING_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
        },
    )
    addr = f"127.0.0.1:{port}"
    await asyncio.to_thread(process.wait_serving, addr, service="concord.mapping.v1.MappingService")
    async with channel(addr, retry=False) as chan:
        response = await pb_grpc.MappingServiceStub(chan).MapToCrm(
            pb.MapToCrmRequest(org="orgs/demo"), timeout=5
        )
    assert response == pb.MapToCrmResponse()
    assert (tmp_path / "var" / "mapping.db").exists()
    assert process.stop() == 0
