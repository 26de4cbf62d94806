"""In-memory sides and link store, in the spirit of vdirsyncer's memory storage.

The property tests and the benchmark drive the sync engine against these: versions bump on
every write, changes are listed from a per-side log (so cursors, replays and invalidations
behave as a connector's do), writes can fail, lose their answer or race a concurrent edit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.echoes import is_echo
from concord_reconciler.mirror.domain.ports import ChangePage, Intent, ItemFailure, NativeIdTaken
from concord_reconciler.mirror.domain.sync import (
    Change,
    Link,
    Side,
    Snapshot,
    Value,
    Write,
    WriteOp,
    WriteResult,
)

__all__ = ["MemoryItem", "MemoryLinkStore", "MemorySide"]

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class MemoryItem:
    fields: dict[str, Value]
    version: int = 1
    link_id: str = ""
    modified: int = 0  # the side's logical clock at the last change
    is_private: bool = False
    shared: bool = True
    # The last change was Concord's write (Salesforce's LastModifiedById is its user), and
    # the side's `second` it was made in.
    by_concord: bool = False
    second: int = 0


@dataclass
class MemorySide:
    """One side of one mailbox; every kind shares one log, as one test needs no more."""

    side: Side
    clock: Callable[[], int]
    items: dict[str, MemoryItem] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    page_size: int = 0
    # Cursors below this position are refused (expired sync token, 410).
    invalid_before: int = 0
    # Failure injection: the next N writes fail (retryable); the next apply loses its answer.
    fail_next: int = 0
    lose_next_answer: bool = False
    # Writes that are refused for good, by native id or by field value.
    reject_value: Value = None
    calls: dict[str, int] = field(default_factory=dict)
    # Native ids are `<prefix>-<n>` (the side's name by default); sides of one mailbox that
    # hold different kinds need prefixes of their own, as a real mailbox never reuses an id.
    prefix: str = ""
    # Versions kept to the second, like Salesforce's SystemModstamp: a user's edit in the
    # `second` of Concord's write keeps the write's version; only who made the last change
    # (`MemoryItem.by_concord`, LastModifiedById) tells the edit from the echo. The caller
    # moves `second` on (e.g. once a session).
    same_second_edits: bool = False
    second: int = 0
    _next_id: int = 0

    # -- what users do -------------------------------------------------------------------

    def create(self, fields: Mapping[str, Value], *, link_id: str = "") -> str:
        self._next_id += 1
        native = f"{self.prefix or self.side.value}-{self._next_id}"
        self.items[native] = MemoryItem(dict(fields), link_id=link_id, modified=self.clock())
        self.log.append(native)
        return native

    def edit(self, native: str, name: str, value: Value) -> None:
        item = self.items[native]
        if value is None:
            item.fields.pop(name, None)
        else:
            item.fields[name] = value
        if self.same_second_edits and item.by_concord and item.second == self.second:
            item.by_concord = False
            item.modified = self.clock()
            self.log.append(native)
        else:
            self._bump(native)

    def touch(self, native: str) -> None:
        """A new version with the same content (an item opened in Outlook)."""
        self._bump(native)

    def delete(self, native: str) -> None:
        del self.items[native]
        self.log.append(native)

    def set_private(self, native: str, private: bool) -> None:
        self.items[native].is_private = private
        self._bump(native)

    def shared_items(self) -> dict[str, MemoryItem]:
        return {n: i for n, i in self.items.items() if i.shared}

    def _bump(self, native: str, *, by_concord: bool = False) -> None:
        item = self.items[native]
        item.by_concord, item.second = by_concord, self.second
        item.version += 1
        item.modified = self.clock()
        self.log.append(native)

    def snapshot(self, native: str) -> Snapshot:
        item = self.items[native]
        uid = item.fields.get("uid")
        return Snapshot(
            fields=dict(item.fields),
            version=str(item.version),
            server_time=EPOCH + timedelta(seconds=item.modified),
            is_private=item.is_private,
            link_id=item.link_id,
            match_keys=(f"uid:{uid}",) if isinstance(uid, str) else (),
        )

    # -- the SyncSide port ---------------------------------------------------------------

    def _count(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        self._count("list")
        end = len(self.log)
        if not cursor:
            # A full listing: every shared item once, as an upsert.
            return self._page(sorted(self.shared_items()), known, next_cursor=str(end))
        position = int(cursor)
        if position < self.invalid_before:
            return ChangePage([], full_resync_required=True)
        stop = end if not self.page_size else min(end, position + self.page_size)
        natives = list(dict.fromkeys(self.log[position:stop]))
        return self._page(natives, known, next_cursor=str(stop), has_more=stop < end)

    def _page(
        self,
        natives: Sequence[str],
        known: Mapping[str, str] | None,
        next_cursor: str,
        has_more: bool = False,
    ) -> ChangePage:
        changes: list[Change] = []
        echoes: list[str] = []
        for native in natives:
            item = self.items.get(native)
            if item is None or not item.shared:
                changes.append(Change(self.side, native, None))
            elif is_echo(known or {}, native, str(item.version)) and (
                item.by_concord or not self.same_second_edits
            ):
                echoes.append(native)
            else:
                changes.append(Change(self.side, native, self.snapshot(native)))
        return ChangePage(changes, next_cursor, has_more=has_more, echoes=echoes)

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        self._count("apply")
        results = [self._apply(w) for w in writes]
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise PeerError(f"{self.side}-connector", "Apply", "UNAVAILABLE", "answer lost")
        return results

    def _apply(self, write: Write) -> WriteResult:
        if self.fail_next > 0:
            self.fail_next -= 1
            return WriteResult(write.link_id, ok=False, reason="THROTTLED")
        if self.reject_value is not None and self.reject_value in write.fields.values():
            return WriteResult(write.link_id, ok=False, retryable=False, reason="INVALID_FIELD")
        if write.op is WriteOp.CREATE:
            existing = next((n for n, i in self.items.items() if i.link_id == write.link_id), None)
            if existing is not None:
                version = str(self.items[existing].version)
                return WriteResult(write.link_id, True, existing, version, already_applied=True)
            native = self.create(
                {k: v for k, v in write.fields.items() if v is not None}, link_id=write.link_id
            )
            self.items[native].by_concord, self.items[native].second = True, self.second
            return WriteResult(write.link_id, True, native, "1")
        native = write.native_id or ""
        item = self.items.get(native)
        if write.op in (WriteOp.DELETE, WriteOp.UNSHARE):
            if item is None or not item.shared:
                return WriteResult(write.link_id, True, native, already_applied=True)
            if write.op is WriteOp.DELETE:
                self.delete(native)
            else:
                item.shared = False
                self.log.append(native)
            return WriteResult(write.link_id, True, native)
        if item is None or not item.shared:
            return WriteResult(write.link_id, ok=False, reason="NOT_FOUND")
        if write.expected_version and write.expected_version != str(item.version):
            return WriteResult(write.link_id, ok=False, reason="VERSION_MISMATCH")
        for name, value in write.fields.items():
            if value is None:
                item.fields.pop(name, None)
            else:
                item.fields[name] = value
        item.link_id = write.link_id if write.relink else item.link_id or write.link_id
        self._bump(native, by_concord=True)
        return WriteResult(write.link_id, True, native, str(item.version))

    async def find(
        self, kind: Kind, link_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, Snapshot]]]:
        self._count("find")
        wanted = set(link_ids)
        found: dict[str, list[tuple[str, Snapshot]]] = {}
        for native, item in self.items.items():
            if item.link_id in wanted and item.shared:
                found.setdefault(item.link_id, []).append((native, self.snapshot(native)))
        return found

    async def fetch(self, kind: Kind, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        self._count("fetch")
        return {n: self.snapshot(n) for n in native_ids if n in self.shared_items()}


@dataclass
class MemoryLinkStore:
    """The LinkStore port in memory; each call is one atomic transaction."""

    links: dict[str, Link] = field(default_factory=dict)
    cursors: dict[tuple[str, int, Side], str] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    failures: list[ItemFailure] = field(default_factory=list)
    # Failures the user released (RetryItem), by side.
    released_items: list[ItemFailure] = field(default_factory=list)

    def release(self) -> None:
        """RetryItem for every quarantined item."""
        self.released_items.extend(self.failures)
        self.failures.clear()

    async def released(self, mailbox_id: str, kind: Kind) -> set[Side]:
        return {f.side for f in self.released_items if f.kind == kind}

    async def load_links(self, mailbox_id: str, kind: Kind) -> list[Link]:
        return [
            link
            for link in self.links.values()
            if link.mailbox_id == mailbox_id and link.kind == kind
        ]

    async def load_cursors(self, mailbox_id: str, kind: Kind) -> dict[Side, str]:
        return {
            side: self.cursors[(mailbox_id, kind, side)]
            for side in Side
            if (mailbox_id, kind, side) in self.cursors
        }

    async def journal(self, mailbox_id: str, intents: Sequence[Intent]) -> None:
        for intent in intents:
            self.intents[intent.link_id] = intent

    async def pending_intents(self, mailbox_id: str, kind: Kind) -> list[Intent]:
        return [
            i
            for i in self.intents.values()
            if i.kind == kind and i.link_after.mailbox_id == mailbox_id
        ]

    async def commit(
        self,
        mailbox_id: str,
        kind: Kind,
        links: Sequence[Link],
        resolved: Sequence[str],
        cursors: dict[Side, str] | None = None,
        failures: Sequence[ItemFailure] = (),
        retried: Sequence[Side] = (),
    ) -> None:
        after = dict(self.links)
        for link in links:
            after[link.link_id] = replace(link)
        # As the SQL store's unique indexes: one link per native id and side in a mailbox,
        # checked before anything of the commit is applied.
        for side in ("mail_id", "crm_id"):
            owned = [
                (link.mailbox_id, getattr(link, side))
                for link in after.values()
                if getattr(link, side)
            ]
            if len(owned) != len(set(owned)):
                raise NativeIdTaken(f"{mailbox_id}: a native id would belong to two links")
        self.released_items = [
            f for f in self.released_items if f.kind != kind or f.side not in retried
        ]
        self.links = after
        for link_id in resolved:
            self.intents.pop(link_id, None)
        for side, cursor in (cursors or {}).items():
            self.cursors[(mailbox_id, kind, side)] = cursor
        self.failures.extend(failures)

    async def flush(self) -> None:
        """Nothing is held back: every commit is applied when made."""
