"""What the two-way mirror needs from the outside world: each side in mapped terms (`SyncSide`)
and the link store.

The sync sides over gRPC (`mirror.adapters.sync_sides`) implement `SyncSide` for the
mail-connector and for crm-connector; `mirror.adapters.memory` is the in-memory double.
Failures are :class:`~concord_reconciler.kernel.errors.PeerError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from concord.common.v1 import resources_pb2
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.sync import (
    Change,
    Link,
    Resolution,
    Side,
    Snapshot,
    Write,
    WriteResult,
)


@dataclass(frozen=True)
class MailPage:
    changes: Sequence[resources_pb2.MailChange]
    next_cursor: resources_pb2.Cursor = field(default_factory=resources_pb2.Cursor)
    full_resync_required: bool = False
    has_more: bool = False


@dataclass(frozen=True)
class CrmPage:
    changes: Sequence[resources_pb2.CrmChange]
    next_cursor: resources_pb2.Cursor = field(default_factory=resources_pb2.Cursor)
    full_resync_required: bool = False
    has_more: bool = False


@dataclass(frozen=True)
class ChangePage:
    changes: Sequence[Change]
    next_cursor: str = ""
    # The cursor was invalidated: list again from "" and reconcile against the links.
    full_resync_required: bool = False
    has_more: bool = False
    # Items listed but unreadable or unmappable: quarantined with their reason, left out of
    # `changes`, and listed again only when they change.
    failures: Sequence[ItemFailure] = ()
    # Items listed at the version their link holds (`known`): Concord's own writes coming back,
    # or items touched back to a version already synced. Neither mapped nor planned; they
    # count as present in a full listing.
    echoes: Sequence[str] = ()


class SyncSide(Protocol):
    """One side (mailbox or Salesforce) of one mailbox, its items mapped to common fields."""

    side: Side

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        """Changes after `cursor`; an empty cursor lists every shared item as an upsert.

        `known`: native id -> the version its link holds (`echoes.known_versions`); an item
        listed at that version goes to `echoes` without being read further or mapped.
        """
        ...

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """One result per write, in order; idempotent per link id (a replayed create finds
        the item written before)."""
        ...

    async def find(
        self, kind: Kind, link_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, Snapshot]]]:
        """The items carrying these link ids: link id -> [(native id, snapshot)]; more than
        one when the side copied an item with its link id (a split-off recurring task)."""
        ...

    async def fetch(self, kind: Kind, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The items that still exist among `native_ids`."""
        ...


@dataclass(frozen=True)
class Intent:
    """A journalled action: written before its writes, resolved with its link's commit."""

    link_id: str
    kind: Kind
    link_after: Link
    writes: tuple[Write, ...]


@dataclass(frozen=True)
class ItemFailure:
    """An item quarantined with its reason (a write refused for good, or an item that could
    not be read or mapped); the session goes on without it."""

    kind: Kind
    side: Side
    native_id: str
    link_id: str
    reason: str
    version: str = ""
    # Human-readable, never item content; empty says the other side refused the write.
    message: str = ""


class NativeIdTaken(Exception):
    """A commit would give one item (a native id of one side) to two links; nothing of that
    commit was written. Every link store raises it, so the engine never sees a driver's error."""


class LinkStore(Protocol):
    async def load_links(self, mailbox_id: str, kind: Kind) -> list[Link]: ...

    async def load_cursors(self, mailbox_id: str, kind: Kind) -> dict[Side, str]: ...

    async def released(self, mailbox_id: str, kind: Kind) -> set[Side]:
        """The sides with quarantined items the user asked to retry (RetryItem)."""
        ...

    async def journal(self, mailbox_id: str, intents: Sequence[Intent]) -> None: ...

    async def pending_intents(self, mailbox_id: str, kind: Kind) -> list[Intent]: ...

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
        """In one transaction: upsert `links`, drop the intents of `resolved` link ids, set
        the cursors (when given), forget the released items of the `retried` sides (a full
        listing read them again) and record the failures (a released item failing again is
        quarantined again)."""
        ...

    async def flush(self) -> None:
        """Write what the store held back of the commits made (a session's cursors,
        `SessionLinks`); the session calls it once its pairs and emails are done."""
        ...


class ConflictStore(Protocol):
    """Links held for the user's choice (org policy `manual`)."""

    async def get_link(self, link_id: str) -> Link | None: ...

    async def list_conflicts(self, mailbox_id: str, after: str, limit: int) -> list[Link]: ...

    async def resolve(self, link_id: str, resolution: Resolution) -> bool:
        """Record the user's choice on a link still held; False if it is no longer held."""
        ...
