"""The connector through its gRPC API against the Salesforce emulator, faults included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from cryptography.fernet import Fernet
from google.protobuf import struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord_crm_connector.adapters.salesforce import SalesforceOptions, SalesforceOrgs
from concord_crm_connector.adapters.store import SqlOrgStore
from concord_crm_connector.domain.errors import SalesforceUnavailable
from concord_crm_connector.domain.model import AuthFlow, OrgConnection
from concord_rpc import RpcFailure, from_rpc_error
from concord_salesforce_emulator import timefmt
from concord_salesforce_emulator.app import Running
from concord_secrets import SecretBox
from concord_store import create_engine

from .conftest import Org, connection_for  # type: ignore[import-not-found]

pytestmark = pytest.mark.integration

OK = res.WRITE_STATUS_OK
# A user of the demo org other than the one Concord logs in as.
PERSON = "sales@concord-demo.example"
START = datetime(2026, 3, 2, 9, tzinfo=UTC)


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


def event(
    link: str,
    subject: str = "Call",
    operation: pb.CrmWriteOperation.ValueType = pb.CRM_WRITE_OPERATION_UPSERT,
    **extra: Any,
) -> pb.CrmWrite:
    fields = struct_pb2.Struct()
    fields.update(
        {
            "Subject": subject,
            "StartDateTime": START.isoformat(),
            "EndDateTime": (START + timedelta(hours=1)).isoformat(),
            **extra,
        }
    )
    return pb.CrmWrite(operation=operation, sobject_type="Event", link_id=link, fields=fields)


def links(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    return [f"{prefix}-{n:05d}" for n in range(count)]


async def apply(org: Org, writes: list[pb.CrmWrite], **options: Any) -> list[pb.CrmWriteResult]:
    response = await org.stub.ApplyBatch(
        pb.ApplyBatchRequest(org="orgs/demo", writes=writes, **options)
    )
    return list(response.results)


async def count_events(org: Org, link_ids: list[str]) -> dict[str, int]:
    """Records per link, read through the connector's own QueryRecords."""
    found: dict[str, int] = {}
    for start in range(0, len(link_ids), 100):
        values = [struct_pb2.Value(string_value=v) for v in link_ids[start : start + 100]]
        response = await org.stub.QueryRecords(
            pb.QueryRecordsRequest(
                org="orgs/demo",
                sobject_type="Event",
                fields=["Concord_Link_Id__c"],
                filters=[pb.FieldFilter(field="Concord_Link_Id__c", values=values)],
                page_size=2000,
            )
        )
        for record in response.records:
            found[record.link_id] = found.get(record.link_id, 0) + 1
    return found


# ---- connections ------------------------------------------------------------------------------


