"""MappingService over gRPC: validate, translate protos <-> domain, call the domain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from concord.common.v1 import resources_pb2
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_mapping.api.conversions import fill_struct, message_to_dict
from concord_mapping.domain.describe import SObjectDescribe
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.mapper import crm_fields_read, map_to_crm, map_to_mail
from concord_mapping.domain.model import (
    InvalidRequest,
    Kind,
    TableName,
    TableVersion,
    parse_org_name,
    parse_table_name,
)
from concord_mapping.domain.service import MappingTables
from concord_mapping.domain.table import Table
from concord_mapping.domain.timezones import iana_zone
from concord_mapping.domain.transforms import Loss

__all__ = ["MappingServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# A bug in one transform must not cost the batch: the item gets this reason and the rest map.
MAPPING_FAILED = "MAPPING_FAILED"
MISSING_PAYLOAD = "MISSING_PAYLOAD"
UNKNOWN_SOBJECT = "UNKNOWN_SOBJECT"
# Fields of MappingTable the server sets; an update's content is everything else.
_OUTPUT_ONLY = (
    "name",
    "kind",
    "version",
    "is_default",
    "update_time",
    "update_user_id",
    "etag",
    "crm_fields_read",
)

_KIND_ENUMS = {
    Kind.CALENDAR_ITEM: resources_pb2.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: resources_pb2.OBJECT_KIND_TASK,
    Kind.CONTACT: resources_pb2.OBJECT_KIND_CONTACT,
    Kind.EMAIL: resources_pb2.OBJECT_KIND_EMAIL,
}
_PAYLOAD_KINDS = {kind.payload: kind for kind in Kind}
# Mapping is CPU work on the server's one event loop: a call of 2,000 records holds it for a
# second or more, and a one-item call from another mailbox's session would wait that long
# behind it (issue #18). Other calls get the loop back after every this many items.
YIELD_EVERY = 50

_log = logging.getLogger(__name__)


class MappingServicer(pb_grpc.MappingServiceServicer):
    def __init__(self, tables: MappingTables) -> None:
        self._tables = tables

    async def MapToCrm(self, request: pb.MapToCrmRequest, context: Context) -> pb.MapToCrmResponse:
        org = parse_org_name(request.org)
        if request.mapping_version < 0:
            _invalid("mapping_version", "must not be negative")
        response = pb.MapToCrmResponse()
        owner_id = request.owner_id
        describes = self._tables.describes
        # Per kind, looked up once per request: the table, its version, its sObject's describe.
        tables: dict[Kind, tuple[Table, int, SObjectDescribe | None]] = {}
        for position, given in enumerate(request.inputs):
            if position % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            item = given.item
            ref = item.ref
            result = response.results.add(ref=ref)
            payload = item.WhichOneof("payload")
            if payload is None:
                _item_error(result, MappingFailure(MISSING_PAYLOAD, "the item has no content"))
                continue
            kind = _PAYLOAD_KINDS[payload]
            if kind not in tables:
                table, version = await self._tables.rules(
                    TableName(org, kind), request.mapping_version
                )
                tables[kind] = (table, version, describes.get(table.target_sobject))
            table, version, describe = tables[kind]
            if position == 0:
                response.mapping_version = version
            try:
                mapped = map_to_crm(table, describe, payload, _json(getattr(item, payload)))
                fields = mapped.fields
                if owner_id:
                    fields["OwnerId"] = owner_id
                # Built in place: copying a finished record would double the protobuf work.
                record = result.record
                record.sobject_type = table.target_sobject
                record.id = given.record_id
                record.link_id = ref.link_id
                fill_struct(record.fields, fields)
            except MappingFailure as failure:
                result.ClearField("record")
                _item_error(result, failure)
                continue
            except Exception as bug:
                # The type only: an exception's text may quote the item's content.
                _log.error("mapping an item failed unexpectedly: %s", type(bug).__name__)
                result.ClearField("record")
                _item_error(result, MappingFailure(MAPPING_FAILED, "the item could not be mapped"))
                continue
            if mapped.losses:
                result.losses.extend(_losses(mapped.losses))
        return response

    async def MapToMail(
        self, request: pb.MapToMailRequest, context: Context
    ) -> pb.MapToMailResponse:
        org = parse_org_name(request.org)
        if request.mapping_version < 0:
            _invalid("mapping_version", "must not be negative")
        mailbox_zone = ""
        if request.time_zone:
            try:
                mailbox_zone = iana_zone(request.time_zone)
            except MappingFailure:
                _invalid("time_zone", "is not an IANA or Windows time zone")
        response = pb.MapToMailResponse()
        if not request.records:
            return response
        by_object = await self._tables.by_object(org, request.mapping_version)
        for position, record in enumerate(request.records):
            if position % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            result = response.results.add(record_id=record.id)
            if record.sobject_type not in by_object:
                _item_error(
                    result,
                    MappingFailure(UNKNOWN_SOBJECT, "no mapping table targets this object"),
                )
                continue
            kind, table, version = by_object[record.sobject_type]
            if position == 0:
                response.mapping_version = version
            try:
                mapped = map_to_mail(
                    table,
                    self._tables.describes.get(table.target_sobject),
                    json_format.MessageToDict(record.fields),
                    mailbox_zone,
                )
                item = resources_pb2.MailItem(
                    ref=resources_pb2.ItemRef(kind=_KIND_ENUMS[kind], link_id=record.link_id)
                )
                json_format.ParseDict({kind.payload: mapped.fields}, item)
            except MappingFailure as failure:
                _item_error(result, failure)
                continue
            except json_format.ParseError:
                _item_error(
                    result,
                    MappingFailure("INVALID_VALUE", "a Salesforce value does not fit the item"),
                )
                continue
            except Exception as bug:
                _log.error("mapping a record failed unexpectedly: %s", type(bug).__name__)
                _item_error(
                    result, MappingFailure(MAPPING_FAILED, "the record could not be mapped")
                )
                continue
            result.item.CopyFrom(item)
            result.losses.extend(_losses(mapped.losses))
        return response

    async def GetMappingTable(
        self, request: pb.GetMappingTableRequest, context: Context
    ) -> pb.GetMappingTableResponse:
        name = parse_table_name(request.name)
        if request.version < 0:
            _invalid("version", "must not be negative")
        found = await self._tables.get(name, request.version)
        return pb.GetMappingTableResponse(table=self._table_proto(found))

    async def UpdateMappingTable(
        self, request: pb.UpdateMappingTableRequest, context: Context
    ) -> pb.UpdateMappingTableResponse:
        name = parse_table_name(request.table.name, "table.name")
        content = json_format.MessageToDict(request.table, preserving_proto_field_name=True)
        for key in _OUTPUT_ONLY:
            content.pop(key, None)
        stored = await self._tables.update(
            name,
            content,
            request.table.etag,
            _caller(context),
            datetime.now(UTC),
            validate_only=request.validate_only,
        )
        return pb.UpdateMappingTableResponse(table=self._table_proto(stored))

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
            tables=[self._table_proto(v) for v in versions],
            next_page_token=str(next_before) if next_before else "",
        )

    def _table_proto(self, found: TableVersion) -> pb.MappingTable:
        table = json_format.ParseDict(dict(found.content), pb.MappingTable())
        table.name = str(found.name)
        table.kind = _KIND_ENUMS[found.name.kind]
        table.version = found.version
        table.is_default = found.is_default
        if found.create_time is not None:
            table.update_time.FromDatetime(found.create_time)
        table.update_user_id = found.update_user_id
        table.etag = found.etag
        table.crm_fields_read.extend(crm_fields_read(self._tables.parsed(found)))
        return table


def _invalid(field: str, problem: str) -> NoReturn:
    raise InvalidRequest(f"{field} {problem}", field_violations=[(field, problem)])


def _json(message: Message) -> dict[str, Any]:
    """The canonical JSON form the tables' paths address: snake_case, every top-level scalar
    present (defaults from a per-type template: converting only the set fields is the cheap
    part of MessageToDict, and `message_to_dict` does that part with per-type plans)."""
    data = message_to_dict(message)
    name = message.DESCRIPTOR.full_name
    if name not in _DEFAULTS:
        _DEFAULTS[name] = json_format.MessageToDict(
            type(message)(),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    return _DEFAULTS[name] | data


_DEFAULTS: dict[str, dict[str, Any]] = {}


def _item_error(result: pb.MappedRecord | pb.MappedItem, failure: MappingFailure) -> None:
    result.error.CopyFrom(
        pb.MappingError(reason=failure.reason, message=failure.message, field=failure.field)
    )


def _losses(losses: list[Loss]) -> list[resources_pb2.FieldLoss]:
    return [
        resources_pb2.FieldLoss(
            field=loss.field,
            kind=resources_pb2.FieldLossKind.Value(loss.kind.value),
            detail=loss.detail,
        )
        for loss in losses
    ]


def _caller(context: Context) -> str:
    """Who asked, when the gateway says so; the mapping service does not authenticate."""
    metadata: Mapping[str, Any] = dict(context.invocation_metadata() or ())
    return str(metadata.get("x-concord-user-id", ""))
