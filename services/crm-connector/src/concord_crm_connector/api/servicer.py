"""CrmConnectorService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.changes.model import StreamMode
from concord_crm_connector.changes.status import StreamStatus
from concord_crm_connector.domain.errors import InvalidRequest
from concord_crm_connector.domain.model import (
    SOBJECT_TYPE,
    ActivityLinks,
    AuthFlow,
    ConnectionUpdate,
    FieldFilter,
    OrgConnection,
    Record,
    RecordWrite,
    SearchTarget,
    WriteOperation,
    WriteStatus,
    parse_connection_name,
    parse_org_name,
)
from concord_crm_connector.domain.service import CrmConnector
from concord_rpc.identity import require_org
from concord_rpc.requests import Violations

__all__ = ["CrmConnectorServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

_AUTH_FLOWS = {
    pb.AUTH_FLOW_JWT_BEARER: AuthFlow.JWT_BEARER,
    pb.AUTH_FLOW_CLIENT_CREDENTIALS: AuthFlow.CLIENT_CREDENTIALS,
    pb.AUTH_FLOW_REFRESH_TOKEN: AuthFlow.REFRESH_TOKEN,
    pb.AUTH_FLOW_PASSWORD: AuthFlow.PASSWORD,
}
_AUTH_FLOW_ENUMS = {flow: enum for enum, flow in _AUTH_FLOWS.items()}
_OPERATIONS = {
    pb.CRM_WRITE_OPERATION_CREATE: WriteOperation.CREATE,
    pb.CRM_WRITE_OPERATION_UPDATE: WriteOperation.UPDATE,
    pb.CRM_WRITE_OPERATION_UPSERT: WriteOperation.UPSERT,
    pb.CRM_WRITE_OPERATION_DELETE: WriteOperation.DELETE,
    pb.CRM_WRITE_OPERATION_MARK_CANCELLED: WriteOperation.MARK_CANCELLED,
}
_STATUSES = {
    WriteStatus.OK: resources_pb2.WRITE_STATUS_OK,
    WriteStatus.CONFLICT: resources_pb2.WRITE_STATUS_CONFLICT,
    WriteStatus.NOT_FOUND: resources_pb2.WRITE_STATUS_NOT_FOUND,
    WriteStatus.INVALID: resources_pb2.WRITE_STATUS_INVALID,
    WriteStatus.RETRYABLE: resources_pb2.WRITE_STATUS_RETRYABLE,
    WriteStatus.FAILED: resources_pb2.WRITE_STATUS_FAILED,
    WriteStatus.ROLLED_BACK: resources_pb2.WRITE_STATUS_ROLLED_BACK,
}
_STREAM_STATES = {
    StreamMode.OFF: resources_pb2.CHANGE_STREAM_STATE_OFF,
    StreamMode.STARTING: resources_pb2.CHANGE_STREAM_STATE_STARTING,
    StreamMode.STREAMING: resources_pb2.CHANGE_STREAM_STATE_STREAMING,
    StreamMode.FAILING: resources_pb2.CHANGE_STREAM_STATE_FAILING,
    StreamMode.SILENT: resources_pb2.CHANGE_STREAM_STATE_SILENT,
    # A replica on standby never reports; should one, the org's stream is not its to show.
    StreamMode.STANDBY: resources_pb2.CHANGE_STREAM_STATE_SILENT,
}
_RECORD_ID = re.compile(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?")


def _org_name(name: str, field: str = "org") -> str:
    """The org id of `orgs/{org}`, for a caller who acts for that org (concord_rpc.identity):
    this service holds every org's Salesforce credentials, so no call crosses orgs."""
    return require_org(parse_org_name(name, field))


def _connection_name(name: str, field: str = "name") -> str:
    """The org id of `orgs/{org}/connection`, for a caller who acts for that org."""
    return require_org(parse_connection_name(name, field))


# How many records of a listing are converted between turns of the event loop.
TURN_EVERY = 100