async def test_a_connection_is_validated_by_logging_in(org: Org) -> None:
    got = await org.stub.GetOrgConnection(pb.GetOrgConnectionRequest(name="orgs/demo/connection"))
    assert got.connection.instance_url == org.emulator.url
    assert got.connection.organization_id.startswith("00D")
    assert got.connection.secret == b""
    bad = connection_for(org.emulator, org="other", password="wrong")
    refused = await failure(
        org.stub.UpsertOrgConnection(pb.UpsertOrgConnectionRequest(connection=bad))
    )
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.reason == "SALESFORCE_LOGIN_FAILED"
    assert "wrong" not in refused.message
    missing = await failure(
        org.stub.GetOrgConnection(pb.GetOrgConnectionRequest(name="orgs/other/connection"))
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_an_expired_session_is_renewed_once_and_the_call_goes_through(org: Org) -> None:
    assert [r.status for r in await apply(org, [event(links(1)[0])])] == [OK]
    org.admin_post("expire-sessions")
    before = org.logins()
    assert [r.status for r in await apply(org, [event(links(1)[0])])] == [OK]
    assert org.logins() == before + 1


# ---- writes -----------------------------------------------------------------------------------


async def test_a_batch_of_450_is_one_composite_call_and_its_replay_changes_nothing(
    org: Org,
) -> None:
    ids = links(450)
    results = await apply(org, [event(link, f"Meeting {n}") for n, link in enumerate(ids)])
    assert [r.link_id for r in results] == ids
    assert {r.status for r in results} == {OK}
    assert all(r.created and r.id.startswith("00U") for r in results)
    # One call writes the 450; one more reads their SystemModstamp back (three queries).
    assert org.calls() == {"POST composite": 2}
    again = await apply(org, [event(link, f"Meeting {n}") for n, link in enumerate(ids)])
    assert [r.id for r in again] == [r.id for r in results]
    assert not any(r.created for r in again)
    assert await count_events(org, ids) == dict.fromkeys(ids, 1)


async def test_writes_carry_the_concord_call_option(org: Org) -> None:
    seen: list[str] = []
    original = org.emulator.emulator.api.dispatch

    def spy(call: Any) -> Any:
        body = call.body if isinstance(call.body, dict) else {}
        writes = any(r.get("method") != "GET" for r in body.get("compositeRequest", [{}]))
        if call.method != "GET" and writes:
            seen.append(call.headers.get("sforce-call-options", ""))
        return original(call)

    org.emulator.emulator.api.dispatch = spy
    await apply(org, [event(links(1)[0])])
    # The Composite request and the Collections write inside it.
    assert seen == ["client=concord"] * 2


async def test_write_results_carry_the_system_modstamp_a_listing_shows(org: Org) -> None:
    """The version the reconciler keeps to know its own write when a listing brings it back."""
    ids = links(3)
    created = await apply(org, [event(link) for link in ids])
    update = event(ids[0], "Moved", operation=pb.CRM_WRITE_OPERATION_UPDATE)
    moved = await apply(org, [update])
    listed = {c.record.id: c.record.system_modstamp for c in (await list_changes(org)).changes}
    assert all(r.HasField("system_modstamp") for r in [*created, *moved])
    assert [r.system_modstamp for r in created[1:]] == [listed[r.id] for r in created[1:]]
    assert moved[0].system_modstamp == listed[moved[0].id]
    assert moved[0].system_modstamp.ToDatetime() > created[0].system_modstamp.ToDatetime()


async def test_a_small_batch_and_its_stamp_read_are_one_call(org: Org) -> None:
    """Up to 400 records (two Collections and two queries in one Composite request): the
    stamps are read in the request that writes, in order after the writes."""
    ids = links(400)
    seen: list[dict[str, Any]] = []
    original = org.emulator.emulator.api.dispatch

    def spy(call: Any) -> Any:
        if call.path == "composite" and isinstance(call.body, dict):
            seen.append(call.body)
        return original(call)

    org.emulator.emulator.api.dispatch = spy
    created = await apply(org, [event(link) for link in ids])
    assert org.calls() == {"POST composite": 1}
    (request,) = seen
    assert [r["method"] for r in request["compositeRequest"]] == ["PATCH", "PATCH", "GET", "GET"]
    assert request["collateSubrequests"] is False
    listed = {c.record.id: c.record.system_modstamp for c in (await list_changes(org)).changes}
    assert [r.system_modstamp for r in created] == [listed[r.id] for r in created]
    org.admin_post("reset")
    moved = await apply(
        org, [event(link, "Moved", operation=pb.CRM_WRITE_OPERATION_UPDATE) for link in ids[:3]]
    )
    # An update by link id: the query for its Id, then the write with its read.
    assert org.calls() == {"GET query": 1, "POST composite": 1}
    assert all(
        m.system_modstamp.ToDatetime() > c.system_modstamp.ToDatetime()
        for m, c in zip(moved, created, strict=False)
    )


async def test_a_same_second_edit_by_someone_else_is_listed_as_not_concords(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Salesforce keeps SystemModstamp to the second: Concord's write and a person's edit in
    that second carry one stamp, and only LastModifiedById tells them apart (issue #18)."""
    second = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(timefmt, "now", lambda: second)
    written = await apply(org, [event(link) for link in links(2)])
    edited = _salesforce_user(org).patch(
        f"{org.emulator.url}/services/data/v62.0/sobjects/Event/{written[1].id}",
        json={"Subject": "Edited in Salesforce"},
    )
    assert edited.status_code == 204
    listed = {c.record.id: c.record for c in (await list_changes(org)).changes}
    assert [listed[r.id].system_modstamp for r in written] == [r.system_modstamp for r in written]
    assert [listed[r.id].last_modified_by_concord for r in written] == [True, False]
    got = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo",
            sobject_type="Event",
            ids=[r.id for r in written],
            fields=["LastModifiedById"],
        )
    )
    assert {r.id: r.last_modified_by_concord for r in got.records} == {
        written[0].id: True,
        written[1].id: False,
    }


async def test_a_record_edited_by_someone_else_before_the_read_back_gets_no_stamp(
    org: Org,
) -> None:
    """The stamp read back after a write is the reconciler's proof of its own write: a record
    someone saved in between carries their version, which must not be taken for Concord's."""
    emulator = org.emulator.emulator
    person = emulator.org.find_by(_users(org), "Username", PERSON)
    original = emulator.api.dispatch
    mine, theirs = links(2)

    def edit_before_the_read(call: Any) -> Any:
        body = call.body if isinstance(call.body, dict) else {}
        subrequests = body.get("compositeRequest", [])
        if subrequests and all(r.get("method") == "GET" for r in subrequests):
            sobject = emulator.org.schema.get("Event")
            assert sobject is not None
            record = emulator.org.find_by(sobject, "Concord_Link_Id__c", theirs)[0]
            emulator.org.write_many(
                [("update", sobject, record.id, {"Subject": "Saved meanwhile"})],
                person[0].id,
                True,
            )
        return original(call)

    emulator.api.dispatch = edit_before_the_read
    # Past 400 records the stamps are read in a Composite call of their own, after the writes.
    others = links(399)
    results = await apply(org, [event(mine), event(theirs), *(event(link) for link in others)])
    assert {r.status for r in results} == {OK}
    assert [r.HasField("system_modstamp") for r in results[:2]] == [True, False]


async def test_a_record_edited_by_someone_else_before_the_read_in_the_write_call_gets_no_stamp(
    org: Org,
) -> None:
    """The same rule where the stamps are read in the request that writes (a small batch): the
    read keeps no stamp for a record someone else saved after the write."""
    emulator = org.emulator.emulator
    person = emulator.org.find_by(_users(org), "Username", PERSON)
    original = emulator.api.run_query
    mine, theirs = links(2)
    edited: list[str] = []

    def edit_before_the_read(call: Any, include_deleted: bool) -> Any:
        if not edited:
            sobject = emulator.org.schema.get("Event")
            assert sobject is not None
            record = emulator.org.find_by(sobject, "Concord_Link_Id__c", theirs)[0]
            emulator.org.write_many(
                [("update", sobject, record.id, {"Subject": "Saved meanwhile"})],
                person[0].id,
                True,
            )
            edited.append(record.id)
        return original(call, include_deleted)

    emulator.api.run_query = edit_before_the_read
    results = await apply(org, [event(mine), event(theirs)])
    assert edited == [results[1].id]
    assert [r.HasField("system_modstamp") for r in results] == [True, False]


def _users(org: Org) -> Any:
    users = org.emulator.emulator.org.schema.get("User")
    assert users is not None
    return users


async def test_a_stamp_read_that_fails_leaves_the_writes_written_without_stamps(org: Org) -> None:
    from concord_salesforce_emulator.api import Reply

    original = org.emulator.emulator.api.dispatch

    def refuse_reads(call: Any) -> Any:
        # The read beside the write in its Composite request, and the read on its own after.
        body = call.body if isinstance(call.body, dict) else {}
        subrequests = body.get("compositeRequest", [])
        alone = subrequests and all(r.get("method") == "GET" for r in subrequests)
        if alone or (call.method, call.path) == ("GET", "query"):
            return Reply(400, [{"errorCode": "INVALID_QUERY", "message": "refused"}])
        return original(call)

    org.emulator.emulator.api.dispatch = refuse_reads
    ids = links(2)
    results = await apply(org, [event(link) for link in ids])
    assert [r.status for r in results] == [OK, OK]
    assert not any(r.HasField("system_modstamp") for r in results)
    org.emulator.emulator.api.dispatch = original
    assert await count_events(org, ids) == dict.fromkeys(ids, 1)


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "drop_response"},
        {"kind": "error", "status": 503},
        {"kind": "error", "status": 500},
    ],
    ids=["lost-acknowledgement", "503", "500"],
)
async def test_after_a_transient_failure_the_retried_batch_leaves_one_record_per_link(
    org: Org, fault: dict[str, Any]
) -> None:
    ids = links(300)
    org.fault(path="composite", count=1, **fault)
    results = await apply(org, [event(link) for link in ids])
    assert {r.status for r in results} == {OK}
    assert await count_events(org, ids) == dict.fromkeys(ids, 1)
    # The write with the read of the records' SystemModstamp beside it, and its retry.
    assert org.calls()["POST composite"] == 2


