"""Two reconciler replicas behind one gateway: calls are spread over both, and one replica
stopping costs no call while the other serves."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
import jwt
import pytest

from concord.common.v1 import resources_pb2 as res
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_gateway.settings import GatewaySettings
from concord_testing.peers import LinkerPeer, ReconcilerPeer, serving_peers

if TYPE_CHECKING:
    from conftest import StartGateway  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# As conftest.py has them (it is not importable under --import-mode=importlib).
KEY = "test-signing-key-0123456789-abcdefghij"
IDENTITY_KEY = "internal-identity-key-0123456789-abcdef"


def _replica() -> ReconcilerPeer:
    """A replica over the shared state: each answers for the same mailbox."""
    return ReconcilerPeer(
        [
            rres.Mailbox(
                name="mailboxes/ann",
                mailbox_id="ann",
                org="orgs/acme",
                owner_user_id="ann",
                crm_user_id="005ann",
                address="ann@acme.test",
                state=rres.MAILBOX_STATE_ACTIVE,
                push_state=res.PUSH_STATE_UNAVAILABLE,
            )
        ]
    )


async def test_the_gateway_calls_every_reconciler_replica_and_survives_one_stopping(
    settings: GatewaySettings, start_gateway: StartGateway
) -> None:
    first, second = _replica(), _replica()
    now = int(time.time())
    claims = {"iss": "concord", "aud": "concord-gateway", "iat": now, "exp": now + 600}
    token = jwt.encode(claims | {"sub": "ann", "org": "acme", "role": "user"}, KEY, "HS256")
    metadata = [("authorization", f"Bearer {token}")]
    async with (
        serving_peers(first, LinkerPeer(), identity_keys=(IDENTITY_KEY,)) as one,
        serving_peers(second, identity_keys=(IDENTITY_KEY,)) as two,
    ):
        target = f"ipv4:{one.address('reconciler')},{two.address('reconciler')}"
        gateway = await start_gateway(settings, target, one.address("linker"))
        try:
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = pb_grpc.GatewayServiceStub(channel)

                async def status() -> None:
                    request = pb.GetMailboxStatusRequest(mailbox="mailboxes/ann")
                    response = await stub.GetMailboxStatus(request, metadata=metadata, timeout=5)
                    assert response.status.mailbox.name == "mailboxes/ann"

                for _ in range(20):
                    await status()
                # Both replicas answered (one connection to the first took them all before).
                assert first.calls
                assert second.calls

                await one.stop("reconciler")
                answered = len(second.calls)
                for _ in range(20):
                    await status()
                assert len(second.calls) > answered
        finally:
            await gateway.shutdown()
