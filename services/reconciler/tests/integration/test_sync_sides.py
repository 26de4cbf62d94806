"""The sync sides over the peers' gRPC clients: mail-connector, crm-connector and the linker in
memory (concord_testing.peers), the real mapping servicer in process with a small table."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord.mapping.v1 import mapping_service_pb2_grpc as mapping_grpc
from concord_mapping.__main__ import MIGRATIONS as MAPPING_MIGRATIONS
from concord_mapping.__main__ import SERVICE_NAME as MAPPING_SERVICE
from concord_mapping.adapters.crm_schema import GrpcOrgSchema
from concord_mapping.adapters.packaged import table_data
from concord_mapping.adapters.store import SqlMappingTableStore
from concord_mapping.api.servicer import MappingServicer
from concord_mapping.domain.service import MappingTables
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.mirror.adapters import mail_side as mail_side_module
from concord_reconciler.mirror.adapters.crm_side import CrmSyncSide
from concord_reconciler.mirror.adapters.mail_side import MailSyncSide
from concord_reconciler.mirror.adapters.peers import (
    GrpcCrmSide,
    GrpcLinker,
    GrpcMailSide,
    GrpcMapping,
)
from concord_reconciler.mirror.adapters.sync_sides import SessionMapping
from concord_reconciler.mirror.domain.sync import Side, Write, WriteOp
from concord_rpc import Unavailable
from concord_store import create_engine, migrate
from concord_testing import serving_in_process
from concord_testing.peers import CrmPeer, LinkerPeer, MailPeer, serving_peers

pytestmark = pytest.mark.integration

EVENT = res.OBJECT_KIND_CALENDAR_ITEM
OWNER = "005000000000001AAA"
START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def meeting(
    native: str, subject: str, *, category: str = "Salesforce", **extra: Any
) -> res.MailItem:
    return res.MailItem(
        ref=res.ItemRef(
            kind=EVENT, native_id=native, version=f"ck-{native}", link_id=extra.pop("link_id", "")
        ),
        calendar_item=res.CalendarItem(
            subject=subject,
            start=_ts(START),
            end=_ts(START.replace(hour=10)),
            location=extra.pop("location", "Room 1"),
            categories=[category] if category else [],
            ical_uid=f"uid-{native}",
            attendees=[res.Attendee(email="ann@acme.example", role=res.ATTENDEE_ROLE_REQUIRED)],
            **extra,
        ),
        last_modified_time=_ts(START),
    )


DAILY = res.Recurrence(rules=["RRULE:FREQ=DAILY"])


def record(record_id: str, *, by_concord: bool = False, **fields: Any) -> res.CrmRecord:
    values = struct_pb2.Struct()
    values.update(fields)
    return res.CrmRecord(
        sobject_type="Event",
        id=record_id,
        fields=values,
        system_modstamp=_ts(START),
        link_id=str(fields.get("Concord_Link_Id__c", "")),
        last_modified_by_concord=by_concord,
    )


# The org's table for meetings: Subject, Location, StartDateTime and the recurrence both ways,
# attendees to Salesforce only.
MAPPED = (
    "Subject",
    "Location",
    "StartDateTime",
    "Recurrence2PatternText",
    "concord.EventRelations",
)
TABLE = "orgs/acme/mappingTables/calendar-item"
# A field of the org's Event that no query may select beside its parts.
COMPOUND = crm.FieldDescription(name="Address__c", type="address")
MailWrite = mail.MailWrite
CrmWrite = crm.CrmWrite
ANN = linker_pb.LinkedRecord(sobject_type="Contact", id="003AAA")
CARL = linker_pb.LinkedRecord(sobject_type="Lead", id="00QCCC")


def _describes() -> dict[str, crm.ObjectDescription]:
    """The org's describes as crm-connector answers them: the shipped ones, with a compound
    field on Event."""
    described = {}
    for name, shipped in table_data().describes.items():
        fields = [
            crm.FieldDescription(
                name=f.name,
                type=f.type,
                length=f.length,
                createable=f.createable,
                updateable=f.updateable,
            )
            for f in shipped.fields.values()
        ]
        described[name] = crm.ObjectDescription(name=name, fields=fields)
    described["Event"].fields.append(COMPOUND)
    return described


def _trim_location(item: res.MailItem) -> None:
    # The mailbox keeps its own form of some values: it trims the location.
    item.calendar_item.location = item.calendar_item.location.strip()


@dataclass
class Peers:
    mail: MailPeer
    crm: CrmPeer
    linker: LinkerPeer
    mail_client: GrpcMailSide
    crm_client: GrpcCrmSide
    linker_client: GrpcLinker
    mapping: GrpcMapping

    def mail_side(self) -> MailSyncSide:
        return MailSyncSide(
            self.mail_client,
            SessionMapping(self.mapping, "orgs/acme", OWNER),
            "mailboxes/demo",
            {EVENT: "Salesforce"},
        )

    def crm_side(self) -> CrmSyncSide:
        return CrmSyncSide(
            self.crm_client,
            SessionMapping(self.mapping, "orgs/acme", OWNER),
            self.linker_client,
            "orgs/acme",
            OWNER,
        )

    def mail_batches(self) -> list[list[MailWrite]]:
        return [list(r.writes) for r in self.mail.received("ApplyItems")]

    def crm_batches(self) -> list[list[CrmWrite]]:
        return [list(r.writes) for r in self.crm.received("ApplyBatch")]


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Peers]:
    mail_peer, crm_peer = MailPeer(), CrmPeer()
    mail_peer.stored_form = _trim_location
    crm_peer.describes.update(_describes())
    linker = LinkerPeer(
        {"ann@acme.example": ANN, "carl@acme.example": CARL},
        what=linker_pb.LinkedRecord(sobject_type="Opportunity", id="006BBB"),
    )
    engine = create_engine(f"sqlite:///{tmp_path}/mapping.db")
    await migrate(engine, MAPPING_MIGRATIONS)
    try:
        async with (
            serving_peers(mail_peer, crm_peer, linker) as served,
            served.channel("mail-connector") as mail_channel,
            served.channel("crm-connector") as crm_channel,
            served.channel("linker") as linker_channel,
        ):
            org_schema = GrpcOrgSchema(
                crm_grpc.CrmConnectorServiceStub(crm_channel), timeout_seconds=5
            )
            servicer = MappingServicer(
                MappingTables(SqlMappingTableStore(engine), table_data(), org_schema)
            )
            async with serving_in_process(
                "mapping",
                MAPPING_SERVICE,
                lambda s: mapping_grpc.add_MappingServiceServicer_to_server(servicer, s),
            ) as mapping_channel:
                tables = mapping_grpc.MappingServiceStub(mapping_channel)
                shipped = await tables.GetMappingTable(
                    mapping_pb.GetMappingTableRequest(name=TABLE)
                )
                table = mapping_pb.MappingTable()
                table.CopyFrom(shipped.table)
                del table.rules[:]
                table.rules.extend(r for r in shipped.table.rules if r.crm_field in MAPPED)
                await tables.UpdateMappingTable(mapping_pb.UpdateMappingTableRequest(table=table))
                crm_peer.calls.clear()  # the sides' calls only
                yield Peers(
                    mail_peer,
                    crm_peer,
                    linker,
                    GrpcMailSide(mail_channel, 5),
                    GrpcCrmSide(crm_channel, 5),
                    GrpcLinker(linker_channel, 5),
                    GrpcMapping(mapping_channel, 5),
                )
    finally:
        await engine.dispose()


def _upsert(item: res.MailItem) -> res.MailChange:
    return res.MailChange(type=res.CHANGE_TYPE_UPSERT, ref=item.ref, item=item)


async def test_mail_listing_maps_shared_items_without_the_linkers_hints(peers: Peers) -> None:
    shared = meeting("e1", "Review", link_id="L1")
    peers.mail.change_pages.append(
        mail.ListChangesResponse(
            changes=[
                _upsert(shared),
                _upsert(meeting("e2", "Lunch", category="")),
                # A series without the zone it recurs in: the mapping cannot place it.
                _upsert(meeting("e3", "Daily", recurrence=DAILY)),
                res.MailChange(
                    type=res.CHANGE_TYPE_UPSERT,
                    ref=res.ItemRef(kind=EVENT, native_id="e4", version="ck4"),
                    problem=res.ItemProblem(reason="MALFORMED_MIME", message="bad MIME"),
                ),
                res.MailChange(
                    type=res.CHANGE_TYPE_DELETE, ref=res.ItemRef(kind=EVENT, native_id="e5")
                ),
            ],
            next_cursor=res.Cursor(token="c2"),
        )
    )
    page = await peers.mail_side().list_changes(EVENT, "c1")
    by_id = {c.native_id: c for c in page.changes}
    # Unshared (no category) and deleted both read as removals on an incremental listing.
    assert by_id["e2"].snapshot is None
    assert by_id["e5"].snapshot is None
    snapshot = by_id["e1"].snapshot
    assert snapshot is not None
    assert dict(snapshot.fields) == {
        "Subject": "Review",
        "Location": "Room 1",
        "StartDateTime": "2030-03-04T09:00:00Z",
        "OwnerId": OWNER,
    }
    assert (snapshot.version, snapshot.link_id, snapshot.server_time) == ("ck-e1", "L1", START)
    assert snapshot.start == START
    assert snapshot.participants == (
        ("ann@acme.example", "", res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE),
    )
    assert "uid:uid-e1" in snapshot.match_keys
    assert sorted((f.native_id, f.reason, f.side) for f in page.failures) == [
        ("e3", "UNKNOWN_TIME_ZONE", Side.MAIL),
        ("e4", "MALFORMED_MIME", Side.MAIL),
    ]
    assert page.next_cursor == "c2"


async def test_mail_listings_ask_for_pages_as_big_as_a_provider_lists(peers: Peers) -> None:
    await peers.mail_side().list_changes(EVENT, "")
    (request,) = peers.mail.received("ListChanges")
    assert request.page_size == 500


async def test_a_full_mail_listing_leaves_unshared_items_out(peers: Peers) -> None:
    peers.mail.change_pages.append(
        mail.ListChangesResponse(changes=[_upsert(meeting("e2", "Lunch", category=""))])
    )
    page = await peers.mail_side().list_changes(EVENT, "")
    assert page.changes == []


async def test_crm_records_normalised_by_the_round_trip_hash_like_their_mail_item(
    peers: Peers,
) -> None:
    item = meeting("e1", "Review", link_id="L1")
    peers.mail.change_pages.append(mail.ListChangesResponse(changes=[_upsert(item)]))
    mail_page = await peers.mail_side().list_changes(EVENT, "")
    # Salesforce's own datetime format, and fields the table does not map (WhoId).
    listed = record(
        "00U1",
        Subject="Review",
        Location="Room 1",
        StartDateTime="2030-03-04T09:00:00.000+0000",
        WhoId="003AAA",
        Concord_Link_Id__c="L1",
    )
    peers.crm.change_pages.append(
        crm.ListChangesResponse(
            changes=[
                res.CrmChange(type=res.CHANGE_TYPE_UPSERT, record=listed),
                res.CrmChange(
                    type=res.CHANGE_TYPE_UPSERT,
                    record=record("00U2", Subject="Series", Recurrence2PatternText="garbage"),
                ),
                res.CrmChange(
                    type=res.CHANGE_TYPE_DELETE, record=res.CrmRecord(id="00U3", is_deleted=True)
                ),
            ],
            next_cursor=res.Cursor(token="t"),
        )
    )
    crm_page = await peers.crm_side().list_changes(EVENT, "")
    (mail_change,) = mail_page.changes
    by_id = {c.native_id: c for c in crm_page.changes}
    crm_snapshot = by_id["00U1"].snapshot
    assert crm_snapshot is not None
    assert mail_change.snapshot is not None
    assert crm_snapshot.hash == mail_change.snapshot.hash
    assert crm_snapshot.version == "2030-03-04T09:00:00Z"
    assert crm_snapshot.link_id == "L1"
    assert by_id["00U3"].snapshot is None
    assert [(f.native_id, f.reason, f.side) for f in crm_page.failures] == [
        ("00U2", "MALFORMED_RECURRENCE", Side.CRM)
    ]


async def test_crm_creates_are_upserts_by_link_id_linked_once_per_set_of_people(
    peers: Peers,
) -> None:
    people = (
        ("ann@acme.example", "Ann", res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE),
        ("carl@acme.example", "Carl", res.PARTICIPANT_ROLE_OPTIONAL_ATTENDEE),
    )
    fields = {"Subject": "Review", "OwnerId": OWNER}
    writes = [
        Write(Side.CRM, WriteOp.CREATE, "L1", fields=fields, participants=people),
        Write(Side.CRM, WriteOp.CREATE, "L2", fields=fields, participants=people),
        Write(Side.CRM, WriteOp.CREATE, "L3", fields=fields),
    ]
    results = await peers.crm_side().apply(EVENT, writes)
    assert [r.ok for r in results] == [True, True, True]
    assert [r.request_id for r in peers.linker.received("ResolveParticipants")] == ["L1"]
    (events,) = peers.crm_batches()
    assert [w.operation for w in events] == [crm.CRM_WRITE_OPERATION_UPSERT] * 3
    assert [w.link_id for w in events] == ["L1", "L2", "L3"]
    # Only what Concord maps goes as fields: who and what the activity concerns, and the
    # other attendees, go as activity links for crm-connector to write as Salesforce keeps them.
    sent = [json_format.MessageToDict(w.fields) for w in events]
    assert sent == [{"Subject": "Review", "OwnerId": OWNER}] * 3
    linked = crm.ActivityLinks(who_id="003AAA", what_id="006BBB", invitee_ids=["00QCCC"])
    assert [w.activity_links for w in events[:2]] == [linked, linked]
    assert not events[2].HasField("activity_links")


async def test_crm_updates_deletes_and_marks(peers: Peers) -> None:
    for record_id in ("00U1", "00U2", "00U7", "00U8", "00U9"):
        peers.crm.add(record(record_id, Subject="Old"))
    peers.crm.refuse(
        crm.CrmError(code="ENTITY_CHANGED"), key="00U7", status=res.WRITE_STATUS_CONFLICT
    )
    peers.crm.refuse(crm.CrmError(code="FIELD_CUSTOM_VALIDATION_EXCEPTION"), key="00U8")
    writes = [
        Write(
            Side.CRM,
            WriteOp.UPDATE,
            "L1",
            "00U1",
            "2030-03-04T09:00:00Z",
            {"Location": None, "Subject": "New"},
        ),
        Write(Side.CRM, WriteOp.DELETE, "L2", "00U2"),
        Write(Side.CRM, WriteOp.MARK, "L9", "00U9", fields={"cancelled": True}),
        Write(Side.CRM, WriteOp.UPDATE, "L7", "00U7", fields={"Subject": "x"}),
        Write(Side.CRM, WriteOp.UPDATE, "L8", "00U8", fields={"Subject": "x"}),
    ]
    results = await peers.crm_side().apply(EVENT, writes)
    update, delete, mark, _, _ = peers.crm_batches()[0]
    assert json_format.MessageToDict(update.fields) == {"Subject": "New"}
    assert list(update.fields_to_null) == ["Location"]
    assert update.expected_system_modstamp.ToJsonString() == "2030-03-04T09:00:00Z"
    assert (delete.operation, delete.id) == (crm.CRM_WRITE_OPERATION_DELETE, "00U2")
    assert (mark.operation, mark.id) == (crm.CRM_WRITE_OPERATION_MARK_CANCELLED, "00U9")
    assert not mark.fields
    assert [r.ok for r in results] == [True, True, True, False, False]
    assert (results[3].retryable, results[3].reason) == (True, "VERSION_MISMATCH")
    assert (results[4].retryable, results[4].reason) == (False, "FIELD_CUSTOM_VALIDATION_EXCEPTION")


async def test_mail_writes_convert_share_and_update_only_the_changed_paths(peers: Peers) -> None:
    peers.mail.add(meeting("e2", "Review", link_id="L2"))
    peers.mail.add(meeting("e7", "Old", link_id="L7", location="Room 1"))
    peers.mail.add(meeting("e8", "Gone", link_id="L8"))
    full = {"Subject": "Review", "Location": " Room 2 ", "StartDateTime": "2030-03-04T09:00:00Z"}
    writes = [
        Write(Side.MAIL, WriteOp.CREATE, "L1", fields=full),
        Write(Side.MAIL, WriteOp.UPDATE, "L2", "e2", "ck-e2", {"Location": " Room 2 "}, full=full),
        Write(Side.MAIL, WriteOp.UNSHARE, "L7", "e7"),
        Write(Side.MAIL, WriteOp.DELETE, "L8", "e8"),
    ]
    results = await peers.mail_side().apply(EVENT, writes)
    (sent,) = peers.mail_batches()
    create, update, unshare, delete = sent
    assert create.operation == mail.MAIL_WRITE_OPERATION_CREATE
    assert list(create.item.calendar_item.categories) == ["Salesforce"]
    assert create.item.calendar_item.subject == "Review"
    # An update writes the whole converted item but only the paths whose fields changed.
    assert list(update.update_mask.paths) == ["location"]
    assert (update.ref.native_id, update.ref.version) == ("e2", "ck-e2")
    assert update.item.calendar_item.subject == "Review"
    assert list(unshare.update_mask.paths) == ["categories"]
    assert list(unshare.item.calendar_item.categories) == []
    assert list(peers.mail.items["e7"].calendar_item.categories) == []
    assert delete.operation == mail.MAIL_WRITE_OPERATION_DELETE
    assert "e8" not in peers.mail.items
    assert all(r.ok for r in results)
    # The link keeps the version each write answered (the next listing knows the item by it
    # as Concord's own) and, with no hash of the mailbox's own form, the fields written: the
    # items are not read back (only the unshare reads its item's categories first).
    created = peers.mail.items["n-L1"]
    assert (results[0].hash, results[0].version) == ("", created.ref.version)
    assert (results[1].hash, results[1].version) == ("", peers.mail.items["e2"].ref.version)
    read = [ref.native_id for r in peers.mail.received("GetItems") for ref in r.refs]
    assert read == ["e7"]


async def test_a_relink_stores_the_link_id_alone_or_with_the_merges_paths(peers: Peers) -> None:
    peers.mail.add(meeting("e3", "Copy", link_id="L-other"))
    peers.mail.add(meeting("e4", "Copy too", link_id="L-other"))
    full = {"Subject": "Copy too", "Location": "Room 4", "StartDateTime": "2030-03-04T09:00:00Z"}
    writes = [
        Write(Side.MAIL, WriteOp.UPDATE, "L3", "e3", "ck-e3", relink=True),
        Write(Side.MAIL, WriteOp.UPDATE, "L4", "e4", "", {"Location": "Room 4"}, full, relink=True),
    ]
    results = await peers.mail_side().apply(EVENT, writes)
    (sent,) = peers.mail_batches()
    alone, merged = sent
    assert (list(alone.update_mask.paths), alone.link_id) == (["link_id"], "L3")
    assert (alone.ref.native_id, alone.ref.version) == ("e3", "ck-e3")
    assert alone.item.WhichOneof("payload") == "calendar_item"
    assert alone.item.calendar_item == res.CalendarItem()  # no field to write but the id
    assert (list(merged.update_mask.paths), merged.link_id) == (["location", "link_id"], "L4")
    assert all(r.ok for r in results)

    # A provider that does not take the path: answered as done, nothing sent.
    side = replace(peers.mail_side(), relinks=False)
    (done,) = await side.apply(EVENT, writes[:1])
    assert (done.ok, done.native_id) == (True, "e3")
    assert len(peers.mail_batches()) == 1


class InFlight:
    """A mail client that counts its ApplyItems calls in flight at once. A call waits (up to
    2 s) until `expected` are in flight, so how many the side lets go at once is what it
    counts, not how fast the machine maps each call's items."""

    def __init__(self, inner: Any, expected: int) -> None:
        self._inner = inner
        self.now = self.most = 0
        self._expected = expected
        self._reached = asyncio.Event()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def apply_items(self, mailbox: str, writes: Any) -> Any:
        self.now += 1
        self.most = max(self.most, self.now)
        if self.now >= self._expected:
            self._reached.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reached.wait(), 2)
            return await self._inner.apply_items(mailbox, writes)
        finally:
            self.now -= 1