async def test_single_collection_calls_are_retried_too(org: Org) -> None:
    ids = links(3)
    org.fault("drop_response", path="composite/sobjects", count=2)
    # allOrNone: no stamp read rides with the write, which goes as one Collections call.
    results = await apply(org, [event(link) for link in ids], all_or_none=True)
    assert {r.status for r in results} == {OK}
    assert await count_events(org, ids) == dict.fromkeys(ids, 1)
    assert org.calls()["PATCH composite/sobjects/Event/Concord_Link_Id__c"] == 3


async def test_a_failure_that_outlasts_the_retries_is_reported_retryable(org: Org) -> None:
    org.fault("error", path="composite", count=None, status=503)
    results = await apply(org, [event(link) for link in links(2)])
    assert {r.status for r in results} == {res.WRITE_STATUS_RETRYABLE}
    assert results[0].errors[0].code == "SERVER_UNAVAILABLE"
    assert org.calls()["POST composite"] == 5


async def test_a_refused_request_is_reported_on_each_of_its_records(org: Org) -> None:
    org.fault("error", path="composite", count=1, status=403)
    results = await apply(org, [event(link) for link in links(300)])
    assert {r.errors[0].code for r in results} == {"UNKNOWN_EXCEPTION"}
    assert res.WRITE_STATUS_OK not in {r.status for r in results}


