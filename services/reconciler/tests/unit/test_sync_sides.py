"""The sync sides over the peers' clients, with the clients faked in memory (no sockets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord_reconciler.mirror.adapters.crm_side import CrmSyncSide
from concord_reconciler.mirror.adapters.mail_side import MailSyncSide
from concord_reconciler.mirror.adapters.sync_sides import SessionMapping
from concord_reconciler.mirror.domain.ports import CrmPage, MailPage
from concord_reconciler.mirror.domain.sync import Side, Write, WriteOp, content_hash

pytestmark = pytest.mark.unit

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


def record(record_id: str, **fields: Any) -> res.CrmRecord:
    values = struct_pb2.Struct()
    values.update(fields)
    return res.CrmRecord(
        sobject_type="Event",
        id=record_id,
        fields=values,
        system_modstamp=_ts(START),
        link_id=str(fields.get("Concord_Link_Id__c", "")),
    )


class FakeMapping:
    """A small table: Subject, Location and StartDateTime both ways, attendees to CRM only.

    Like the real service it writes instants in its own format, whatever Salesforce said."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def map_to_crm(
        self, org: str, items: Sequence[res.MailItem], owner_id: str
    ) -> Sequence[mapping_pb.MappedRecord]:
        self.calls.append("MapToCrm")
        out = []
        for item in items:
            event = item.calendar_item
            if event.subject == "BAD":
                out.append(
                    mapping_pb.MappedRecord(
                        ref=item.ref,
                        error=mapping_pb.MappingError(reason="UNKNOWN_TIME_ZONE", message="zone"),
                    )
                )
                continue
            values = struct_pb2.Struct()
            values.update(
                {
                    "Subject": event.subject,
                    "Location": event.location or None,
                    "StartDateTime": event.start.ToJsonString(),
                    "OwnerId": owner_id,
                    "concord.EventRelations": [{"Email": a.email} for a in event.attendees],
                }
            )
            out.append(
                mapping_pb.MappedRecord(
                    ref=item.ref,
                    record=res.CrmRecord(
                        sobject_type="Event", fields=values, link_id=item.ref.link_id
                    ),
                )
            )
        return out

    async def map_to_mail(
        self, org: str, records: Sequence[res.CrmRecord]
    ) -> Sequence[mapping_pb.MappedItem]:
        self.calls.append("MapToMail")
        out = []
        for rec in records:
            values = json_format.MessageToDict(rec.fields)
            if values.get("Subject") == "UNREADABLE":
                out.append(
                    mapping_pb.MappedItem(
                        record_id=rec.id,
                        error=mapping_pb.MappingError(reason="MALFORMED_RECURRENCE"),
                    )
                )
                continue
            event = res.CalendarItem(
                subject=values.get("Subject", ""), location=values.get("Location", "")
            )
            if values.get("StartDateTime"):
                stamp = datetime.fromisoformat(values["StartDateTime"].replace("+0000", "+00:00"))
                event.start.CopyFrom(_ts(stamp))
            item = res.MailItem(
                ref=res.ItemRef(kind=EVENT, link_id=rec.link_id), calendar_item=event
            )
            out.append(mapping_pb.MappedItem(record_id=rec.id, item=item))
        return out

    async def get_mapping_table(self, name: str) -> mapping_pb.MappingTable:
        self.calls.append("GetMappingTable")
        return mapping_pb.MappingTable(
            target_sobject="Event",
            rules=[
                mapping_pb.FieldRule(mail_field="calendar_item.subject", crm_field="Subject"),
                mapping_pb.FieldRule(mail_field="calendar_item.location", crm_field="Location"),
                mapping_pb.FieldRule(mail_field="calendar_item.start", crm_field="StartDateTime"),
                mapping_pb.FieldRule(
                    mail_field="calendar_item.attendees",
                    crm_field="concord.EventRelations",
                    direction=res.SYNC_DIRECTION_MAIL_TO_CRM,
                ),
            ],
        )


