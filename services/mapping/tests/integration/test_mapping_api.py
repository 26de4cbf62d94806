from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_rpc import RpcFailure, from_rpc_error

pytestmark = pytest.mark.integration

Stub = pb_grpc.MappingServiceStub
EVENTS = "orgs/demo/mappingTables/calendar-item"


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


def meeting(native_id: str, **fields: object) -> pb.MapToCrmInput:
    item = res.CalendarItem(subject="Review", time_zone="Europe/London")
    item.start.FromJsonString("2026-03-29T08:00:00Z")
    item.end.FromJsonString("2026-03-29T09:00:00Z")
    json_format.ParseDict(fields, item)
    ref = res.ItemRef(
        kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id=native_id, link_id=f"l-{native_id}"
    )
    return pb.MapToCrmInput(item=res.MailItem(ref=ref, calendar_item=item))


async def test_a_batch_maps_in_order_with_losses_and_per_item_errors(stub: Stub) -> None:
    inputs = [
        meeting("a", subject="x" * 300),
        meeting("b", time_zone="Nowhere/Atlantis", recurrence={"rules": ["RRULE:FREQ=DAILY"]}),
        meeting("c", recurrence={"rules": ["RRULE:FREQ=WEEKLY;BYDAY=SU;COUNT=3"]}),
        pb.MapToCrmInput(item=res.MailItem(ref=res.ItemRef(native_id="d"))),
        meeting("e", recurrence={"rules": ["RRULE:FREQ=WEEKLY;BYDAY=XX"]}),
        meeting("f", attendees=[{"email": "ann@example.com"}, {"display_name": "No address"}]),
    ]
    response = await stub.MapToCrm(
        pb.MapToCrmRequest(org="orgs/demo", inputs=inputs, owner_id="005000000000001AAA")
    )
    assert [r.ref.native_id for r in response.results] == ["a", "b", "c", "d", "e", "f"]
    first, bad_zone, series, empty, bad_rule, attendees = response.results
    assert first.record.sobject_type == "Event"
    assert first.record.link_id == "l-a"
    assert len(json_format.MessageToDict(first.record.fields)["Subject"]) == 255
    assert first.record.fields["OwnerId"] == "005000000000001AAA"
    assert [(loss.field, loss.kind) for loss in first.losses] == [
        ("Subject", res.FIELD_LOSS_KIND_TRUNCATED)
    ]
    assert not bad_zone.HasField("record")
    assert (bad_zone.error.reason, bad_zone.error.field) == (
        "UNKNOWN_TIME_ZONE",
        "calendar_item.time_zone",
    )
    assert "Atlantis" not in bad_zone.error.message
    assert series.record.fields["Recurrence2PatternText"] == "RRULE:FREQ=WEEKLY;COUNT=3;BYDAY=SU"
    assert series.record.fields["RecurrenceTimeZoneSidKey"] == "Europe/London"
    assert empty.error.reason == "MISSING_PAYLOAD"
    assert (bad_rule.error.reason, bad_rule.error.field) == (
        "MALFORMED_RECURRENCE",
        "calendar_item.recurrence",
    )
    relations = json_format.MessageToDict(attendees.record.fields)["concord.EventRelations"]
    assert [r["Email"] for r in relations] == ["ann@example.com"]
    assert [(loss.kind, loss.detail) for loss in attendees.losses] == [
        (res.FIELD_LOSS_KIND_DROPPED, "attendee 2 has no address")
    ]
    assert response.mapping_version == 0


async def test_a_small_call_is_answered_while_a_big_one_maps(stub: Stub) -> None:
    # The server and this test share one event loop, as the server's calls share its loop in
    # production: a big call that never gave it back would answer before the small one.
    mapped = await stub.MapToCrm(pb.MapToCrmRequest(org="orgs/demo", inputs=[meeting("a")]))
    record = mapped.results[0].record
    record.id = "00U000000000001AAA"
    order: list[str] = []

    async def call(name: str, request: pb.MapToMailRequest) -> None:
        await stub.MapToMail(request)
        order.append(name)

    big = pb.MapToMailRequest(org="orgs/demo", records=[record] * 2000, time_zone="UTC")
    started = asyncio.create_task(call("big", big))
    await asyncio.sleep(0.05)
    await call("small", pb.MapToMailRequest(org="orgs/demo", records=[record], time_zone="UTC"))
    await started
    assert order == ["small", "big"]


async def test_records_map_back_to_items(stub: Stub) -> None:
    mapped = await stub.MapToCrm(pb.MapToCrmRequest(org="orgs/demo", inputs=[meeting("a")]))
    record = mapped.results[0].record
    record.id = "00U000000000001AAA"
    unknown = res.CrmRecord(sobject_type="Opportunity", id="006000000000001AAA")
    response = await stub.MapToMail(
        pb.MapToMailRequest(org="orgs/demo", records=[record, unknown], time_zone="Europe/London")
    )
    item, missing = response.results
    assert item.record_id == "00U000000000001AAA"
    assert item.item.ref.kind == res.OBJECT_KIND_CALENDAR_ITEM
    assert item.item.ref.link_id == "l-a"
    assert item.item.calendar_item.subject == "Review"
    assert item.item.calendar_item.start.ToJsonString() == "2026-03-29T08:00:00Z"
    assert missing.error.reason == "UNKNOWN_SOBJECT"
    got = await failure(
        stub.MapToMail(pb.MapToMailRequest(org="orgs/demo", records=[record], time_zone="Mars"))
    )
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in got.field_violations] == ["time_zone"]


