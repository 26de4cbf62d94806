"""The reconciler in-process over SQLite and a real nats-server, its peers as fake gRPC servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.linker.v1 import linker_service_pb2 as linker
from concord.linker.v1 import linker_service_pb2_grpc as linker_grpc
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mail.v1 import mail_connector_service_pb2_grpc as mail_grpc
from concord.mapping.v1 import mapping_service_pb2 as mapping
from concord.mapping.v1 import mapping_service_pb2_grpc as mapping_grpc
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
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

MIGRATIONS = "concord_reconciler.migrations"


@dataclass
class Recorder:
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeMail(mail_grpc.MailConnectorServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def ListChanges(self, request: Any, context: Any) -> mail.ListChangesResponse:
        self.recorder.calls.append(("mail.ListChanges", request))
        return mail.ListChangesResponse(next_cursor=res.Cursor(token="t"))

    async def ListSubscriptions(self, request: Any, context: Any) -> mail.ListSubscriptionsResponse:
        return mail.ListSubscriptionsResponse(push_state=res.PUSH_STATE_ACTIVE)

    async def UpsertMailboxAccount(
        self, request: Any, context: Any
    ) -> mail.UpsertMailboxAccountResponse:
        self.recorder.calls.append(("mail.UpsertMailboxAccount", request))
        account = mail.MailboxAccount()
        account.CopyFrom(request.account)
        account.ClearField("secret")
        account.has_secret = bool(request.account.secret)
        return mail.UpsertMailboxAccountResponse(account=account)

    async def DeleteMailboxAccount(
        self, request: Any, context: Any
    ) -> mail.DeleteMailboxAccountResponse:
        self.recorder.calls.append(("mail.DeleteMailboxAccount", request))
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such account")
        raise AssertionError


class FakeCrm(crm_grpc.CrmConnectorServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.budget = res.ApiBudget(used=100, limit=15000, concord_share=0.5, concord_used=40)

    async def GetBudget(self, request: Any, context: Any) -> crm.GetBudgetResponse:
        self.recorder.calls.append(("crm.GetBudget", request))
        budget = res.ApiBudget()
        budget.CopyFrom(self.budget)
        budget.org = request.org
        return crm.GetBudgetResponse(budget=budget)

    async def ListChanges(self, request: Any, context: Any) -> crm.ListChangesResponse:
        self.recorder.calls.append(("crm.ListChanges", request))
        return crm.ListChangesResponse()


class FakeMapping(mapping_grpc.MappingServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def MapToCrm(self, request: Any, context: Any) -> mapping.MapToCrmResponse:
        self.recorder.calls.append(("mapping.MapToCrm", request))
        return mapping.MapToCrmResponse(mapping_version=1)


class FakeLinker(linker_grpc.LinkerServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def ResolveParticipants(
        self, request: Any, context: Any
    ) -> linker.ResolveParticipantsResponse:
        self.recorder.calls.append(("linker.ResolveParticipants", request))
        return linker.ResolveParticipantsResponse()


@dataclass
class FakePeer:
    name: str
    server: grpc.aio.Server
    addr: str

    async def stop(self) -> None:
        await self.server.stop(None)


async def _serve(name: str, add: Callable[[grpc.aio.Server], None]) -> FakePeer:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return FakePeer(name, server, f"127.0.0.1:{port}")


@dataclass
class Reconciler:
    stub: api_grpc.ReconcilerServiceStub
    store: SqlStore
    bus: EventBus
    peers: dict[str, FakePeer]
    recorder: Recorder
    spans: InMemorySpanExporter
    start_consumer: Callable[[], Awaitable[None]]

    async def add_mailbox(self, mailbox_id: str = "demo", org: str = "orgs/acme") -> None:
        await self.stub.CreateMailbox(
            api.CreateMailboxRequest(
                mailbox_id=mailbox_id,
                mailbox=res.Mailbox(
                    org=org,
                    owner_user_id="user-1",
                    crm_user_id="005000000000001AAA",
                    address=f"{mailbox_id}@example.com",
                    provider=res.MAIL_PROVIDER_GRAPH,
                ),
            )
        )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'reconciler.db'}"


@pytest.fixture
async def reconciler(nats_server: NatsServer, database_url: str) -> AsyncIterator[Reconciler]:
    recorder = Recorder()
    peers = {
        "mail-connector": await _serve(
            "mail-connector",
            lambda s: mail_grpc.add_MailConnectorServiceServicer_to_server(FakeMail(recorder), s),
        ),
        "crm-connector": await _serve(
            "crm-connector",
            lambda s: crm_grpc.add_CrmConnectorServiceServicer_to_server(FakeCrm(recorder), s),
        ),
        "mapping": await _serve(
            "mapping",
            lambda s: mapping_grpc.add_MappingServiceServicer_to_server(FakeMapping(recorder), s),
        ),
        "linker": await _serve(
            "linker",
            lambda s: linker_grpc.add_LinkerServiceServicer_to_server(FakeLinker(recorder), s),
        ),
    }
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    addrs = {name: peer.addr for name, peer in peers.items()}
    try:
        async with reconciler_in_process(
            nats_server.url,
            database_url,
            addrs,
            peer_timeout=3.0,
            deadline_seconds=10.0,
            lease_ttl_seconds=2.0,
            busy_retry_seconds=0.1,
            tracer_provider=provider,
        ) as running:
            yield Reconciler(
                running.stub,
                running.store,
                running.bus,
                peers,
                recorder,
                spans,
                running.consumer.start,
            )
    finally:
        for peer in peers.values():
            await peer.stop()
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


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