async def test_mail_writes_go_in_calls_of_100_four_at_once_and_report_refusals(
    peers: Peers,
) -> None:
    peers.mail.refuse("L0", res.WRITE_STATUS_INVALID, "ErrorSomething")
    peers.mail.refuse("L1", res.WRITE_STATUS_CONFLICT, "ErrorIrresolvableConflict")
    writes = [
        Write(Side.MAIL, WriteOp.CREATE, f"L{n}", fields={"Subject": f"s{n}"}) for n in range(450)
    ]
    side = peers.mail_side()
    counted = InFlight(side.client, expected=4)
    side.client = counted
    results = await side.apply(EVENT, writes)
    assert sorted(len(call) for call in peers.mail_batches()) == [50, 100, 100, 100, 100]
    # Each call is read back as soon as it is answered, while the others are being written.
    assert counted.most == 4
    assert [r.link_id for r in results] == [f"L{n}" for n in range(450)]
    assert (results[0].ok, results[0].retryable, results[0].reason) == (
        False,
        False,
        "ErrorSomething",
    )
    assert (results[1].ok, results[1].retryable, results[1].reason) == (
        False,
        True,
        "VERSION_MISMATCH",
    )
    assert all(r.ok for r in results[2:])


async def test_a_create_proved_new_asks_the_mailbox_for_no_link_id_search(peers: Peers) -> None:
    fields = {"Subject": "s", "StartDateTime": "2030-03-04T09:00:00Z"}
    writes = [
        Write(Side.MAIL, WriteOp.CREATE, "L1", fields=fields, known_new=True),
        Write(Side.MAIL, WriteOp.CREATE, "L2", fields=fields),
    ]
    await peers.mail_side().apply(EVENT, writes)
    (sent,) = peers.mail_batches()
    assert [(w.link_id, w.known_new) for w in sent] == [("L1", True), ("L2", False)]


