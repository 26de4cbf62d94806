"""The reconciler process serves the gateway only: a call must carry a caller identity it signed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_reconciler.api.servicer import SERVICE_NAME
from concord_rpc.identity import AttachIdentity, Identity, IdentitySigner, acting_as
from concord_testing import NatsServer, ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OLD_KEY = "identity-test-old-internal-key-0123456789abcdef"
NEW_KEY = "identity-test-new-internal-key-0123456789abcdef"
WRONG_KEY = "identity-test-someone-elses-key-0123456789abcdef"
CALLER = Identity(subject="ann", org="acme", role="user")


async def _get_mailbox(addr: str, key: str | None) -> grpc.StatusCode:
    interceptors = [AttachIdentity(IdentitySigner(key))] if key else []
    async with grpc.aio.insecure_channel(addr, interceptors=interceptors) as channel:
        stub = api_grpc.ReconcilerServiceStub(channel)
        with acting_as(CALLER), pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetMailbox(api.GetMailboxRequest(name="mailboxes/none"), timeout=5)
    return raised.value.code()


async def test_only_calls_signed_with_a_listed_key_reach_the_service(
    service_process: Callable[..., ServiceProcess], nats_server: NatsServer, tmp_path: Path
) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    process = service_process(
        "concord_reconciler",
        env={
            "RECONCILER_PORT": str(port),
            "RECONCILER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "NATS_URL": nats_server.url,
            "OTEL_TRACES_EXPORTER": "none",
            # Mid-rotation: both keys verify.
            "RECONCILER_INTERNAL_IDENTITY_KEYS": f"{NEW_KEY}, {OLD_KEY}",
        },
    )
    process.wait_serving(addr, service=SERVICE_NAME)

    assert await _get_mailbox(addr, None) == grpc.StatusCode.UNAUTHENTICATED
    assert await _get_mailbox(addr, WRONG_KEY) == grpc.StatusCode.UNAUTHENTICATED
    # Past the check, the handler answers: the mailbox does not exist.
    assert await _get_mailbox(addr, NEW_KEY) == grpc.StatusCode.NOT_FOUND
    assert await _get_mailbox(addr, OLD_KEY) == grpc.StatusCode.NOT_FOUND

    # The process checks the API's limits too (issue #17, case 4), before the handler.
    async with grpc.aio.insecure_channel(
        addr, interceptors=[AttachIdentity(IdentitySigner(NEW_KEY))]
    ) as channel:
        stub = api_grpc.ReconcilerServiceStub(channel)
        with acting_as(CALLER), pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SuspendMailbox(
                api.SuspendMailboxRequest(name="mailboxes/none", reason="a\x00b"), timeout=5
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async with grpc.aio.insecure_channel(addr) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert process.stop() == 0
