"""A fake crm-connector served in process: the linker's gRPC CRM adapter talks to it as to
the real one, over Search, QueryRecords, GetRecords and ApplyBatch."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from concord.common.v1 import resources_pb2
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_testing import serving_in_process

CRM_SERVICE = crm.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name


def record(sobject_type: str, record_id: str, **fields: Any) -> resources_pb2.CrmRecord:
    values = struct_pb2.Struct()
    values.update({"Id": record_id, **fields})
    return resources_pb2.CrmRecord(sobject_type=sobject_type, id=record_id, fields=values)


def _values(rec: resources_pb2.CrmRecord) -> dict[str, Any]:
    values: dict[str, Any] = json_format.MessageToDict(rec.fields)
    return values


def _project(rec: resources_pb2.CrmRecord, fields: list[str]) -> resources_pb2.CrmRecord:
    values = _values(rec)
    # Relationship fields (`Account.Name`) come back nested, as Salesforce returns them.
    wanted = {f.partition(".")[0] for f in fields}
    picked = {f: values[f] for f in wanted if f in values}
    return record(rec.sobject_type, rec.id, **picked)


class FakeCrmConnector(crm_grpc.CrmConnectorServiceServicer):
    """SOSL-ish search (email fields for `emails`, any text field for `terms`), equality
    filters, upserts by `link_id`; it answers UNAVAILABLE while `down` is set."""

    def __init__(self) -> None:
        self.records: list[resources_pb2.CrmRecord] = []
        self.calls: Counter[str] = Counter()
        self.requests: list[Any] = []
        self.down = False
        self._ids = itertools.count(1)
        self._links: dict[str, str] = {}

    async def _enter(self, name: str, request: Any, context: Any) -> None:
        self.calls[name] += 1
        self.requests.append(request)
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "salesforce is down")

    async def Search(self, request: crm.SearchRequest, context: Any) -> crm.SearchResponse:
        await self._enter("Search", request, context)
        emails = {e.lower() for e in request.emails}
        terms = [t.lower() for t in request.terms]
        found = []
        for target in request.targets:
            for rec in self.records:
                if rec.sobject_type != target.sobject_type:
                    continue
                values = _values(rec)
                text = [str(v).lower() for v in values.values() if isinstance(v, str)]
                if str(values.get("Email", "")).lower() in emails or any(
                    t in v for t in terms for v in text
                ):
                    found.append(_project(rec, list(target.fields)))
        return crm.SearchResponse(records=found)

    async def QueryRecords(
        self, request: crm.QueryRecordsRequest, context: Any
    ) -> crm.QueryRecordsResponse:
        await self._enter("QueryRecords", request, context)
        found = []
        for rec in self.records:
            if rec.sobject_type != request.sobject_type:
                continue
            values = _values(rec)
            if all(
                values.get(f.field)
                in json_format.MessageToDict(struct_pb2.ListValue(values=f.values))
                for f in request.filters
            ):
                found.append(_project(rec, list(request.fields)))
        return crm.QueryRecordsResponse(records=found)

    async def GetRecords(
        self, request: crm.GetRecordsRequest, context: Any
    ) -> crm.GetRecordsResponse:
        await self._enter("GetRecords", request, context)
        found = [
            _project(r, list(request.fields))
            for r in self.records
            if r.sobject_type == request.sobject_type and r.id in set(request.ids)
        ]
        return crm.GetRecordsResponse(records=found)

    async def ApplyBatch(
        self, request: crm.ApplyBatchRequest, context: Any
    ) -> crm.ApplyBatchResponse:
        await self._enter("ApplyBatch", request, context)
        results = []
        for write in request.writes:
            values = json_format.MessageToDict(write.fields)
            if "LastName" in values and not values["LastName"]:
                results.append(
                    crm.CrmWriteResult(
                        status=resources_pb2.WRITE_STATUS_INVALID,
                        errors=[crm.CrmError(code="REQUIRED_FIELD_MISSING", fields=["LastName"])],
                    )
                )
                continue
            if write.operation == crm.CRM_WRITE_OPERATION_UPDATE:
                for index, rec in enumerate(self.records):
                    if rec.id == write.id:
                        self.records[index] = record(
                            rec.sobject_type, rec.id, **{**_values(rec), **values}
                        )
                results.append(
                    crm.CrmWriteResult(id=write.id, status=resources_pb2.WRITE_STATUS_OK)
                )
                continue
            created = write.link_id not in self._links
            if created:
                prefix = {"Contact": "003", "Lead": "00Q", "Account": "001"}[write.sobject_type]
                record_id = f"{prefix}{next(self._ids):015d}"
                self._links[write.link_id] = record_id
                name = " ".join(filter(None, [values.get("FirstName"), values.get("LastName")]))
                self.records.append(
                    record(write.sobject_type, record_id, **{"Name": name, **values})
                )
            results.append(
                crm.CrmWriteResult(
                    link_id=write.link_id,
                    id=self._links[write.link_id],
                    status=resources_pb2.WRITE_STATUS_OK,
                    created=created,
                )
            )
        return crm.ApplyBatchResponse(results=results)


@pytest.fixture
def fake_crm() -> FakeCrmConnector:
    return FakeCrmConnector()


@pytest.fixture
async def crm_stub(fake_crm: FakeCrmConnector) -> AsyncIterator[crm_grpc.CrmConnectorServiceStub]:
    async with serving_in_process(
        "crm-connector",
        CRM_SERVICE,
        lambda server: crm_grpc.add_CrmConnectorServiceServicer_to_server(fake_crm, server),
    ) as chan:
        yield crm_grpc.CrmConnectorServiceStub(chan)