async def test_items_are_found_by_link_id_on_both_sides(peers: Peers) -> None:
    peers.mail.add(meeting("e1", "Review", link_id="L1"))
    found = await peers.mail_side().find(EVENT, ["L1", "L2"])
    assert list(found) == ["L1"]
    assert [native for native, _ in found["L1"]] == ["e1"]
    (lookup,) = peers.mail.received("GetItems")
    assert (list(lookup.link_ids), lookup.kind) == (["L1", "L2"], EVENT)

    peers.crm.add(
        record(
            "00U1",
            Subject="Review",
            StartDateTime="2030-03-04T09:00:00.000+0000",
            Concord_Link_Id__c="L1",
        )
    )
    on_crm = await peers.crm_side().find(EVENT, ["L1"])
    assert [native for native, _ in on_crm["L1"]] == ["00U1"]
    (query,) = peers.crm.received("QueryRecords")
    assert [f.field for f in query.filters] == ["Concord_Link_Id__c"]
    # Every field a listing returns, compound ones aside.
    described = peers.crm.describes["Event"].fields
    assert list(query.fields) == [f.name for f in described if f.name != COMPOUND.name]


async def test_an_item_that_cannot_be_read_still_exists_and_an_unshared_one_does_not(
    peers: Peers,
) -> None:
    peers.mail.add(meeting("e1", "Review"))
    peers.mail.add(meeting("e4", "Lunch", category=""))
    peers.mail.make_unreadable("e2")
    found = await peers.mail_side().fetch(EVENT, ["e1", "e2", "e3", "e4"])
    assert sorted(found) == ["e1", "e2"]


