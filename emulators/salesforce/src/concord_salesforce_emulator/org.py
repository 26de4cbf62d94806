"""One emulated org: validation from the describes, writes, the recycle bin and change logs.

Every operation is checked in full before anything is written, so a failed request leaves no
trace, and `allOrNone` batches are all-or-nothing by construction.

Requests are served on worker threads. Writes take the org's write lock (`writing`) while they
plan and commit, so a batch is checked against the state it commits onto; an all-or-none
Composite (`transaction`) holds it from its first write to its end. Reads take no lock: they
copy what they iterate under the store's lock, and an open transaction's writes stay hidden
from them until it commits (`OrgStore.hide`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from concord_salesforce_emulator import ids, timefmt
from concord_salesforce_emulator.errors import SalesforceError, not_found
from concord_salesforce_emulator.schema import SYSTEM_FIELDS, Schema, SObjectType
from concord_salesforce_emulator.soql import MODSTAMP, IndexAccess
from concord_salesforce_emulator.store import Change, OrgStore, StoredRecord

_STRING_TYPES = frozenset(
    {
        "string",
        "textarea",
        "email",
        "phone",
        "url",
        "picklist",
        "multipicklist",
        "combobox",
        "encryptedstring",
    }
)
# getDeleted answers for this long; older deletes are gone (`earliestDateAvailable`).
DELETE_LOG_DAYS = 15
ROLLED_BACK = SalesforceError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
)


@dataclass
class WriteResult:
    id: str
    created: bool


@dataclass
class _Planned:
    record: StoredRecord
    created: bool


@dataclass
class Transaction:
    """An all-or-none Composite: rolled back at its end when `rollback` is set by then."""

    rollback: bool = False
    locked: bool = False  # it has written, so it holds the write lock and journals


class _Batch(dict[str, StoredRecord]):
    """The records a write batch has planned so far, by id, and which of them hold each value of
    a unique field: a record's uniqueness check looks its value up instead of comparing it with
    every record planned before it (200 records to a Collections call made that 20,000)."""

    def __init__(self) -> None:
        super().__init__()
        self._holders: dict[tuple[str, str], dict[str, set[str]]] = {}

    def holders(self, sobject: str, field_name: str, value: str) -> set[str]:
        """Ids of the planned records of `sobject` whose `field_name` is `value` (lower case)."""
        key = (sobject, field_name)
        index = self._holders.get(key)
        if index is None:
            index = self._holders[key] = {}
            for record in self.values():
                if record.sobject == sobject:
                    index.setdefault(_unique_value(record, field_name), set()).add(record.id)
        return index.get(value, set())

    def __setitem__(self, record_id: str, record: StoredRecord) -> None:
        before = self.get(record_id)
        for (sobject, field_name), index in self._holders.items():
            if before is not None and before.sobject == sobject:
                index.get(_unique_value(before, field_name), set()).discard(record_id)
            if record.sobject == sobject:
                index.setdefault(_unique_value(record, field_name), set()).add(record_id)
        super().__setitem__(record_id, record)


def _unique_value(record: StoredRecord, field_name: str) -> str:
    return str(record.fields.get(field_name) or "").lower()


# A committed record: its state before (None: new) and after.
Written = tuple[StoredRecord | None, StoredRecord]


class Org:
    def __init__(self, store: OrgStore, schema: Schema) -> None:
        self.store = store
        self.schema = schema
        self._index: dict[tuple[str, str], dict[str, set[str]]] = {}
        # Per type, (SystemModstamp, Id) of every stored record, sorted: the audit-field index
        # a change listing walks from its cursor instead of scanning the type.
        self._modstamps: dict[str, list[tuple[dt.datetime, str]]] = {}
        self._indexed_fields = {
            sobject.name: [
                f["name"]
                for f in sobject.fields.values()
                # Salesforce also indexes every lookup (foreign key): OwnerId, WhoId, ...
                if (f["externalId"] or f["idLookup"] or f["unique"] or f["type"] == "reference")
                and f["type"] != "id"
            ]
            for sobject in schema.types.values()
        }
        self._lookups = {
            sobject.name: {f["name"] for f in sobject.fields.values() if f["type"] == "reference"}
            for sobject in schema.types.values()
        }
        for record in list(store.memory.records.values()):
            self._index_add(record)
        # Set while an all-or-none Composite runs, from its first write: each touched record's
        # state before it.
        self._journal: dict[str, StoredRecord | None] | None = None
        self._write_lock = threading.RLock()
        self._thread = threading.local()  # `transaction`: the one this thread runs, if any
        # Committed writes, (before, after), for Change Data Capture (`pubsub.ChangeBus`).
        self.on_commit: Callable[[list[tuple[StoredRecord | None, StoredRecord]]], None] | None = (
            None
        )
        self._pending_events: list[tuple[StoredRecord | None, StoredRecord]] = []
        self.org_id = "00D5e000000Concd"[:15]
        self.org_id += ids.checksum(self.org_id)

    # ---- reads -------------------------------------------------------------------------------

    def sobject(self, name: str) -> SObjectType:
        sobject = self.schema.get(name)
        if sobject is None:
            raise not_found()
        return sobject

    def retrieve(self, sobject: SObjectType, raw_id: str) -> StoredRecord:
        record_id = ids.normalize(raw_id)
        if record_id is None:
            # What Salesforce says when the path segment is not an id at all.
            raise SalesforceError(
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {raw_id}",
                status=404,
            )
        record = self.store.get(record_id)
        if record is None or record.sobject != sobject.name or record.deleted_at is not None:
            raise not_found()
        return record

    def live(self, sobject: SObjectType, include_deleted: bool = False) -> Iterable[StoredRecord]:
        for record in self.store.of_type(sobject.name):
            if include_deleted or record.deleted_at is None:
                yield record

    def indexed(self, sobject_name: str, field_name: str) -> bool:
        """Whether the org keeps an index on the field (external id, idLookup, unique, lookup)."""
        return field_name in self._indexed_fields.get(sobject_name, ())

    def index_size(self, sobject: SObjectType, access: IndexAccess) -> int:
        """How many rows an index access reads (the optimizer's cardinality estimate)."""
        if access.field == "Id":
            return len(access.keys)
        bucket = self._index.get((sobject.name, access.field.lower()), {})
        return sum(len(bucket.get(key, ())) for key in access.keys)

    def read_index(
        self, sobject: SObjectType, access: IndexAccess, include_deleted: bool
    ) -> list[StoredRecord]:
        """The records of the type an index names (by Id, or an indexed field's values), in
        the order a scan of the type would meet them."""
        if access.field == "Id":
            found: set[str] = set(access.keys)
        else:
            with self.store.lock:
                bucket = self._index.get((sobject.name, access.field.lower()), {})
                found = set().union(*(bucket.get(key, set()) for key in access.keys))
                # The index holds an open transaction's values: its records may still hold
                # the value for this reader (the WHERE, tested on each row, decides).
                found |= set(self.store.hidden_from_me() or ())
        records = [
            r
            for r in (self.store.get(i) for i in found)
            if r is not None
            and r.sobject == sobject.name
            and (include_deleted or r.deleted_at is None)
        ]
        return sorted(records, key=lambda r: self.store.position(r.id))

    def by_modstamp(
        self, sobject: SObjectType, floor: dt.datetime | None, include_deleted: bool
    ) -> Iterator[StoredRecord] | None:
        """The type's records in SystemModstamp order from `floor` on; None when some record
        of the type has no SystemModstamp (the index could not give them their place)."""
        with self.store.lock:
            entries = self._modstamps.get(sobject.name, [])
            if len(entries) != len(self.store.memory.by_type.get(sobject.name, {})):
                return None
            if self.store.hidden_from_me():
                # The index places an open transaction's records by their new SystemModstamp,
                # not by the one this reader sees.
                return None
            start = bisect.bisect_left(entries, (floor, "")) if floor is not None else 0
            return self._walk(sobject.name, entries[start:], include_deleted)

    def in_scan_order(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda row: self.store.position(row["Id"]))

    def _walk(
        self, sobject: str, entries: list[tuple[dt.datetime, str]], include_deleted: bool
    ) -> Iterator[StoredRecord]:
        for _, record_id in entries:
            record = self.store.get(record_id)
            if (
                record is not None
                and record.sobject == sobject
                and (include_deleted or record.deleted_at is None)
            ):
                yield record

    def find_by(self, sobject: SObjectType, field_name: str, value: Any) -> list[StoredRecord]:
        """Live records whose external-id (or idLookup) field equals `value`, case-insensitively."""
        if value is None:
            return []
        key = str(value).lower()
        with self.store.lock:
            found = set(self._index.get((sobject.name, field_name.lower()), {}).get(key, ()))
            hidden = dict(self.store.hidden_from_me() or {})
        if hidden:
            # An open transaction's records, as this reader sees them, hold what they held.
            described = sobject.field(field_name)
            name = described["name"] if described else field_name
            found = {i for i in found if i not in hidden}
            found |= {
                i
                for i, r in hidden.items()
                if r is not None
                and r.sobject == sobject.name
                and r.fields.get(name) is not None
                and self._index_key(sobject.name, name, r.fields[name]) == key
            }
        return sorted(
            (r for r in (self.store.get(i) for i in found) if r and r.deleted_at is None),
            key=lambda r: r.id,
        )

    def render(
        self, sobject: SObjectType, record: StoredRecord, version: str, fields: list[str] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"attributes": self.attributes(sobject.name, record.id, version)}
        names = fields or [f["name"] for f in sobject.describe["fields"]]
        for name in names:
            described = sobject.field(name)
            if described is None:
                raise SalesforceError(
                    "INVALID_FIELD",
                    f"No such column '{name}' on entity '{sobject.name}'. If you are attempting "
                    "to use a custom field, be sure to append the '__c' after the custom field "
                    "name. Please reference your WSDL or the describe call for the appropriate "
                    "names.",
                )
            value = record.fields.get(described["name"])
            if described["type"] == "base64" and value is not None:
                # Salesforce never inlines a blob in a record: it answers with the blob's URL.
                value = blob_url(sobject.name, record.id, described["name"], version)
            body[described["name"]] = value
        return body

    @staticmethod
    def attributes(sobject: str, record_id: str, version: str) -> dict[str, str]:
        return {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{record_id}"}

    # ---- writes ------------------------------------------------------------------------------

    def create(self, sobject: SObjectType, values: dict[str, Any], user_id: str) -> WriteResult:
        result = self.write_many([("create", sobject, None, values)], user_id, all_or_none=True)[0]
        if isinstance(result, SalesforceError):
            raise result
        return result

    def write_many(
        self,
        operations: list[tuple[str, SObjectType, str | None, dict[str, Any]]],
        user_id: str,
        all_or_none: bool,
    ) -> list[WriteResult | SalesforceError]:
        """Creates and updates (`("create"|"update", type, id, values)`), validated in order.

        Later operations see earlier ones, so two new records with one external id collide as
        they would in Salesforce. With `all_or_none`, one failure rolls every record back.
        """
        with self.writing():
            now = timefmt.format_datetime(timefmt.now())
            planned = _Batch()
            outcomes: list[_Planned | SalesforceError] = []
            for kind, sobject, record_id, values in operations:
                try:
                    if kind == "create":
                        record = self._plan_create(sobject, values, user_id, now, planned)
                        outcomes.append(_Planned(record, True))
                    else:
                        assert record_id is not None
                        record = self._plan_update(
                            sobject, record_id, values, user_id, now, planned
                        )
                        outcomes.append(_Planned(record, False))
                    planned[record.id] = record
                except SalesforceError as error:
                    outcomes.append(error)
            failed = any(isinstance(o, SalesforceError) for o in outcomes)
            if failed and all_or_none:
                return [o if isinstance(o, SalesforceError) else ROLLED_BACK for o in outcomes]
            self.commit_records([o.record for o in outcomes if isinstance(o, _Planned)])
            return [
                WriteResult(o.record.id, o.created) if isinstance(o, _Planned) else o
                for o in outcomes
            ]

    def upsert_plan(
        self, sobject: SObjectType, field_name: str, value: Any
    ) -> tuple[str, str | None]:
        """("create", None) or ("update", id) for an upsert; raises on ambiguity or a bad field."""
        described = sobject.field(field_name)
        if described is None or not (
            described["externalId"] or described["idLookup"] or described["type"] == "id"
        ):
            raise SalesforceError(
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
                status=404,
            )
        if described["type"] == "id":
            if value in (None, ""):
                return ("create", None)
            record_id = ids.normalize(str(value))
            record = self.store.get(record_id) if record_id else None
            if record is None or record.sobject != sobject.name or record.deleted_at:
                raise SalesforceError(
                    "NOT_FOUND", "The requested resource does not exist", status=404
                )
            return ("update", record.id)
        matches = self.find_by(sobject, described["name"], value)
        if len(matches) > 1:
            raise AmbiguousUpsert(sobject, described["name"], [m.id for m in matches])
        return ("update", matches[0].id) if matches else ("create", None)

    def delete_many(
        self, raw_ids: list[str], all_or_none: bool
    ) -> list[WriteResult | SalesforceError]:
        with self.writing():
            now = timefmt.format_datetime(timefmt.now())
            outcomes: list[StoredRecord | SalesforceError] = []
            for raw in raw_ids:
                record_id = ids.normalize(raw)
                record = self.store.get(record_id) if record_id else None
                if record_id is None:
                    outcomes.append(
                        SalesforceError("MALFORMED_ID", f"malformed id {raw}", [], status=400)
                    )
                elif record is None:
                    outcomes.append(
                        SalesforceError(
                            "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [], 404
                        )
                    )
                elif record.deleted_at is not None:
                    outcomes.append(
                        SalesforceError("ENTITY_IS_DELETED", "entity is deleted", [], 404)
                    )
                else:
                    fields = dict(record.fields, IsDeleted=True, SystemModstamp=now)
                    outcomes.append(StoredRecord(record.id, record.sobject, fields, now))
            failed = any(isinstance(o, SalesforceError) for o in outcomes)
            if failed and all_or_none:
                return [o if isinstance(o, SalesforceError) else ROLLED_BACK for o in outcomes]
            self.commit_records([o for o in outcomes if isinstance(o, StoredRecord)])
            return [
                WriteResult(o.id, False) if isinstance(o, StoredRecord) else o for o in outcomes
            ]

    def purge_recycle_bin(self) -> int:
        """Hard-deletes recycled records, so getDeleted's window starts now (a delete-log gap)."""
        with self.writing(), self.store.lock:
            doomed = [r for r in self.store.memory.records.values() if r.deleted_at is not None]
            self.store.apply([Change(r, purge=True) for r in doomed])
            for record in doomed:
                self._index_remove(record)
        self.store.set_setting("earliest_delete", timefmt.format_datetime(timefmt.now()))
        return len(doomed)

    # ---- change logs -------------------------------------------------------------------------

    def updated(self, sobject: SObjectType, start: dt.datetime, end: dt.datetime) -> list[str]:
        out = []
        for record in self.live(sobject):
            stamp = timefmt.parse_datetime(record.fields["SystemModstamp"])
            if start <= stamp < end:
                out.append(record.id)
        return out

    def deleted(
        self, sobject: SObjectType, start: dt.datetime, end: dt.datetime
    ) -> tuple[list[dict[str, str]], dt.datetime]:
        earliest = self.earliest_delete()
        out = []
        for record in self.live(sobject, include_deleted=True):
            if record.deleted_at is None:
                continue
            when = timefmt.parse_datetime(record.deleted_at)
            if start <= when < end and when >= earliest:
                out.append({"id": record.id, "deletedDate": record.deleted_at})
        return out, earliest

    def earliest_delete(self) -> dt.datetime:
        floor = timefmt.now() - dt.timedelta(days=DELETE_LOG_DAYS)
        stored = self.store.setting("earliest_delete")
        if stored is not None:
            floor = max(floor, timefmt.parse_datetime(stored))
        # Salesforce reports the log's start at minute precision.
        return floor.replace(second=0, microsecond=0)

    # ---- internals ---------------------------------------------------------------------------

    def _plan_create(
        self,
        sobject: SObjectType,
        values: dict[str, Any],
        user_id: str,
        now: str,
        planned: _Batch,
    ) -> StoredRecord:
        if not sobject.describe.get("createable", True):
            raise SalesforceError("INVALID_TYPE", f"Cannot create {sobject.name}", [])
        clean = self._coerce(sobject, values, creating=True, planned=planned)
        fields: dict[str, Any] = {f["name"]: None for f in sobject.describe["fields"]}
        for described in sobject.fields.values():
            if described["type"] == "boolean":
                fields[described["name"]] = bool(described.get("defaultValue") or False)
            elif described["defaultedOnCreate"] and described.get("defaultValue") is not None:
                fields[described["name"]] = described["defaultValue"]
            elif described["defaultedOnCreate"] and described["type"] == "picklist":
                default = [p for p in described["picklistValues"] if p["defaultValue"]]
                if default:
                    fields[described["name"]] = default[0]["value"]
        if "OwnerId" in fields:
            fields["OwnerId"] = user_id
        fields.update(clean)
        missing = [
            f["name"]
            for f in sobject.fields.values()
            if f["createable"]
            and not f["nillable"]
            and not f["defaultedOnCreate"]
            and f["type"] != "boolean"
            and fields.get(f["name"]) in (None, "")
        ]
        if missing:
            raise SalesforceError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        sequence = self.store.next_sequence(sobject.name)
        record_id = ids.mint(sobject.key_prefix, sequence)
        fields.update(
            Id=record_id,
            IsDeleted=False,
            CreatedDate=now,
            CreatedById=user_id,
            LastModifiedDate=now,
            LastModifiedById=user_id,
            SystemModstamp=now,
        )
        self._derive(sobject, fields)
        self._check_unique(sobject, record_id, fields, planned)
        return StoredRecord(record_id, sobject.name, fields)

    def _plan_update(
        self,
        sobject: SObjectType,
        raw_id: str,
        values: dict[str, Any],
        user_id: str,
        now: str,
        planned: _Batch,
    ) -> StoredRecord:
        record_id = ids.normalize(raw_id)
        if record_id is None:
            raise SalesforceError(
                "MALFORMED_ID", f"Record ID: id value of incorrect type: {raw_id}", ["Id"]
            )
        current = planned.get(record_id) or self.store.get(record_id)
        if current is None or current.sobject != sobject.name:
            raise SalesforceError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if current.deleted_at is not None:
            raise SalesforceError("ENTITY_IS_DELETED", "entity is deleted", [])
        clean = self._coerce(sobject, values, creating=False, planned=planned)
        for name, value in clean.items():
            described = sobject.field(name)
            if (
                described
                and not described["nillable"]
                and value in (None, "")
                and described["type"] != "boolean"
            ):
                raise SalesforceError(
                    "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name]
                )
        fields = dict(current.fields)
        fields.update(clean)
        fields.update(LastModifiedDate=now, LastModifiedById=user_id, SystemModstamp=now)
        self._derive(sobject, fields, changed=set(clean))
        self._check_unique(sobject, record_id, fields, planned)
        return StoredRecord(record_id, sobject.name, fields)

    def _coerce(
        self,
        sobject: SObjectType,
        values: dict[str, Any],
        creating: bool,
        planned: dict[str, StoredRecord],
    ) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key.lower() == "attributes" or (key.lower() == "id" and value is None):
                continue
            described = sobject.field(key)
            if described is None:
                raise SalesforceError(
                    "INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject.name}"
                )
            name = described["name"]
            writable = described["createable"] if creating else described["updateable"]
            if not writable or name in SYSTEM_FIELDS:
                if name == "Id" and not creating:
                    continue
                raise SalesforceError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security settings "
                    "of this field and verify that it is read/write for your profile or "
                    "permission set.",
                    [name],
                )
            clean[name] = self._coerce_value(described, value, planned)
        return clean

    def _coerce_value(
        self, described: dict[str, Any], value: Any, planned: dict[str, StoredRecord]
    ) -> Any:
        name = described["name"]
        kind = described["type"]
        if value is None or (value == "" and kind not in _STRING_TYPES):
            return None
        if kind in _STRING_TYPES:
            text = value if isinstance(value, str) else _json_text(value)
            if len(text) > described["length"] > 0:
                raise SalesforceError(
                    "STRING_TOO_LONG",
                    f"{described['label']}: data value too large: {text[:100]} "
                    f"(max length={described['length']})",
                    [name],
                )
            if kind == "picklist" and described["restrictedPicklist"] and text != "":
                allowed = {p["value"] for p in described["picklistValues"] if p["active"]}
                if text not in allowed:
                    raise SalesforceError(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        f"{described['label']}: bad value for restricted picklist field: {text}",
                        [name],
                    )
            return text if text != "" else None
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _parse_error(value, "boolean")
            return value
        if kind in ("int", "double", "currency", "percent"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise _parse_error(value, kind)
            try:
                number = float(value)
            except ValueError:
                raise _parse_error(value, kind) from None
            return int(number) if kind == "int" else number
        if kind == "date":
            try:
                return timefmt.parse_date(str(value)).isoformat()
            except ValueError:
                raise _parse_error(value, "date") from None
        if kind == "datetime":
            try:
                return timefmt.format_datetime(timefmt.parse_datetime(str(value)))
            except ValueError:
                raise _parse_error(value, "datetime") from None
        if kind == "base64":
            # Blobs travel base64 in JSON; Salesforce refuses what does not decode.
            if not isinstance(value, str):
                raise _parse_error(value, "base64")
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error:
                raise _parse_error("(base64)", "base64") from None
            return value
        if kind in ("reference", "id"):
            record_id = ids.normalize(str(value))
            if record_id is None:
                raise SalesforceError(
                    "MALFORMED_ID",
                    f"{described['label']}: id value of incorrect type: {value}",
                    [name],
                )
            target = self.schema.type_of_id(record_id)
            if target is None or target.name not in described["referenceTo"]:
                raise SalesforceError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"{described['label']}: id value of incorrect type: {value}",
                    [name],
                )
            referenced = planned.get(record_id) or self.store.get(record_id)
            if referenced is None or referenced.deleted_at is not None:
                raise SalesforceError(
                    "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", []
                )
            return record_id
        return value

    def _derive(
        self, sobject: SObjectType, fields: dict[str, Any], changed: set[str] | None = None
    ) -> None:
        """Fields Salesforce computes, and Event's rules on start, end and all-day events."""
        if sobject.name in ("Contact", "Lead", "User") and "Name" in fields:
            parts = [fields.get("FirstName"), fields.get("LastName")]
            fields["Name"] = " ".join(p for p in parts if p) or None
        if sobject.name == "Event":
            _derive_event(fields, changed)
        if sobject.name == "Attachment" and fields.get("Body") is not None:
            fields["BodyLength"] = len(base64.b64decode(fields["Body"]))
        if sobject.name == "Task":
            fields["IsClosed"] = fields.get("Status") == "Completed"
            fields["IsHighPriority"] = fields.get("Priority") == "High"

    def _check_unique(
        self,
        sobject: SObjectType,
        record_id: str,
        fields: dict[str, Any],
        planned: _Batch,
    ) -> None:
        for described in sobject.fields.values():
            if not described["unique"] or fields.get(described["name"]) is None:
                continue
            value = str(fields[described["name"]]).lower()
            holders = {r.id for r in self.find_by(sobject, described["name"], value)}
            holders |= planned.holders(sobject.name, described["name"], value)
            # A record planned in this batch may have moved off the value it holds in the store.
            holders = {h for h in holders if self._holds(h, described["name"], value, planned)}
            holders.discard(record_id)
            if holders:
                raise SalesforceError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {described['name']} duplicates value on record "
                    f"with id: {sorted(holders)[0]}",
                    [],
                )

    def _holds(
        self, record_id: str, field_name: str, value: str, planned: dict[str, StoredRecord]
    ) -> bool:
        record = planned.get(record_id) or self.store.get(record_id)
        return record is not None and str(record.fields.get(field_name) or "").lower() == value

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The write lock, for one write request; inside a `transaction`, the first write takes
        it for the rest of the transaction and starts its journal."""
        transaction: Transaction | None = getattr(self._thread, "transaction", None)
        if transaction is None:
            with self._write_lock:
                yield
            return
        if not transaction.locked:
            self._write_lock.acquire()
            transaction.locked = True
            self._journal = {}
            self.store.hide(self._journal)
        yield

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """An all-or-none Composite: its writes are seen by no other thread until it ends, and
        are put back as they were when it ends with `rollback` set (or with an exception)."""
        transaction = self._thread.transaction = Transaction()
        try:
            yield transaction
        except BaseException:
            transaction.rollback = True
            raise
        finally:
            self._thread.transaction = None
            if transaction.locked:
                try:
                    self._end_journal(transaction.rollback)
                finally:
                    self._write_lock.release()

    def _end_journal(self, rollback: bool) -> None:
        """Stops journalling; with `rollback`, puts every journalled record back as it was."""
        journal = self._journal or {}
        pending, self._pending_events = self._pending_events, []
        if rollback and journal:
            changes = []
            with self.store.lock:
                for record_id, before in journal.items():
                    current = self.store.get(record_id)
                    if current is not None:
                        self._index_remove(current)
                    if before is None:
                        if current is not None:
                            changes.append(Change(current, purge=True))
                    else:
                        changes.append(Change(before))
                self.store.apply(changes)
                for before in journal.values():
                    if before is not None:
                        self._index_add(before)
        # Others see the records again only once they are what the transaction leaves.
        self._journal = None
        self.store.reveal()
        if not rollback and pending and self.on_commit is not None:
            self.on_commit(pending)

    def commit_records(self, records: list[StoredRecord]) -> None:
        """Writes records as they are (already validated), keeping the indexes current."""
        with self.writing():
            # The mirror and its indexes change together: a reader never finds a record the
            # index does not name yet.
            with self.store.lock:
                previous = [self.store.get(r.id) for r in records]
                if self._journal is not None:
                    for record, before in zip(records, previous, strict=True):
                        self._journal.setdefault(record.id, before)
                self.store.apply([Change(r) for r in records])
                for old in previous:
                    if old is not None:
                        self._index_remove(old)
                for record in records:
                    self._index_add(record)
            # Change events leave on commit: inside a journal (an all-or-none Composite) only
            # once it ends without a rollback.
            written = list(zip(previous, records, strict=True))
            if self._journal is not None:
                self._pending_events.extend(written)
            elif self.on_commit is not None:
                self.on_commit(written)

    def _index_add(self, record: StoredRecord) -> None:
        stamp = record.fields.get(MODSTAMP)
        if stamp:
            entries = self._modstamps.setdefault(record.sobject, [])
            bisect.insort(entries, (timefmt.parse_datetime(stamp), record.id))
        for name in self._indexed_fields.get(record.sobject, []):
            value = record.fields.get(name)
            if value is not None:
                key = (record.sobject, name.lower())
                value_key = self._index_key(record.sobject, name, value)
                self._index.setdefault(key, {}).setdefault(value_key, set()).add(record.id)

    def _index_remove(self, record: StoredRecord) -> None:
        stamp = record.fields.get(MODSTAMP)
        if stamp:
            entries = self._modstamps.get(record.sobject, [])
            key = (timefmt.parse_datetime(stamp), record.id)
            at = bisect.bisect_left(entries, key)
            if at < len(entries) and entries[at] == key:
                del entries[at]
        for name in self._indexed_fields.get(record.sobject, []):
            value = record.fields.get(name)
            if value is not None:
                bucket = self._index.get((record.sobject, name.lower()), {})
                bucket.get(self._index_key(record.sobject, name, value), set()).discard(record.id)

    def _index_key(self, sobject: str, name: str, value: Any) -> str:
        """Text in lower case (it compares so); a lookup's Id in its 18-character form, as a
        query's literal is read (the lower case is harmless: the WHERE is tested on each row)."""
        text = str(value)
        if name in self._lookups.get(sobject, ()):
            text = ids.normalize(text) or text
        return text.lower()