async def test_throttling_is_resource_exhausted_with_retry_info(org: Org) -> None:
    org.fault("throttle", count=1)
    got = await failure(
        org.stub.ApplyBatch(pb.ApplyBatchRequest(org="orgs/demo", writes=[event("t-1")]))
    )
    assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.reason == "SALESFORCE_API_LIMIT"
    assert got.retry_after is not None
    assert got.retry_after > 0
    # Nothing was written, so the caller's retry is the first write.
    assert [r.created for r in await apply(org, [event("t-1")])] == [True]


async def test_running_out_mid_batch_keeps_what_was_written_and_stops(org: Org) -> None:
    ids = links(1200)
    org.admin_post("reset")
    org.admin_post("settings", {"daily_api_limit": 1})
    results = await apply(org, [event(link) for link in ids])
    assert {r.status for r in results[:1000]} == {OK}
    assert {r.status for r in results[1000:]} == {res.WRITE_STATUS_RETRYABLE}
    assert results[1000].errors[0].code == "REQUEST_LIMIT_EXCEEDED"
    budget = (await org.stub.GetBudget(pb.GetBudgetRequest(org="orgs/demo"))).budget
    assert (budget.used, budget.limit) == (1, 1)
    org.admin_post("settings", {"daily_api_limit": 100_000})


async def test_bad_input_is_reported_per_record_with_salesforces_code(org: Org) -> None:
    ids = links(5)
    writes = [
        event(ids[0], "x" * 256),
        event(ids[1], ShowAs="Sleeping"),
        event(ids[2], Nonsense__c="x"),
        event(ids[3], WhoId="xyz"),
        event(ids[4]),
    ]
    results = await apply(org, writes)
    codes = [[e.code for e in r.errors] for r in results]
    assert codes == [
        ["STRING_TOO_LONG"],
        ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"],
        ["INVALID_FIELD"],
        ["MALFORMED_ID"],
        [],
    ]
    assert [r.status for r in results] == [res.WRITE_STATUS_INVALID] * 4 + [OK]
    assert all(r.errors[0].message for r in results[:4])
    # The message never carries the value that was refused.
    assert "x" * 256 not in results[0].errors[0].message


async def test_fields_to_null_clear_them(org: Org) -> None:
    link = links(1)[0]
    created = (await apply(org, [event(link, Location="Room 4")]))[0]
    cleared = event(link)
    cleared.fields_to_null.append("Location")
    assert [r.status for r in await apply(org, [cleared])] == [OK]
    got = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo", sobject_type="Event", ids=[created.id], fields=["Location"]
        )
    )
    assert got.records[0].fields["Location"] is None


async def test_all_or_none_rolls_back_the_good_records(org: Org) -> None:
    ids = links(2)
    results = await apply(org, [event(ids[0], "x" * 256), event(ids[1])], all_or_none=True)
    assert [r.status for r in results] == [res.WRITE_STATUS_INVALID, res.WRITE_STATUS_ROLLED_BACK]
    assert await count_events(org, ids) == {}


async def test_an_update_never_resurrects_a_record_deleted_in_salesforce(org: Org) -> None:
    link = links(1)[0]
    created = (await apply(org, [event(link)]))[0]
    deleted = await apply(
        org,
        [pb.CrmWrite(operation=pb.CRM_WRITE_OPERATION_DELETE, sobject_type="Event", id=created.id)],
    )
    assert [r.status for r in deleted] == [OK]
    update = event(link, "Moved", operation=pb.CRM_WRITE_OPERATION_UPDATE)
    assert [r.status for r in await apply(org, [update])] == [res.WRITE_STATUS_NOT_FOUND]
    assert await count_events(org, [link]) == {}
    again = await apply(
        org,
        [pb.CrmWrite(operation=pb.CRM_WRITE_OPERATION_DELETE, sobject_type="Event", id=created.id)],
    )
    assert [r.status for r in again] == [res.WRITE_STATUS_NOT_FOUND]


async def test_updates_by_link_and_version_checks(org: Org) -> None:
    link = links(1)[0]
    created = (await apply(org, [event(link)]))[0]
    listed = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo", sobject_type="Event", ids=[created.id], fields=["SystemModstamp"]
        )
    )
    stamp = listed.records[0].system_modstamp
    update = event(link, "Moved", operation=pb.CRM_WRITE_OPERATION_UPDATE)
    update.expected_system_modstamp.CopyFrom(stamp)
    assert [r.status for r in await apply(org, [update])] == [OK]
    # The same expectation is now stale: the record moved on.
    stale = await apply(org, [update])
    assert [r.status for r in stale] == [res.WRITE_STATUS_CONFLICT]
    got = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo",
            sobject_type="Event",
            ids=[created.id, "00U000000000000"],
            fields=["Subject"],
        )
    )
    assert got.records[0].fields["Subject"] == "Moved"
    assert list(got.not_found_ids) == ["00U000000000000"]