async def test_a_failed_call_among_those_in_flight_fails_the_batch_as_a_peer_error(
    peers: Peers,
) -> None:
    """The executor reads a PeerError as a lost answer (the intents stay journalled); one
    call of several failing must reach it as that, not wrapped."""
    peers.mail.fail_next("ApplyItems", Unavailable("the mailbox server is gone"))
    writes = [
        Write(Side.MAIL, WriteOp.CREATE, f"L{n}", fields={"Subject": f"s{n}"}) for n in range(100)
    ]
    with pytest.raises(PeerError) as caught:
        await peers.mail_side().apply(EVENT, writes)
    assert caught.value.retryable


class CountingMapping:
    """The mapping client, counting what the sides ask of it."""

    def __init__(self, inner: GrpcMapping) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await method(*args, **kwargs)

        return call


async def test_items_listed_at_the_version_their_link_holds_are_echoes_never_mapped(
    peers: Peers,
) -> None:
    counting = CountingMapping(peers.mapping)
    mapping = SessionMapping(counting, "orgs/acme", OWNER)
    mail_side = MailSyncSide(peers.mail_client, mapping, "mailboxes/demo", {EVENT: "Salesforce"})
    crm_side = CrmSyncSide(peers.crm_client, mapping, peers.linker_client, "orgs/acme", OWNER)
    stamp = "2030-03-04T09:00:00Z"  # `record`'s SystemModstamp
    peers.mail.change_pages.append(
        mail.ListChangesResponse(
            changes=[_upsert(meeting("e1", "Review")), _upsert(meeting("e2", "Lunch"))]
        )
    )
    peers.crm.change_pages.append(
        crm.ListChangesResponse(
            changes=[
                res.CrmChange(
                    type=res.CHANGE_TYPE_UPSERT, record=record("00U1", Subject="A", by_concord=True)
                ),
                res.CrmChange(
                    type=res.CHANGE_TYPE_UPSERT,
                    record=record(
                        "00U2",
                        Subject="B",
                        StartDateTime="2030-03-04T09:00:00.000+0000",
                        by_concord=True,
                    ),
                ),
                # At the stamp of Concord's write, but someone else's edit in that second.
                res.CrmChange(
                    type=res.CHANGE_TYPE_UPSERT,
                    record=record(
                        "00U3", Subject="C", StartDateTime="2030-03-04T09:00:00.000+0000"
                    ),
                ),
            ]
        )
    )
    # e1 and 00U1 are as Concord wrote them; e2 and 00U2 were edited since, 00U3 in the
    # second Concord wrote it (same SystemModstamp, another LastModifiedById).
    mail_page = await mail_side.list_changes(EVENT, "c1", {"e1": "ck-e1", "e2": "ck-before"})
    crm_page = await crm_side.list_changes(
        EVENT, "t1", {"00U1": stamp, "00U2": "2030-01-01T00:00:00Z", "00U3": stamp}
    )
    assert (list(mail_page.echoes), [c.native_id for c in mail_page.changes]) == (["e1"], ["e2"])
    assert (list(crm_page.echoes), [c.native_id for c in crm_page.changes]) == (
        ["00U1"],
        ["00U2", "00U3"],
    )

    # A page of echoes only costs its listing: no mapping call at all.
    peers.mail.change_pages.append(mail.ListChangesResponse(changes=[_upsert(meeting("e1", "R"))]))
    peers.crm.change_pages.append(
        crm.ListChangesResponse(
            changes=[
                res.CrmChange(
                    type=res.CHANGE_TYPE_UPSERT, record=record("00U1", Subject="A", by_concord=True)
                )
            ]
        )
    )
    counting.calls.clear()
    mail_page = await mail_side.list_changes(EVENT, "c2", {"e1": "ck-e1"})
    crm_page = await crm_side.list_changes(EVENT, "t2", {"00U1": stamp})
    assert (list(mail_page.echoes), list(crm_page.echoes)) == (["e1"], ["00U1"])
    assert (mail_page.changes, crm_page.changes) == ([], [])
    assert counting.calls == []


