"""Salesforce as one side of the mirror: crm-connector for records, normalised through mapping,
activities linked to people by the linker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf import json_format, struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.settings import CRM_OBJECT_OF_KIND
from concord_reconciler.mirror.adapters.sync_sides import (
    CrmClient,
    LinkerClient,
    ReadAhead,
    SessionMapping,
    chunks,
    common_fields,
    failed_result,
    in_turns,
    instant,
    problem,
    snapshot_of,
    struct_of,
)
from concord_reconciler.mirror.domain.echoes import is_echo
from concord_reconciler.mirror.domain.ports import (
    ChangePage,
    CrmPage,
    ItemFailure,
)
from concord_reconciler.mirror.domain.sync import (
    Change,
    Side,
    Snapshot,
    Write,
    WriteOp,
    WriteResult,
)

log = logging.getLogger(__name__)

LINK_FIELD = "Concord_Link_Id__c"


CRM_READ_BATCH = 200

# A long listing whose page was nearly all Concord's own writes (the walk past a first sync's
# writes, a push served between a big session's chunks) lists its next pages thin: each row's
# id, SystemModstamp and LastModifiedById, all an echo is told by; the few others are then
# read in full by id. Id, SystemModstamp and IsDeleted come with every row.
THIN_AFTER_ECHO_SHARE = 0.9
THIN_FIELDS = ("LastModifiedById",)

# Linker calls in flight at once for one batch of creates.
LINKER_CONCURRENCY = 8

# Activities are linked to people (WhoId/WhatId); contacts are the people.
_ACTIVITY_KINDS = (res.OBJECT_KIND_CALENDAR_ITEM, res.OBJECT_KIND_TASK)


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
    # Per kind: two kinds may be listed at once (a pair's walk past its writes, the next pair).
    _pages: dict[Kind, ReadAhead[CrmPage]] = field(default_factory=dict, init=False)
    # Kinds whose listing this session runs past one page.
    _long: set[Kind] = field(default_factory=set, init=False)
    # Kinds whose listing goes on thin (`THIN_AFTER_ECHO_SHARE`).
    _thin: set[Kind] = field(default_factory=set, init=False)

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        pages = self._pages.setdefault(kind, ReadAhead())
        thin = bool(known) and kind in self._thin
        page = await pages.read((cursor, thin), lambda: self._listed(kind, cursor, thin))
        changes, records, echoes = self._sorted(page, known or {})
        if page.has_more and not page.full_resync_required:
            self._long.add(kind)
            listed = len(records) + len(echoes)
            if known and listed and len(echoes) >= THIN_AFTER_ECHO_SHARE * listed:
                self._thin.add(kind)
            else:
                self._thin.discard(kind)
            after, thin_after = page.next_cursor.token, bool(known) and kind in self._thin
            pages.read_next((after, thin_after), lambda: self._listed(kind, after, thin_after))
        if thin and records:
            records = await self._read_in_full(kind, [r.id for r in records])
        snapshots, failures = await self._normalised(kind, records)
        changes.extend(Change(Side.CRM, n, s) for n, s in snapshots.items())
        return ChangePage(
            changes,
            next_cursor=page.next_cursor.token,
            full_resync_required=page.full_resync_required,
            has_more=page.has_more,
            failures=failures,
            echoes=echoes,
        )

    @staticmethod
    def _sorted(
        page: CrmPage, known: Mapping[str, str]
    ) -> tuple[list[Change], list[res.CrmRecord], list[str]]:
        """A page's removals, its records to map, and its echoes."""
        changes: list[Change] = []
        records: list[res.CrmRecord] = []
        echoes: list[str] = []
        for listed in page.changes:
            record = listed.record
            if listed.type == res.CHANGE_TYPE_DELETE or record.is_deleted:
                changes.append(Change(Side.CRM, record.id, None))
            elif (
                record.last_modified_by_concord
                and record.HasField("system_modstamp")
                and is_echo(known or {}, record.id, record.system_modstamp.ToJsonString())
            ):
                # Concord's own write, unchanged since its link recorded it: no mapping round
                # trip. SystemModstamp is kept to the second, so a user's edit in the second of
                # Concord's write carries the same stamp: only LastModifiedById (not the
                # integration user) tells it apart, and it is mapped and planned.
                echoes.append(record.id)
            else:
                records.append(record)
        return changes, records, echoes

    async def _listed(self, kind: Kind, cursor: str, thin: bool = False) -> CrmPage:
        sobject = CRM_OBJECT_OF_KIND[kind]
        fields: list[str] = []
        if thin:
            fields = list(THIN_FIELDS)
        elif not cursor or kind in self._long:
            fields = await self._mapped_fields(kind, sobject)
        return await self.client.list_changes(
            self.org, sobject, res.Cursor(collection=sobject, token=cursor), self.owner_id, fields
        )

    async def _read_in_full(self, kind: Kind, ids: Sequence[str]) -> list[res.CrmRecord]:
        """The records a thin page listed that are not echoes, read by id (every field, as
        `fetch` reads). One deleted since is left out: the next listing has its removal."""
        sobject = CRM_OBJECT_OF_KIND[kind]
        fields = await self._readable(sobject)
        read: list[res.CrmRecord] = []
        for chunk in chunks(ids, CRM_READ_BATCH):
            response = await self.client.get_records(self.org, sobject, chunk, fields)
            read.extend(response.records)
        return read

    async def _mapped_fields(self, kind: Kind, sobject: str) -> list[str]:
        """What the kind's table reads, for a listing of many pages (a first sync, a bulk load).
        Every field of the describe is most of a wide page's bytes, and its conversion held the
        services' loops while another mailbox waited (issue #18). A short listing names none:
        crm-connector then reads every field, and a quiet session stays one call per object
        (the table is one call more). Empty (every field) when the table reads another object's
        records or never maps to the mailbox."""
        table = await self.mapping.table(kind)
        if table.target_sobject != sobject or not table.crm_fields_read:
            return []
        return [*table.crm_fields_read, LINK_FIELD]

    async def _normalised(
        self, kind: Kind, records: Sequence[res.CrmRecord]
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
        async for (record, item), mapped_back in in_turns(zip(items, back, strict=True)):
            if mapped_back.HasField("error"):
                failures.append(self._failure(kind, record, mapped_back.error))
                continue
            stamp = record.system_modstamp if record.HasField("system_modstamp") else None
            snapshots[record.id] = snapshot_of(
                kind,
                item,
                common_fields(mapped_back.record),
                version=stamp.ToJsonString() if stamp is not None else "",
                server_time=instant(stamp) if stamp is not None else None,
                link_id=record.link_id,
            )
        return snapshots, failures

    @staticmethod
    def _failure(kind: Kind, record: res.CrmRecord, error: mapping_pb.MappingError) -> ItemFailure:
        version = (
            record.system_modstamp.ToJsonString() if record.HasField("system_modstamp") else ""
        )
        return problem(kind, Side.CRM, record.id, version, error.reason, error.message)

    async def _readable(self, sobject: str) -> list[str]:
        """Every field a listing returns, for reads by id or link id (once per session)."""
        if sobject not in self._fields:
            described = await self.client.describe(self.org, sobject)
            # Compound fields (address, location) cannot be selected beside their parts.
            self._fields[sobject] = [
                f.name for f in described.fields if f.type not in ("address", "location")
            ]
        return self._fields[sobject]

    async def fetch(self, kind: Kind, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        sobject = CRM_OBJECT_OF_KIND[kind]
        fields = await self._readable(sobject)
        found: dict[str, Snapshot] = {}
        for chunk in chunks(native_ids, CRM_READ_BATCH):
            response = await self.client.get_records(self.org, sobject, chunk, fields)
            snapshots, failures = await self._normalised(kind, list(response.records))
            found.update(snapshots)
            for failure in failures:
                found.setdefault(failure.native_id, Snapshot(fields={}, version=failure.version))
        return found

    async def find(
        self, kind: Kind, link_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, Snapshot]]]:
        sobject = CRM_OBJECT_OF_KIND[kind]
        fields = await self._readable(sobject)
        found: dict[str, list[tuple[str, Snapshot]]] = {}
        for chunk in chunks(link_ids, CRM_READ_BATCH):
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
                        found.setdefault(link_id, []).append((record.id, snapshots[record.id]))
                token = response.next_page_token
                if not token:
                    break
        return found

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        sobject = CRM_OBJECT_OF_KIND[kind]
        links = await self._links(kind, [w for w in writes if w.op is WriteOp.CREATE])
        sent = [self._crm_write(sobject, write, links) for write in writes]
        answers = await self.client.apply_batch(self.org, sent) if sent else []
        return [_crm_result(w, a) for w, a in zip(writes, answers, strict=True)]

    def _crm_write(
        self,
        sobject: str,
        write: Write,
        links: Mapping[str, linker_pb.ResolveParticipantsResponse],
    ) -> crm.CrmWrite:
        if write.op is WriteOp.DELETE:
            return crm.CrmWrite(
                operation=crm.CRM_WRITE_OPERATION_DELETE,
                sobject_type=sobject,
                id=write.native_id or "",
            )
        if write.op is WriteOp.MARK:
            # What a cancelled activity looks like in Salesforce is crm-connector's to know.
            return crm.CrmWrite(
                operation=crm.CRM_WRITE_OPERATION_MARK_CANCELLED,
                sobject_type=sobject,
                id=write.native_id or "",
            )
        values = {k: v for k, v in write.fields.items() if v is not None}
        if write.op is WriteOp.CREATE:
            create = crm.CrmWrite(
                # An upsert by link id: a create replayed after a lost answer finds its record.
                operation=crm.CRM_WRITE_OPERATION_UPSERT,
                sobject_type=sobject,
                link_id=write.link_id,
                fields=struct_of(values),
            )
            resolved = links.get(write.link_id)
            if resolved is not None:
                # Who and what the activity concerns; crm-connector sets them as Salesforce
                # keeps them (WhoId, WhatId, EventRelation rows for the other people).
                create.activity_links.CopyFrom(activity_links(resolved))
            return create
        update = crm.CrmWrite(
            operation=crm.CRM_WRITE_OPERATION_UPDATE,
            sobject_type=sobject,
            id=write.native_id or "",
            fields=struct_of(values),
            fields_to_null=sorted(k for k, v in write.fields.items() if v is None),
        )
        if write.expected_version:
            try:
                update.expected_system_modstamp.FromJsonString(write.expected_version)
            except ValueError:
                update.ClearField("expected_system_modstamp")
        return update

    async def _links(
        self, kind: Kind, creates: Sequence[Write]
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


def activity_links(resolved: linker_pb.ResolveParticipantsResponse) -> crm.ActivityLinks:
    """The linker's answer as what crm-connector needs to link an activity."""
    who = resolved.who.id if resolved.HasField("who") else ""
    return crm.ActivityLinks(
        who_id=who,
        what_id=resolved.what.id if resolved.HasField("what") else "",
        invitee_ids=[r.id for r in resolved.relations if r.id and r.id != who],
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
    return failed_result(write.link_id, status, code)