# ---- reads ------------------------------------------------------------------------------------


async def list_changes(org: Org, token: str = "", **options: Any) -> pb.ListChangesResponse:
    options.setdefault("fields", ["Subject", "Concord_Link_Id__c"])
    response: pb.ListChangesResponse = await org.stub.ListChanges(
        pb.ListChangesRequest(
            org="orgs/demo",
            sobject_type="Event",
            cursor=res.Cursor(collection="Event", token=token),
            **options,
        )
    )
    return response


async def test_listing_changes_advances_only_with_the_records_returned(org: Org) -> None:
    ids = links(5)
    await apply(org, [event(link) for link in ids])
    first = await list_changes(org, page_size=3)
    assert [c.record.link_id for c in first.changes] == ids[:3]
    assert first.has_more
    second = await list_changes(org, first.next_cursor.token, page_size=3)
    assert [c.record.link_id for c in second.changes] == ids[3:]
    assert not second.has_more
    org.admin_post("reset")
    quiet = await list_changes(org, second.next_cursor.token)
    assert list(quiet.changes) == []
    # Nothing listed, the cursor as it came: the reconciler has no cursor to write (#18).
    assert quiet.next_cursor.token == second.next_cursor.token
    # A session with no changes costs one call for the object type.
    assert org.api_calls() == 1
    changed = (await apply(org, [event(ids[1], "Renamed")]))[0]
    deleted = (
        await apply(
            org,
            [
                pb.CrmWrite(
                    operation=pb.CRM_WRITE_OPERATION_DELETE, sobject_type="Event", link_id=ids[2]
                )
            ],
        )
    )[0]
    later = await list_changes(org, quiet.next_cursor.token)
    assert [(c.type, c.record.id) for c in later.changes] == [
        (res.CHANGE_TYPE_UPSERT, changed.id),
        (res.CHANGE_TYPE_DELETE, deleted.id),
    ]
    assert later.changes[0].record.fields["Subject"] == "Renamed"
    assert later.changes[1].record.is_deleted


async def test_a_listing_leaves_out_fields_the_object_lacks(org: Org) -> None:
    # A mapping table reads fields an org may not have (the legacy recurrence fields, a custom
    # field); the listing answers with the rest instead of failing on the whole query.
    ids = links(1)
    await apply(org, [event(ids[0], "Standup")])
    page = await list_changes(org, fields=["Subject", "Concord_Link_Id__c", "No_Such_Field__c"])
    assert [c.record.link_id for c in page.changes] == ids
    fields = page.changes[0].record.fields
    assert (fields["Subject"], fields["Concord_Link_Id__c"]) == ("Standup", ids[0])
    assert "No_Such_Field__c" not in fields
    assert "Location" not in fields


async def test_a_listing_of_large_records_comes_in_pages_a_client_can_receive(org: Org) -> None:
    # 160 Events with a full 32,000-character Description: 5 MB in one page of Salesforce's,
    # past gRPC's default 4 MiB a client accepts. The connector splits it by size instead.
    ids = links(160)
    for start in range(0, len(ids), 40):
        chunk = ids[start : start + 40]
        written = await apply(org, [event(link, Description="x" * 32000) for link in chunk])
        assert [r.status for r in written] == [OK] * len(chunk)
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = await list_changes(org, token, fields=["Concord_Link_Id__c", "Description"])
        assert page.ByteSize() < 4 * 1024 * 1024
        seen += [c.record.link_id for c in page.changes]
        token, pages = page.next_cursor.token, pages + 1
        if not page.has_more:
            break
    assert sorted(seen) == ids  # every record, each once
    assert pages >= 2


async def test_an_owners_listing_reports_records_handed_to_others_as_leaving(org: Org) -> None:
    ids = links(2)
    written = await apply(org, [event(link) for link in ids])
    owners = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo", sobject_type="Event", ids=[written[0].id], fields=["OwnerId"]
        )
    )
    mine = owners.records[0].fields["OwnerId"]
    users = await org.stub.QueryRecords(
        pb.QueryRecordsRequest(
            org="orgs/demo",
            sobject_type="User",
            filters=[
                pb.FieldFilter(
                    field="Username",
                    values=[struct_pb2.Value(string_value="sales@concord-demo.example")],
                )
            ],
        )
    )
    other = users.records[0].id
    listed = await list_changes(org, owner_id=mine)
    handed = event(ids[1], operation=pb.CRM_WRITE_OPERATION_UPDATE, OwnerId=other)
    assert [r.status for r in await apply(org, [handed])] == [OK]
    later = await list_changes(org, listed.next_cursor.token, owner_id=mine)
    assert [(c.type, c.record.id, c.record.is_deleted) for c in later.changes] == [
        (res.CHANGE_TYPE_DELETE, written[1].id, False)
    ]