async def test_after_a_write_a_delta_names_the_versions_written(peers: Peers) -> None:
    """Issue #18: once the session wrote items of a kind, most of a delta is those writes
    coming back. The connector is told the versions the writes answered and answers those
    items by reference, unread; anything else comes in full, in the same call."""
    side = peers.mail_side()
    # Before any write, a delta names no version.
    peers.mail.change_pages.append(mail.ListChangesResponse(changes=[_upsert(meeting("e0", "A"))]))
    await side.list_changes(EVENT, "c0", {"e0": "ck-old"})
    assert [list(r.known) for r in peers.mail.received("ListChanges")] == [[]]

    fields = {"Subject": "Review", "StartDateTime": "2030-03-04T09:00:00Z"}
    (created,) = await side.apply(EVENT, [Write(Side.MAIL, WriteOp.CREATE, "L1", fields=fields)])
    native, version = created.native_id, created.version
    echoed = meeting(native, "Review")
    echoed.ref.version = version
    edited = meeting("e2", "Review (moved)")
    edited.ref.version = "ck-user"
    peers.mail.change_pages.append(
        mail.ListChangesResponse(
            changes=[
                _upsert(echoed),
                _upsert(edited),
                res.MailChange(type=res.CHANGE_TYPE_DELETE, ref=res.ItemRef(native_id="e9")),
            ],
            next_cursor=res.Cursor(token="c2"),
        )
    )
    listed = len(peers.mail.received("ListChanges"))
    page = await side.list_changes(EVENT, "c1", {native: version, "e2": "ck-e2"})
    (asked,) = peers.mail.received("ListChanges")[listed:]
    assert [(r.native_id, r.version) for r in asked.known] == [(native, version)]
    assert asked.include_items
    assert list(page.echoes) == [native]
    assert [c.native_id for c in page.changes] == ["e9", "e2"]
    moved = page.changes[1].snapshot
    assert moved is not None
    assert moved.fields["Subject"] == "Review (moved)"
    assert page.next_cursor == "c2"
    # Seen back, the write is no longer named; a full listing (no cursor) names none.
    peers.mail.change_pages.append(mail.ListChangesResponse(next_cursor=res.Cursor(token="c3")))
    await side.list_changes(EVENT, "c2", {native: version})
    assert list(peers.mail.received("ListChanges")[-1].known) == []