@dataclass
class FakeMail:
    pages: list[MailPage] = field(default_factory=list)
    items: dict[str, res.MailItem] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)
    applied: list[list[mail.MailWrite]] = field(default_factory=list)
    lookups: list[mail.GetItemsRequest] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    async def list_changes(self, mailbox: str, kind: int, cursor: res.Cursor) -> MailPage:
        return self.pages.pop(0)

    async def get_items(
        self,
        mailbox: str,
        refs: Sequence[res.ItemRef] = (),
        link_ids: Sequence[str] = (),
        kind: int = res.OBJECT_KIND_UNSPECIFIED,
    ) -> mail.GetItemsResponse:
        self.lookups.append(mail.GetItemsRequest(refs=refs, link_ids=link_ids, kind=kind))  # type: ignore[arg-type]
        response = mail.GetItemsResponse()
        for ref in refs:
            if ref.native_id in self.unreadable:
                response.failures.add(ref=ref, problem=res.ItemProblem(reason="MALFORMED_MIME"))
            elif ref.native_id in self.items:
                response.items.append(self.items[ref.native_id])
            else:
                response.not_found.append(ref)
        wanted = set(link_ids)
        response.items.extend(
            i for i in self.items.values() if i.ref.link_id and i.ref.link_id in wanted
        )
        return response

    async def apply_items(
        self, mailbox: str, writes: Sequence[mail.MailWrite]
    ) -> list[mail.MailWriteResult]:
        self.applied.append(list(writes))
        results = []
        for write in writes:
            status = self.statuses.get(write.link_id, res.WRITE_STATUS_OK)
            native = write.ref.native_id or f"n-{write.link_id}"
            if (
                status == res.WRITE_STATUS_OK
                and write.operation != mail.MAIL_WRITE_OPERATION_DELETE
            ):
                stored = res.MailItem()
                stored.CopyFrom(write.item)
                stored.ref.CopyFrom(
                    res.ItemRef(kind=EVENT, native_id=native, version="v2", link_id=write.link_id)
                )
                # The mailbox keeps its own form of some values: it trims the location.
                stored.calendar_item.location = stored.calendar_item.location.strip()
                masked = write.operation == mail.MAIL_WRITE_OPERATION_UPDATE
                if masked and "categories" not in write.update_mask.paths:
                    # A field left out of the mask keeps what the item held (shared items).
                    before = self.items.get(native)
                    kept = before.calendar_item.categories if before else ["Salesforce"]
                    stored.calendar_item.categories[:] = list(kept)
                self.items[native] = stored
            results.append(
                mail.MailWriteResult(
                    link_id=write.link_id,
                    status=status,  # type: ignore[arg-type]
                    ref=res.ItemRef(native_id=native, version="v2"),
                    error_code="" if status == res.WRITE_STATUS_OK else "ErrorSomething",
                )
            )
        return results


@dataclass
class FakeCrm:
    page: CrmPage = field(default_factory=lambda: CrmPage(changes=[]))
    records: dict[str, res.CrmRecord] = field(default_factory=dict)
    batches: list[list[crm.CrmWrite]] = field(default_factory=list)
    queries: list[crm.QueryRecordsRequest] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    async def list_changes(
        self,
        org: str,
        sobject_type: str,
        cursor: res.Cursor,
        owner_id: str,
        fields: Sequence[str] = (),
    ) -> CrmPage:
        return self.page

    async def get_records(
        self, org: str, sobject_type: str, ids: Sequence[str], fields: Sequence[str] = ()
    ) -> crm.GetRecordsResponse:
        return crm.GetRecordsResponse(records=[self.records[i] for i in ids if i in self.records])

    async def query_records(self, request: crm.QueryRecordsRequest) -> crm.QueryRecordsResponse:
        self.queries.append(request)
        wanted = {v.string_value for f in request.filters for v in f.values}
        return crm.QueryRecordsResponse(
            records=[r for r in self.records.values() if r.link_id in wanted]
        )

    async def apply_batch(
        self, org: str, writes: Sequence[crm.CrmWrite]
    ) -> list[crm.CrmWriteResult]:
        self.batches.append(list(writes))
        out = []
        for n, write in enumerate(writes):
            key = write.link_id or write.id
            status = self.statuses.get(key, res.WRITE_STATUS_OK)
            out.append(
                crm.CrmWriteResult(
                    link_id=write.link_id,
                    id=write.id or f"00U{len(self.batches)}{n:012d}",
                    status=status,  # type: ignore[arg-type]
                    created=write.operation == crm.CRM_WRITE_OPERATION_UPSERT,
                    system_modstamp=_ts(START),
                    errors=[]
                    if status == res.WRITE_STATUS_OK
                    else [crm.CrmError(code="FIELD_CUSTOM_VALIDATION_EXCEPTION")],
                )
            )
        return out

    async def describe(self, org: str, sobject_type: str) -> crm.ObjectDescription:
        return crm.ObjectDescription(
            fields=[
                crm.FieldDescription(name="Subject", type="string"),
                crm.FieldDescription(name="Location", type="string"),
                crm.FieldDescription(name="Address__c", type="address"),
            ]
        )