async def _user_ids(org: Org) -> tuple[str, str]:
    """The integration user's id and another user's."""
    users = await org.stub.QueryRecords(
        pb.QueryRecordsRequest(org="orgs/demo", sobject_type="User", fields=["Username"])
    )
    names = {record.fields["Username"]: record.id for record in users.records}
    return names["admin@concord-demo.example"], names["sales@concord-demo.example"]


async def test_someone_elses_bulk_load_is_read_thin_by_an_owners_listing(org: Org) -> None:
    # 120 Events of another user's with a full 32,000-character Description: 3.8 MB, more
    # than a page of the connector's. An owner's listing reports them as out of its scope and
    # needs none of their fields, so they cost it one small page; its own record comes whole.
    mine, other = await _user_ids(org)
    start = await list_changes(org, owner_id=mine)
    theirs = links(120)
    for first in range(0, len(theirs), 40):
        chunk = theirs[first : first + 40]
        loaded = [event(link, Description="x" * 32000, OwnerId=other) for link in chunk]
        assert [r.status for r in await apply(org, loaded)] == [OK] * len(chunk)
    [own] = links(1)
    [written] = await apply(org, [event(own, Description="mine")])
    listed = await list_changes(
        org, start.next_cursor.token, owner_id=mine, fields=["Concord_Link_Id__c", "Description"]
    )
    assert not listed.has_more
    assert listed.ByteSize() < 100_000
    assert sum(c.type == res.CHANGE_TYPE_DELETE for c in listed.changes) == len(theirs)
    [kept] = [c for c in listed.changes if c.type == res.CHANGE_TYPE_UPSERT]
    assert (kept.record.id, kept.record.fields["Description"]) == (written.id, "mine")


async def test_a_gap_in_the_delete_log_asks_for_a_full_resync(org: Org) -> None:
    await apply(org, [event(link) for link in links(2)])
    listed = await list_changes(org)
    org.admin_post("recycle-bin/purge")
    gap = await list_changes(org, listed.next_cursor.token)
    assert gap.full_resync_required
    assert list(gap.changes) == []
    assert gap.next_cursor.token == ""
    # The full listing that follows starts a cursor the purge no longer affects, once the
    # purge is more than the minute Salesforce rounds `earliestDateAvailable` to behind it.
    full = await list_changes(org)
    assert len(full.changes) == 2
    earlier = datetime.now(UTC) - timedelta(minutes=2)
    org.emulator.emulator.store.set_setting("earliest_delete", earlier.isoformat())
    after = await list_changes(org, full.next_cursor.token)
    assert not after.full_resync_required
    assert list(after.changes) == []


async def test_a_foreign_cursor_is_invalid(org: Org) -> None:
    got = await failure(list_changes(org, "not-ours"))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert got.field_violations[0][0] == "cursor.token"


async def test_search_by_email_and_term(org: Org) -> None:
    contacts = await org.stub.QueryRecords(
        pb.QueryRecordsRequest(
            org="orgs/demo", sobject_type="Contact", fields=["Email", "LastName"], page_size=2
        )
    )
    emails = [r.fields["Email"] for r in contacts.records]
    target = pb.SearchTarget(sobject_type="Contact", fields=["Email"], limit=5)
    found = await org.stub.Search(
        pb.SearchRequest(org="orgs/demo", emails=emails, targets=[target])
    )
    assert sorted(r.fields["Email"] for r in found.records) == sorted(emails)
    assert {r.sobject_type for r in found.records} == {"Contact"}
    by_name = await org.stub.Search(
        pb.SearchRequest(
            org="orgs/demo", terms=[contacts.records[0].fields["LastName"]], targets=[target]
        )
    )
    assert contacts.records[0].id in [r.id for r in by_name.records]


async def test_describe_is_cached_per_org(org: Org) -> None:
    first = await org.stub.DescribeObject(
        pb.DescribeObjectRequest(org="orgs/demo", sobject_type="Event")
    )
    fields = {f.name: f for f in first.object.fields}
    assert fields["Subject"].length == 255
    assert fields["Concord_Link_Id__c"].external_id
    assert "Busy" in [p.value for p in fields["ShowAs"].picklist_values]
    await org.stub.DescribeObject(pb.DescribeObjectRequest(org="orgs/demo", sobject_type="Event"))
    assert org.calls() == {"GET sobjects/Event/describe": 1}


async def test_query_errors_carry_salesforces_code(org: Org) -> None:
    unknown = await failure(
        org.stub.QueryRecords(
            pb.QueryRecordsRequest(org="orgs/demo", sobject_type="Contact", fields=["Nope__c"])
        )
    )
    assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.metadata["salesforce_code"] == "INVALID_FIELD"
    malformed = await failure(
        org.stub.QueryRecords(
            pb.QueryRecordsRequest(
                org="orgs/demo", sobject_type="Contact", order_by="LastName DESC NULLS FIRST, "
            )
        )
    )
    assert malformed.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_budget_is_read_from_the_last_response(org: Org) -> None:
    await apply(org, [event(links(1)[0])])
    budget = (await org.stub.GetBudget(pb.GetBudgetRequest(org="orgs/demo"))).budget
    assert budget.limit == org.emulator.emulator.settings.daily_api_limit
    assert budget.used >= 1
    assert budget.concord_used >= 1
    assert budget.HasField("measure_time")


