"""`python -m concord_gateway` as `make up` runs it: the dev key, readiness, migrate."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord_testing import ServiceProcess, free_port

if TYPE_CHECKING:
    from conftest import GatewayPeers, Mint  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# The peers' identity key (conftest.py): the gateway must sign with it for them to answer.
IDENTITY_KEY = "internal-identity-key-0123456789-abcdef"


def _env(tmp_path: Path, peers: GatewayPeers, port: int) -> dict[str, str]:
    return {
        "CONCORD_VAR_DIR": str(tmp_path / "var"),
        "GATEWAY_PORT": str(port),
        "RECONCILER_ADDR": peers.reconciler_addr,
        "LINKER_ADDR": peers.linker_addr,
        "OTEL_TRACES_EXPORTER": "none",
        "GATEWAY_AUTH_HS256_KEY": "",
        "GATEWAY_AUTH_HS256_KEYS": "",
        "GATEWAY_AUTH_HS256_KEYSET": "",
        "GATEWAY_INTERNAL_IDENTITY_KEY": IDENTITY_KEY,
    }


async def test_without_a_key_the_gateway_makes_the_dev_key_and_honours_it(
    tmp_path: Path,
    fake_peers: GatewayPeers,
    mint: Mint,
    service_process: Callable[..., ServiceProcess],
) -> None:
    port = free_port()
    # Empty means unset, whatever the environment running the tests holds.
    env = _env(tmp_path, fake_peers, port)
    process = service_process("concord_gateway", env=env, name="gateway")
    # Blocking wait in a thread: the reconciler peer answering its health lives on this loop.
    await asyncio.to_thread(process.wait_serving, f"127.0.0.1:{port}", 30.0)

    key_file = tmp_path / "var" / "secrets" / "gateway-auth.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = mint("ann", "acme", "user", key=key_file.read_text().strip())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        response = await stub.SyncMailbox(
            pb.SyncMailboxRequest(mailbox="mailboxes/ann"),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )
    assert response.session.name == "mailboxes/ann/sessions/s-1"
    assert process.stop() == 0
    assert token not in process.log_path.read_text()


async def test_the_gateway_is_not_serving_until_the_reconciler_is(
    tmp_path: Path, fake_peers: GatewayPeers, service_process: Callable[..., ServiceProcess]
) -> None:
    port = free_port()
    env = _env(tmp_path, fake_peers, port) | {"RECONCILER_ADDR": f"127.0.0.1:{free_port()}"}
    service_process("concord_gateway", env=env, name="gateway")
    seen: list[int] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # Until it has answered 20 times (2 s of readiness retries), however slow it starts.
        for _ in range(300):
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                seen.append(response.status)
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            if len(seen) >= 20:
                break
            await asyncio.sleep(0.1)
    assert set(seen) == {health_pb2.HealthCheckResponse.NOT_SERVING}


def test_a_short_key_stops_the_start_with_one_line(tmp_path: Path) -> None:
    result = _run(tmp_path, {"GATEWAY_AUTH_HS256_KEY": "too-short"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "concord-gateway: invalid setting GATEWAY_AUTH_HS256_KEY: Value error, "
        "an HS256 key must be at least 32 bytes"
    ]


def test_migrate_succeeds_with_nothing_to_migrate(tmp_path: Path) -> None:
    result = _run(tmp_path, {}, "migrate")
    assert result.returncode == 0, result.stderr


def _run(tmp_path: Path, env: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "concord_gateway", *args],
        env={**os.environ, "CONCORD_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