class CrmConnectorServicer(pb_grpc.CrmConnectorServiceServicer):
    def __init__(self, domain: CrmConnector, *, budget_share: float, streams: StreamStatus) -> None:
        self._domain = domain
        self._budget_share = budget_share
        self._streams = streams

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: Context
    ) -> pb.ListChangesResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        _check_sobject_type(checks, request.sobject_type)
        checks.check("page_size", request.page_size >= 0, "must not be negative")
        checks.check(
            "owner_id",
            not request.owner_id or bool(_RECORD_ID.fullmatch(request.owner_id)),
            "must be a Salesforce User Id",
        )
        checks.raise_if_any()
        page = await self._domain.list_changes(
            org,
            request.sobject_type,
            request.cursor.token,
            request.page_size,
            list(request.fields),
            request.owner_id,
        )
        changes = []
        for count, change in enumerate(page.changes):
            if count and count % TURN_EVERY == 0:
                # 2,000 records of every field are a second of protobuf work: other calls
                # (another mailbox's small listing) get the event loop back meanwhile.
                await asyncio.sleep(0)
            changes.append(
                resources_pb2.CrmChange(
                    type=resources_pb2.CHANGE_TYPE_DELETE
                    if change.deleted
                    else resources_pb2.CHANGE_TYPE_UPSERT,
                    record=_record_proto(change.record),
                )
            )
        return pb.ListChangesResponse(
            changes=changes,
            next_cursor=resources_pb2.Cursor(
                collection=page.next_cursor.sobject_type, token=page.next_cursor.token
            ),
            has_more=page.has_more,
            full_resync_required=page.full_resync_required,
        )

    async def GetRecords(
        self, request: pb.GetRecordsRequest, context: Context
    ) -> pb.GetRecordsResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        _check_sobject_type(checks, request.sobject_type)
        checks.check("ids", 0 < len(request.ids) <= 200, "between 1 and 200 ids")
        checks.check(
            "ids", all(_RECORD_ID.fullmatch(i) for i in request.ids), "must be Salesforce Ids"
        )
        checks.raise_if_any()
        records = await self._domain.get_records(
            org, request.sobject_type, list(request.ids), list(request.fields)
        )
        found = {r.id[:15] for r in records}
        return pb.GetRecordsResponse(
            records=[_record_proto(r) for r in records],
            not_found_ids=[i for i in request.ids if i[:15] not in found],
        )

    async def QueryRecords(
        self, request: pb.QueryRecordsRequest, context: Context
    ) -> pb.QueryRecordsResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        _check_sobject_type(checks, request.sobject_type)
        checks.check("page_size", request.page_size >= 0, "must not be negative")
        for number, item in enumerate(request.filters):
            checks.check(f"filters[{number}].values", len(item.values) > 0, "is required")
        checks.raise_if_any()
        filters = [
            FieldFilter(f.field, tuple(json_format.MessageToDict(v) for v in f.values))
            for f in request.filters
        ]
        page = await self._domain.query_records(
            org,
            request.sobject_type,
            list(request.fields),
            filters,
            request.order_by,
            request.page_size,
            request.page_token,
        )
        return pb.QueryRecordsResponse(
            records=[_record_proto(r) for r in page.records], next_page_token=page.next_page_token
        )

    async def ApplyBatch(
        self, request: pb.ApplyBatchRequest, context: Context
    ) -> pb.ApplyBatchResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        writes = []
        for number, write in enumerate(request.writes):
            operation = _OPERATIONS.get(write.operation)
            if operation is None:
                checks.add(f"writes[{number}].operation", "is required")
            if not SOBJECT_TYPE.fullmatch(write.sobject_type):
                checks.add(f"writes[{number}].sobject_type", "must be a Salesforce API name")
            if operation is None:
                continue
            expected = (
                write.expected_system_modstamp.ToDatetime(tzinfo=UTC)
                if write.HasField("expected_system_modstamp")
                else None
            )
            writes.append(
                RecordWrite(
                    operation=operation,
                    sobject_type=write.sobject_type,
                    id=write.id,
                    link_id=write.link_id,
                    fields=_json_values(json_format.MessageToDict(write.fields)),
                    fields_to_null=tuple(write.fields_to_null),
                    expected_system_modstamp=expected,
                    links=_activity_links(write, number, checks),
                )
            )
        checks.check(
            "writes",
            not request.all_or_none or len(request.writes) <= 1000,
            "an all-or-none batch holds at most 1,000 writes (one Composite call)",
        )
        checks.raise_if_any()
        outcomes = await self._domain.apply_batch(org, writes, request.all_or_none)
        return pb.ApplyBatchResponse(
            results=[
                pb.CrmWriteResult(
                    link_id=outcome.link_id or write.link_id,
                    id=outcome.id,
                    status=_STATUSES[outcome.status],
                    created=outcome.created,
                    system_modstamp=(
                        _timestamp(outcome.system_modstamp)
                        if outcome.system_modstamp is not None
                        else None
                    ),
                    errors=[
                        pb.CrmError(code=e.code, message=e.message, fields=list(e.fields))
                        for e in outcome.errors
                    ],
                )
                for write, outcome in zip(writes, outcomes, strict=True)
            ]
        )

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        checks.check("targets", len(request.targets) > 0, "is required")
        for number, target in enumerate(request.targets):
            if not SOBJECT_TYPE.fullmatch(target.sobject_type):
                checks.add(f"targets[{number}].sobject_type", "must be a Salesforce API name")
        checks.raise_if_any()
        targets = [
            SearchTarget(t.sobject_type, tuple(t.fields), max(t.limit, 0)) for t in request.targets
        ]
        records = await self._domain.search(
            org,
            [e for e in request.emails if e.strip()],
            [t for t in request.terms if len(t.strip()) >= 2],
            targets,
        )
        return pb.SearchResponse(records=[_record_proto(r) for r in records])

    async def DescribeObject(
        self, request: pb.DescribeObjectRequest, context: Context
    ) -> pb.DescribeObjectResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(_org_name, request.org, "org")
        _check_sobject_type(checks, request.sobject_type)
        checks.raise_if_any()
        described = await self._domain.describe(org, request.sobject_type)
        return pb.DescribeObjectResponse(
            object=pb.ObjectDescription(
                name=described.name,
                label=described.label,
                createable=described.createable,
                updateable=described.updateable,
                deletable=described.deletable,
                fields=[
                    pb.FieldDescription(
                        name=f.name,
                        label=f.label,
                        type=f.type,
                        length=f.length,
                        createable=f.createable,
                        updateable=f.updateable,
                        nillable=f.nillable,
                        picklist_values=[
                            pb.PicklistValue(
                                value=p.value,
                                label=p.label,
                                active=p.active,
                                default_value=p.default_value,
                            )
                            for p in f.picklist_values
                        ],
                        reference_to=list(f.reference_to),
                        external_id=f.external_id,
                        unique=f.unique,
                        custom=f.custom,
                    )
                    for f in described.fields
                ],
            )
        )

    async def GetBudget(
        self, request: pb.GetBudgetRequest, context: Context
    ) -> pb.GetBudgetResponse:
        budget = await self._domain.budget(_org_name(request.org))
        message = resources_pb2.ApiBudget(
            org=request.org,
            used=budget.used,
            limit=budget.limit,
            concord_share=self._budget_share,
            concord_used=budget.concord_used,
        )
        if budget.measure_time is not None:
            message.measure_time.CopyFrom(_timestamp(budget.measure_time))
        return pb.GetBudgetResponse(budget=message)

    async def GetChangeStream(
        self, request: pb.GetChangeStreamRequest, context: Context
    ) -> pb.GetChangeStreamResponse:
        report = await self._streams.of(_org_name(request.org))
        state = report.state
        message = resources_pb2.ChangeStream(
            org=request.org, state=_STREAM_STATES[state.mode], reason=state.reason
        )
        if state.last_commit is not None:
            message.last_commit_time.CopyFrom(_timestamp(state.last_commit))
        if state.last_event is not None:
            message.last_event_time.CopyFrom(_timestamp(state.last_event))
        if state.lag is not None:
            message.lag.FromTimedelta(state.lag)
        if state.resync_time is not None:
            message.resync_reason = state.resync_reason
            message.resync_time.CopyFrom(_timestamp(state.resync_time))
        if report.report_time is not None:
            message.report_time.CopyFrom(_timestamp(report.report_time))
        return pb.GetChangeStreamResponse(stream=message)

    async def UpsertOrgConnection(
        self, request: pb.UpsertOrgConnectionRequest, context: Context
    ) -> pb.UpsertOrgConnectionResponse:
        connection = await self._domain.upsert_connection(_connection_update(request))
        return pb.UpsertOrgConnectionResponse(connection=_connection_proto(connection))

    async def GetOrgConnection(
        self, request: pb.GetOrgConnectionRequest, context: Context
    ) -> pb.GetOrgConnectionResponse:
        connection = await self._domain.get_connection(_connection_name(request.name))
        return pb.GetOrgConnectionResponse(connection=_connection_proto(connection))


