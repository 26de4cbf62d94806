"""Fair sessions over a real store (SQLite) and a real nats-server (issue #18): one mailbox's
long session neither holds another mailbox's session back nor its own mailbox's pushes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.events.v1 import events_pb2
from concord_events import EventBus, Topology, mail_changed
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.executor import BATCH_SIZE
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.mirror.domain.sync import Side, Snapshot, Write, WriteResult
from concord_reconciler.sessions.adapters.messaging import NatsSessionQueue, SessionConsumer
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.sessions.domain.runner import SessionScope, SyncPorts
from concord_reconciler.sessions.domain.sessions import request_session
from concord_testing import NatsServer

pytestmark = pytest.mark.integration

EVENT = res.OBJECT_KIND_CALENDAR_ITEM


class Calendar:
    """One side of one mailbox holding calendar items only (the other kinds list nothing);
    its listings can be held at a gate, and each write can take a while."""

    def __init__(self, side: Side, order: list[tuple[Side, tuple[str, ...]]]) -> None:
        ticks = itertools.count(1)
        self.order = order
        self.items = MemorySide(side, lambda: next(ticks))
        self.side = side
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.write_seconds = 0.0
        self.on_apply: Callable[[int], None] = lambda applies: None
        self.applies: list[tuple[str, ...]] = []

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        if kind != EVENT:
            return ChangePage([])
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await self.items.list_changes(kind, cursor, known)

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        self.on_apply(len(self.applies))
        names = tuple(str(w.fields.get("name", "")) for w in writes)
        self.applies.append(names)
        self.order.append((self.side, names))
        await asyncio.sleep(self.write_seconds)
        return await self.items.apply(kind, writes)

    async def find(
        self, kind: Kind, link_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, Snapshot]]]:
        return await self.items.find(kind, link_ids)

    async def fetch(self, kind: Kind, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        return await self.items.fetch(kind, native_ids)


class Mailboxes:
    """The SyncEngine port over a memory mailbox and Salesforce per mailbox."""

    def __init__(self, *mailbox_ids: str) -> None:
        # Every write of every side, in the order they were made.
        self.order: list[tuple[Side, tuple[str, ...]]] = []
        self.sides = {
            m: (Calendar(Side.MAIL, self.order), Calendar(Side.CRM, self.order))
            for m in mailbox_ids
        }
        self.links = MemoryLinkStore()

    def ports(self, scope: SessionScope) -> SyncPorts:
        mail, crm = self.sides[scope.mailbox.removeprefix("mailboxes/")]
        return SyncPorts(mail, crm, self.links)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(
        nats_server.url, "fairness-test", topology=Topology(lease_ttl_seconds=5)
    )
    await bus.ensure_topology()
    yield bus
    await bus.close()


async def add_mailbox(store: SqlStore, mailbox_id: str) -> None:
    await store.insert_mailbox(
        MailboxRecord(
            mailbox_id=mailbox_id,
            org_id="acme",
            owner_user_id=f"user-{mailbox_id}",
            crm_user_id=f"005{mailbox_id}",
            address=f"{mailbox_id}@example.com",
            provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
        )
    )


async def request(store: SqlStore, bus: EventBus, mailbox_id: str) -> str:
    session, _ = await request_session(
        mailbox_id,
        res.SESSION_TRIGGER_FORCE,
        "",
        store=store,
        queue=NatsSessionQueue(bus),
        now=utcnow,
    )
    return session.session_id


async def state_of(store: SqlStore, session_id: str) -> SessionState:
    session = await store.get_session(session_id)
    assert session is not None
    return session.state


async def ended(store: SqlStore, session_id: str, within: float) -> SessionRecord:
    async with asyncio.timeout(within):
        while True:
            session = await store.get_session(session_id)
            assert session is not None
            if session.state.terminal:
                return session
            await asyncio.sleep(0.05)


@pytest.fixture
async def consumer(
    bus: EventBus, store: SqlStore, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[SessionConsumer, Mailboxes]]:
    engine = Mailboxes("big", "small")
    running = SessionConsumer(
        bus,
        store,
        engine,
        deadline_seconds=60,
        busy_retry_seconds=0.2,
        # One slot: without standing aside, the second mailbox would wait for the first.
        concurrency=1,
        long_after_seconds=0.3,
    )
    for mailbox_id in engine.sides:
        await add_mailbox(store, mailbox_id)
    await running.start()
    yield running, engine
    await running.stop()


async def test_another_mailboxs_session_runs_while_a_long_one_holds_the_only_slot(
    store: SqlStore, bus: EventBus, consumer: tuple[SessionConsumer, Mailboxes]
) -> None:
    running, engine = consumer
    big_mail, _ = engine.sides["big"]
    small_mail, _ = engine.sides["small"]
    big_mail.gate = asyncio.Event()  # the big session runs until the test lets it end
    small_mail.items.create({"name": "meeting"})

    big = await request(store, bus, "big")
    async with asyncio.timeout(10):
        await big_mail.entered.wait()
    small = await request(store, bus, "small")

    done = await ended(store, small, within=10)
    assert done.state is SessionState.COMPLETED
    assert done.counts.crm.created == 1
    assert await state_of(store, big) is SessionState.RUNNING
    assert running.running_long == 1

    big_mail.gate.set()
    assert (await ended(store, big, within=10)).state is SessionState.COMPLETED
    assert running.running_long == 0


async def test_a_push_for_the_mailbox_is_served_while_its_big_session_writes(
    store: SqlStore, bus: EventBus, consumer: tuple[SessionConsumer, Mailboxes]
) -> None:
    _, engine = consumer
    mail, crm = engine.sides["big"]
    # Salesforce records to mirror into the mailbox: five chunks, 0.3 s each.
    for n in range(5 * BATCH_SIZE):
        crm.items.create({"name": f"backlog-{n:04d}"})
    mail.write_seconds = 0.3
    loop = asyncio.get_running_loop()
    published: list[asyncio.Task[object]] = []

    def save_meeting(applies: int) -> None:
        if applies == 1:
            # A meeting saved in the mailbox while the second chunk is written; the
            # mail-connector's hint for it.
            mail.items.create({"name": "saved-meanwhile"})
            hint = bus.publish(mail_changed("big"), events_pb2.MailChanged())
            published.append(loop.create_task(hint))

    mail.on_apply = save_meeting
    session_id = await request(store, bus, "big")
    done = await ended(store, session_id, within=30)

    assert done.state is SessionState.COMPLETED
    assert (done.counts.mail.created, done.counts.crm.created) == (5 * BATCH_SIZE, 1)
    # Written to Salesforce right after the chunk in progress, in a chunk of its own, not
    # after the whole backlog.
    assert crm.applies == [("saved-meanwhile",)]
    assert engine.order.index((Side.CRM, ("saved-meanwhile",))) == 2
    assert len(mail.applies) == 5