@dataclass
class FakeLinker:
    asked: list[tuple[str, list[str]]] = field(default_factory=list)

    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: int,
        participants: Sequence[res.Participant],
        request_id: str,
        policy: linker_pb.ResolutionPolicy | None = None,
    ) -> linker_pb.ResolveParticipantsResponse:
        self.asked.append((request_id, [p.email for p in participants]))
        return linker_pb.ResolveParticipantsResponse(
            who=linker_pb.LinkedRecord(sobject_type="Contact", id="003AAA"),
            what=linker_pb.LinkedRecord(sobject_type="Opportunity", id="006BBB"),
            relations=[
                linker_pb.LinkedRecord(sobject_type="Contact", id="003AAA"),
                linker_pb.LinkedRecord(sobject_type="Lead", id="00QCCC"),
            ],
        )


@pytest.fixture
def mapping() -> FakeMapping:
    return FakeMapping()


def _mail(client: FakeMail, mapping: FakeMapping) -> MailSyncSide:
    return MailSyncSide(
        client, SessionMapping(mapping, "orgs/acme", OWNER), "mailboxes/demo", {EVENT: "Salesforce"}
    )


def _crm(client: FakeCrm, mapping: FakeMapping, linker: FakeLinker | None = None) -> CrmSyncSide:
    return CrmSyncSide(
        client,
        SessionMapping(mapping, "orgs/acme", OWNER),
        linker or FakeLinker(),
        "orgs/acme",
        OWNER,
    )


def _upsert(item: res.MailItem) -> res.MailChange:
    return res.MailChange(type=res.CHANGE_TYPE_UPSERT, ref=item.ref, item=item)


