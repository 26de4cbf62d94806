"""The sync engine's two sides over the peers' gRPC APIs.

The engine compares both sides in one field space: the Salesforce fields that mapping's
`MapToCrm` produces for a mailbox item. A mail item is mapped once (`MapToCrm`). A Salesforce
record is normalised by a round trip, `MapToMail` then `MapToCrm`, rather than by reading its
fields as listed. Why the round trip: it sends both sides through the very same function, so
whatever that function does to values (datetime formats, time-zone names, picklist fallbacks,
HTML bodies turned into text, truncation to the describe's lengths, fields the table does not
map such as WhoId) happens to both alike. Restricting the listed record to the table's fields
would leave those differences in, and each one would read as an edit every session. The cost is
two mapping calls per page of changed records and nothing for a quiet session.

Fields under `concord.` (attendee rows, the organizer, the account name) are hints for the
linker, not Salesforce fields: Salesforce never lists them back, so they stay out of the
compared fields; a calendar item's people travel in `Snapshot.participants` instead, for
linking the records created from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import field_mask_pb2, json_format, struct_pb2, timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord_reconciler.mailboxes.domain.settings import CRM_OBJECT_OF_KIND
from concord_reconciler.mirror.domain.participants import participants_of
from concord_reconciler.mirror.domain.ports import (
    ChangePage,
    CrmPage,
    ItemFailure,
    MailPage,
)
from concord_reconciler.mirror.domain.sync import (
    Change,
    Side,
    Snapshot,
    Value,
    Write,
    WriteOp,
    WriteResult,
)

log = logging.getLogger(__name__)


LINK_FIELD = "Concord_Link_Id__c"


# The linker's hints and other values that are not Salesforce fields.
HINT_PREFIX = "concord."


# What marks a record whose mailbox item was cancelled (MAIL_DELETE_ACTION_MARK_RECORD):
# Salesforce's Event has no cancelled flag, and a subject is what every list view shows.
CANCELLED_PREFIX = "Cancelled: "


# ApplyItems and GetItems take 100 items a call; ApplyBatch packs Collections itself.
MAIL_BATCH = 100


CRM_READ_BATCH = 200


# Linker calls in flight at once for one batch of creates.
LINKER_CONCURRENCY = 8


_PAYLOAD_OF_KIND: dict[int, str] = {
    res.OBJECT_KIND_CALENDAR_ITEM: "calendar_item",
    res.OBJECT_KIND_TASK: "task",
    res.OBJECT_KIND_CONTACT: "contact",
}


_TABLE_OF_KIND: dict[int, str] = {
    res.OBJECT_KIND_CALENDAR_ITEM: "calendar-item",
    res.OBJECT_KIND_TASK: "task",
    res.OBJECT_KIND_CONTACT: "contact",
}


# Activities are linked to people (WhoId/WhatId); contacts are the people.
_ACTIVITY_KINDS = (res.OBJECT_KIND_CALENDAR_ITEM, res.OBJECT_KIND_TASK)


_PRIVATE = (res.SENSITIVITY_PRIVATE, res.SENSITIVITY_CONFIDENTIAL)


_TO_MAIL = (
    res.SYNC_DIRECTION_UNSPECIFIED,
    res.SYNC_DIRECTION_TWO_WAY,
    res.SYNC_DIRECTION_CRM_TO_MAIL,
)


class MailClient(Protocol):
    async def list_changes(self, mailbox: str, kind: int, cursor: res.Cursor) -> MailPage: ...

    async def get_items(
        self,
        mailbox: str,
        refs: Sequence[res.ItemRef] = (),
        link_ids: Sequence[str] = (),
        kind: int = res.OBJECT_KIND_UNSPECIFIED,
    ) -> mail.GetItemsResponse: ...

    async def apply_items(
        self, mailbox: str, writes: Sequence[mail.MailWrite]
    ) -> list[mail.MailWriteResult]: ...


class CrmClient(Protocol):
    async def list_changes(
        self,
        org: str,
        sobject_type: str,
        cursor: res.Cursor,
        owner_id: str,
        fields: Sequence[str] = (),
    ) -> CrmPage: ...

    async def get_records(
        self, org: str, sobject_type: str, ids: Sequence[str], fields: Sequence[str] = ()
    ) -> crm.GetRecordsResponse: ...

    async def query_records(self, request: crm.QueryRecordsRequest) -> crm.QueryRecordsResponse: ...

    async def apply_batch(
        self, org: str, writes: Sequence[crm.CrmWrite]
    ) -> list[crm.CrmWriteResult]: ...

    async def describe(self, org: str, sobject_type: str) -> crm.ObjectDescription: ...


class MappingClient(Protocol):
    async def map_to_crm(
        self, org: str, items: Sequence[res.MailItem], owner_id: str
    ) -> Sequence[mapping_pb.MappedRecord]: ...

    async def map_to_mail(
        self, org: str, records: Sequence[res.CrmRecord]
    ) -> Sequence[mapping_pb.MappedItem]: ...

    async def get_mapping_table(self, name: str) -> mapping_pb.MappingTable: ...


class LinkerClient(Protocol):
    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: int,
        participants: Sequence[res.Participant],
        request_id: str,
        policy: linker_pb.ResolutionPolicy | None = None,
    ) -> linker_pb.ResolveParticipantsResponse: ...


def _value(raw: Any) -> Value:
    if isinstance(raw, dict):
        # Struct objects are not values of any mapped field today; kept comparable anyway.
        return tuple((k, _value(v)) for k, v in sorted(raw.items()))
    if isinstance(raw, list):
        return tuple(_value(v) for v in raw)
    if isinstance(raw, float) and raw.is_integer():
        # Struct numbers are doubles: 15 and 15.0 must hash alike whichever side said it.
        return int(raw)
    if raw is None or isinstance(raw, str | int | float | bool):
        return raw
    return str(raw)


def common_fields(record: res.CrmRecord) -> dict[str, Value]:
    """A mapped record's fields in the engine's field space: no hints, no nulls."""
    raw = json_format.MessageToDict(record.fields)
    return {
        name: _value(value)
        for name, value in raw.items()
        if value is not None and not name.startswith(HINT_PREFIX)
    }


def _plain(value: Value) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _struct(fields: Mapping[str, Value]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({k: _plain(v) for k, v in fields.items() if v is not None})
    return struct


def _instant(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(UTC)


def _day(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None
    except ValueError:
        return None


def _match_keys(kind: int, fields: Mapping[str, Value], uid: str = "") -> tuple[str, ...]:
    """First-sync matching keys, computed from the common fields so both sides agree."""
    keys: list[str] = []
    if uid:
        keys.append(f"uid:{uid}")
    if kind == res.OBJECT_KIND_CALENDAR_ITEM:
        subject = fields.get("Subject")
        start = fields.get("StartDateTime") or fields.get("ActivityDate")
        end = fields.get("EndDateTime") or fields.get("EndDate")
        if subject and start:
            keys.append(f"sse:{subject}|{start}|{end or ''}")
    elif kind == res.OBJECT_KIND_CONTACT:
        email = fields.get("Email")
        if isinstance(email, str) and email:
            keys.append(f"email:{email.strip().lower()}")
    return tuple(keys)


def snapshot_of(
    kind: int,
    item: res.MailItem,
    fields: Mapping[str, Value],
    *,
    version: str,
    server_time: datetime | None,
    link_id: str,
    uid: str = "",
) -> Snapshot:
    """The engine's view of one item: its common fields plus what the planner decides on
    (privacy, cancellation, the window, matching, occurrences), read from the canonical item."""
    start = end = completed = original_start = None
    private = cancelled = False
    series_id = ""
    participants: tuple[tuple[str, str, int], ...] = ()
    payload = item.WhichOneof("payload")
    if payload == "calendar_item":
        event = item.calendar_item
        if event.all_day:
            start, end = _day(event.start_date), _day(event.end_date)
        else:
            start = _instant(event.start) if event.HasField("start") else None
            end = _instant(event.end) if event.HasField("end") else None
        private = event.is_private or event.sensitivity in _PRIVATE
        cancelled = event.is_cancelled
        series_id = event.series_id
        if event.HasField("original_start"):
            original_start = _instant(event.original_start)
        participants = tuple(
            (p.email, p.display_name, int(p.role)) for p in participants_of([item])
        )
    elif payload == "task":
        task = item.task
        private = task.sensitivity in _PRIVATE
        if task.HasField("completed_time"):
            completed = _instant(task.completed_time)
        elif task.status == res.TASK_STATUS_COMPLETED:
            # Salesforce has no completion time; a completed task's due date stands in.
            completed = _day(task.due_date) or server_time
    return Snapshot(
        fields=dict(fields),
        version=version,
        server_time=server_time,
        is_private=private,
        cancelled=cancelled,
        start=start,
        end=end,
        completed=completed,
        match_keys=_match_keys(kind, fields, uid),
        link_id=link_id,
        series_id=series_id,
        original_start=original_start,
        participants=participants,
    )


def _problem(
    kind: int, side: Side, native_id: str, version: str, reason: str, message: str
) -> ItemFailure:
    return ItemFailure(
        kind=kind,
        side=side,
        native_id=native_id,
        link_id="",
        reason=reason or "UNREADABLE",
        version=version,
        message=message or "the item could not be read or mapped",
    )


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class SessionMapping:
    """The mapping service for one session: tables and describes read once, then kept."""

    client: MappingClient
    org: str
    owner_id: str
    _tables: dict[int, mapping_pb.MappingTable] = field(default_factory=dict)

    async def table(self, kind: int) -> mapping_pb.MappingTable:
        if kind not in self._tables:
            name = f"{self.org}/mappingTables/{_TABLE_OF_KIND[kind]}"
            self._tables[kind] = await self.client.get_mapping_table(name)
        return self._tables[kind]

    async def to_crm(self, items: Sequence[res.MailItem]) -> list[mapping_pb.MappedRecord]:
        if not items:
            return []
        return list(await self.client.map_to_crm(self.org, items, self.owner_id))

    async def to_mail(self, records: Sequence[res.CrmRecord]) -> list[mapping_pb.MappedItem]:
        if not records:
            return []
        return list(await self.client.map_to_mail(self.org, records))

    async def mail_paths(self, kind: int, crm_fields: Iterable[str]) -> list[str]:
        """The item paths (relative to the payload) an update of these fields writes."""
        table = await self.table(kind)
        wanted = set(crm_fields)
        paths: list[str] = []
        for rule in table.rules:
            if rule.crm_field not in wanted or rule.direction not in _TO_MAIL:
                continue
            path = rule.mail_field.partition(".")[2]
            if path and path not in paths:
                paths.append(path)
        return paths


@dataclass
class MailSyncSide:
    """The mailbox of one session: mail-connector for items, mapping for their fields.

    Items are selected by category where the mailbox's settings say so: an item without it
    is not shared (listed as a removal, like an item deleted), one created from Salesforce
    gets it, and unsharing takes it off again.
    """

    client: MailClient
    mapping: SessionMapping
    mailbox: str
    # Kind -> the category that shares an item of that kind; kinds absent are not filtered.
    categories: Mapping[int, str] = field(default_factory=dict)
    side: Side = Side.MAIL

    async def list_changes(self, kind: int, cursor: str) -> ChangePage:
        page = await self.client.list_changes(self.mailbox, kind, res.Cursor(token=cursor))
        changes: list[Change] = []
        failures: list[ItemFailure] = []
        items: list[res.MailItem] = []
        for listed in page.changes:
            native = listed.ref.native_id or listed.item.ref.native_id
            if listed.HasField("problem"):
                failures.append(
                    _problem(
                        kind,
                        Side.MAIL,
                        native,
                        listed.ref.version,
                        listed.problem.reason,
                        listed.problem.message,
                    )
                )
            elif listed.type == res.CHANGE_TYPE_DELETE or not listed.HasField("item"):
                changes.append(Change(Side.MAIL, native, None))
            elif self._shared(kind, listed.item):
                items.append(listed.item)
            elif cursor:
                # No longer carrying the category: out of scope, which reads as a removal. A
                # full listing leaves unshared items out instead.
                changes.append(Change(Side.MAIL, native, None))
        snapshots, unmapped = await self._mapped(kind, items)
        changes.extend(Change(Side.MAIL, n, s) for n, s in snapshots.items())
        failures.extend(unmapped)
        return ChangePage(
            changes,
            next_cursor=page.next_cursor.token,
            full_resync_required=page.full_resync_required,
            has_more=page.has_more,
            failures=failures,
        )

    def _shared(self, kind: int, item: res.MailItem) -> bool:
        category = self.categories.get(kind, "")
        if not category:
            return True
        payload = item.WhichOneof("payload")
        held = getattr(item, payload).categories if payload else ()
        return any(c.strip().lower() == category.strip().lower() for c in held)

    async def _mapped(
        self, kind: int, items: Sequence[res.MailItem]
    ) -> tuple[dict[str, Snapshot], list[ItemFailure]]:
        snapshots: dict[str, Snapshot] = {}
        failures: list[ItemFailure] = []
        for item, mapped in zip(items, await self.mapping.to_crm(items), strict=True):
            ref = item.ref
            if mapped.HasField("error"):
                failures.append(
                    _problem(
                        kind,
                        Side.MAIL,
                        ref.native_id,
                        ref.version,
                        mapped.error.reason,
                        mapped.error.message,
                    )
                )
                continue
            server_time = (
                _instant(item.last_modified_time) if item.HasField("last_modified_time") else None
            )
            uid = item.calendar_item.ical_uid if item.HasField("calendar_item") else ""
            snapshots[ref.native_id] = snapshot_of(
                kind,
                item,
                common_fields(mapped.record),
                version=ref.version,
                server_time=server_time,
                link_id=ref.link_id,
                uid=uid,
            )
        return snapshots, failures

    async def fetch(self, kind: int, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        found: dict[str, Snapshot] = {}
        for chunk in _chunks(native_ids, MAIL_BATCH):
            refs = [res.ItemRef(kind=kind, native_id=n) for n in chunk]  # type: ignore[arg-type]
            response = await self.client.get_items(self.mailbox, refs=refs)
            # An item no longer shared is out of scope, as a listing says: so an unshare is
            # found to have landed, and a full listing reads its removal.
            shared = [i for i in response.items if self._shared(kind, i)]
            snapshots, _ = await self._mapped(kind, shared)
            found.update(snapshots)
            for failure in response.failures:
                # It exists but cannot be read: present, never mistaken for a delete.
                found.setdefault(
                    failure.ref.native_id, Snapshot(fields={}, version=failure.ref.version)
                )
        return found

    async def find(self, kind: int, link_ids: Sequence[str]) -> dict[str, tuple[str, Snapshot]]:
        found: dict[str, tuple[str, Snapshot]] = {}
        for chunk in _chunks(link_ids, MAIL_BATCH):
            response = await self.client.get_items(self.mailbox, link_ids=chunk, kind=kind)
            snapshots, _ = await self._mapped(kind, list(response.items))
            for item in response.items:
                snapshot = snapshots.get(item.ref.native_id)
                if snapshot is not None and item.ref.link_id:
                    found[item.ref.link_id] = (item.ref.native_id, snapshot)
        return found

    async def apply(self, kind: int, writes: Sequence[Write]) -> Sequence[WriteResult]:
        results: dict[int, WriteResult] = {}
        planned: list[tuple[int, mail.MailWrite]] = []
        converted = await self._items(
            kind, [w for w in writes if w.op in (WriteOp.CREATE, WriteOp.UPDATE)]
        )
        unshared = await self._current([w for w in writes if w.op is WriteOp.UNSHARE], kind)
        for index, write in enumerate(writes):
            outcome = await self._mail_write(kind, write, converted, unshared)
            if isinstance(outcome, WriteResult):
                results[index] = outcome
            else:
                planned.append((index, outcome))
        for chunk in _chunks(planned, MAIL_BATCH):
            answers = await self.client.apply_items(self.mailbox, [w for _, w in chunk])
            for (index, _), answer in zip(chunk, answers, strict=True):
                results[index] = _mail_result(writes[index], answer)
        await self._read_back(kind, writes, results)
        return [results[i] for i in range(len(writes))]

    async def _items(self, kind: int, writes: Sequence[Write]) -> dict[str, mapping_pb.MappedItem]:
        """Each create's or update's mailbox item, from the fields the item will hold."""
        records = [
            res.CrmRecord(
                sobject_type=CRM_OBJECT_OF_KIND[kind],
                link_id=w.link_id,
                fields=_struct(w.full or w.fields),
            )
            for w in writes
        ]
        mapped = await self.mapping.to_mail(records)
        return {w.link_id: m for w, m in zip(writes, mapped, strict=True)}

    async def _current(self, writes: Sequence[Write], kind: int) -> dict[str, res.MailItem]:
        natives = [w.native_id for w in writes if w.native_id]
        found: dict[str, res.MailItem] = {}
        for chunk in _chunks(natives, MAIL_BATCH):
            refs = [res.ItemRef(kind=kind, native_id=n) for n in chunk]  # type: ignore[arg-type]
            response = await self.client.get_items(self.mailbox, refs=refs)
            found.update((i.ref.native_id, i) for i in response.items)
        return found

    async def _mail_write(
        self,
        kind: int,
        write: Write,
        converted: Mapping[str, mapping_pb.MappedItem],
        unshared: Mapping[str, res.MailItem],
    ) -> mail.MailWrite | WriteResult:
        ref = res.ItemRef(
            kind=kind,  # type: ignore[arg-type]
            native_id=write.native_id or "",
            version=write.expected_version,
            link_id=write.link_id,
        )
        if write.op is WriteOp.DELETE:
            return mail.MailWrite(
                operation=mail.MAIL_WRITE_OPERATION_DELETE, link_id=write.link_id, ref=ref
            )
        if write.op is WriteOp.UNSHARE:
            current = unshared.get(write.native_id or "")
            if current is None:
                return WriteResult(write.link_id, True, write.native_id or "", already_applied=True)
            item = res.MailItem()
            item.CopyFrom(current)
            payload = getattr(item, item.WhichOneof("payload") or "calendar_item")
            category = (self.categories.get(kind) or "").strip().lower()
            kept = [c for c in payload.categories if c.strip().lower() != category]
            del payload.categories[:]
            payload.categories.extend(kept)
            item.ref.CopyFrom(ref)
            return mail.MailWrite(
                operation=mail.MAIL_WRITE_OPERATION_UPDATE,
                link_id=write.link_id,
                ref=ref,
                item=item,
                update_mask=field_mask_pb2.FieldMask(paths=["categories"]),
            )
        if write.op is WriteOp.MARK:
            # Marking is a Salesforce record's fate; a mailbox item is deleted or unshared.
            return WriteResult(write.link_id, False, retryable=False, reason="UNSUPPORTED_WRITE")
        mapped = converted[write.link_id]
        if mapped.HasField("error"):
            return WriteResult(
                write.link_id, False, retryable=False, reason=mapped.error.reason or "UNMAPPABLE"
            )
        item = res.MailItem()
        item.CopyFrom(mapped.item)
        item.ref.CopyFrom(ref)
        payload = getattr(item, _PAYLOAD_OF_KIND[kind])
        if write.op is WriteOp.CREATE:
            category = self.categories.get(kind, "")
            if category and category not in payload.categories:
                payload.categories.append(category)
            item.ref.ClearField("native_id")
            item.ref.ClearField("version")
            return mail.MailWrite(
                operation=mail.MAIL_WRITE_OPERATION_CREATE, link_id=write.link_id, item=item
            )
        paths = await self.mapping.mail_paths(kind, write.fields)
        if not paths:
            # Only fields the mailbox does not hold changed: nothing to write on this side.
            return WriteResult(write.link_id, True, write.native_id or "", write.expected_version)
        return mail.MailWrite(
            operation=mail.MAIL_WRITE_OPERATION_UPDATE,
            link_id=write.link_id,
            ref=ref,
            item=item,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )

    async def _read_back(
        self, kind: int, writes: Sequence[Write], results: dict[int, WriteResult]
    ) -> None:
        """The written items as the mailbox now lists them, so a value the mailbox keeps in
        its own form (a zone name, a body) is not mistaken next session for a user's edit."""
        written = {
            i: r
            for i, r in results.items()
            if r.ok and r.native_id and writes[i].op in (WriteOp.CREATE, WriteOp.UPDATE)
        }
        if not written:
            return
        listed = await self.fetch(kind, sorted({r.native_id for r in written.values()}))
        for index, result in written.items():
            snapshot = listed.get(result.native_id)
            if snapshot is not None and snapshot.fields:
                results[index] = WriteResult(
                    result.link_id,
                    True,
                    result.native_id,
                    snapshot.version or result.version,
                    already_applied=result.already_applied,
                    hash=snapshot.hash,
                )


