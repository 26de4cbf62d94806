"""What the mirror's two sides over the peers' gRPC APIs share (`mail_side.MailSyncSide`,
`crm_side.CrmSyncSide`): the peers' ports, one session's mapping, and snapshots.

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
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.participants import participants_of
from concord_reconciler.mirror.domain.ports import (
    CrmPage,
    ItemFailure,
    MailPage,
)
from concord_reconciler.mirror.domain.sync import (
    Side,
    Snapshot,
    Value,
    WriteResult,
)

log = logging.getLogger(__name__)


# The linker's hints and other values that are not Salesforce fields.
HINT_PREFIX = "concord."


_TABLE_OF_KIND: dict[Kind, str] = {
    res.OBJECT_KIND_CALENDAR_ITEM: "calendar-item",
    res.OBJECT_KIND_TASK: "task",
    res.OBJECT_KIND_CONTACT: "contact",
}


_PRIVATE = (res.SENSITIVITY_PRIVATE, res.SENSITIVITY_CONFIDENTIAL)


_TO_MAIL = (
    res.SYNC_DIRECTION_UNSPECIFIED,
    res.SYNC_DIRECTION_TWO_WAY,
    res.SYNC_DIRECTION_CRM_TO_MAIL,
)


class MailClient(Protocol):
    async def list_changes(
        self,
        mailbox: str,
        kind: Kind,
        cursor: res.Cursor,
        known: Mapping[str, str] | None = None,
    ) -> MailPage:
        """A page of changes; an upsert at a version in `known` (native id -> version) comes
        as its reference alone, which the mailbox need not read."""
        ...

    async def get_items(
        self,
        mailbox: str,
        refs: Sequence[res.ItemRef] = (),
        link_ids: Sequence[str] = (),
        kind: Kind = res.OBJECT_KIND_UNSPECIFIED,
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
        kind: Kind,
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


def struct_of(fields: Mapping[str, Value]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({k: _plain(v) for k, v in fields.items() if v is not None})
    return struct


def instant(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(UTC)


def _day(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None
    except ValueError:
        return None


def _match_keys(kind: Kind, fields: Mapping[str, Value], uid: str = "") -> tuple[str, ...]:
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
    kind: Kind,
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
            start = instant(event.start) if event.HasField("start") else None
            end = instant(event.end) if event.HasField("end") else None
        private = event.is_private or event.sensitivity in _PRIVATE
        cancelled = event.is_cancelled
        series_id = event.series_id
        if event.HasField("original_start"):
            original_start = instant(event.original_start)
        participants = tuple(
            (p.email, p.display_name, int(p.role)) for p in participants_of([item])
        )
    elif payload == "task":
        task = item.task
        private = task.sensitivity in _PRIVATE
        if task.HasField("completed_time"):
            completed = instant(task.completed_time)
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


def problem(
    kind: Kind, side: Side, native_id: str, version: str, reason: str, message: str
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


P = TypeVar("P")


class ReadAhead(Generic[P]):
    """A listing's next page, asked for while the current one is mapped.

    A listing goes page by page, each page's cursor given by the one before, and mapping a page
    (in the mapping service) takes about as long as reading one (in a connector): so once a page
    says more follow, the next is asked for at once and handed over when the listing asks for
    that cursor. A page asked for under any other key (the listing started over) drops it.
    """

    def __init__(self) -> None:
        self._ahead: tuple[Hashable, asyncio.Future[P]] | None = None

    async def read(self, key: Hashable, fetch: Callable[[], Awaitable[P]]) -> P:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[0] == key:
                return await ahead[1]
            ahead[1].cancel()
        return await fetch()

    def read_next(self, key: Hashable, fetch: Callable[[], Awaitable[P]]) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
        task = asyncio.ensure_future(fetch())
        # A page no one asks for after all (the session failed meanwhile) fails unheard.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._ahead = (key, task)


T = TypeVar("T")
# Turning a page of thousands of items into snapshots is CPU work on the replica's one event
# loop, shared by every session it runs: other sessions get it back this often (issue #18).
TURN_EVERY = 100


async def in_turns(values: Iterable[T], every: int = TURN_EVERY) -> AsyncIterator[T]:
    """Each of `values`, giving the event loop back before every `every`-th."""
    for count, value in enumerate(values):
        if count and count % every == 0:
            await asyncio.sleep(0)
        yield value


def chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class SessionMapping:
    """The mapping service for one session: tables and describes read once, then kept."""

    client: MappingClient
    org: str
    owner_id: str
    _tables: dict[int, mapping_pb.MappingTable] = field(default_factory=dict)

    async def table(self, kind: Kind) -> mapping_pb.MappingTable:
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

    async def mail_paths(self, kind: Kind, crm_fields: Iterable[str]) -> list[str]:
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


def failed_result(link_id: str, status: int, code: str) -> WriteResult:
    if status == res.WRITE_STATUS_CONFLICT:
        return WriteResult(link_id, False, reason="VERSION_MISMATCH")
    if status == res.WRITE_STATUS_RETRYABLE:
        # Throttled, timed out, a 5xx or a connection lost: only the first is sure not to
        # have landed, and the connectors do not always know which it was.
        return WriteResult(link_id, False, reason=code or "RETRYABLE", maybe_landed=True)
    if status == res.WRITE_STATUS_ROLLED_BACK:
        return WriteResult(link_id, False, reason=code or "RETRYABLE")
    if status == res.WRITE_STATUS_NOT_FOUND:
        # The target vanished between listing and writing: the next listing says so.
        return WriteResult(link_id, False, reason="NOT_FOUND")
    return WriteResult(link_id, False, retryable=False, reason=code or "WRITE_REJECTED")
