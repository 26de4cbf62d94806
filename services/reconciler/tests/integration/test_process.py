"""`python -m concord_reconciler` as `make up` runs it: SERVING once NATS is there, clean stop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_reconciler.api.servicer import SERVICE_NAME
from concord_rpc.identity import AttachIdentity, Identity, IdentitySigner, acting_as
from concord_testing import NatsServer, ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# The process verifies the caller identity with this key; the test signs as the gateway would.
IDENTITY_KEY = "process-test-internal-identity-key-0123456789"


async def test_the_process_serves_after_migrating_and_connecting(
    service_process: Callable[..., ServiceProcess], nats_server: NatsServer, tmp_path: Path
) -> None:
    port = free_port()
    process = service_process(
        "concord_reconciler",
        env={
            "RECONCILER_PORT": str(port),
            "RECONCILER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "NATS_URL": nats_server.url,
            "OTEL_TRACES_EXPORTER": "none",
            "RECONCILER_INTERNAL_IDENTITY_KEYS": IDENTITY_KEY,
            # Peers nobody listens on: the process must come up without them.
            "MAIL_CONNECTOR_ADDR": f"127.0.0.1:{free_port()}",
        },
    )
    process.wait_serving(f"127.0.0.1:{port}", service=SERVICE_NAME)
    signed = AttachIdentity(IdentitySigner(IDENTITY_KEY))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=[signed]) as channel:
        stub = api_grpc.ReconcilerServiceStub(channel)
        caller = Identity(subject="ann", org="acme", role="admin")
        with acting_as(caller), pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RequestSession(
                api.RequestSessionRequest(
                    mailbox="mailboxes/none", trigger=res.SESSION_TRIGGER_FORCE
                ),
                timeout=5,
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert process.stop() == 0
