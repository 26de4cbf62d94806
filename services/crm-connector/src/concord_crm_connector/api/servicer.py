"""CrmConnectorService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.domain.errors import InvalidRequest
from concord_crm_connector.domain.model import (
    SOBJECT_TYPE,
    AuthFlow,
    ConnectionUpdate,
    OrgConnection,
    parse_connection_name,
    parse_org_name,
)
from concord_crm_connector.domain.service import SALESFORCE_ISSUE, CrmConnector
from concord_rpc import Unimplemented
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


class CrmConnectorServicer(pb_grpc.CrmConnectorServiceServicer):
    def __init__(self, domain: CrmConnector, *, budget_share: float) -> None:
        self._domain = domain
        self._budget_share = budget_share

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: Context
    ) -> pb.ListChangesResponse:
        checks = Violations(InvalidRequest)
        org = checks.name(parse_org_name, request.org, "org")
        _check_sobject_type(checks, request.sobject_type)
        checks.check("page_size", request.page_size >= 0, "must not be negative")
        checks.raise_if_any()
        page = await self._domain.list_changes(
            org, request.sobject_type, request.cursor.token, request.page_size
        )
        return pb.ListChangesResponse(
            next_cursor=resources_pb2.Cursor(
                collection=page.next_cursor.sobject_type, token=page.next_cursor.token
            ),
            has_more=page.has_more,
            full_resync_required=page.full_resync_required,
        )

    async def GetRecords(
        self, request: pb.GetRecordsRequest, context: Context
    ) -> pb.GetRecordsResponse:
        parse_org_name(request.org)
        raise Unimplemented("reading Salesforce records", issue=SALESFORCE_ISSUE)

    async def QueryRecords(
        self, request: pb.QueryRecordsRequest, context: Context
    ) -> pb.QueryRecordsResponse:
        parse_org_name(request.org)
        raise Unimplemented("querying Salesforce records", issue=SALESFORCE_ISSUE)

    async def ApplyBatch(
        self, request: pb.ApplyBatchRequest, context: Context
    ) -> pb.ApplyBatchResponse:
        parse_org_name(request.org)
        if not request.writes:
            # An empty batch costs no API call and has nothing to report; answering it lets a
            # session with nothing to write finish without special-casing this connector.
            return pb.ApplyBatchResponse()
        raise Unimplemented("writing to Salesforce", issue=SALESFORCE_ISSUE)

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        parse_org_name(request.org)
        raise Unimplemented("searching Salesforce", issue=SALESFORCE_ISSUE)

    async def DescribeObject(
        self, request: pb.DescribeObjectRequest, context: Context
    ) -> pb.DescribeObjectResponse:
        parse_org_name(request.org)
        raise Unimplemented("describing Salesforce objects", issue=SALESFORCE_ISSUE)

    async def GetBudget(
        self, request: pb.GetBudgetRequest, context: Context
    ) -> pb.GetBudgetResponse:
        budget = await self._domain.budget(parse_org_name(request.org))
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

    async def UpsertOrgConnection(
        self, request: pb.UpsertOrgConnectionRequest, context: Context
    ) -> pb.UpsertOrgConnectionResponse:
        connection = await self._domain.upsert_connection(_connection_update(request))
        return pb.UpsertOrgConnectionResponse(connection=_connection_proto(connection))

    async def GetOrgConnection(
        self, request: pb.GetOrgConnectionRequest, context: Context
    ) -> pb.GetOrgConnectionResponse:
        connection = await self._domain.get_connection(parse_connection_name(request.name))
        return pb.GetOrgConnectionResponse(connection=_connection_proto(connection))


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
    org = checks.name(parse_connection_name, connection.name, "connection.name")
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