async def test_only_the_configured_ca_bundle_is_trusted(
    emulator: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine-wide variable names the emulator's CA, and is still not used.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_cert))
    store = SqlOrgStore(
        create_engine(f"sqlite:///{tmp_path}/ca.db"), SecretBox(Fernet.generate_key())
    )
    connection = connection_for(emulator)
    domain_connection = OrgConnection(
        "demo",
        emulator.url,
        AuthFlow.PASSWORD,
        connection.client_id,
        connection.username,
        "",
        True,
        datetime.now(UTC),
        "e",
    )
    untrusting = SalesforceOrgs(store, SalesforceOptions())
    trusting = SalesforceOrgs(store, SalesforceOptions(ca_bundle=str(emulator.ca_cert)))
    try:
        with pytest.raises(SalesforceUnavailable):
            await untrusting.login(domain_connection, connection.secret)
        info = await trusting.login(domain_connection, connection.secret)
        assert info.instance_url == emulator.url
    finally:
        untrusting.close()
        trusting.close()


async def test_search_term_with_sosl_reserved_characters_matches_literally(org: Org) -> None:
    # The emulator once dropped every backslash of a search term, so an escaped `*` searched as
    # a wildcard and escaping was never exercised; it now parses SOSL as Salesforce does. A
    # user's `*` must reach it escaped and match only the literal name.
    salesforce = org.emulator.emulator
    contact = salesforce.org.schema.get("Contact")
    assert contact is not None
    hit = salesforce.org.create(contact, {"LastName": "Widget* (UK)"}, salesforce.admin_user_id).id
    salesforce.org.create(contact, {"LastName": "Widgets UK"}, salesforce.admin_user_id)
    target = pb.SearchTarget(sobject_type="Contact", fields=["LastName"], limit=5)
    found = await org.stub.Search(
        pb.SearchRequest(org="orgs/demo", terms=["Widget* (UK)"], targets=[target])
    )
    assert [r.id for r in found.records] == [hit]


async def test_a_salesforce_edit_made_while_an_update_is_in_flight_is_a_conflict_not_lost(
    org: Org,
) -> None:
    # Found by a fault probe: the version was checked by one call and the write made by
    # another, so whatever Salesforce saved in between was overwritten (20 of 20 edits lost).
    ids = links(20)
    created = await apply(org, [event(link) for link in ids])
    record_ids = [c.id for c in created]
    listed = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo", sobject_type="Event", ids=record_ids, fields=["SystemModstamp"]
        )
    )
    stamps = {r.id: r.system_modstamp for r in listed.records}
    # Salesforce compares to the second: the edit below must land in a later second.
    await asyncio.sleep(1.1)
    updates = []
    for link, record_id in zip(ids, record_ids, strict=True):
        update = event(link, "Moved by Concord", operation=pb.CRM_WRITE_OPERATION_UPDATE)
        update.id = record_id
        update.expected_system_modstamp.CopyFrom(stamps[record_id])
        updates.append(update)
    # The write waits 800 ms at the door; the version check before it has already passed.
    org.fault("latency", path="composite$", method="POST", latency_ms=800, count=1)
    writing = asyncio.create_task(apply(org, updates))
    await asyncio.sleep(0.3)
    session = _salesforce_user(org)
    for record_id in record_ids:
        edited = session.patch(
            f"{org.emulator.url}/services/data/v62.0/sobjects/Event/{record_id}",
            json={"Subject": "Edited in Salesforce"},
        )
        assert edited.status_code == 204
    results = await writing
    assert [r.status for r in results] == [res.WRITE_STATUS_CONFLICT] * 20
    got = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo", sobject_type="Event", ids=record_ids, fields=["Subject"]
        )
    )
    assert {r.fields["Subject"] for r in got.records} == {"Edited in Salesforce"}


async def test_guarded_updates_of_unchanged_records_apply_25_to_a_call(org: Org) -> None:
    ids = links(30)
    created = await apply(org, [event(link) for link in ids])
    listed = await org.stub.GetRecords(
        pb.GetRecordsRequest(
            org="orgs/demo",
            sobject_type="Event",
            ids=[c.id for c in created],
            fields=["SystemModstamp"],
        )
    )
    updates = []
    for link, record in zip(ids, listed.records, strict=True):
        update = event(link, "Moved", operation=pb.CRM_WRITE_OPERATION_UPDATE)
        update.id = record.id
        update.expected_system_modstamp.CopyFrom(record.system_modstamp)
        updates.append(update)
    org.admin_post("reset")
    assert [r.status for r in await apply(org, updates)] == [OK] * 30
    # The version check (one query), two Composite requests of at most 25 updates each, and
    # one reading the records' SystemModstamp back.
    assert org.calls() == {"GET query": 1, "POST composite": 3}