async def test_a_reference_at_a_version_no_link_holds_is_read_like_any_change(
    peers: Peers,
) -> None:
    """The connector answers by reference an item at a version this session wrote; if no link
    holds that version (the write's link was not committed), the item is read and planned."""
    side = peers.mail_side()
    fields = {"Subject": "Review", "StartDateTime": "2030-03-04T09:00:00Z"}
    (created,) = await side.apply(EVENT, [Write(Side.MAIL, WriteOp.CREATE, "L1", fields=fields)])
    stored = peers.mail.items[created.native_id]
    peers.mail.change_pages.append(
        mail.ListChangesResponse(changes=[_upsert(stored)], next_cursor=res.Cursor(token="c2"))
    )
    page = await side.list_changes(EVENT, "c1", {})
    assert list(page.echoes) == []
    (change,) = page.changes
    assert change.native_id == created.native_id
    assert change.snapshot is not None
    assert [ref.native_id for r in peers.mail.received("GetItems") for ref in r.refs] == [
        created.native_id
    ]


async def _listings_asked(peer: MailPeer, count: int) -> None:
    async with asyncio.timeout(5):
        while True:
            if len(peer.received("ListChanges")) >= count:
                return
            await asyncio.sleep(0.01)


class GatedMapping:
    """The mapping client, answering only once the mail peer was asked for `pages` pages."""

    def __init__(self, inner: GrpcMapping, mail_peer: MailPeer, pages: int) -> None:
        self._inner, self._peer, self._pages = inner, mail_peer, pages

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await _listings_asked(self._peer, self._pages)
            return await method(*args, **kwargs)

        return call