def _mail_result(write: Write, answer: mail.MailWriteResult) -> WriteResult:
    status = answer.status
    native = answer.ref.native_id or write.native_id or ""
    if status == res.WRITE_STATUS_OK:
        return WriteResult(
            write.link_id, True, native, answer.ref.version, already_applied=answer.already_applied
        )
    if status == res.WRITE_STATUS_NOT_FOUND and write.op in (WriteOp.DELETE, WriteOp.UNSHARE):
        return WriteResult(write.link_id, True, native, already_applied=True)
    return _failed(write.link_id, status, answer.error_code)


def _failed(link_id: str, status: int, code: str) -> WriteResult:
    if status == res.WRITE_STATUS_CONFLICT:
        return WriteResult(link_id, False, reason="VERSION_MISMATCH")
    if status in (res.WRITE_STATUS_RETRYABLE, res.WRITE_STATUS_ROLLED_BACK):
        return WriteResult(link_id, False, reason=code or "RETRYABLE")
    if status == res.WRITE_STATUS_NOT_FOUND:
        # The target vanished between listing and writing: the next listing says so.
        return WriteResult(link_id, False, reason="NOT_FOUND")
    return WriteResult(link_id, False, retryable=False, reason=code or "WRITE_REJECTED")


@dataclass
class CrmSyncSide:
    """Salesforce for one session: crm-connector for records, normalised through mapping.

    Writes carry the link id in `Concord_Link_Id__c`: a create is an upsert by it (a replay
    finds its record), and `find` is a query on it. Activities created here are linked to
    people (WhoId/WhatId) by the linker; those fields are Salesforce's alone and never part of
    the compared fields (the normalisation drops what the table does not map).
    """

    client: CrmClient
    mapping: SessionMapping
    linker: LinkerClient
    org: str
    owner_id: str
    policy: linker_pb.ResolutionPolicy | None = None
    side: Side = Side.CRM
    _fields: dict[str, list[str]] = field(default_factory=dict)

    async def list_changes(self, kind: int, cursor: str) -> ChangePage:
        sobject = CRM_OBJECT_OF_KIND[kind]
        # No field list: crm-connector then reads every field of the describe, which keeps
        # a quiet session to one call per object (the table would cost one more).
        page = await self.client.list_changes(
            self.org, sobject, res.Cursor(collection=sobject, token=cursor), self.owner_id
        )
        changes: list[Change] = []
        records: list[res.CrmRecord] = []
        for listed in page.changes:
            if listed.type == res.CHANGE_TYPE_DELETE or listed.record.is_deleted:
                changes.append(Change(Side.CRM, listed.record.id, None))
            else:
                records.append(listed.record)
        snapshots, failures = await self._normalised(kind, records)
        changes.extend(Change(Side.CRM, n, s) for n, s in snapshots.items())
        return ChangePage(
            changes,
            next_cursor=page.next_cursor.token,
            full_resync_required=page.full_resync_required,
            has_more=page.has_more,
            failures=failures,
        )

    async def _normalised(
        self, kind: int, records: Sequence[res.CrmRecord]
    ) -> tuple[dict[str, Snapshot], list[ItemFailure]]:
        """Records in the common field space, by the MapToMail → MapToCrm round trip."""
        failures: list[ItemFailure] = []
        items: list[tuple[res.CrmRecord, res.MailItem]] = []
        for record, mapped in zip(records, await self.mapping.to_mail(records), strict=True):
            if mapped.HasField("error"):
                failures.append(self._failure(kind, record, mapped.error))
            else:
                items.append((record, mapped.item))
        snapshots: dict[str, Snapshot] = {}
        back = await self.mapping.to_crm([item for _, item in items])
        for (record, item), mapped_back in zip(items, back, strict=True):
            if mapped_back.HasField("error"):
                failures.append(self._failure(kind, record, mapped_back.error))
                continue
            stamp = record.system_modstamp if record.HasField("system_modstamp") else None
            snapshots[record.id] = snapshot_of(
                kind,
                item,
                common_fields(mapped_back.record),
                version=stamp.ToJsonString() if stamp is not None else "",
                server_time=_instant(stamp) if stamp is not None else None,
                link_id=record.link_id,
            )
        return snapshots, failures

    @staticmethod
    def _failure(kind: int, record: res.CrmRecord, error: mapping_pb.MappingError) -> ItemFailure:
        version = (
            record.system_modstamp.ToJsonString() if record.HasField("system_modstamp") else ""
        )
        return _problem(kind, Side.CRM, record.id, version, error.reason, error.message)

    async def _readable(self, sobject: str) -> list[str]:
        """Every field a listing returns, for reads by id or link id (once per session)."""
        if sobject not in self._fields:
            described = await self.client.describe(self.org, sobject)
            # Compound fields (address, location) cannot be selected beside their parts.
            self._fields[sobject] = [
                f.name for f in described.fields if f.type not in ("address", "location")
            ]
        return self._fields[sobject]

    async def fetch(self, kind: int, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        sobject = CRM_OBJECT_OF_KIND[kind]
        fields = await self._readable(sobject)
        found: dict[str, Snapshot] = {}
        for chunk in _chunks(native_ids, CRM_READ_BATCH):
            response = await self.client.get_records(self.org, sobject, chunk, fields)
            snapshots, failures = await self._normalised(kind, list(response.records))
            found.update(snapshots)
            for failure in failures:
                found.setdefault(failure.native_id, Snapshot(fields={}, version=failure.version))
        return found

    async def find(self, kind: int, link_ids: Sequence[str]) -> dict[str, tuple[str, Snapshot]]:
        sobject = CRM_OBJECT_OF_KIND[kind]
        fields = await self._readable(sobject)
        found: dict[str, tuple[str, Snapshot]] = {}
        for chunk in _chunks(link_ids, CRM_READ_BATCH):
            values = [struct_pb2.Value(string_value=link_id) for link_id in chunk]
            token = ""
            while True:
                response = await self.client.query_records(
                    crm.QueryRecordsRequest(
                        org=self.org,
                        sobject_type=sobject,
                        fields=fields,
                        filters=[crm.FieldFilter(field=LINK_FIELD, values=values)],
                        page_token=token,
                    )
                )
                snapshots, _ = await self._normalised(kind, list(response.records))
                for record in response.records:
                    link_id = record.link_id or str(
                        json_format.MessageToDict(record.fields).get(LINK_FIELD) or ""
                    )
                    if record.id in snapshots and link_id:
                        found[link_id] = (record.id, snapshots[record.id])
                token = response.next_page_token
                if not token:
                    break
        return found

    async def apply(self, kind: int, writes: Sequence[Write]) -> Sequence[WriteResult]:
        sobject = CRM_OBJECT_OF_KIND[kind]
        links = await self._links(kind, [w for w in writes if w.op is WriteOp.CREATE])
        subjects = await self._subjects(sobject, [w for w in writes if w.op is WriteOp.MARK])
        sent: list[crm.CrmWrite] = []
        for write in writes:
            sent.append(self._crm_write(sobject, write, links, subjects))
        answers = await self.client.apply_batch(self.org, sent) if sent else []
        results = [_crm_result(w, a) for w, a in zip(writes, answers, strict=True)]
        await self._relate(kind, writes, results, links)
        return results

    def _crm_write(
        self,
        sobject: str,
        write: Write,
        links: Mapping[str, linker_pb.ResolveParticipantsResponse],
        subjects: Mapping[str, str],
    ) -> crm.CrmWrite:
        if write.op is WriteOp.DELETE:
            return crm.CrmWrite(
                operation=crm.CRM_WRITE_OPERATION_DELETE,
                sobject_type=sobject,
                id=write.native_id or "",
            )
        if write.op is WriteOp.MARK:
            subject = subjects.get(write.native_id or "", "")
            marked = subject if subject.startswith(CANCELLED_PREFIX) else CANCELLED_PREFIX + subject
            return crm.CrmWrite(
                operation=crm.CRM_WRITE_OPERATION_UPDATE,
                sobject_type=sobject,
                id=write.native_id or "",
                fields=_struct({"Subject": marked}),
            )
        values = {k: v for k, v in write.fields.items() if v is not None}
        if write.op is WriteOp.CREATE:
            resolved = links.get(write.link_id)
            if resolved is not None:
                # Salesforce's own fields, set once at creation: the user may relink later.
                if resolved.HasField("who") and resolved.who.id:
                    values["WhoId"] = resolved.who.id
                if resolved.HasField("what") and resolved.what.id:
                    values["WhatId"] = resolved.what.id
            return crm.CrmWrite(
                # An upsert by link id: a create replayed after a lost answer finds its record.
                operation=crm.CRM_WRITE_OPERATION_UPSERT,
                sobject_type=sobject,
                link_id=write.link_id,
                fields=_struct(values),
            )
        update = crm.CrmWrite(
            operation=crm.CRM_WRITE_OPERATION_UPDATE,
            sobject_type=sobject,
            id=write.native_id or "",
            fields=_struct(values),
            fields_to_null=sorted(k for k, v in write.fields.items() if v is None),
        )
        if write.expected_version:
            try:
                update.expected_system_modstamp.FromJsonString(write.expected_version)
            except ValueError:
                update.ClearField("expected_system_modstamp")
        return update

    async def _subjects(self, sobject: str, writes: Sequence[Write]) -> dict[str, str]:
        ids = [w.native_id for w in writes if w.native_id]
        if not ids:
            return {}
        response = await self.client.get_records(self.org, sobject, ids, ["Subject"])
        return {
            r.id: str(json_format.MessageToDict(r.fields).get("Subject") or "")
            for r in response.records
        }

    async def _links(
        self, kind: int, creates: Sequence[Write]
    ) -> dict[str, linker_pb.ResolveParticipantsResponse]:
        """The linker's answer for each activity created, asked once per distinct set of
        people in the batch (a series' occurrences share theirs)."""
        if kind not in _ACTIVITY_KINDS:
            return {}
        by_people: dict[tuple[tuple[str, str, int], ...], list[str]] = {}
        for write in creates:
            if write.participants:
                by_people.setdefault(write.participants, []).append(write.link_id)
        if not by_people:
            return {}
        gate = asyncio.Semaphore(LINKER_CONCURRENCY)

        async def resolve(
            people: tuple[tuple[str, str, int], ...], link_id: str
        ) -> linker_pb.ResolveParticipantsResponse:
            async with gate:
                return await self.linker.resolve_participants(
                    self.org,
                    self.owner_id,
                    kind,
                    [
                        res.Participant(email=e, display_name=n, role=r)  # type: ignore[arg-type]
                        for e, n, r in people
                    ],
                    # The first activity's link id: a retried session asks again with the
                    # same key, so records the linker creates are created once.
                    request_id=link_id,
                    policy=self.policy,
                )

        answers = await asyncio.gather(*(resolve(p, ids[0]) for p, ids in by_people.items()))
        return {
            link_id: answer
            for (_, ids), answer in zip(by_people.items(), answers, strict=True)
            for link_id in ids
        }

    async def _relate(
        self,
        kind: int,
        writes: Sequence[Write],
        results: Sequence[WriteResult],
        links: Mapping[str, linker_pb.ResolveParticipantsResponse],
    ) -> None:
        """EventRelation rows for the attendees besides WhoId, on events just created.

        Best effort: the event itself is written and linked; a relation Salesforce refuses
        (e.g. a duplicate after a replay) is logged, never a reason to write the event again.
        """
        if kind != res.OBJECT_KIND_CALENDAR_ITEM:
            return
        rows: list[crm.CrmWrite] = []
        for write, result in zip(writes, results, strict=True):
            resolved = links.get(write.link_id)
            if write.op is not WriteOp.CREATE or resolved is None or not result.ok:
                continue
            if result.already_applied:
                continue  # a replay: its relations were written with it
            who = resolved.who.id if resolved.HasField("who") else ""
            for relation in resolved.relations:
                if relation.id and relation.id != who:
                    rows.append(
                        crm.CrmWrite(
                            operation=crm.CRM_WRITE_OPERATION_CREATE,
                            sobject_type="EventRelation",
                            fields=_struct(
                                {"EventId": result.native_id, "RelationId": relation.id}
                            ),
                        )
                    )
        if not rows:
            return
        answers = await self.client.apply_batch(self.org, rows)
        refused = [a for a in answers if a.status != res.WRITE_STATUS_OK]
        if refused:
            log.warning(
                "%d of %d event relations were refused: %s",
                len(refused),
                len(rows),
                sorted({e.code for a in refused for e in a.errors}),
            )


def _crm_result(write: Write, answer: crm.CrmWriteResult) -> WriteResult:
    status = answer.status
    if status == res.WRITE_STATUS_OK:
        stamp = answer.system_modstamp.ToJsonString() if answer.HasField("system_modstamp") else ""
        replayed = write.op is WriteOp.CREATE and not answer.created
        return WriteResult(
            write.link_id, True, answer.id or write.native_id or "", stamp, already_applied=replayed
        )
    if status == res.WRITE_STATUS_NOT_FOUND and write.op is WriteOp.DELETE:
        return WriteResult(write.link_id, True, write.native_id or "", already_applied=True)
    code = answer.errors[0].code if answer.errors else ""
    return _failed(write.link_id, status, code)