def _salesforce_user(org: Org, username: str = PERSON) -> requests.Session:
    """Someone editing in Salesforce itself: their own session, not Concord's."""
    settings = org.emulator.emulator.settings
    session = requests.Session()
    session.trust_env = False
    session.verify = str(org.emulator.ca_cert)
    token = session.post(
        f"{org.emulator.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "username": username,
            "password": settings.password,
        },
    )
    token.raise_for_status()
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return session


# ---- activities: callers say what, the connector says how ------------------------------------


async def _created(org: Org, sobject_type: str, **values: Any) -> str:
    fields = struct_pb2.Struct()
    fields.update(values)
    write = pb.CrmWrite(
        operation=pb.CRM_WRITE_OPERATION_CREATE, sobject_type=sobject_type, fields=fields
    )
    (result,) = await apply(org, [write])
    assert result.status == OK, result
    return result.id


async def _read(org: Org, sobject_type: str, field: str, value: str, *wanted: str) -> list[Any]:
    response = await org.stub.QueryRecords(
        pb.QueryRecordsRequest(
            org="orgs/demo",
            sobject_type=sobject_type,
            fields=list(wanted),
            filters=[pb.FieldFilter(field=field, values=[struct_pb2.Value(string_value=value)])],
        )
    )
    return [dict(r.fields) for r in response.records]


async def test_activity_links_become_who_what_and_event_relations_once(org: Org) -> None:
    account = await _created(org, "Account", Name="Acme")
    ann = await _created(org, "Contact", LastName="Ann", Email="ann@acme.example")
    bob = await _created(org, "Contact", LastName="Bob", Email="bob@acme.example")
    write = event(links(1)[0])
    write.activity_links.CopyFrom(
        pb.ActivityLinks(who_id=ann, what_id=account, invitee_ids=[ann, bob, bob])
    )
    (created,) = await apply(org, [write])
    assert created.status == OK
    assert created.created
    (stored,) = await _read(org, "Event", "Id", created.id, "WhoId", "WhatId")
    assert (stored["WhoId"], stored["WhatId"]) == (ann, account)
    # The invitee beside WhoId is related once; WhoId has its own relation already.
    relations = await _read(org, "EventRelation", "EventId", created.id, "RelationId")
    assert sorted(r["RelationId"] for r in relations if r["RelationId"] != ann) == [bob]
    # A replay (the answer was lost) finds the Event and adds no second relation.
    (again,) = await apply(org, [write])
    assert again.id == created.id
    assert not again.created
    assert len(await _read(org, "EventRelation", "EventId", created.id, "RelationId")) == len(
        relations
    )


async def test_a_cancelled_activity_is_marked_once_and_a_missing_one_is_not_found(
    org: Org,
) -> None:
    (created,) = await apply(org, [event(links(1)[0], "Offsite")])
    mark = pb.CrmWrite(
        operation=pb.CRM_WRITE_OPERATION_MARK_CANCELLED, sobject_type="Event", id=created.id
    )
    first, second = await apply(org, [mark, mark])
    assert (first.status, second.status) == (OK, OK)
    (stored,) = await _read(org, "Event", "Id", created.id, "Subject")
    assert stored["Subject"] == "Cancelled: Offsite"
    # One deleted in Salesforce meanwhile is not found, not given a subject nobody read.
    (doomed,) = await apply(org, [event(links(1)[0], "Dinner")])
    delete = pb.CrmWrite(
        operation=pb.CRM_WRITE_OPERATION_DELETE, sobject_type="Event", id=doomed.id
    )
    assert [r.status for r in await apply(org, [delete])] == [OK]
    mark.id = doomed.id
    (missing,) = await apply(org, [mark])
    assert missing.status == res.WRITE_STATUS_NOT_FOUND


async def test_activity_links_on_a_contact_or_bad_ids_are_refused(org: Org) -> None:
    contact = pb.CrmWrite(
        operation=pb.CRM_WRITE_OPERATION_UPSERT,
        sobject_type="Contact",
        link_id=links(1)[0],
        activity_links=pb.ActivityLinks(who_id="003000000000001AAA"),
    )
    (refused,) = await apply(org, [contact])
    assert refused.status == res.WRITE_STATUS_INVALID
    write = event(links(1)[0])
    write.activity_links.CopyFrom(pb.ActivityLinks(who_id="'; DROP"))
    failed = await failure(apply(org, [write]))
    assert [f for f, _ in failed.field_violations] == ["writes[0].activity_links.who_id"]
