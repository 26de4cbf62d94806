"""crm-connector in memory: Salesforce records by id, written and read as crm-connector does.

What it keeps honest, because Concord's services depend on it: a write with a link id is an
upsert by that id (`Concord_Link_Id__c`), an update by record id changes only the fields sent,
Contacts and Leads need a LastName, a search matches email fields for `emails` and any text
field for `terms`, queries filter by equality, reads return only the fields asked for
(relationship fields such as `Account.Name` by their first part, as Salesforce nests them).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_rpc import FailedPrecondition, NotFound
from concord_testing.peers.base import Peer, PeerDown

__all__ = ["ID_PREFIXES", "LINK_FIELD", "CrmPeer", "crm_record"]

LINK_FIELD = "Concord_Link_Id__c"
# Salesforce's key prefixes for the objects Concord writes.
ID_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "Opportunity": "006",
    "Event": "00U",
    "Task": "00T",
    "EmailMessage": "02s",
    "EmailMessageRelation": "0Rc",
    "Attachment": "00P",
}
_NAMED = ("Contact", "Lead")


def crm_record(sobject_type: str, record_id: str, **fields: Any) -> res.CrmRecord:
    """A record as crm-connector returns it: `Id` among its fields too."""
    values = struct_pb2.Struct()
    values.update({"Id": record_id, **fields})
    link_id = fields.get(LINK_FIELD)
    return res.CrmRecord(
        sobject_type=sobject_type,
        id=record_id,
        fields=values,
        link_id=link_id if isinstance(link_id, str) else "",
    )


def _values(record: res.CrmRecord) -> dict[str, Any]:
    values: dict[str, Any] = json_format.MessageToDict(record.fields)
    return values


def _project(record: res.CrmRecord, fields: Iterable[str]) -> res.CrmRecord:
    """The record with only `fields` (and `Id`), as a SOQL query selecting them returns it."""
    values = _values(record)
    wanted = {name.partition(".")[0] for name in fields}
    projected = crm_record(
        record.sobject_type, record.id, **{n: values[n] for n in wanted if n in values}
    )
    projected.link_id = record.link_id
    projected.system_modstamp.CopyFrom(record.system_modstamp)
    return projected


class CrmPeer(Peer, crm_grpc.CrmConnectorServiceServicer):
    """Salesforce records in memory behind crm-connector's API.

    Tests seed `records` with `add`, read them with `of`, and steer it with `describes` (per
    object), `unconnected` (orgs without a connection), `budget`, `change_pages` (what
    ListChanges answers, oldest first), `refuse` (writes Salesforce refuses),
    `lose_answers_after` (commit a batch, then fail its answer), and `delay`.
    """

    service = "crm-connector"
    full_name = crm.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name
    _add_to_server = crm_grpc.add_CrmConnectorServiceServicer_to_server

    def __init__(self, records: Iterable[res.CrmRecord] = ()) -> None:
        super().__init__()
        self.records: dict[str, res.CrmRecord] = {}
        self.describes: dict[str, crm.ObjectDescription] = {}
        self.unconnected: set[str] = set()
        self.budget = res.ApiBudget(limit=15000, concord_share=0.5)
        self.change_pages: list[crm.ListChangesResponse] = []
        self.refusals: dict[str, tuple[res.WriteStatus.ValueType, crm.CrmError]] = {}
        #: With a number n: the next n batches are answered, the one after is committed and its
        #: answer lost (UNAVAILABLE), as when the connection drops after Salesforce committed.
        self.lose_answers_after: int | None = None
        self.delay = 0.0
        self._ids = itertools.count(1)
        self.add(*records)

    # -- the test's side -------------------------------------------------------------------

    def add(self, *records: res.CrmRecord) -> None:
        for record in records:
            self.records[record.id] = record

    def of(self, sobject_type: str) -> list[dict[str, Any]]:
        """The records of one object as field dicts (with `Id`), in creation order."""
        return [_values(r) for r in self.records.values() if r.sobject_type == sobject_type]

    def refuse(
        self,
        error: crm.CrmError,
        key: str = "*",
        status: res.WriteStatus.ValueType = res.WRITE_STATUS_INVALID,
    ) -> None:
        """Writes with this link id or record id (`*`: every write) fail with `error`, as
        Salesforce refuses them (a validation rule, a value too long); `refusals.clear()` ends it.
        """
        self.refusals[key] = (status, error)

    def _connected(self, org: str) -> None:
        if org.removeprefix("orgs/") in self.unconnected:
            raise FailedPrecondition(f"no connection for {org}")

    # -- the API ---------------------------------------------------------------------------

    async def Search(self, request: crm.SearchRequest, context: Any) -> crm.SearchResponse:
        self._enter("Search", request)
        emails = {e.lower() for e in request.emails}
        terms = [t.lower() for t in request.terms]
        found = []
        for target in request.targets:
            for record in self.records.values():
                if record.sobject_type != target.sobject_type:
                    continue
                values = _values(record)
                text = [v.lower() for v in values.values() if isinstance(v, str)]
                if str(values.get("Email", "")).lower() in emails or any(
                    t in v for t in terms for v in text
                ):
                    found.append(_project(record, target.fields))
        return crm.SearchResponse(records=found)

    async def QueryRecords(
        self, request: crm.QueryRecordsRequest, context: Any
    ) -> crm.QueryRecordsResponse:
        self._enter("QueryRecords", request)
        found = []
        for record in self.records.values():
            if record.sobject_type != request.sobject_type:
                continue
            values = _values(record)
            if all(
                values.get(f.field)
                in json_format.MessageToDict(struct_pb2.ListValue(values=f.values))
                for f in request.filters
            ):
                found.append(_project(record, request.fields))
        return crm.QueryRecordsResponse(records=found)

    async def GetRecords(
        self, request: crm.GetRecordsRequest, context: Any
    ) -> crm.GetRecordsResponse:
        self._enter("GetRecords", request)
        return crm.GetRecordsResponse(
            records=[
                _project(self.records[i], request.fields or _values(self.records[i]))
                for i in request.ids
                if i in self.records and self.records[i].sobject_type == request.sobject_type
            ]
        )

    async def ApplyBatch(
        self, request: crm.ApplyBatchRequest, context: Any
    ) -> crm.ApplyBatchResponse:
        self._enter("ApplyBatch", request)
        self._connected(request.org)
        await asyncio.sleep(self.delay)
        results = [self._write(write) for write in request.writes]
        await asyncio.sleep(self.delay)
        if self.lose_answers_after is not None:
            if self.lose_answers_after == 0:
                self.lose_answers_after = None
                raise PeerDown("connection reset after Salesforce committed the batch")
            self.lose_answers_after -= 1
        return crm.ApplyBatchResponse(results=results)

    def _write(self, write: crm.CrmWrite) -> crm.CrmWriteResult:
        values = json_format.MessageToDict(write.fields)
        refused = next(
            (self.refusals[k] for k in (write.link_id, write.id, "*") if k in self.refusals), None
        )
        if refused is not None:
            status, error = refused
            return crm.CrmWriteResult(
                link_id=write.link_id, id=write.id, status=status, errors=[error]
            )
        if write.sobject_type in _NAMED and "LastName" in values and not values["LastName"]:
            return crm.CrmWriteResult(
                link_id=write.link_id,
                status=res.WRITE_STATUS_INVALID,
                errors=[crm.CrmError(code="REQUIRED_FIELD_MISSING", fields=["LastName"])],
            )
        if write.operation == crm.CRM_WRITE_OPERATION_DELETE:
            self.records.pop(write.id, None)
            return crm.CrmWriteResult(id=write.id, status=res.WRITE_STATUS_OK)
        existing = self._linked(write.sobject_type, write.link_id) or self.records.get(write.id)
        if existing is not None:
            self.records[existing.id] = crm_record(
                existing.sobject_type, existing.id, **{**_values(existing), **values}
            )
            return crm.CrmWriteResult(
                link_id=write.link_id, id=existing.id, status=res.WRITE_STATUS_OK, created=False
            )
        if write.operation == crm.CRM_WRITE_OPERATION_UPDATE:
            return crm.CrmWriteResult(
                id=write.id,
                status=res.WRITE_STATUS_NOT_FOUND,
                errors=[crm.CrmError(code="ENTITY_IS_DELETED")],
            )
        record_id = f"{ID_PREFIXES.get(write.sobject_type, '0XX')}{next(self._ids):015d}"
        if write.sobject_type in _NAMED:
            name = " ".join(filter(None, [values.get("FirstName"), values.get("LastName")]))
            values = {"Name": name, **values}
        if write.link_id:
            values[LINK_FIELD] = write.link_id
        self.add(crm_record(write.sobject_type, record_id, **values))
        return crm.CrmWriteResult(
            link_id=write.link_id, id=record_id, status=res.WRITE_STATUS_OK, created=True
        )

    def _linked(self, sobject_type: str, link_id: str) -> res.CrmRecord | None:
        if not link_id:
            return None
        for record in self.records.values():
            if record.sobject_type == sobject_type and _values(record).get(LINK_FIELD) == link_id:
                return record
        return None

    async def DescribeObject(
        self, request: crm.DescribeObjectRequest, context: Any
    ) -> crm.DescribeObjectResponse:
        self._enter("DescribeObject", request)
        self._connected(request.org)
        described = self.describes.get(request.sobject_type)
        if described is None:
            raise NotFound(f"no object {request.sobject_type}")
        return crm.DescribeObjectResponse(object=described)

    async def GetBudget(self, request: crm.GetBudgetRequest, context: Any) -> crm.GetBudgetResponse:
        self._enter("GetBudget", request)
        budget = res.ApiBudget()
        budget.CopyFrom(self.budget)
        budget.org = request.org
        return crm.GetBudgetResponse(budget=budget)

    async def ListChanges(
        self, request: crm.ListChangesRequest, context: Any
    ) -> crm.ListChangesResponse:
        self._enter("ListChanges", request)
        if self.change_pages:
            return self.change_pages.pop(0)
        return crm.ListChangesResponse(next_cursor=request.cursor)


def describes(
    objects: Mapping[str, Iterable[crm.FieldDescription]],
) -> dict[str, crm.ObjectDescription]:
    """ObjectDescriptions by name from their fields."""
    return {
        name: crm.ObjectDescription(name=name, fields=list(fields))
        for name, fields in objects.items()
    }
