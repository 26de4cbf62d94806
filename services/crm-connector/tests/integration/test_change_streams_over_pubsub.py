"""Change Data Capture end to end inside crm-connector: the emulator's Pub/Sub API, the change
streams, hints on a real nats-server (issue #19)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pytest
from google.protobuf import struct_pb2

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.events.v1 import events_pb2
from concord_crm_connector.adapters.hints import NatsHints, NatsOrgLeases
from concord_crm_connector.adapters.pubsub import PubSubSource
from concord_crm_connector.adapters.store import SqlReplayStore
from concord_crm_connector.changes.model import CHANNELS, StreamMode
from concord_crm_connector.changes.ports import ChangeBatch
from concord_crm_connector.changes.streams import ChangeStreams
from concord_events import EventBus, EventWatch, Topology, crm_changed
from concord_testing import NatsServer

from .conftest import Org  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ORG = "orgs/demo"
EVENTS = "/data/EventChangeEvent"


@dataclass
class Owners:
    org: Org

    async def owners(self, org: str, ids_by_type: Mapping[str, Sequence[str]]) -> dict[str, str]:
        connection = await self.org.store.get(org)
        assert connection is not None
        found: dict[str, str] = await self.org.salesforce.owners(connection, ids_by_type)
        return found


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(
        nats_server.url, "crm-test", topology=Topology(lease_ttl_seconds=5)
    )
    await bus.ensure_topology()
    yield bus
    await bus.close()


@dataclass
class LateEvents:
    """The Pub/Sub source with the Event channel subscribed last, a moment after the others
    (as a loaded machine brings the channels up one by one)."""

    source: PubSubSource
    delay: float = 1.0

    async def subscribe(
        self, org: str, channel: str, replay_id: bytes | None
    ) -> AsyncIterator[ChangeBatch]:
        if channel == EVENTS:
            await asyncio.sleep(self.delay)
        async for batch in self.source.subscribe(org, channel, replay_id):
            yield batch


def _streams(
    org: Org,
    bus: EventBus,
    owner: str = "replica-1",
    channels: Iterable[str] = (EVENTS,),
    *,
    events_late: bool = False,
) -> tuple[ChangeStreams, PubSubSource]:
    source = PubSubSource(
        org.store,
        org.salesforce,
        org.emulator.pubsub_addr,
        root_certificates=org.emulator.ca_cert.read_bytes(),
    )
    streams = ChangeStreams(
        org.store.connected,
        LateEvents(source) if events_late else source,
        SqlReplayStore(org.store.engine),
        Owners(org),
        NatsHints(bus),
        NatsOrgLeases(bus, owner),
        channels=channels,
        rescan_seconds=0.2,
        retry_base_seconds=0.05,
    )
    return streams, source


async def _streaming(streams: ChangeStreams) -> None:
    async with asyncio.timeout(10):
        while (state := streams.state("demo")) is None or state.mode is not StreamMode.STREAMING:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _next_hint(watch: EventWatch, within: float = 30.0) -> events_pb2.CrmChanged:
    async with asyncio.timeout(within):
        return (await watch.next()).parse(events_pb2.CrmChanged)


def _event_write(link: str, subject: str) -> pb.CrmWrite:
    fields = struct_pb2.Struct()
    fields.update(
        {
            "Subject": subject,
            "StartDateTime": "2026-03-02T09:00:00Z",
            "EndDateTime": "2026-03-02T10:00:00Z",
        }
    )
    return pb.CrmWrite(
        operation=pb.CRM_WRITE_OPERATION_UPSERT, sobject_type="Event", link_id=link, fields=fields
    )


async def test_salesforce_edits_become_hints_and_concords_own_do_not(
    org: Org, bus: EventBus
) -> None:
    org.emulator.emulator.changes.keepalive_seconds = 0.2
    streams, source = _streams(org, bus)
    admin = org.emulator.emulator.admin_user_id
    async with bus.watch(crm_changed("demo")) as watch:
        await streams.start()
        try:
            await _streaming(streams)
            # Concord's own write (through crm-connector, client=concord): no hint.
            await org.stub.ApplyBatch(
                pb.ApplyBatchRequest(org=ORG, writes=[_event_write("l-own", "Ours")])
            )
            # A person's edit in Salesforce: a hint naming the owner and the record.
            created = org.emulator.emulator.org.create(
                org.emulator.emulator.org.sobject("Event"),
                {
                    "Subject": "Theirs",
                    "StartDateTime": "2026-03-02T09:00:00.000+0000",
                    "EndDateTime": "2026-03-02T10:00:00.000+0000",
                },
                admin,
            )
            hint = await _next_hint(watch)
            assert list(hint.ids) == [created.id]
            assert list(hint.owner_ids) == [admin]
            assert not hint.everyone
            # A gap: every mailbox of the org, with the reason.
            org.admin_post("pubsub/gap", {"sobject": "Event", "change_type": "GAP_OVERFLOW"})
            gap = await _next_hint(watch)
            assert gap.everyone
            assert gap.reason == "GAP_OVERFLOW"
        finally:
            await streams.stop()
            await source.close()


async def test_an_event_saved_the_moment_the_org_streams_is_hinted(org: Org, bus: EventBus) -> None:
    """Every channel Concord reads, each subscribed on its own, the Event channel last:
    STREAMING waits for it, so an Event saved at once is on a channel that listens (a change
    saved before its channel listens "from now on" is never hinted; issue #18)."""
    org.emulator.emulator.changes.keepalive_seconds = 0.2
    streams, source = _streams(org, bus, channels=CHANNELS.values(), events_late=True)
    emulated = org.emulator.emulator.org
    async with bus.watch(crm_changed("demo")) as watch:
        await streams.start()
        try:
            await _streaming(streams)
            created = emulated.create(
                emulated.sobject("Event"),
                {
                    "Subject": "At once",
                    "StartDateTime": "2026-03-02T09:00:00.000+0000",
                    "EndDateTime": "2026-03-02T10:00:00.000+0000",
                },
                org.emulator.emulator.admin_user_id,
            )
            hint = await _next_hint(watch, within=10)
            assert list(hint.ids) == [created.id]
        finally:
            await streams.stop()
            await source.close()


async def test_a_restarted_replica_resumes_and_an_expired_replay_resyncs_the_org(
    org: Org, bus: EventBus
) -> None:
    org.emulator.emulator.changes.keepalive_seconds = 0.2
    emulated = org.emulator.emulator.org
    values = {
        "Subject": "While down",
        "StartDateTime": "2026-03-02T09:00:00.000+0000",
        "EndDateTime": "2026-03-02T10:00:00.000+0000",
    }
    first, source = _streams(org, bus)
    async with bus.watch(crm_changed("demo")) as watch:
        await first.start()
        await _streaming(first)
        emulated.create(
            emulated.sobject("Event"),
            dict(values, Subject="Seen"),
            org.emulator.emulator.admin_user_id,
        )
        await _next_hint(watch)
        replays = SqlReplayStore(org.store.engine)
        async with asyncio.timeout(5):
            while not await replays.get("demo", EVENTS):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await first.stop()
        await source.close()
        # Changed while no replica streamed: the next one resumes from the replay id.
        missed = emulated.create(
            emulated.sobject("Event"), values, org.emulator.emulator.admin_user_id
        )
        second, source = _streams(org, bus, owner="replica-2")
        await second.start()
        try:
            # At least once: the last batch seen before the stop may come again.
            seen: list[str] = []
            while missed.id not in seen:
                seen += (await _next_hint(watch)).ids
            await second.stop()
            # Past retention: the stored replay id is refused, the whole org syncs.
            org.admin_post("pubsub/expire")
            third, source3 = _streams(org, bus, owner="replica-3")
            await third.start()
            resync = await _next_hint(watch)
            assert resync.everyone
            assert "replay id expired" in resync.reason
            await third.stop()
            await source3.close()
        finally:
            await second.stop()
            await source.close()


async def test_a_stream_the_server_closes_comes_back_and_an_unreadable_event_resyncs_the_org(
    org: Org, bus: EventBus
) -> None:
    org.emulator.emulator.changes.keepalive_seconds = 0.2
    emulated = org.emulator.emulator.org
    admin = org.emulator.emulator.admin_user_id
    values = {
        "StartDateTime": "2026-03-02T09:00:00.000+0000",
        "EndDateTime": "2026-03-02T10:00:00.000+0000",
    }
    streams, source = _streams(org, bus)
    async with bus.watch(crm_changed("demo")) as watch:
        await streams.start()
        try:
            await _streaming(streams)
            # Streaming a while (a keepalive kept its position), then the server closes it.
            replays = SqlReplayStore(org.store.engine)
            async with asyncio.timeout(5):
                while not await replays.get("demo", EVENTS):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            org.admin_post("pubsub/close")
            after = emulated.create(emulated.sobject("Event"), dict(values, Subject="After"), admin)
            seen: list[str] = []
            while after.id not in seen:
                seen += (await _next_hint(watch)).ids
            # An event whose schema nobody can read: said so, and the whole org syncs.
            bus_of_org = org.emulator.emulator.changes
            bus_of_org._schema_of_entity["Event"] = "unknown-schema-id"
            bus_of_org._schemas["unknown-schema-id"] = bus_of_org._schemas[
                next(k for k in bus_of_org._schemas if k != "unknown-schema-id")
            ]
            emulated.create(emulated.sobject("Event"), dict(values, Subject="Odd"), admin)
            del bus_of_org._schemas["unknown-schema-id"]
            hint = await _next_hint(watch)
            assert hint.everyone
            assert "GAP_UNREADABLE" in hint.reason
        finally:
            await streams.stop()
            await source.close()