def _record_proto(record: Record) -> resources_pb2.CrmRecord:
    message = resources_pb2.CrmRecord(
        sobject_type=record.sobject_type,
        id=record.id,
        link_id=record.link_id,
        is_deleted=record.is_deleted,
        last_modified_by_concord=record.last_modified_by_concord,
    )
    if record.fields:
        message.fields.update(record.fields)
    if record.system_modstamp is not None:
        message.system_modstamp.CopyFrom(_timestamp(record.system_modstamp))
    return message


def _json_values(values: dict[str, Any]) -> dict[str, Any]:
    """Struct numbers are doubles; whole ones go to Salesforce as integers (`60`, not `60.0`)."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}


def _check_sobject_type(checks: Violations, sobject_type: str) -> None:
    if not sobject_type:
        checks.add("sobject_type", "is required")
    elif not SOBJECT_TYPE.fullmatch(sobject_type):
        checks.add("sobject_type", "must be a Salesforce API name such as `Event`")


def _connection_update(request: pb.UpsertOrgConnectionRequest) -> ConnectionUpdate:
    checks = Violations(InvalidRequest)
    if not request.HasField("connection"):
        checks.add("connection", "is required")
        raise checks.error()
    connection = request.connection
    org = checks.name(_connection_name, connection.name, "connection.name")
    checks.check(
        "connection.login_url",
        connection.login_url.startswith(("https://", "http://")),
        "must be an http(s) URL",
    )
    flow = _AUTH_FLOWS.get(connection.auth_flow)
    if flow is None:
        checks.add("connection.auth_flow", "is required")
    checks.require("connection.client_id", connection.client_id)
    if checks or flow is None:
        raise checks.error()
    return ConnectionUpdate(
        org=org,
        login_url=connection.login_url,
        auth_flow=flow,
        client_id=connection.client_id,
        username=connection.username,
        api_version=connection.api_version,
        secret=connection.secret or None,
        expected_etag=connection.etag or None,
        request_id=request.request_id or None,
    )


def _connection_proto(connection: OrgConnection) -> pb.OrgConnection:
    return pb.OrgConnection(
        name=f"orgs/{connection.org}/connection",
        login_url=connection.login_url,
        instance_url=connection.instance_url,
        auth_flow=_AUTH_FLOW_ENUMS[connection.auth_flow],
        client_id=connection.client_id,
        username=connection.username,
        api_version=connection.api_version,
        has_secret=connection.has_secret,
        organization_id=connection.organization_id,
        update_time=_timestamp(connection.update_time),
        etag=connection.etag,
    )


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _activity_links(write: pb.CrmWrite, number: int, checks: Violations) -> ActivityLinks | None:
    if not write.HasField("activity_links"):
        return None
    given = write.activity_links
    where = f"writes[{number}].activity_links"
    for field, value in (("who_id", given.who_id), ("what_id", given.what_id)):
        if value and not _RECORD_ID.fullmatch(value):
            checks.add(f"{where}.{field}", "must be a Salesforce record Id")
    for index, invitee in enumerate(given.invitee_ids):
        if not _RECORD_ID.fullmatch(invitee):
            checks.add(f"{where}.invitee_ids[{index}]", "must be a Salesforce record Id")
    return ActivityLinks(given.who_id, given.what_id, tuple(given.invitee_ids))