async def test_an_override_is_validated_stored_and_used(stub: Stub) -> None:
    default = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))).table
    table = pb.MappingTable()
    table.CopyFrom(default)
    table.rules.add(mail_field="calendar_item.online_meeting_url", crm_field="Meeting_Link__c")
    checked = await stub.UpdateMappingTable(
        pb.UpdateMappingTableRequest(table=table, validate_only=True)
    )
    assert checked.table.version == 1
    assert (await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))).table.is_default
    stored = (await stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table))).table
    assert (stored.version, stored.is_default, stored.etag != default.etag) == (1, False, True)
    # What a listing must select follows the table: the new rule's field, beside the siblings
    # the default's transforms read (an event's end reads IsAllDayEvent).
    assert {"StartDateTime", "IsAllDayEvent"} <= set(default.crm_fields_read)
    assert "Meeting_Link__c" not in default.crm_fields_read
    assert list(stored.crm_fields_read) == [*default.crm_fields_read, "Meeting_Link__c"]
    retried = (await stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table))).table
    assert retried.version == 1
    link = meeting("a", online_meeting_url="https://meet.example/abc")
    mapped = await stub.MapToCrm(pb.MapToCrmRequest(org="orgs/demo", inputs=[link]))
    assert mapped.mapping_version == 1
    assert mapped.results[0].record.fields["Meeting_Link__c"] == "https://meet.example/abc"
    pinned = await stub.MapToCrm(
        pb.MapToCrmRequest(org="orgs/other", inputs=[link], mapping_version=0)
    )
    assert "Meeting_Link__c" not in pinned.results[0].record.fields

    stale = pb.MappingTable()
    stale.CopyFrom(table)
    stale.rules.add(mail_field="calendar_item.location", crm_field="Location")
    got = await failure(stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=stale)))
    assert (got.code, got.reason) == (grpc.StatusCode.ABORTED, "MAPPING_TABLE_ETAG_MISMATCH")


async def test_a_bad_override_is_refused_field_by_field_and_the_old_one_stays(stub: Stub) -> None:
    default = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))).table
    table = pb.MappingTable()
    table.CopyFrom(default)
    table.rules.add(mail_field="calendar_item.subject", crm_field="CreatedDate")
    table.rules.add(mail_field="calendar_item.subject", crm_field="Subjekt")
    rule = table.rules.add(mail_field="calendar_item.show_as", crm_field="ShowAs")
    rule.to_crm.name = "picklist"
    rule.to_crm.params.update({"values": {"SHOW_AS_FREE": "Available"}})
    got = await failure(stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table)))
    assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MAPPING_TABLE")
    n = len(default.rules)
    assert got.field_violations == [
        (f"table.rules[{n}].crm_field", "Event.CreatedDate is read-only"),
        (f"table.rules[{n + 1}].crm_field", "Event has no field Subjekt"),
        (f"table.rules[{n + 2}].to_crm.params", "'Available' is not a value of Event.ShowAs"),
    ]
    after = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))).table
    assert after.is_default
    no_direction = pb.MappingTable(name=EVENTS, target_sobject="Event", etag=default.etag)
    got = await failure(stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=no_direction)))
    assert [f for f, _ in got.field_violations] == ["table"]
    assert "direction" in got.field_violations[0][1]


async def test_a_mapping_call_reads_the_tables_in_force_in_one_statement(
    stub: Stub, api_engine: AsyncEngine
) -> None:
    """Records carry no kind, so MapToMail looks at every kind's table: the versions in force
    are one read for all of them, and a stored version's content is read once, not per call."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    mapped = await stub.MapToCrm(pb.MapToCrmRequest(org="orgs/demo", inputs=[meeting("a")]))
    record = mapped.results[0].record
    record.id = "00U000000000001AAA"
    request = pb.MapToMailRequest(org="orgs/demo", records=[record], time_zone="Europe/London")
    event.listen(api_engine.sync_engine, "before_cursor_execute", count)
    try:
        await stub.MapToMail(request)
        assert len(statements) == 1
        # An override stored since is in force at the next call, read once and then known.
        default = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))).table
        table = pb.MappingTable()
        table.CopyFrom(default)
        table.rules.add(mail_field="calendar_item.location", crm_field="Location")
        await stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table))
        statements.clear()
        first = await stub.MapToMail(request)
        assert first.mapping_version == 1
        assert len(statements) == 2  # the versions in force, then version 1's content
        statements.clear()
        await stub.MapToMail(request)
        assert len(statements) == 1
    finally:
        event.remove(api_engine.sync_engine, "before_cursor_execute", count)
