"""MappingService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import json_format

from concord.common.v1 import resources_pb2
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_mapping.domain.model import (
    MAPPING_ISSUE,
    InvalidRequest,
    Kind,
    TableVersion,
    parse_org_name,
    parse_table_name,
)
from concord_mapping.domain.service import MappingTables
from concord_rpc import Unimplemented

__all__ = ["MappingServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_KIND_ENUMS = {
    Kind.CALENDAR_ITEM: resources_pb2.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: resources_pb2.OBJECT_KIND_TASK,
    Kind.CONTACT: resources_pb2.OBJECT_KIND_CONTACT,
    Kind.EMAIL: resources_pb2.OBJECT_KIND_EMAIL,
}


class MappingServicer(pb_grpc.MappingServiceServicer):
    def __init__(self, tables: MappingTables) -> None:
        self._tables = tables

    async def MapToCrm(self, request: pb.MapToCrmRequest, context: Context) -> pb.MapToCrmResponse:
        parse_org_name(request.org)
        if not request.inputs:
            # Nothing to map needs no table: a session with no changes stays one cheap call.
            return pb.MapToCrmResponse()
        raise Unimplemented("mapping items to Salesforce records", issue=MAPPING_ISSUE)

    async def MapToMail(
        self, request: pb.MapToMailRequest, context: Context
    ) -> pb.MapToMailResponse:
        parse_org_name(request.org)
        if not request.records:
            return pb.MapToMailResponse()
        raise Unimplemented("mapping Salesforce records to items", issue=MAPPING_ISSUE)

    async def GetMappingTable(
        self, request: pb.GetMappingTableRequest, context: Context
    ) -> pb.GetMappingTableResponse:
        name = parse_table_name(request.name)
        if request.version < 0:
            _invalid("version", "must not be negative")
        found = await self._tables.get(name, request.version)
        return pb.GetMappingTableResponse(table=_table_proto(found))

    async def UpdateMappingTable(
        self, request: pb.UpdateMappingTableRequest, context: Context
    ) -> pb.UpdateMappingTableResponse:
        parse_table_name(request.table.name, "table.name")
        # A table is checked against the org's describe before it is stored; both come with #6.
        raise Unimplemented("updating mapping tables", issue=MAPPING_ISSUE)

    async def ListMappingTableVersions(
        self, request: pb.ListMappingTableVersionsRequest, context: Context
    ) -> pb.ListMappingTableVersionsResponse:
        name = parse_table_name(request.name)
        if request.page_size < 0:
            _invalid("page_size", "must not be negative")
        before = 0
        if request.page_token:
            # The token is the version the previous page ended at; pages below it follow.
            if not request.page_token.isdigit():
                _invalid("page_token", "is not a token this service issued")
            before = int(request.page_token)
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        versions, next_before = await self._tables.list_versions(name, before, page_size)
        return pb.ListMappingTableVersionsResponse(
            tables=[_table_proto(v) for v in versions],
            next_page_token=str(next_before) if next_before else "",
        )


def _invalid(field: str, problem: str) -> NoReturn:
    raise InvalidRequest(f"{field} {problem}", field_violations=[(field, problem)])


def _table_proto(found: TableVersion) -> pb.MappingTable:
    table = json_format.ParseDict(dict(found.content), pb.MappingTable())
    table.name = str(found.name)
    table.kind = _KIND_ENUMS[found.name.kind]
    table.version = found.version
    table.is_default = False
    table.update_time.FromDatetime(found.create_time)
    table.update_user_id = found.update_user_id
    table.etag = found.etag
    return table
