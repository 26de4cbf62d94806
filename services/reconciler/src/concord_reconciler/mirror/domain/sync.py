"""The sync engine's vocabulary: snapshots of items, links between them, changes and writes.

Both sides' items arrive already mapped to one common field dict per object kind (the mapping
service's job), so the planner compares like with like and never knows a provider's format.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from concord_reconciler.kernel.kinds import Kind

__all__ = [
    "LINK_NAMESPACE",
    "Change",
    "FieldConflict",
    "Link",
    "LinkState",
    "Resolution",
    "Side",
    "Snapshot",
    "TombstoneReason",
    "Value",
    "Write",
    "WriteOp",
    "WriteResult",
    "content_hash",
    "derive_link_id",
    "freeze",
]

# JSON-shaped values; sequences are tuples so snapshots stay hashable and comparable.
Value = str | int | float | bool | None | tuple["Value", ...]

# Link ids derive from the item first seen (uuid5), so a session replayed after a crash plans
# the very same ids and the sides' upsert-by-link-id makes the second write a no-op.
LINK_NAMESPACE = uuid.UUID("6f1c2d0e-5b7a-4c1e-9d39-2a4c0b9e7c11")


class Side(enum.StrEnum):
    MAIL = "mail"
    CRM = "crm"

    @property
    def other(self) -> Side:
        return Side.CRM if self is Side.MAIL else Side.MAIL


class LinkState(enum.StrEnum):
    ACTIVE = "active"
    PENDING_CREATE = "pending-create"
    CONFLICT = "conflict"
    TOMBSTONE = "tombstone"
    QUARANTINED = "quarantined"


class TombstoneReason(enum.StrEnum):
    NONE = ""
    DELETED = "deleted"
    # The mail item turned private: its record was removed, the item itself lives on and is
    # shared again if it turns public.
    PRIVATE = "private"
    UNSHARED = "unshared"
    MARKED = "marked"


def _canonical(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value


def content_hash(fields: Mapping[str, Value]) -> str:
    """A stable digest of mapped fields: equal content, equal hash, whatever the version says."""
    text = json.dumps(
        {k: _canonical(v) for k, v in fields.items() if v is not None},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def freeze(value: object) -> Value:
    """JSON as loaded (lists) back to snapshot values (tuples)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def derive_link_id(mailbox_id: str, kind: Kind, side: Side, native_id: str) -> str:
    return str(uuid.uuid5(LINK_NAMESPACE, f"{mailbox_id}\x1f{kind}\x1f{side}\x1f{native_id}"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One side's item as mapped to the common fields of its kind."""

    fields: Mapping[str, Value]
    version: str = ""
    # Server time of the last modification (EWS LastModifiedTime, SystemModstamp), for
    # newest_wins; never the reconciler's clock.
    server_time: datetime | None = None
    is_private: bool = False
    # An event cancelled in the mailbox; handled like a delete of the mail item.
    cancelled: bool = False
    # Window inputs: an event's span, a task's completion time (None while open).
    start: datetime | None = None
    end: datetime | None = None
    completed: datetime | None = None
    # First-sync matching keys, e.g. ("uid:<iCalUID>", "sse:<subject>|<start>|<end>"),
    # ("email:ann@example.com"); two unlinked items sharing a key are the same item.
    match_keys: tuple[str, ...] = ()
    # The link id written into the item (extended property, Concord_Link_Id__c), if any.
    link_id: str = ""
    # Occurrence of a series: the series item's native id and this occurrence's start (UTC).
    series_id: str = ""
    original_start: datetime | None = None
    # The activity's people as (address, display name, concord.common.v1.ParticipantRole),
    # for linking a record created from it (WhoId/WhatId). Not content: the mailbox owns
    # attendees, and Salesforce never lists them back, so they take no part in the hash.
    participants: tuple[tuple[str, str, int], ...] = ()
    hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", content_hash(self.fields))


@dataclass(frozen=True, slots=True)
class Change:
    """One item listed by one side: its snapshot, or None when it was deleted."""

    side: Side
    native_id: str
    snapshot: Snapshot | None

    @property
    def deleted(self) -> bool:
        return self.snapshot is None


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """A field both sides changed differently; the loser's value is kept here, never lost."""

    field: str
    mail_value: Value
    crm_value: Value
    # The side whose value was kept; None while held for the user (manual policy).
    winner: Side | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The user's choice for a held conflict: which side's value each field keeps."""

    # The side every field not named in `fields` keeps; None: only the named fields.
    take: Side | None = None
    fields: Mapping[str, Side] = field(default_factory=dict)

    def side_for(self, name: str) -> Side | None:
        return self.fields.get(name, self.take)


@dataclass(frozen=True, slots=True)
class Link:
    """One mirrored pair: the base of the 3-way merge and what each side held at the last sync."""

    link_id: str
    mailbox_id: str
    kind: Kind  # concord.common.v1.ObjectKind
    mail_id: str | None = None
    crm_id: str | None = None
    mail_version: str = ""
    crm_version: str = ""
    mail_hash: str = ""
    crm_hash: str = ""
    base: Mapping[str, Value] = field(default_factory=dict)
    state: LinkState = LinkState.ACTIVE
    tombstone: TombstoneReason = TombstoneReason.NONE
    # Recent conflicts, newest last; a held (manual) conflict also keeps both sides' fields.
    conflicts: tuple[FieldConflict, ...] = ()
    held_mail: Mapping[str, Value] | None = None
    held_crm: Mapping[str, Value] | None = None
    # Set by the user on a held link; the next session writes the chosen values.
    resolution: Resolution | None = None
    series_link_id: str = ""
    original_start: datetime | None = None

    def native(self, side: Side) -> str | None:
        return self.mail_id if side is Side.MAIL else self.crm_id

    def hash_of(self, side: Side) -> str:
        return self.mail_hash if side is Side.MAIL else self.crm_hash

    def version_of(self, side: Side) -> str:
        return self.mail_version if side is Side.MAIL else self.crm_version

    def on(self, side: Side, *, native_id: str | None, version: str, hash: str) -> Link:
        """This link with `side`'s id, version and hash replaced."""
        if side is Side.MAIL:
            return replace(self, mail_id=native_id, mail_version=version, mail_hash=hash)
        return replace(self, crm_id=native_id, crm_version=version, crm_hash=hash)

    @property
    def live(self) -> bool:
        return self.state in (LinkState.ACTIVE, LinkState.CONFLICT, LinkState.PENDING_CREATE)


class WriteOp(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    # Salesforce: keep the record but mark it cancelled (MAIL_DELETE_ACTION_MARK_RECORD).
    MARK = "mark"
    # Mailbox: remove the Salesforce category/label, keep the item.
    UNSHARE = "unshare"


@dataclass(frozen=True, slots=True)
class Write:
    """One write to one side, carrying the link id that makes it idempotent."""

    side: Side
    op: WriteOp
    link_id: str
    native_id: str | None = None
    # The version the plan read; a side with optimistic concurrency rejects a stale write.
    expected_version: str = ""
    # Every field for creates, only the differing ones for updates.
    fields: Mapping[str, Value] = field(default_factory=dict)
    # Updates: every field the item holds once written (a side that must send whole items,
    # or convert them, needs more than the difference). Not journalled: recovery only looks
    # writes up, it never replays them.
    full: Mapping[str, Value] = field(default_factory=dict)
    # Creates: the source item's people, for linking (see Snapshot.participants).
    participants: tuple[tuple[str, str, int], ...] = ()
    # Creates: no item on the side can carry this link id yet, so the side need not look it
    # up before writing (set by the executor; see `executor._proved_new`). Not journalled.
    known_new: bool = False
    # Mailbox updates: store `link_id` in the item over the one it carries, which is another
    # link's (a copy: Exchange copies the property into a recurring task's split-off
    # occurrence, Outlook into a copied item), so no two items carry one link id and a look-up
    # by it finds its own item or nothing. With no `fields`, the update writes nothing else.
    relink: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    link_id: str
    ok: bool
    native_id: str = ""
    version: str = ""
    already_applied: bool = False
    # Failures: retryable ones (version mismatch, throttling, a lost answer) are tried again
    # next session; the others quarantine the item with `reason`.
    retryable: bool = True
    reason: str = ""
    # The content hash of the item as the side now lists it, when the side read it back
    # (a side that stores values in its own form); empty means the written fields' hash.
    hash: str = ""
    # A failure that may have landed all the same (a timeout, a connection lost after the
    # request went out): its intent stays journalled, as after a lost answer, for the next
    # session to look it up before planning it again.
    maybe_landed: bool = False
