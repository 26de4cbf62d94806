from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord_testing import ServiceProcess, assert_process_lifecycle, serving_in_process

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).parent


def test_store_url_is_a_fresh_database_per_backend(store_url: str, tmp_path: Path) -> None:
    if store_url.startswith("sqlite"):
        assert store_url == f"sqlite:///{tmp_path}/store.db"
    else:
        assert store_url.startswith("postgresql+asyncpg://")
        assert store_url.rsplit("/", 1)[1].startswith("store_")


async def test_serving_in_process_answers_on_its_channel() -> None:
    async with serving_in_process("sample", "concord.sample.v1.SampleService", lambda s: None) as c:
        response = await health_pb2_grpc.HealthStub(c).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    # Started, not made ready: the process's readiness is not the servicer's business.
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_process_lifecycle_serves_answers_and_exits_zero(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    answered: list[int] = []

    async def call(chan: grpc.aio.Channel) -> None:
        response = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())
        answered.append(response.status)

    process = await assert_process_lifecycle(
        service_process,
        "health_app",
        port_variable="HEALTH_PORT",
        health_service="",
        var_dir=tmp_path / "var",
        call=call,
        env={"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])},
        # Health is open to probes: this process has nothing to refuse.
        refuses_unvouched=False,
    )
    assert answered == [health_pb2.HealthCheckResponse.SERVING]
    assert process.returncode == 0
