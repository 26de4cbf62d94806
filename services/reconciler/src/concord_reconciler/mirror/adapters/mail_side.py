"""The mailbox as one side of the mirror: the mail-connector's items, normalised through mapping."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import field_mask_pb2

from concord.common.v1 import resources_pb2 as res
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.settings import CRM_OBJECT_OF_KIND
from concord_reconciler.mirror.adapters.sync_sides import (
    MailClient,
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
    ItemFailure,
    MailPage,
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

# ApplyItems and GetItems take 100 items a call; ApplyBatch packs Collections itself.
MAIL_BATCH = 100
# Writes go in calls of this many, up to WRITES_IN_FLIGHT of them at once (see `apply`). As
# many as a call takes: each provider request costs the connector a fixed part (envelope,
# answer, trace), and at 25 a call that part made EWS writes 20% dearer per item (issue #18).
WRITE_CHUNK = MAIL_BATCH
WRITES_IN_FLIGHT = 4
# The connector takes 5,000 known versions a listing: ten chunks of writes.
FRESH_WRITES = 5000
# The writes a session remembers until it sees them come back (a first sync's, per kind).
FRESH_KEPT = 200_000

# ApplyItems' update_mask path that stores the write's link id in the item (a relink).
LINK_ID_PATH = "link_id"

_PAYLOAD_OF_KIND: dict[Kind, str] = {
    res.OBJECT_KIND_CALENDAR_ITEM: "calendar_item",
    res.OBJECT_KIND_TASK: "task",
    res.OBJECT_KIND_CONTACT: "contact",
}


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
    categories: Mapping[Kind, str] = field(default_factory=dict)
    side: Side = Side.MAIL
    # Whether the provider stores a link id an update names (ApplyItems' `link_id` path):
    # EWS, Graph and Google do (`engine.RELINKING_PROVIDERS`). Elsewhere a relink is answered
    # as done without a write, and the copy keeps the link id it carries.
    relinks: bool = True
    # Per kind, native id -> the version this session's latest write of it answered, oldest
    # first, until the item is listed back: told to the connector when listing (`_listed`).
    _fresh: dict[Kind, dict[str, str]] = field(default_factory=dict, init=False)
    # Per kind: two kinds may be listed at once (a pair's walk past its writes, the next pair).
    _pages: dict[Kind, ReadAhead[MailPage]] = field(default_factory=dict, init=False)

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        # A delta after this session's writes is mostly those writes coming back (a push
        # served mid-session, the listing past Concord's own writes): the connector is told
        # their versions, and answers those items by reference without reading them.
        pages = self._pages.setdefault(kind, ReadAhead())
        page = await pages.read(cursor, lambda: self._listed(kind, cursor))
        if page.has_more and not page.full_resync_required:
            after = page.next_cursor.token
            pages.read_next(after, lambda: self._listed(kind, after))
        fresh = self._fresh.get(kind, {}) if cursor else {}
        changes: list[Change] = []
        failures: list[ItemFailure] = []
        items: list[res.MailItem] = []
        echoes: list[str] = []
        unconfirmed: list[res.ItemRef] = []
        for listed in page.changes:
            native = listed.ref.native_id or listed.item.ref.native_id
            # Listed back: a later listing names the writes still to come.
            fresh.pop(native, None)
            if listed.HasField("problem"):
                failures.append(
                    problem(
                        kind,
                        Side.MAIL,
                        native,
                        listed.ref.version,
                        listed.problem.reason,
                        listed.problem.message,
                    )
                )
            elif listed.type == res.CHANGE_TYPE_DELETE:
                changes.append(Change(Side.MAIL, native, None))
            elif is_echo(known or {}, native, listed.item.ref.version or listed.ref.version):
                # Unchanged since its link recorded it (Concord's own write): not mapped.
                echoes.append(native)
            elif not listed.HasField("item"):
                # Answered by reference at a version this session wrote, which its link does
                # not hold (yet): read like any other change.
                unconfirmed.append(listed.ref)
            elif self._shared(kind, listed.item):
                items.append(listed.item)
            elif cursor:
                # No longer carrying the category: out of scope, which reads as a removal. A
                # full listing leaves unshared items out instead.
                changes.append(Change(Side.MAIL, native, None))
        for chunk in chunks(unconfirmed, MAIL_BATCH):
            found = await self.client.get_items(self.mailbox, refs=chunk)
            items.extend(i for i in found.items if self._shared(kind, i))
        snapshots, unmapped = await self._mapped(kind, items)
        changes.extend(Change(Side.MAIL, n, s) for n, s in snapshots.items())
        failures.extend(unmapped)
        return ChangePage(
            changes,
            next_cursor=page.next_cursor.token,
            full_resync_required=page.full_resync_required,
            has_more=page.has_more,
            failures=failures,
            echoes=echoes,
        )

    async def _listed(self, kind: Kind, cursor: str) -> MailPage:
        # A delta lists changes oldest first: the versions named are the oldest writes not
        # listed back yet (a first sync writes more than one listing can name).
        fresh = self._fresh.get(kind, {}) if cursor else {}
        known = dict(itertools.islice(fresh.items(), FRESH_WRITES))
        return await self.client.list_changes(
            self.mailbox, kind, res.Cursor(token=cursor), known=known
        )

    def _shared(self, kind: Kind, item: res.MailItem) -> bool:
        category = self.categories.get(kind, "")
        if not category:
            return True
        payload = item.WhichOneof("payload")
        held = getattr(item, payload).categories if payload else ()
        return any(c.strip().lower() == category.strip().lower() for c in held)

    async def _mapped(
        self, kind: Kind, items: Sequence[res.MailItem]
    ) -> tuple[dict[str, Snapshot], list[ItemFailure]]:
        snapshots: dict[str, Snapshot] = {}
        failures: list[ItemFailure] = []
        mapped_items = await self.mapping.to_crm(items)
        async for item, mapped in in_turns(zip(items, mapped_items, strict=True)):
            ref = item.ref
            if mapped.HasField("error"):
                failures.append(
                    problem(
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
                instant(item.last_modified_time) if item.HasField("last_modified_time") else None
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

    async def fetch(self, kind: Kind, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        found: dict[str, Snapshot] = {}
        for chunk in chunks(native_ids, MAIL_BATCH):
            refs = [res.ItemRef(kind=kind, native_id=n) for n in chunk]
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

    async def find(
        self, kind: Kind, link_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, Snapshot]]]:
        found: dict[str, list[tuple[str, Snapshot]]] = {}
        for chunk in chunks(link_ids, MAIL_BATCH):
            response = await self.client.get_items(self.mailbox, link_ids=chunk, kind=kind)
            snapshots, _ = await self._mapped(kind, list(response.items))
            for item in response.items:
                snapshot = snapshots.get(item.ref.native_id)
                if snapshot is not None and item.ref.link_id:
                    found.setdefault(item.ref.link_id, []).append((item.ref.native_id, snapshot))
        return found

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """The written items are not read back: a link keeps the version each write answered
        (the next listing knows the item as an echo by it) and the hash of the fields written.
        Reading back what the mailbox keeps in its own form cost as much as the write itself,
        and saved only a refresh of the link when the item's version moved later without a
        mapped field changing."""
        results: dict[int, WriteResult] = {}

        async def write(part: Sequence[int]) -> None:
            # Each call's items are converted on their way: mapping converts one call's items
            # while the connector and the mailbox handle the others.
            own = [writes[i] for i in part]
            converted = await self._items(
                kind,
                [w for w in own if w.op is WriteOp.CREATE or (w.op is WriteOp.UPDATE and w.fields)],
            )
            unshared = await self._current([w for w in own if w.op is WriteOp.UNSHARE], kind)
            planned: list[tuple[int, mail.MailWrite]] = []
            for index in part:
                outcome = await self._mail_write(kind, writes[index], converted, unshared)
                if isinstance(outcome, WriteResult):
                    results[index] = outcome
                else:
                    planned.append((index, outcome))
            if not planned:
                return
            answers = await self.client.apply_items(self.mailbox, [w for _, w in planned])
            results.update(
                (index, _mail_result(writes[index], answer))
                for (index, _), answer in zip(planned, answers, strict=True)
            )

        # A batch goes in several calls at once, instead of each step of each call waiting
        # for all the others in turn.
        await _at_once(
            [write(part) for part in chunks(list(range(len(writes))), WRITE_CHUNK)],
            WRITES_IN_FLIGHT,
        )
        fresh = self._fresh.setdefault(kind, {})
        for result in (results[i] for i in range(len(writes))):
            if result.ok and result.native_id and result.version:
                fresh.pop(result.native_id, None)  # re-inserted as the most recent
                fresh[result.native_id] = result.version
        for stale in list(fresh)[: max(0, len(fresh) - FRESH_KEPT)]:
            del fresh[stale]
        return [results[i] for i in range(len(writes))]

    async def _items(self, kind: Kind, writes: Sequence[Write]) -> dict[str, mapping_pb.MappedItem]:
        """Each create's or update's mailbox item, from the fields the item will hold."""
        records = [
            res.CrmRecord(
                sobject_type=CRM_OBJECT_OF_KIND[kind],
                link_id=w.link_id,
                fields=struct_of(w.full or w.fields),
            )
            for w in writes
        ]
        mapped = await self.mapping.to_mail(records)
        return {w.link_id: m for w, m in zip(writes, mapped, strict=True)}

    async def _current(self, writes: Sequence[Write], kind: Kind) -> dict[str, res.MailItem]:
        natives = [w.native_id for w in writes if w.native_id]
        found: dict[str, res.MailItem] = {}
        for chunk in chunks(natives, MAIL_BATCH):
            refs = [res.ItemRef(kind=kind, native_id=n) for n in chunk]
            response = await self.client.get_items(self.mailbox, refs=refs)
            found.update((i.ref.native_id, i) for i in response.items)
        return found

    async def _mail_write(
        self,
        kind: Kind,
        write: Write,
        converted: Mapping[str, mapping_pb.MappedItem],
        unshared: Mapping[str, res.MailItem],
    ) -> mail.MailWrite | WriteResult:
        ref = res.ItemRef(
            kind=kind,
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
            return _update(write, ref, item, ["categories"])
        if write.op is WriteOp.MARK:
            # Marking is a Salesforce record's fate; a mailbox item is deleted or unshared.
            return WriteResult(write.link_id, False, retryable=False, reason="UNSUPPORTED_WRITE")
        relink = [LINK_ID_PATH] if write.relink and self.relinks else []
        if write.op is WriteOp.UPDATE and not write.fields:
            # A relink alone: no field for the mapping to convert, only the link id.
            item = res.MailItem(ref=ref)
            getattr(item, _PAYLOAD_OF_KIND[kind]).SetInParent()
            return _update(write, ref, item, relink)
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
                operation=mail.MAIL_WRITE_OPERATION_CREATE,
                link_id=write.link_id,
                item=item,
                known_new=write.known_new,
            )
        return _update(
            write, ref, item, [*await self.mapping.mail_paths(kind, write.fields), *relink]
        )


def _update(
    write: Write, ref: res.ItemRef, item: res.MailItem, paths: Sequence[str]
) -> mail.MailWrite | WriteResult:
    if not paths:
        # Only fields the mailbox does not hold changed, or a relink the provider does not
        # take: nothing to write on this side (an empty mask would write every field).
        return WriteResult(write.link_id, True, write.native_id or "", write.expected_version)
    return mail.MailWrite(
        operation=mail.MAIL_WRITE_OPERATION_UPDATE,
        link_id=write.link_id,
        ref=ref,
        item=item,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


async def _at_once(calls: Sequence[Coroutine[Any, Any, None]], limit: int) -> None:
    """Run `calls`, at most `limit` at a time; the first failure cancels the rest (their
    writes may have landed: the executor's journal looks them up) and is raised as it is."""
    gate = asyncio.Semaphore(limit)

    async def gated(call: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await call

    tasks = [asyncio.ensure_future(gated(c)) for c in calls]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _mail_result(write: Write, answer: mail.MailWriteResult) -> WriteResult:
    status = answer.status
    native = answer.ref.native_id or write.native_id or ""
    if status == res.WRITE_STATUS_OK:
        return WriteResult(
            write.link_id, True, native, answer.ref.version, already_applied=answer.already_applied
        )
    if status == res.WRITE_STATUS_NOT_FOUND and write.op in (WriteOp.DELETE, WriteOp.UNSHARE):
        return WriteResult(write.link_id, True, native, already_applied=True)
    return failed_result(write.link_id, status, answer.error_code)
