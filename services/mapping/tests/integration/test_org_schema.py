"""UpdateMappingTable checks a table against the org's live describe from crm-connector."""

from __future__ import annotations

import grpc
import pytest

from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_rpc import DEPENDENCY_UNAVAILABLE
from concord_testing.peers import CrmPeer

from .conftest import UNCONNECTED
from .test_api import failure

pytestmark = pytest.mark.integration

Stub = pb_grpc.MappingServiceStub
EVENTS = "orgs/demo/mappingTables/calendar-item"


async def default_events(stub: Stub, name: str = EVENTS) -> pb.MappingTable:
    table = pb.MappingTable()
    table.CopyFrom((await stub.GetMappingTable(pb.GetMappingTableRequest(name=name))).table)
    return table


def with_region(table: pb.MappingTable, value: str, crm_field: str = "Region__c") -> int:
    rule = table.rules.add(mail_field="calendar_item.show_as", crm_field=crm_field)
    rule.to_crm.name = "picklist"
    rule.to_crm.params.update({"values": {"SHOW_AS_FREE": value}})
    return len(table.rules) - 1


async def test_the_orgs_custom_picklist_is_accepted_with_an_allowed_value(
    stub: Stub, crm_connector: tuple[CrmPeer, grpc.aio.Channel]
) -> None:
    fake = crm_connector[0]
    table = await default_events(stub)
    with_region(table, "EMEA")
    checked = await stub.UpdateMappingTable(
        pb.UpdateMappingTableRequest(table=table, validate_only=True)
    )
    assert checked.table.version == 1
    assert [(r.org, r.sobject_type) for r in fake.received("DescribeObject")] == [
        ("orgs/demo", "Event")
    ]
    stored = (await stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table))).table
    assert (stored.version, stored.is_default) == (1, False)
    # Reading and mapping use the stored table: crm-connector is not asked again.
    calls = len(fake.calls)
    await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))
    await stub.MapToCrm(pb.MapToCrmRequest(org="orgs/demo"))
    assert len(fake.calls) == calls


async def test_fields_the_org_lacks_or_refuses_are_named_and_the_old_version_stays(
    stub: Stub,
) -> None:
    table = await default_events(stub)
    with_region(table, "EMEA")
    good = (await stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table))).table
    bad = pb.MappingTable()
    bad.CopyFrom(good)
    unknown = len(bad.rules)
    bad.rules.add(mail_field="calendar_item.subject", crm_field="Territory__c")
    read_only = len(bad.rules)
    bad.rules.add(mail_field="calendar_item.subject", crm_field="Score__c")
    not_allowed = with_region(bad, "Atlantis")
    retired = with_region(bad, "Retired")
    for validate_only in (True, False):
        got = await failure(
            stub.UpdateMappingTable(
                pb.UpdateMappingTableRequest(table=bad, validate_only=validate_only)
            )
        )
        assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MAPPING_TABLE")
        assert got.field_violations == [
            (f"table.rules[{unknown}].crm_field", "Event has no field Territory__c"),
            (f"table.rules[{read_only}].crm_field", "Event.Score__c is read-only"),
            (
                f"table.rules[{not_allowed}].to_crm.params",
                "'Atlantis' is not a value of Event.Region__c",
            ),
            (
                f"table.rules[{retired}].to_crm.params",
                "'Retired' is not a value of Event.Region__c",
            ),
        ]
    after = (await stub.GetMappingTable(pb.GetMappingTableRequest(name=EVENTS))).table
    assert (after.version, after.etag) == (good.version, good.etag)


async def test_an_org_without_connection_cannot_change_its_tables(stub: Stub) -> None:
    name = f"orgs/{UNCONNECTED}/mappingTables/calendar-item"
    table = await default_events(stub, name)
    for validate_only in (True, False):
        got = await failure(
            stub.UpdateMappingTable(
                pb.UpdateMappingTableRequest(table=table, validate_only=validate_only)
            )
        )
        assert (got.code, got.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ORG_SCHEMA_UNAVAILABLE",
        )
        assert "Event" in got.message
        assert UNCONNECTED in got.message
    assert (await default_events(stub, name)).is_default


async def test_crm_connector_down_is_unavailable(
    stub: Stub, crm_connector: tuple[CrmPeer, grpc.aio.Channel]
) -> None:
    crm_connector[0].down = True
    table = await default_events(stub)
    got = await failure(stub.UpdateMappingTable(pb.UpdateMappingTableRequest(table=table)))
    assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, DEPENDENCY_UNAVAILABLE)
    assert (await default_events(stub)).is_default