class AmbiguousUpsert(SalesforceError):
    """More than one record has the external id: 300 with their URLs (REST), or an error."""

    def __init__(self, sobject: SObjectType, field_name: str, matches: list[str]) -> None:
        super().__init__(
            "DUPLICATE_EXTERNAL_ID",
            f"{field_name}: more than one record found for external id field: "
            f"[{', '.join(matches)}]",
            [field_name],
            status=300,
        )
        self.sobject = sobject
        self.matches = matches


def _derive_event(fields: dict[str, Any], changed: set[str] | None) -> None:
    all_day = bool(fields.get("IsAllDayEvent"))
    start_text = fields.get("StartDateTime") or fields.get("ActivityDateTime")
    if changed is not None and "ActivityDateTime" in changed and "StartDateTime" not in changed:
        start_text = fields.get("ActivityDateTime")
    if all_day:
        day = fields.get("ActivityDate") or (start_text[:10] if start_text else None)
        if day is None:
            raise SalesforceError(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [ActivityDate]",
                ["ActivityDate"],
            )
        # All-day events are dates: Salesforce pins them to midnight GMT.
        start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
    elif start_text is None:
        raise SalesforceError(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [ActivityDateTime]",
            ["ActivityDateTime"],
        )
    else:
        start = timefmt.parse_datetime(start_text)
    creating = changed is None
    touched = changed or set()
    end: dt.datetime
    # An explicit end wins; otherwise the duration holds, so moving the start moves the end.
    if fields.get("EndDateTime") and (creating or "EndDateTime" in touched):
        end = timefmt.parse_datetime(fields["EndDateTime"])
        if all_day:
            end = dt.datetime.combine(end.date(), dt.time(), dt.UTC) + dt.timedelta(days=1)
    elif all_day and fields.get("EndDate") and (creating or "EndDate" in touched):
        end = dt.datetime.combine(
            dt.date.fromisoformat(fields["EndDate"]), dt.time(), dt.UTC
        ) + dt.timedelta(days=1)
    elif fields.get("DurationInMinutes") is not None:
        end = start + dt.timedelta(minutes=int(fields["DurationInMinutes"]))
    elif all_day:
        end = start + dt.timedelta(days=1)
    else:
        raise SalesforceError(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [DurationInMinutes]",
            ["DurationInMinutes"],
        )
    if end < start:
        raise SalesforceError(
            "FIELD_INTEGRITY_EXCEPTION",
            "End Date Time: End time can't be before the start time.",
            ["EndDateTime"],
        )
    if end - start > dt.timedelta(days=14):
        raise SalesforceError(
            "FIELD_INTEGRITY_EXCEPTION",
            "Duration: Event duration can't exceed 14 days.",
            ["DurationInMinutes"],
        )
    fields["StartDateTime"] = fields["ActivityDateTime"] = timefmt.format_datetime(start)
    fields["ActivityDate"] = start.date().isoformat()
    fields["DurationInMinutes"] = int((end - start).total_seconds() // 60)
    if all_day:
        fields["EndDateTime"] = timefmt.format_datetime(end - dt.timedelta(days=1))
        fields["EndDate"] = (end - dt.timedelta(days=1)).date().isoformat()
    else:
        fields["EndDateTime"] = timefmt.format_datetime(end)
        fields["EndDate"] = end.date().isoformat()


def blob_url(sobject: str, record_id: str, field_name: str, version: str) -> str:
    return f"/services/data/v{version}/sobjects/{sobject}/{record_id}/{field_name}"


def _json_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parse_error(value: Any, kind: str) -> SalesforceError:
    return SalesforceError(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from VALUE_STRING value {value}",
    )