async def test_a_listings_next_page_is_read_while_the_current_one_is_mapped(
    peers: Peers,
) -> None:
    """Issue #18: reading page n+1 overlaps mapping page n (another service each)."""
    mapping = SessionMapping(GatedMapping(peers.mapping, peers.mail, 2), "orgs/acme", OWNER)
    side = MailSyncSide(peers.mail_client, mapping, "mailboxes/demo", {EVENT: "Salesforce"})
    peers.mail.change_pages.extend(
        [
            mail.ListChangesResponse(
                changes=[_upsert(meeting("e1", "Review"))],
                next_cursor=res.Cursor(token="c1"),
                has_more=True,
            ),
            mail.ListChangesResponse(
                changes=[_upsert(meeting("e2", "Lunch"))], next_cursor=res.Cursor(token="c2")
            ),
        ]
    )
    first = await side.list_changes(EVENT, "")
    assert [c.native_id for c in first.changes] == ["e1"]
    second = await side.list_changes(EVENT, first.next_cursor)
    assert [c.native_id for c in second.changes] == ["e2"]
    assert [r.cursor.token for r in peers.mail.received("ListChanges")] == ["", "c1"]

    # A listing that starts over drops the page read ahead and asks again.
    peers.mail.change_pages.extend(
        [
            mail.ListChangesResponse(next_cursor=res.Cursor(token="d1"), has_more=True),
            mail.ListChangesResponse(next_cursor=res.Cursor(token="d2")),
            mail.ListChangesResponse(next_cursor=res.Cursor(token="d3")),
        ]
    )
    await side.list_changes(EVENT, "c2")
    await _listings_asked(peers.mail, 4)  # d1, read ahead
    again = await side.list_changes(EVENT, "c2")
    assert again.next_cursor == "d3"
    assert [r.cursor.token for r in peers.mail.received("ListChanges")][2:] == ["c2", "d1", "c2"]


