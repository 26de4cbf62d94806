"""The reconciler and linker in memory (concord_testing.peers) on port 0, and the gateway in
process in front of them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import grpc
import jwt
import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.reconciler.v1 import resources_pb2 as rres
from concord_gateway.adapters.peers import Peers
from concord_gateway.api import install
from concord_gateway.domain.tokens import TokenVerifier
from concord_gateway.settings import GatewaySettings
from concord_rpc import (
    GrpcService,
    Identity,
)
from concord_testing.peers import LinkerPeer, Peer, ReconcilerPeer, ServedPeers, serving_peers

KEY = "test-signing-key-0123456789-abcdefghij"
# The internal key the gateway and the peers share; the peers verify it as the real ones do.
IDENTITY_KEY = "internal-identity-key-0123456789-abcdef"
# In the gateway's keyset under kid "2026-11" (KEY is its unnamed, older key).
NEW_KEY = "new-signing-key-2026-11-0123456789-abcdef"


def mint_token(
    sub: str, org: str, role: str, *, key: str = KEY, kid: str | None = None, **changes: Any
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "concord",
        "aud": "concord-gateway",
        "sub": sub,
        "org": org,
        "role": role,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm="HS256", headers=headers)


def mailbox(mailbox_id: str, org: str, owner: str) -> rres.Mailbox:
    return rres.Mailbox(
        name=f"mailboxes/{mailbox_id}",
        mailbox_id=mailbox_id,
        org=f"orgs/{org}",
        owner_user_id=owner,
        crm_user_id=f"005{owner}",
        address=f"{owner}@{org}.test",
        state=rres.MAILBOX_STATE_ACTIVE,
        push_state=res.PUSH_STATE_UNAVAILABLE,
    )


@dataclass
class Gateway:
    stub: pb_grpc.GatewayServiceStub
    channel: grpc.aio.Channel
    reconciler: ReconcilerPeer
    linker: LinkerPeer

    ann: str = mint_token("ann", "acme", "user")
    bob: str = mint_token("bob", "acme", "user")
    admin: str = mint_token("root", "acme", "admin")
    sidebar: str = mint_token("sidebar", "acme", "service")

    async def call(
        self,
        method: str,
        request: Any,
        token: str | EllipsisType | None = ...,
        deadline: float = 10,
    ) -> Any:
        """`token`: ... for ann's (a user of acme), None for none at all."""
        if token is ...:
            token = self.ann
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=deadline)

    async def error(self, method: str, request: Any, token: str | EllipsisType | None = ...) -> Any:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.call(method, request, token)
        return raised.value

    def forwarded(self) -> list[Any]:
        """The requests the gateway sent the reconciler, but for its reads of the mailbox
        (GetMailbox), which is how it checks who may act on it."""
        return [c.request for c in self.reconciler.calls if c.method != "GetMailbox"]

    def callers(self, peer: Peer) -> list[Identity | None]:
        """Whom the gateway vouched for on each call `peer` received."""
        return [c.caller for c in peer.calls]


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    monkeypatch.setenv("GATEWAY_SYNC_WAIT_MAX_SECONDS", "60")
    return GatewaySettings.from_env()


async def _start_gateway(
    settings: GatewaySettings, reconciler_addr: str, linker_addr: str
) -> GrpcService:
    peers = Peers.connect(reconciler_addr, linker_addr, identity_key=IDENTITY_KEY)
    service = GrpcService("gateway", port=0, drain_seconds=0)
    service.on_shutdown(peers.close)
    verifier = TokenVerifier(
        [KEY], keyset={"2026-11": NEW_KEY}, issuer="concord", audience="concord-gateway"
    )
    install(service, settings, peers, verifier)
    await service.start()
    await service.become_ready()
    return service


StartGateway = Callable[[GatewaySettings, str, str], Awaitable[GrpcService]]
Mint = Callable[..., str]


@pytest.fixture
def start_gateway() -> StartGateway:
    """Starts a gateway in process in front of the given peer addresses; shut it down after."""
    return _start_gateway


@pytest.fixture
def mint() -> Mint:
    """mint(sub, org, role, key=..., **claim_changes) -> a signed token."""
    return mint_token


@dataclass
class GatewayPeers:
    reconciler: ReconcilerPeer
    linker: LinkerPeer
    served: ServedPeers

    @property
    def reconciler_addr(self) -> str:
        return self.served.address("reconciler")

    @property
    def linker_addr(self) -> str:
        return self.served.address("linker")


@pytest.fixture
async def fake_peers() -> AsyncIterator[GatewayPeers]:
    """The reconciler (mailboxes ann and bob of acme, eve of globex; ann's with 25 item errors,
    two of them quarantined, and two conflicts) and the linker in memory, SERVING, verifying
    the caller identity the gateway signs as the real peers do."""
    reconciler = ReconcilerPeer(
        [
            mailbox("ann", "acme", "ann"),
            mailbox("bob", "acme", "bob"),
            mailbox("eve", "globex", "eve"),
        ]
    )
    reconciler.counts = rres.SessionCounts(mail_changes_seen=3)
    for name in reconciler.mailboxes:
        reconciler.user_settings[f"{name}/settings"] = settings_pb2.MailboxSettings(
            name=f"{name}/settings", blacklist=["spam.test"]
        )
    for n in range(1, 26):
        reconciler.add_item_error(
            rres.ItemError(
                name=f"mailboxes/ann/itemErrors/e{n}",
                mailbox="mailboxes/ann",
                reason="UNKNOWN_TIME_ZONE" if n == 1 else "INVALID_FIELD",
                quarantined=n <= 2,
            )
        )
    for conflict_id in ("l1", "l2"):
        subject = rres.ConflictField(field="Subject")
        subject.mail_value.string_value = "Kick-off (mailbox)"
        subject.crm_value.string_value = "Kick-off (salesforce)"
        reconciler.add_conflict(
            rres.Conflict(
                name=f"mailboxes/ann/conflicts/{conflict_id}",
                kind=res.OBJECT_KIND_CALENDAR_ITEM,
                fields=[subject],
            )
        )
    linker = LinkerPeer()
    linker.related.append(
        linker_pb.RelatedRecord(
            sobject_type="Contact", id="003A", name="Ann", score=0.9, explanation="sender"
        )
    )
    # Verifying, as the real peers do: a call the gateway did not sign for a caller fails here.
    async with serving_peers(reconciler, linker, identity_keys=(IDENTITY_KEY,)) as served:
        yield GatewayPeers(reconciler, linker, served)


@pytest.fixture
async def gateway(settings: GatewaySettings, fake_peers: GatewayPeers) -> AsyncIterator[Gateway]:
    service = await _start_gateway(settings, fake_peers.reconciler_addr, fake_peers.linker_addr)
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            yield Gateway(
                pb_grpc.GatewayServiceStub(channel),
                channel,
                fake_peers.reconciler,
                fake_peers.linker,
            )
    finally:
        await service.shutdown()
