"""The planner: both sides' changes + the links + the settings → the actions of one pair.

A pure function (no I/O, no clock: `now` is an argument), so every rule below is checked by
example and property tests without a store or a connector. A pair is one mailbox and one
object kind; each pair is planned, guarded and committed on its own. The module is long on
purpose: one algorithm's rules, read top to bottom, each next to its reason.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.sync import (
    Change,
    FieldConflict,
    Link,
    LinkState,
    Side,
    Snapshot,
    TombstoneReason,
    Value,
    Write,
    WriteOp,
    content_hash,
    derive_link_id,
)

__all__ = [
    "Action",
    "ActionKind",
    "ConflictPolicy",
    "MergePlan",
    "SyncPolicy",
    "pairing_keys",
    "plan",
]

# A link keeps this many recent conflicts; older ones are in the session events.
MAX_CONFLICTS_KEPT = 20


class ConflictPolicy(enum.IntEnum):
    MAIL_WINS = st.CONFLICT_POLICY_MAIL_WINS
    CRM_WINS = st.CONFLICT_POLICY_CRM_WINS
    NEWEST_WINS = st.CONFLICT_POLICY_NEWEST_WINS
    MANUAL = st.CONFLICT_POLICY_MANUAL


@dataclass(frozen=True)
class SyncPolicy:
    """The settings that decide one pair's plan, read once per session."""

    kind: Kind = res.OBJECT_KIND_CALENDAR_ITEM
    direction: int = res.SYNC_DIRECTION_TWO_WAY
    conflict: ConflictPolicy = ConflictPolicy.NEWEST_WINS
    mark_instead_of_delete: bool = False  # MAIL_DELETE_ACTION_MARK_RECORD
    delete_mail_item: bool = False  # CRM_DELETE_ACTION_DELETE_ITEM
    sync_private: bool = False
    past_window: timedelta | None = timedelta(days=30)
    future_window: timedelta | None = timedelta(days=365)
    guard_ratio: float = 0.5
    guard_min_items: int = 20
    # The mailbox owns the attendee list and RSVP: a CRM edit never changes them.
    mail_authoritative: frozenset[str] = frozenset({"attendees", "rsvp"})
    # What MARK writes on the record (e.g. the mapping's "cancelled" flag).
    mark_fields: Mapping[str, Value] = field(default_factory=lambda: {"cancelled": True})

    @classmethod
    def from_settings(
        cls, kind: Kind, org: st.OrgSettings, sharing: st.ObjectSharing | None
    ) -> SyncPolicy:
        direction = sharing.direction if sharing is not None else res.SYNC_DIRECTION_TWO_WAY
        conflict = org.conflict_policy or st.CONFLICT_POLICY_NEWEST_WINS
        return cls(
            kind=kind,
            direction=direction or res.SYNC_DIRECTION_TWO_WAY,
            conflict=ConflictPolicy(conflict),
            mark_instead_of_delete=org.mail_delete_action == st.MAIL_DELETE_ACTION_MARK_RECORD,
            delete_mail_item=org.crm_delete_action == st.CRM_DELETE_ACTION_DELETE_ITEM,
            sync_private=org.private_item_policy == st.PRIVATE_ITEM_POLICY_SYNC,
            past_window=org.past_window.ToTimedelta() if org.HasField("past_window") else None,
            future_window=(
                org.future_window.ToTimedelta() if org.HasField("future_window") else None
            ),
            # Unset (zero) means the documented default; a guard that never fires is not an option.
            guard_ratio=org.delete_guard_ratio or 0.5,
            guard_min_items=org.delete_guard_min_items or 20,
        )

    def flows(self, source: Side) -> bool:
        """Whether changes made on `source` are carried to the other side."""
        if self.direction == res.SYNC_DIRECTION_NONE:
            return False
        if source is Side.MAIL:
            return self.direction != res.SYNC_DIRECTION_CRM_TO_MAIL
        return self.direction != res.SYNC_DIRECTION_MAIL_TO_CRM


class ActionKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    MARK = "mark"
    UNSHARE = "unshare"
    # Two existing items found to be one (first-sync matching, or a create whose answer was
    # lost); their link is recorded, and their differences merged.
    LINK = "link"
    # A true conflict under the manual policy: nothing is written until the user decides.
    HOLD = "hold"
    # Only the link changes (new versions, a tombstone); no side is written.
    REFRESH = "refresh"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    # The link as it is once every write succeeded (ids of created items filled by the
    # executor from the write results).
    link: Link
    writes: tuple[Write, ...] = ()
    conflicts: tuple[FieldConflict, ...] = ()
    previous: Link | None = None
    # A merge that writes both sides: the link to keep when the write to the side named is
    # refused and the other side's lands (`_half_applied`).
    if_refused: Mapping[Side, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class MergePlan:
    actions: tuple[Action, ...]
    # The mass-delete guard stopped this pair: `actions` is empty and the cursors stay.
    guarded: bool = False
    guard_reason: str = ""
    # Items left alone: out of the window, private, or of a direction that is not synced.
    skipped: int = 0

    @property
    def writes(self) -> tuple[Write, ...]:
        return tuple(w for a in self.actions for w in a.writes)

    @property
    def conflicts(self) -> int:
        return sum(len(a.conflicts) for a in self.actions)


@dataclass
class _Pair:
    link: Link | None = None
    mail: Change | None = None
    crm: Change | None = None

    def change(self, side: Side) -> Change | None:
        return self.mail if side is Side.MAIL else self.crm


def plan(
    mailbox_id: str,
    mail_changes: Sequence[Change],
    crm_changes: Sequence[Change],
    links: Iterable[Link],
    policy: SyncPolicy,
    now: datetime,
) -> MergePlan:
    """The actions that bring one pair's two sides together; see the module docstring."""
    links = links if isinstance(links, Sequence) else list(links)
    # Only the links the changes name are indexed: a session usually lists a few changes
    # against many links, and indexing them all would cost memory in proportion to the links.
    wanted: dict[Side, set[str]] = {
        Side.MAIL: {c.native_id for c in mail_changes},
        Side.CRM: {c.native_id for c in crm_changes},
    }
    carried_ids = {
        c.snapshot.link_id
        for c in (*mail_changes, *crm_changes)
        if c.snapshot is not None and c.snapshot.link_id
    }
    by_id: dict[str, Link] = {}
    by_native: dict[Side, dict[str, Link]] = {Side.MAIL: {}, Side.CRM: {}}
    live = 0
    # A conflict the user resolved is planned even when neither side changed since.
    resolved: list[Link] = []
    for link in links:
        live += link.live
        if link.resolution is not None and link.state is LinkState.CONFLICT:
            resolved.append(link)
        if link.link_id in carried_ids:
            by_id[link.link_id] = link
        if link.mail_id is not None and link.mail_id in wanted[Side.MAIL]:
            by_native[Side.MAIL][link.mail_id] = link
        if link.crm_id is not None and link.crm_id in wanted[Side.CRM]:
            by_native[Side.CRM][link.crm_id] = link

    pairs: dict[str, _Pair] = {}
    unlinked: dict[Side, dict[str, Change]] = {Side.MAIL: {}, Side.CRM: {}}
    for side, changes in ((Side.MAIL, mail_changes), (Side.CRM, crm_changes)):
        # The last listing of an item is its current state: replays and permutations of
        # earlier notifications collapse into it.
        latest: dict[str, Change] = {}
        for change in changes:
            latest[change.native_id] = change
        gone = {n for n, c in latest.items() if c.snapshot is None}
        # Deletes first, so an item recreated under the same link id (a create whose answer
        # was lost) takes the deleted one's place in its pair.
        ordered = sorted(latest.items(), key=lambda i: (i[1].snapshot is not None, i[0]))
        for native_id, change in ordered:
            known = by_native[side].get(native_id)
            carried = change.snapshot.link_id if change.snapshot is not None else ""
            if known is None and carried in by_id:
                holder = by_id[carried]
                if holder.live and (holder.native(side) is None or holder.native(side) in gone):
                    known = holder.on(
                        side,
                        native_id=native_id,
                        version=holder.version_of(side),
                        hash=holder.hash_of(side),
                    )
                    by_id[carried] = known
                    by_native[side][native_id] = known
            if known is None:
                if change.snapshot is not None:
                    unlinked[side][native_id] = change
                continue
            pair = pairs.setdefault(known.link_id, _Pair(link=known))
            pair.link = known
            if side is Side.MAIL:
                pair.mail = change
            else:
                pair.crm = change

    for link in resolved:
        pairs.setdefault(link.link_id, _Pair(link=link))

    actions: list[Action] = []
    skipped = 0
    for pair in pairs.values():
        action = _planned_link(pair, policy)
        if action is not None:
            actions.append(action)
    # A link id may be carried by a copy of an item (Outlook copies extended properties);
    # only its first holder keeps it, so one link id never names two pairs.
    used = {link.link_id for link in links} if unlinked[Side.MAIL] or unlinked[Side.CRM] else set()
    for mail, crm in _matched(mailbox_id, policy.kind, unlinked, used):
        if mail is not None and crm is not None:
            action = _linked(mailbox_id, policy, mail, crm, used)
        else:
            new = mail or crm
            assert new is not None
            created = _created(mailbox_id, policy, new, now, used)
            if created is None:
                skipped += 1
                continue
            action = created
        if mail is not None:
            action = _relinked(action, mail)
        used.add(action.link.link_id)
        actions.append(action)

    destructive = [
        w
        for a in actions
        for w in a.writes
        if w.op in (WriteOp.DELETE, WriteOp.MARK, WriteOp.UNSHARE)
    ]
    if len(destructive) >= max(policy.guard_min_items, 1) and len(destructive) > (
        policy.guard_ratio * live
    ):
        return MergePlan(
            actions=(),
            guarded=True,
            guard_reason=f"{len(destructive)} of {live} linked items would be deleted",
            skipped=skipped,
        )
    return MergePlan(actions=tuple(actions), skipped=skipped)


# -- matching ------------------------------------------------------------------------------


def pairing_keys(mailbox_id: str, kind: Kind, side: Side, change: Change) -> list[str]:
    """What an unlinked item is paired with an item of the other side by: link ids, then
    content (first-sync matching)."""
    snapshot = change.snapshot
    assert snapshot is not None
    keys = [f"link:{derive_link_id(mailbox_id, kind, side, change.native_id)}"]
    if snapshot.link_id:
        keys.append(f"link:{snapshot.link_id}")
    keys.extend(snapshot.match_keys)
    return keys


def _matched(
    mailbox_id: str,
    kind: Kind,
    unlinked: Mapping[Side, Mapping[str, Change]],
    used: set[str],
) -> list[tuple[Change | None, Change | None]]:
    """Unlinked items paired one to one by link id first, then by match keys; the rest alone.

    A CRM record carrying the link id a mail item would get is the answer of a create whose
    acknowledgement was lost: linking it instead of creating again is what keeps one copy.
    """

    def keys_of(side: Side, change: Change) -> list[str]:
        keys = pairing_keys(mailbox_id, kind, side, change)
        if keys[0].removeprefix("link:") not in used:
            return keys
        # A link holds the id derived from the item: the id its create carries instead.
        return [f"link:{_new_link_id(mailbox_id, kind, change, '', used)}", *keys]

    index: dict[str, list[str]] = {}
    for native_id, change in unlinked[Side.CRM].items():
        for key in keys_of(Side.CRM, change):
            index.setdefault(key, []).append(native_id)
    taken: set[str] = set()
    pairs: list[tuple[Change | None, Change | None]] = []
    for rank in (0, 1):  # link ids before content keys, so a weaker key never steals a pair
        for native_id, change in unlinked[Side.MAIL].items():
            if any(m is not None and m.native_id == native_id for m, _ in pairs):
                continue
            keys = keys_of(Side.MAIL, change)
            keys = [k for k in keys if k.startswith("link:") == (rank == 0)]
            partner = next(
                (c for k in keys for c in index.get(k, ()) if c not in taken),
                None,
            )
            if partner is not None:
                taken.add(partner)
                pairs.append((change, unlinked[Side.CRM][partner]))
    paired_mail = {m.native_id for m, _ in pairs if m is not None}
    pairs.extend((c, None) for n, c in unlinked[Side.MAIL].items() if n not in paired_mail)
    pairs.extend((None, c) for n, c in unlinked[Side.CRM].items() if n not in taken)
    return pairs


# -- new items -----------------------------------------------------------------------------


def _eligible(policy: SyncPolicy, side: Side, snapshot: Snapshot, now: datetime) -> bool:
    if not policy.flows(side):
        return False
    if snapshot.cancelled:
        return False
    if side is Side.MAIL and snapshot.is_private and not policy.sync_private:
        return False
    return _in_window(policy, snapshot, now)


def _in_window(policy: SyncPolicy, snapshot: Snapshot, now: datetime) -> bool:
    # The window only decides what starts to be mirrored; a linked item that moves out of it
    # stays mirrored (dropping it would read as a delete on the other side).
    if policy.kind == res.OBJECT_KIND_CALENDAR_ITEM:
        end = snapshot.end or snapshot.start
        if policy.past_window is not None and end is not None and end < now - policy.past_window:
            return False
        start = snapshot.start
        future = policy.future_window
        return not (future is not None and start is not None and start > now + future)
    if policy.kind == res.OBJECT_KIND_TASK and snapshot.completed is not None:
        past = policy.past_window
        return past is None or snapshot.completed >= now - past
    return True


def _new_link_id(mailbox_id: str, kind: Kind, change: Change, carried: str, used: set[str]) -> str:
    if carried and carried not in used:
        return carried
    # Derived from the item, so a create replayed after a crash carries the same id; but never
    # an id a link already holds for another item. A recurring task's link follows the one-off
    # Exchange splits off when Concord completes an occurrence (UpdateItem answers the one-off),
    # and the task itself, moved on to its next occurrence, comes back unlinked: the id it was
    # first derived to is its old link's, and a create under it would upsert over that link's
    # record (the Salesforce Task's completion undone, the one-off left without a record).
    link_id = derive_link_id(mailbox_id, kind, change.side, change.native_id)
    generation = 1
    while link_id in used:
        generation += 1
        salted = f"{change.native_id}\x1f{generation}"
        link_id = derive_link_id(mailbox_id, kind, change.side, salted)
    return link_id


def _created(
    mailbox_id: str, policy: SyncPolicy, change: Change, now: datetime, used: set[str]
) -> Action | None:
    snapshot = change.snapshot
    assert snapshot is not None
    if not _eligible(policy, change.side, snapshot, now):
        return None
    link_id = _new_link_id(mailbox_id, policy.kind, change, snapshot.link_id, used)
    fields = dict(snapshot.fields)
    link = Link(
        link_id=link_id,
        mailbox_id=mailbox_id,
        kind=policy.kind,
        base=fields,
        series_link_id=snapshot.series_id,
        original_start=snapshot.original_start,
    ).on(change.side, native_id=change.native_id, version=snapshot.version, hash=snapshot.hash)
    link = link.on(change.side.other, native_id=None, version="", hash=content_hash(fields))
    write = Write(
        side=change.side.other,
        op=WriteOp.CREATE,
        link_id=link_id,
        fields=fields,
        participants=snapshot.participants,
    )
    return Action(ActionKind.CREATE, link, (write,))


def _linked(
    mailbox_id: str, policy: SyncPolicy, mail: Change, crm: Change, used: set[str]
) -> Action:
    m, c = mail.snapshot, crm.snapshot
    assert m is not None
    assert c is not None
    carried = m.link_id if m.link_id not in used else c.link_id
    link_id = _new_link_id(mailbox_id, policy.kind, mail, carried, used)
    link = Link(
        link_id=link_id,
        mailbox_id=mailbox_id,
        kind=policy.kind,
        mail_id=mail.native_id,
        crm_id=crm.native_id,
        mail_version=m.version,
        crm_version=c.version,
        mail_hash=m.hash,
        crm_hash=c.hash,
        series_link_id=m.series_id,
        original_start=m.original_start,
    )
    # No base yet: every difference is a conflict, settled by the org policy like any other.
    return _merged(link, policy, m, c, changed_mail=True, changed_crm=True, kind=ActionKind.LINK)


def _relinked(action: Action, mail: Change) -> Action:
    """`action`, storing its link id in the mail item when the item carries another link's.

    Such an item is a copy that took its own link id (`_new_link_id`): a recurring task's
    occurrence Exchange split off, or the task moved on after the link followed the one-off
    Concord's update split off, or an Outlook copy. Left carrying the other link's id, it is
    what a look-up by that id finds: a create replayed after a crash, or an item recreated
    under its link id (deleted in the mailbox, its record edited), would take the copy for
    its own item and leave two links on one item.
    """
    snapshot = mail.snapshot
    carried = snapshot.link_id if snapshot is not None else ""
    if not carried or carried == action.link.link_id or action.kind is ActionKind.HOLD:
        # A held link writes nothing until the user decides; its item keeps the copy's id
        # until then, and is looked up by native id meanwhile.
        return action
    assert snapshot is not None
    writes = list(action.writes)
    for index, write in enumerate(writes):
        if write.side is Side.MAIL and write.op is WriteOp.UPDATE:
            writes[index] = replace(write, relink=True)
            return replace(action, writes=tuple(writes))
    relink = Write(
        Side.MAIL,
        WriteOp.UPDATE,
        action.link.link_id,
        native_id=mail.native_id,
        expected_version=snapshot.version,
        relink=True,
    )
    return replace(action, writes=(*writes, relink))


# -- linked items --------------------------------------------------------------------------


def _planned_link(pair: _Pair, policy: SyncPolicy) -> Action | None:
    link = pair.link
    assert link is not None
    if link.state is LinkState.TOMBSTONE:
        return _revived(pair, link, policy)
    mail, crm = pair.mail, pair.crm
    m = mail.snapshot if mail is not None else None
    c = crm.snapshot if crm is not None else None
    mail_gone = mail is not None and (m is None or m.cancelled)
    crm_gone = crm is not None and c is None
    changed_mail = m is not None and not m.cancelled and m.hash != link.mail_hash
    changed_crm = c is not None and c.hash != link.crm_hash

    if mail_gone and crm_gone:
        return _tombstoned(link, TombstoneReason.DELETED)
    if mail_gone:
        if changed_crm and policy.flows(Side.CRM) and not (m is not None and m.cancelled):
            return _recreated(link, Side.MAIL, c)  # modify beats delete
        if not policy.flows(Side.MAIL):
            return _tombstoned(link, TombstoneReason.DELETED)
        op = WriteOp.MARK if policy.mark_instead_of_delete else WriteOp.DELETE
        fields = dict(policy.mark_fields) if op is WriteOp.MARK else {}
        reason = TombstoneReason.MARKED if op is WriteOp.MARK else TombstoneReason.DELETED
        write = Write(Side.CRM, op, link.link_id, link.crm_id, _version(link, Side.CRM, c), fields)
        return Action(ActionKind(op.value), _tomb(link, reason), (write,), previous=link)
    if crm_gone:
        if changed_mail and policy.flows(Side.MAIL):
            return _recreated(link, Side.CRM, m)  # modify beats delete
        if not policy.flows(Side.CRM):
            return _tombstoned(link, TombstoneReason.DELETED)
        op = WriteOp.DELETE if policy.delete_mail_item else WriteOp.UNSHARE
        reason = TombstoneReason.DELETED if op is WriteOp.DELETE else TombstoneReason.UNSHARED
        write = Write(Side.MAIL, op, link.link_id, link.mail_id, _version(link, Side.MAIL, m))
        return Action(ActionKind(op.value), _tomb(link, reason), (write,), previous=link)
    if m is not None and m.is_private and not policy.sync_private:
        # An item turned private leaves Salesforce; the mail item is the user's and stays.
        write = Write(Side.CRM, WriteOp.DELETE, link.link_id, link.crm_id, link.crm_version)
        after = replace(
            _tomb(link, TombstoneReason.PRIVATE),
            crm_id=None,
            crm_version="",
            mail_version=m.version,
            mail_hash=m.hash,
        )
        return Action(ActionKind.DELETE, after, (write,), previous=link)

    held = link.state is LinkState.CONFLICT
    if not (changed_mail or changed_crm) and not held:
        return _refreshed(link, m, c)
    mail_fields = m if changed_mail else None
    crm_fields = c if changed_crm else None
    return _merged(
        link,
        policy,
        mail_fields,
        crm_fields,
        changed_mail=changed_mail or (held and link.held_mail is not None),
        changed_crm=changed_crm or (held and link.held_crm is not None),
        kind=ActionKind.UPDATE,
        listed_mail=m,
        listed_crm=c,
    )


def _version(link: Link, side: Side, snapshot: Snapshot | None) -> str:
    return snapshot.version if snapshot is not None else link.version_of(side)


def _tomb(link: Link, reason: TombstoneReason) -> Link:
    return replace(
        link,
        state=LinkState.TOMBSTONE,
        tombstone=reason,
        held_mail=None,
        held_crm=None,
        resolution=None,
    )


def _tombstoned(link: Link, reason: TombstoneReason) -> Action:
    return Action(ActionKind.REFRESH, _tomb(link, reason), previous=link)


def _revived(pair: _Pair, link: Link, policy: SyncPolicy) -> Action | None:
    """Only an item removed for being private comes back (when it is public again)."""
    m = pair.mail.snapshot if pair.mail is not None else None
    if link.tombstone is not TombstoneReason.PRIVATE or m is None or link.crm_id is not None:
        return None
    if m.is_private and not policy.sync_private:
        return None
    if m.cancelled or not policy.flows(Side.MAIL):
        return None
    fields = dict(m.fields)
    after = replace(
        link,
        state=LinkState.ACTIVE,
        tombstone=TombstoneReason.NONE,
        base=fields,
        mail_version=m.version,
        mail_hash=m.hash,
        crm_hash=content_hash(fields),
    )
    write = Write(
        Side.CRM, WriteOp.CREATE, link.link_id, fields=fields, participants=m.participants
    )
    return Action(ActionKind.CREATE, after, (write,), previous=link)


def _recreated(link: Link, missing: Side, survivor: Snapshot | None) -> Action:
    assert survivor is not None
    fields = dict(survivor.fields)
    after = replace(
        link, base=fields, state=LinkState.ACTIVE, held_mail=None, held_crm=None, resolution=None
    )
    after = after.on(
        missing.other,
        native_id=link.native(missing.other),
        version=survivor.version,
        hash=survivor.hash,
    )
    after = after.on(missing, native_id=None, version="", hash=content_hash(fields))
    write = Write(
        missing, WriteOp.CREATE, link.link_id, fields=fields, participants=survivor.participants
    )
    return Action(ActionKind.CREATE, after, (write,), previous=link)


def _refreshed(link: Link, m: Snapshot | None, c: Snapshot | None) -> Action | None:
    after = link
    if m is not None:
        after = after.on(Side.MAIL, native_id=link.mail_id, version=m.version, hash=m.hash)
    if c is not None:
        after = after.on(Side.CRM, native_id=link.crm_id, version=c.version, hash=c.hash)
    return None if after == link else Action(ActionKind.REFRESH, after, previous=link)


def _get(fields: Mapping[str, Value], name: str) -> Value:
    return fields.get(name)


def _merged(
    link: Link,
    policy: SyncPolicy,
    m: Snapshot | None,
    c: Snapshot | None,
    *,
    changed_mail: bool,
    changed_crm: bool,
    kind: ActionKind,
    listed_mail: Snapshot | None = None,
    listed_crm: Snapshot | None = None,
) -> Action:
    """Field-level 3-way merge of both sides against the link's base."""
    base = link.base
    # What each side holds now: its listing when it changed, what was held for the user when
    # a conflict waits, else the base (an unlisted side has not changed since the last sync).
    mail_now: Mapping[str, Value] = (
        m.fields if m is not None else (link.held_mail if link.held_mail is not None else base)
    )
    crm_now: Mapping[str, Value] = (
        c.fields if c is not None else (link.held_crm if link.held_crm is not None else base)
    )
    if not policy.flows(Side.CRM):
        # One way, mail to CRM: the record mirrors the item, so a CRM edit is overwritten.
        changed_crm = False
    if not policy.flows(Side.MAIL):
        changed_mail = False

    merged: dict[str, Value] = {}
    conflicts: list[FieldConflict] = []
    manual = policy.conflict is ConflictPolicy.MANUAL
    resolution = link.resolution if link.state is LinkState.CONFLICT else None
    held = False
    for name in sorted(set(base) | set(mail_now) | set(crm_now)):
        b, mv, cv = _get(base, name), _get(mail_now, name), _get(crm_now, name)
        mail_moved = changed_mail and mv != b
        crm_moved = changed_crm and cv != b and name not in policy.mail_authoritative
        if mail_moved and crm_moved and mv != cv:
            chosen = resolution.side_for(name) if resolution is not None else None
            winner = chosen or _winner(policy, m or listed_mail, c or listed_crm)
            # A field the user's choice does not cover (a new conflict) holds the whole item
            # again; the choice stays for the fields it names.
            held = held or (manual and chosen is None)
            conflicts.append(FieldConflict(name, mv, cv, winner))
            value = mv if winner is not Side.CRM else cv
        elif mail_moved:
            value = mv
        elif crm_moved:
            value = cv
        else:
            value = b
        if value is not None:
            merged[name] = value

    m_snap = m or listed_mail
    c_snap = c or listed_crm
    if held:
        conflicts = [replace(fc, winner=None) for fc in conflicts]
        after = replace(
            link,
            state=LinkState.CONFLICT,
            held_mail=dict(mail_now),
            held_crm=dict(crm_now),
            conflicts=_recorded(link.conflicts, conflicts),
        )
        if m_snap is not None:
            after = after.on(
                Side.MAIL, native_id=link.mail_id, version=m_snap.version, hash=m_snap.hash
            )
        if c_snap is not None:
            after = after.on(
                Side.CRM, native_id=link.crm_id, version=c_snap.version, hash=c_snap.hash
            )
        return Action(ActionKind.HOLD, after, (), tuple(conflicts), previous=link)

    writes: list[Write] = []
    kept = link.conflicts
    if resolution is not None:
        # The held records become the decided ones: both values stay, the winner is named.
        kept = tuple(fc for fc in kept if fc.winner is not None)
    after = replace(
        link,
        base=merged,
        state=LinkState.ACTIVE,
        held_mail=None,
        held_crm=None,
        conflicts=_recorded(kept, conflicts),
        resolution=None,
    )
    merged_hash = content_hash(merged)
    now_of = {Side.MAIL: (mail_now, m_snap), Side.CRM: (crm_now, c_snap)}
    for side, (now_fields, snap) in now_of.items():
        diff = {
            k: merged.get(k)
            for k in sorted(set(merged) | set(now_fields))
            if merged.get(k) != now_fields.get(k)
        }
        if diff:
            writes.append(
                Write(
                    side,
                    WriteOp.UPDATE,
                    link.link_id,
                    link.native(side),
                    _version(link, side, snap),
                    diff,
                    full=merged,
                )
            )
            after = after.on(side, native_id=link.native(side), version="", hash=merged_hash)
        elif snap is not None:
            after = after.on(
                side, native_id=link.native(side), version=snap.version, hash=snap.hash
            )
    if_refused: dict[Side, Link] = {}
    if len(writes) == 2:
        for side, (now_fields, snap) in now_of.items():
            if_refused[side] = _half_applied(link, after, side, now_fields, snap)
    return Action(
        kind, after, tuple(writes), tuple(conflicts), previous=link, if_refused=if_refused
    )


def _half_applied(
    link: Link,
    after: Link,
    refused: Side,
    refused_fields: Mapping[str, Value],
    refused_snapshot: Snapshot | None,
) -> Link:
    """The link once the other side took the merge and `refused` did not (its version had
    moved, it was throttled, the answer was lost and the write had not landed).

    The other side now holds the merge: read against the old base, Concord's write there
    would pass for its user's edit, and under mail_wins or crm_wins beat the refused side's
    newer edit with a value that side had already given up. So the base becomes what the
    refused side held when the merge read it: the other side then differs from it by exactly
    the write still owed (carried again next session, against the refused side's newest
    version), and the refused side by nothing but what its user did since. The other side's
    version and hash are cleared, so it is listed and compared, never taken for an echo.
    """
    kept = replace(after, base=dict(refused_fields))
    kept = kept.on(
        refused,
        native_id=link.native(refused),
        version=_version(link, refused, refused_snapshot),
        hash=refused_snapshot.hash if refused_snapshot is not None else link.hash_of(refused),
    )
    return kept.on(refused.other, native_id=link.native(refused.other), version="", hash="")


def _recorded(
    kept: tuple[FieldConflict, ...], new: Sequence[FieldConflict]
) -> tuple[FieldConflict, ...]:
    # A held conflict is planned again with each new change; record it once.
    fresh = [c for c in new if c not in kept]
    return (*kept, *fresh)[-MAX_CONFLICTS_KEPT:]


def _winner(policy: SyncPolicy, m: Snapshot | None, c: Snapshot | None) -> Side:
    if policy.conflict is ConflictPolicy.CRM_WINS:
        return Side.CRM
    if policy.conflict is ConflictPolicy.NEWEST_WINS:
        mail_time = m.server_time if m is not None else None
        crm_time = c.server_time if c is not None else None
        # Ties and unknown times go to the mailbox, the side the user works in.
        if mail_time is not None and crm_time is not None and crm_time > mail_time:
            return Side.CRM
        if mail_time is None and crm_time is not None:
            return Side.CRM
    return Side.MAIL
