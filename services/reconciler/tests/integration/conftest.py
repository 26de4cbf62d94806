"""The reconciler in-process over SQLite and a real nats-server, its peers in memory
(concord_testing.peers) behind real gRPC servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_events import EventBus, Topology
from concord_reconciler.api.servicer import SERVICE_NAME
from concord_reconciler.app import build
from concord_reconciler.sessions.adapters.messaging import SessionConsumer
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.settings import ReconcilerSettings
from concord_rpc import GrpcService
from concord_rpc.identity import Identity, IdentitySigner, IdentityVerifier, RequireIdentity
from concord_rpc.limits import RequestLimits
from concord_store import create_engine, migrate
from concord_testing import TEST_CALLER, TEST_IDENTITY_KEY, NatsServer, vouched
from concord_testing.peers import (
    CrmPeer,
    LinkerPeer,
    MailPeer,
    MappingPeer,
    Peer,
    ServedPeers,
    serving_peers,
)

MIGRATIONS = "concord_reconciler.migrations"


# Short names of the peers' calls, as `peer_calls()` lists them (`mail.ListChanges`).
_PREFIXES = {
    "mail-connector": "mail",
    "crm-connector": "crm",
    "mapping": "mapping",
    "linker": "linker",
}


@dataclass
class Reconciler:
    stub: api_grpc.ReconcilerServiceStub
    store: SqlStore
    bus: EventBus
    peers: ServedPeers
    mail: MailPeer
    crm: CrmPeer
    spans: InMemorySpanExporter
    start_consumer: Callable[[], Awaitable[None]]
    all_peers: tuple[Peer, ...]

    def peer_calls(self) -> list[tuple[str, Any]]:
        """Every call the peers received, in order, as (`mail.ListChanges`, request)."""
        calls = [(p.service, c) for p in self.all_peers for c in p.calls]
        calls.sort(key=lambda pair: pair[1].seq)
        return [(f"{_PREFIXES[service]}.{c.method}", c.request) for service, c in calls]

    def peer_call_names(self) -> list[str]:
        return [name for name, _ in self.peer_calls()]

    async def add_mailbox(self, mailbox_id: str = "demo", org: str = "orgs/acme") -> None:
        await add_mailbox(self.stub, mailbox_id, org)


async def add_mailbox(
    stub: api_grpc.ReconcilerServiceStub, mailbox_id: str = "demo", org: str = "orgs/acme"
) -> None:
    """A Graph mailbox of `user-1` in `org`, registered through the API."""
    await stub.CreateMailbox(
        api.CreateMailboxRequest(
            mailbox_id=mailbox_id,
            mailbox=rres.Mailbox(
                org=org,
                owner_user_id="user-1",
                crm_user_id="005000000000001AAA",
                address=f"{mailbox_id}@example.com",
                provider=res.MAIL_PROVIDER_GRAPH,
            ),
        )
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    """The session store over a migrated SQLite file (modules that test more stores override
    it)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'reconciler.db'}")
    await migrate(engine, MIGRATIONS)
    yield SqlStore(engine)
    await engine.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'reconciler.db'}"


@pytest.fixture
async def reconciler(nats_server: NatsServer, database_url: str) -> AsyncIterator[Reconciler]:
    mail, crm = MailPeer(), CrmPeer()
    crm.budget = res.ApiBudget(used=100, limit=15000, concord_share=0.5, concord_used=40)
    peers = (mail, crm, MappingPeer(), LinkerPeer())
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        async with (
            serving_peers(*peers) as served,
            reconciler_in_process(
                nats_server.url,
                database_url,
                served.addresses,
                peer_timeout=3.0,
                deadline_seconds=10.0,
                lease_ttl_seconds=2.0,
                busy_retry_seconds=0.1,
                tracer_provider=provider,
            ) as running,
        ):
            yield Reconciler(
                running.stub,
                running.store,
                running.bus,
                served,
                mail,
                crm,
                spans,
                running.consumer.start,
                peers,
            )
    finally:
        provider.shutdown()


@dataclass
class InProcess:
    stub: api_grpc.ReconcilerServiceStub
    store: SqlStore
    bus: EventBus
    consumer: SessionConsumer


@asynccontextmanager
async def reconciler_in_process(
    nats_url: str,
    database_url: str,
    peers: Mapping[str, str],
    *,
    peer_timeout: float,
    deadline_seconds: float,
    lease_ttl_seconds: float,
    busy_retry_seconds: float,
    tracer_provider: TracerProvider | None = None,
    share_emails: bool = False,
    caller: Identity = TEST_CALLER,
) -> AsyncIterator[InProcess]:
    """The reconciler as its process wires it (API, consumer, sync engine over the peers at
    `peers`, by service name), on this test's loop; the consumer is started by the caller.
    Its API is called as `caller`, as the gateway would vouch for a person."""
    engine = create_engine(database_url)
    await migrate(engine, MIGRATIONS)
    settings = ReconcilerSettings(
        mail_connector_addr=peers["mail-connector"],
        crm_connector_addr=peers["crm-connector"],
        mapping_addr=peers["mapping"],
        linker_addr=peers["linker"],
        nats_url=nats_url,
        peer_timeout_seconds=peer_timeout,
        session_deadline_seconds=deadline_seconds,
        wait_session_max_seconds=deadline_seconds,
        lease_ttl_seconds=lease_ttl_seconds,
        lease_busy_retry_seconds=busy_retry_seconds,
        session_concurrency=2,
    )
    running = build(
        settings,
        engine,
        signer=IdentitySigner(TEST_IDENTITY_KEY),
        tracer_provider=tracer_provider,
        share_emails=share_emails,
    )
    bus = await EventBus.connect(
        nats_url,
        "reconciler-test",
        topology=Topology(lease_ttl_seconds=lease_ttl_seconds),
        tracer_provider=tracer_provider,
    )
    # The API and the bus as the process has them; the consumer is the caller's to start.
    await running.start(bus, consume=False, schedule=False)
    consumer = running.consumer(bus)
    running.consumers.append(consumer)
    service = GrpcService("reconciler", port=0)
    # As the process serves it: only calls vouched for, whose identity goes on to the peers.
    service.add_interceptor(RequireIdentity(IdentityVerifier([TEST_IDENTITY_KEY])))
    service.add_interceptor(RequestLimits())
    service.add_service(
        SERVICE_NAME,
        lambda s: api_grpc.add_ReconcilerServiceServicer_to_server(running.servicer, s),
    )
    port = await service.start()
    client = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=vouched(caller=caller))
    try:
        yield InProcess(api_grpc.ReconcilerServiceStub(client), running.store, bus, consumer)
    finally:
        await client.close()
        await service.shutdown()
        await running.close()
        await engine.dispose()