async def test_mail_listing_maps_shared_items_without_the_linkers_hints(
    mapping: FakeMapping,
) -> None:
    shared = meeting("e1", "Review", link_id="L1")
    client = FakeMail(
        pages=[
            MailPage(
                changes=[
                    _upsert(shared),
                    _upsert(meeting("e2", "Lunch", category="")),
                    _upsert(meeting("e3", "BAD")),
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
        ]
    )
    page = await _mail(client, mapping).list_changes(EVENT, "c1")
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


async def test_a_full_mail_listing_leaves_unshared_items_out(mapping: FakeMapping) -> None:
    client = FakeMail(pages=[MailPage(changes=[_upsert(meeting("e2", "Lunch", category=""))])])
    page = await _mail(client, mapping).list_changes(EVENT, "")
    assert page.changes == []


async def test_crm_records_normalised_by_the_round_trip_hash_like_their_mail_item(
    mapping: FakeMapping,
) -> None:
    item = meeting("e1", "Review", link_id="L1")
    mail_page = await _mail(
        FakeMail(pages=[MailPage(changes=[_upsert(item)])]), mapping
    ).list_changes(EVENT, "")
    # Salesforce's own datetime format, and fields the table does not map (WhoId).
    listed = record(
        "00U1",
        Subject="Review",
        Location="Room 1",
        StartDateTime="2030-03-04T09:00:00.000+0000",
        WhoId="003AAA",
        Concord_Link_Id__c="L1",
    )
    client = FakeCrm(
        page=CrmPage(
            changes=[
                res.CrmChange(type=res.CHANGE_TYPE_UPSERT, record=listed),
                res.CrmChange(
                    type=res.CHANGE_TYPE_UPSERT, record=record("00U2", Subject="UNREADABLE")
                ),
                res.CrmChange(
                    type=res.CHANGE_TYPE_DELETE, record=res.CrmRecord(id="00U3", is_deleted=True)
                ),
            ],
            next_cursor=res.Cursor(token="t"),
        )
    )
    crm_page = await _crm(client, mapping).list_changes(EVENT, "")
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
    mapping: FakeMapping,
) -> None:
    client, linker = FakeCrm(), FakeLinker()
    people = (("ann@acme.example", "Ann", res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE),)
    fields = {"Subject": "Review", "OwnerId": OWNER}
    writes = [
        Write(Side.CRM, WriteOp.CREATE, "L1", fields=fields, participants=people),
        Write(Side.CRM, WriteOp.CREATE, "L2", fields=fields, participants=people),
        Write(Side.CRM, WriteOp.CREATE, "L3", fields=fields),
    ]
    results = await _crm(client, mapping, linker).apply(EVENT, writes)
    assert [r.ok for r in results] == [True, True, True]
    assert [a for a, _ in linker.asked] == ["L1"]
    (events,) = client.batches
    assert [w.operation for w in events] == [crm.CRM_WRITE_OPERATION_UPSERT] * 3
    assert [w.link_id for w in events] == ["L1", "L2", "L3"]
    # Only what Concord maps goes as fields: who and what the activity concerns, and the
    # other attendees, go as activity links for crm-connector to write as Salesforce keeps them.
    sent = [json_format.MessageToDict(w.fields) for w in events]
    assert sent == [{"Subject": "Review", "OwnerId": OWNER}] * 3
    linked = crm.ActivityLinks(who_id="003AAA", what_id="006BBB", invitee_ids=["00QCCC"])
    assert [w.activity_links for w in events[:2]] == [linked, linked]
    assert not events[2].HasField("activity_links")


async def test_crm_updates_deletes_and_marks(mapping: FakeMapping) -> None:
    client = FakeCrm(
        statuses={"00U7": res.WRITE_STATUS_CONFLICT, "00U8": res.WRITE_STATUS_INVALID},
    )
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
    results = await _crm(client, mapping).apply(EVENT, writes)
    update, delete, mark, _, _ = client.batches[0]
    assert json_format.MessageToDict(update.fields) == {"Subject": "New"}
    assert list(update.fields_to_null) == ["Location"]
    assert update.expected_system_modstamp.ToJsonString() == "2030-03-04T09:00:00Z"
    assert (delete.operation, delete.id) == (crm.CRM_WRITE_OPERATION_DELETE, "00U2")
    assert (mark.operation, mark.id) == (crm.CRM_WRITE_OPERATION_MARK_CANCELLED, "00U9")
    assert not mark.fields
    assert [r.ok for r in results] == [True, True, True, False, False]
    assert (results[3].retryable, results[3].reason) == (True, "VERSION_MISMATCH")
    assert (results[4].retryable, results[4].reason) == (False, "FIELD_CUSTOM_VALIDATION_EXCEPTION")


async def test_mail_writes_convert_share_and_update_only_the_changed_paths(
    mapping: FakeMapping,
) -> None:
    client = FakeMail(items={"e7": meeting("e7", "Old", link_id="L7", location="Room 1")})
    full = {"Subject": "Review", "Location": " Room 2 ", "StartDateTime": "2030-03-04T09:00:00Z"}
    writes = [
        Write(Side.MAIL, WriteOp.CREATE, "L1", fields=full),
        Write(Side.MAIL, WriteOp.UPDATE, "L2", "e2", "ck-e2", {"Location": " Room 2 "}, full=full),
        Write(Side.MAIL, WriteOp.UNSHARE, "L7", "e7"),
        Write(Side.MAIL, WriteOp.DELETE, "L8", "e8"),
    ]
    results = await _mail(client, mapping).apply(EVENT, writes)
    (sent,) = client.applied
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
    assert delete.operation == mail.MAIL_WRITE_OPERATION_DELETE
    assert all(r.ok for r in results)
    # What the mailbox stored (it trimmed the location) is what the link remembers, so the
    # next listing of the item is no edit.
    stored = content_hash({**full, "Location": "Room 2", "OwnerId": OWNER})
    assert (results[0].hash, results[0].version) == (stored, "v2")
    assert results[1].hash == stored


async def test_mail_writes_go_a_hundred_a_call_and_report_refusals(mapping: FakeMapping) -> None:
    client = FakeMail(statuses={"L0": res.WRITE_STATUS_INVALID, "L1": res.WRITE_STATUS_CONFLICT})
    writes = [
        Write(Side.MAIL, WriteOp.CREATE, f"L{n}", fields={"Subject": f"s{n}"}) for n in range(150)
    ]
    results = await _mail(client, mapping).apply(EVENT, writes)
    assert [len(call) for call in client.applied] == [100, 50]
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


async def test_items_are_found_by_link_id_on_both_sides(mapping: FakeMapping) -> None:
    mail_client = FakeMail(items={"e1": meeting("e1", "Review", link_id="L1")})
    found = await _mail(mail_client, mapping).find(EVENT, ["L1", "L2"])
    assert list(found) == ["L1"]
    assert found["L1"][0] == "e1"
    (lookup,) = mail_client.lookups
    assert (list(lookup.link_ids), lookup.kind) == (["L1", "L2"], EVENT)

    crm_client = FakeCrm(
        records={"00U1": record("00U1", Subject="Review", Concord_Link_Id__c="L1")}
    )
    on_crm = await _crm(crm_client, mapping).find(EVENT, ["L1"])
    assert on_crm["L1"][0] == "00U1"
    (query,) = crm_client.queries
    assert [f.field for f in query.filters] == ["Concord_Link_Id__c"]
    # Every field a listing returns, compound ones aside.
    assert list(query.fields) == ["Subject", "Location"]


async def test_an_item_that_cannot_be_read_still_exists_and_an_unshared_one_does_not(
    mapping: FakeMapping,
) -> None:
    client = FakeMail(
        items={"e1": meeting("e1", "Review"), "e4": meeting("e4", "Lunch", category="")},
        unreadable={"e2"},
    )
    found = await _mail(client, mapping).fetch(EVENT, ["e1", "e2", "e3", "e4"])
    assert sorted(found) == ["e1", "e2"]