async def test_a_delta_names_the_oldest_writes_not_listed_back_yet(
    peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync writes more items than one listing may name: a delta lists changes oldest
    first, so the versions named are the oldest writes still to come back."""
    monkeypatch.setattr(mail_side_module, "FRESH_WRITES", 2)
    side = peers.mail_side()
    fields = {"Subject": "Review", "StartDateTime": "2030-03-04T09:00:00Z"}
    written = await side.apply(
        EVENT, [Write(Side.MAIL, WriteOp.CREATE, f"L{n}", fields=fields) for n in range(3)]
    )
    refs = [(w.native_id, w.version) for w in written]
    peers.mail.change_pages.append(
        mail.ListChangesResponse(
            changes=[
                res.MailChange(type=res.CHANGE_TYPE_UPSERT, ref=res.ItemRef(native_id=n, version=v))
                for n, v in refs[:2]
            ],
            next_cursor=res.Cursor(token="c2"),
        )
    )
    page = await side.list_changes(EVENT, "c1", dict(refs))
    assert sorted(page.echoes) == sorted(n for n, _ in refs[:2])
    peers.mail.change_pages.append(mail.ListChangesResponse(next_cursor=res.Cursor(token="c3")))
    await side.list_changes(EVENT, "c2", dict(refs))
    named = [
        [(r.native_id, r.version) for r in asked.known]
        for asked in peers.mail.received("ListChanges")
    ]
    assert named == [refs[:2], refs[2:]]


def _crm_side_asking(peers: Peers, mapping: CountingMapping) -> CrmSyncSide:
    """A session's Salesforce side whose mapping calls are counted."""
    return CrmSyncSide(
        peers.crm_client,
        SessionMapping(mapping, "orgs/acme", OWNER),
        peers.linker_client,
        "orgs/acme",
        OWNER,
    )


async def test_a_long_crm_listing_selects_only_what_the_table_reads(peers: Peers) -> None:
    """A first sync's pages (and a bulk load's) carry the fields the table reads, not the
    whole describe; a listing's first page after a cursor names none, so a quiet session
    asks the mapping for nothing (issue #18)."""
    counting = CountingMapping(peers.mapping)
    first = _crm_side_asking(peers, counting)
    peers.crm.change_pages.extend(
        [
            crm.ListChangesResponse(next_cursor=res.Cursor(token="a"), has_more=True),
            crm.ListChangesResponse(next_cursor=res.Cursor(token="b")),
        ]
    )
    assert (await first.list_changes(EVENT, "")).has_more
    assert not (await first.list_changes(EVENT, "a")).has_more
    assert counting.calls == ["get_mapping_table"]
    counting.calls.clear()
    later = _crm_side_asking(peers, counting)
    peers.crm.change_pages.append(crm.ListChangesResponse(next_cursor=res.Cursor(token="b")))
    await later.list_changes(EVENT, "b")
    assert counting.calls == []
    asked = [list(r.fields) for r in peers.crm.received("ListChanges")]
    # The test's table maps Subject, Location, StartDateTime and the recurrence: the start's
    # transform reads IsAllDayEvent beside it, the recurrence's its zone and legacy fields.
    named = asked[0]
    assert {"Subject", "Location", "StartDateTime", "IsAllDayEvent", "RecurrenceType"} <= set(named)
    assert "Concord_Link_Id__c" in named
    assert "WhoId" not in named
    assert not any(name.startswith("concord.") for name in named)
    assert asked == [named, named, []]


async def test_a_long_listing_of_concords_own_writes_goes_on_thin(peers: Peers) -> None:
    """Past a page nearly all echoes (the walk past a first sync's writes), the next pages
    carry each record's id, stamp and last modifier only, and the few that are not echoes are
    read in full by id: the listing says the same, at a fraction of its bytes (issue #18)."""
    side = _crm_side_asking(peers, CountingMapping(peers.mapping))
    stamp = "2030-03-04T09:00:00Z"  # `record`'s SystemModstamp
    known = {f"00U{n}": stamp for n in range(10)}

    def upsert(found: res.CrmRecord) -> res.CrmChange:
        return res.CrmChange(type=res.CHANGE_TYPE_UPSERT, record=found)

    def thin(record_id: str, *, by_concord: bool = True) -> res.CrmChange:
        return upsert(record(record_id, by_concord=by_concord))

    edited = record("00U9", Subject="Edited by Ann", StartDateTime="2030-03-04T09:00:00.000+0000")
    peers.crm.records[edited.id] = edited  # what a read by id finds; 00U8 is deleted by then
    peers.crm.change_pages.extend(
        [
            crm.ListChangesResponse(
                changes=[
                    upsert(record(f"00U{n}", Subject="A", by_concord=True)) for n in range(10)
                ],
                next_cursor=res.Cursor(token="p1"),
                has_more=True,
            ),
            crm.ListChangesResponse(
                changes=[
                    *(thin(f"00U{n}") for n in range(8)),
                    thin("00U8", by_concord=False),
                    thin("00U9", by_concord=False),
                ],
                next_cursor=res.Cursor(token="p2"),
                has_more=True,
            ),
            crm.ListChangesResponse(
                changes=[thin("00U1"), thin("00U9", by_concord=False)],
                next_cursor=res.Cursor(token="p3"),
            ),
        ]
    )
    first = await side.list_changes(EVENT, "p0", known)
    second = await side.list_changes(EVENT, "p1", known)
    third = await side.list_changes(EVENT, "p2", known)

    assert len(first.echoes) == 10
    assert len(second.echoes) == 8
    [changed] = second.changes  # 00U8, deleted before it was read, is the next listing's
    assert changed.native_id == "00U9"
    assert changed.snapshot is not None
    assert changed.snapshot.fields["Subject"] == "Edited by Ann"
    assert changed.snapshot.version == stamp
    assert [list(r.ids) for r in peers.crm.received("GetRecords")] == [["00U8", "00U9"]]
    # The second page had 2 records in 10 that were not echoes: the third is listed in full.
    assert list(third.echoes) == ["00U1"]
    asked = [list(r.fields) for r in peers.crm.received("ListChanges")]
    # The first page after a cursor names no field (every field); past it, the table's.
    assert asked[0] == []
    assert asked[1] == ["LastModifiedById"]
    assert {"Subject", "Concord_Link_Id__c"} <= set(asked[2])


async def test_a_listing_without_known_versions_is_never_thin(peers: Peers) -> None:
    side = _crm_side_asking(peers, CountingMapping(peers.mapping))
    peers.crm.change_pages.extend(
        [
            crm.ListChangesResponse(next_cursor=res.Cursor(token="p1"), has_more=True),
            crm.ListChangesResponse(next_cursor=res.Cursor(token="p2")),
        ]
    )
    await side.list_changes(EVENT, "p0")
    await side.list_changes(EVENT, "p1")
    asked = [list(r.fields) for r in peers.crm.received("ListChanges")]
    assert "LastModifiedById" not in [f for fields in asked for f in fields]
