"""The real gateway (`python -m concord_gateway`) in front of the reconciler in memory.

The reconciler is concord_testing's peer, served from a thread of its own so `main()` can run
its own event loop in the test thread. It verifies the caller identity the gateway signs, as the
real reconciler does; its sessions move QUEUED -> RUNNING -> an end on each read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_rpc import Identity
from concord_testing import NatsServer, ServiceProcess, free_port
from concord_testing.peers import ReconcilerPeer, ServedPeers, serving_peers_in_thread

KEY = "cli-test-signing-key-0123456789-abcdefghij"
IDENTITY_KEY = "cli-test-identity-key-0123456789-abcdefgh"
_RECONCILER = "/concord.reconciler.v1.ReconcilerService/"


def mint(sub: str, org: str, role: str, *, key: str = KEY, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "concord", "aud": "concord-gateway", "sub": sub}
    claims |= {"org": org, "role": role, "iat": now, "exp": now + 600}
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="HS256")


USER_TOKEN = mint("demo-user", "demo", "user")
ADMIN_TOKEN = mint("root", "demo", "admin")


def _mailbox(mailbox_id: str, org: str, owner: str) -> rres.Mailbox:
    return rres.Mailbox(
        name=f"mailboxes/{mailbox_id}",
        mailbox_id=mailbox_id,
        org=f"orgs/{org}",
        owner_user_id=owner,
        crm_user_id="005000000000001AAA",
        address=f"{owner}@{org}.test",
        provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
        state=rres.MAILBOX_STATE_ACTIVE,
        push_state=res.PUSH_STATE_UNAVAILABLE,
    )


def _conflict(mailbox_id: str) -> rres.Conflict:
    """A meeting whose subject and location were changed differently on both sides."""
    subject = rres.ConflictField(field="Subject")
    subject.mail_value.string_value = "Pipeline review (moved)"
    subject.crm_value.string_value = "Pipeline review"
    people = rres.ConflictField(field="Location")
    people.mail_value.list_value.values.add().string_value = "Room 2"
    people.crm_value.null_value = struct_pb2.NULL_VALUE
    return rres.Conflict(
        name=f"mailboxes/{mailbox_id}/conflicts/l1",
        kind=res.OBJECT_KIND_CALENDAR_ITEM,
        mail_ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id="AAMk1"),
        crm_record_id="00U000000000001",
        fields=[subject, people],
    )


def seed(reconciler: ReconcilerPeer) -> None:
    """What the CLI needs to see: mailboxes of two orgs (one of the demo org suspended), an item
    error, conflicts, and the org's API budget."""
    reconciler.reset()
    for mailbox in (
        _mailbox("demo", "demo", "demo-user"),
        _mailbox("colleague", "demo", "someone-else"),
        _mailbox("foreign", "globex", "demo-user"),
        _mailbox("away", "demo", "someone-away"),
    ):
        reconciler.add_mailbox(mailbox)
    away = reconciler.mailboxes["mailboxes/away"]
    away.state, away.suspended_reason = rres.MAILBOX_STATE_SUSPENDED, "on leave"
    reconciler.add_item_error(
        rres.ItemError(
            name="mailboxes/demo/itemErrors/e1",
            mailbox="mailboxes/demo",
            ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id="AAMk1"),
            side=res.SYNC_SIDE_MAIL,
            reason="UNKNOWN_TIME_ZONE",
            message="time zone 'Mars Standard Time' is not known",
            attempts=3,
            quarantined=True,
            last_seen_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
        )
    )
    reconciler.add_conflict(_conflict("demo"))
    reconciler.add_conflict(_conflict("colleague"))
    reconciler.budget = res.ApiBudget(used=1200, limit=15000, concord_share=0.5, concord_used=300)


@dataclass
class Stack:
    reconciler: ReconcilerPeer
    gateway: str
    peers: ServedPeers
    up_file: Path
    loop: asyncio.AbstractEventLoop
    process: ServiceProcess

    def callers(self) -> list[tuple[str, Identity | None]]:
        """(method, whom the gateway vouched for) of each call the reconciler received."""
        return [(c.method, c.caller) for c in self.reconciler.calls]

    def set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        """What the peers' server answers on health, for every service at its address."""
        change = self.peers.services["reconciler"].health.set("", status)
        asyncio.run_coroutine_threadsafe(change, self.loop).result(timeout=10)

    def write_up(self, *, token: str | None = USER_TOKEN, admin_token: str = ADMIN_TOKEN) -> None:
        info = json.loads(self.up_file.read_text())
        info["demo"] = {"admin_token": admin_token} | ({"token": token} if token else {})
        self.up_file.write_text(json.dumps(info))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    """The reconciler in memory and one real gateway process per test module (no CLI command
    reaches the linker; its address is the reconciler's, which answers health)."""
    reconciler = ReconcilerPeer()
    seed(reconciler)
    # On a loop of its own: `main()` runs its own loop in the test thread.
    with serving_peers_in_thread(reconciler, identity_keys=(IDENTITY_KEY,)) as (served, loop):
        peers = served.address("reconciler")
        gateway_port = free_port()
        directory = tmp_path_factory.mktemp("gateway")
        process = ServiceProcess(
            "concord_gateway",
            directory / "logs",
            name="gateway",
            env={
                "CONCORD_VAR_DIR": str(directory / "var"),
                "GATEWAY_PORT": str(gateway_port),
                "RECONCILER_ADDR": peers,
                "LINKER_ADDR": peers,
                "GATEWAY_AUTH_HS256_KEY": KEY,
                "GATEWAY_AUTH_HS256_KEYS": "",
                "GATEWAY_AUTH_HS256_KEYSET": "",
                "GATEWAY_INTERNAL_IDENTITY_KEY": IDENTITY_KEY,
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            },
        ).start()
        try:
            process.wait_serving(f"127.0.0.1:{gateway_port}", 60.0)
            yield reconciler, served, f"127.0.0.1:{gateway_port}", loop, process
        finally:
            process.stop()


@pytest.fixture
def stack(
    running: tuple[Any, ...], tmp_path: Path, nats_server_session: NatsServer
) -> Iterator[Stack]:
    reconciler, served, gateway, loop, process = running
    seed(reconciler)
    stack = Stack(reconciler, gateway, served, tmp_path / "up.json", loop, process)
    stack.set_health(health_pb2.HealthCheckResponse.SERVING)
    # The gateway is the real one; the rest answer health at the reconciler's address.
    peers = served.address("reconciler")
    services = {"gateway": gateway} | {
        name: peers for name in ("reconciler", "mail-connector", "crm-connector", "mapping")
    }
    services["linker"] = peers
    stack.up_file.write_text(
        json.dumps(
            {
                "nats": {"url": nats_server_session.url},
                "services": {name: {"address": a} for name, a in services.items()},
                "demo": {"token": USER_TOKEN, "admin_token": ADMIN_TOKEN},
            }
        )
    )
    yield stack
    assert process.running, process.log_tail()


@pytest.fixture
def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"
