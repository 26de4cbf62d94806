"""One pair's sync: recover, list, plan, then journalled writes in batches, then the cursors.

Crash safety comes from three rules (isync/mbsync's): an action's intent is journalled before
its writes; every write carries the link id, so a side finds a replayed create instead of
making a second copy; and links and cursors are committed only after the writes they cover,
so a crash at any point replays the same changes against the same links.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from concord_reconciler.kernel.errors import PeerError, SessionFailure
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.echoes import known_versions, settled
from concord_reconciler.mirror.domain.planner import Action, MergePlan, SyncPolicy, plan
from concord_reconciler.mirror.domain.ports import Intent, ItemFailure, LinkStore, SyncSide
from concord_reconciler.mirror.domain.sync import (
    Change,
    Link,
    LinkState,
    Side,
    Snapshot,
    Write,
    WriteOp,
    WriteResult,
    content_hash,
)

__all__ = ["BATCH_SIZE", "MAX_PAGES", "PairOutcome", "sync_pair"]

A = TypeVar("A")
B = TypeVar("B")

# Salesforce sObject Collections take 200 records a call; the mail connector takes 100.
BATCH_SIZE = 100
MAX_PAGES = 1000


@dataclass
class PairOutcome:
    """What one pair's sync did, for the session's counts."""

    kind: Kind
    mail_seen: int = 0
    crm_seen: int = 0
    created: dict[Side, int] = field(default_factory=lambda: {Side.MAIL: 0, Side.CRM: 0})
    updated: dict[Side, int] = field(default_factory=lambda: {Side.MAIL: 0, Side.CRM: 0})
    deleted: dict[Side, int] = field(default_factory=lambda: {Side.MAIL: 0, Side.CRM: 0})
    errors: dict[Side, int] = field(default_factory=lambda: {Side.MAIL: 0, Side.CRM: 0})
    conflicts: int = 0
    quarantined: int = 0
    skipped: int = 0
    guarded: bool = False
    guard_reason: str = ""
    recovered: int = 0
    # Whether the cursors moved; they stay when a write failed and will be retried.
    cursors_committed: bool = False

    @property
    def writes(self) -> int:
        return sum(sum(counter.values()) for counter in (self.created, self.updated, self.deleted))


async def sync_pair(
    mailbox_id: str,
    policy: SyncPolicy,
    mail: SyncSide,
    crm: SyncSide,
    store: LinkStore,
    now: datetime,
    *,
    batch_size: int = BATCH_SIZE,
) -> PairOutcome:
    kind = policy.kind
    sides = {Side.MAIL: mail, Side.CRM: crm}
    outcome = PairOutcome(kind=kind)
    outcome.recovered, replayed = await _recover(mailbox_id, kind, sides, store)

    links = await store.load_links(mailbox_id, kind)
    # The link ids an item may already carry: every write Concord made is committed as its
    # link or journalled as an intent (the only ways a link id gets into an item).
    written = {link.link_id for link in links} | replayed
    cursors = await store.load_cursors(mailbox_id, kind)
    # An item the user asked to retry was listed before the cursor: that side is listed in
    # full once, which reads it again and changes nothing for the items already in sync.
    retried = sorted(await store.released(mailbox_id, kind))
    for side in retried:
        cursors.pop(side, None)
    # Both sides are listed at once: they are independent, and a quiet session then costs
    # one round trip per pair instead of two.
    # Items listed at the version their link holds (Concord's own writes, mostly) are not
    # mapped or planned; a side listed again for a retried item reads every item afresh.
    known = {side: {} if side in retried else known_versions(links, side) for side in Side}
    mail_listing, crm_listing = await _both(
        _listing(mail, kind, cursors.get(Side.MAIL, ""), links, known[Side.MAIL]),
        _listing(crm, kind, cursors.get(Side.CRM, ""), links, known[Side.CRM]),
    )
    listed = {Side.MAIL: mail_listing[0], Side.CRM: crm_listing[0]}
    next_cursors = {Side.MAIL: mail_listing[1], Side.CRM: crm_listing[1]}
    unreadable = [*mail_listing[2], *crm_listing[2]]
    outcome.mail_seen = len(listed[Side.MAIL]) + len(mail_listing[2])
    outcome.crm_seen = len(listed[Side.CRM]) + len(crm_listing[2])
    outcome.quarantined = len(unreadable)

    merge: MergePlan = plan(mailbox_id, listed[Side.MAIL], listed[Side.CRM], links, policy, now)
    outcome.skipped = merge.skipped
    if merge.guarded:
        # The pair stops whole: no write, and the cursors stay so nothing listed is lost.
        outcome.guarded, outcome.guard_reason = True, merge.guard_reason
        if unreadable:
            await store.commit(mailbox_id, kind, [], [], failures=unreadable)
        return outcome
    outcome.conflicts = merge.conflicts

    blocked = False
    committed: list[Link] = []
    quiet = [a.link for a in merge.actions if not a.writes]
    busy = [a for a in merge.actions if a.writes]
    for start in range(0, len(busy), batch_size):
        batch = busy[start : start + batch_size]
        done, failures, retry, unknown = await _execute(
            mailbox_id, kind, batch, sides, store, outcome, written
        )
        blocked = blocked or retry
        last = start + batch_size >= len(busy)
        committed.extend(done)
        await store.commit(
            mailbox_id,
            kind,
            [*done, *(quiet if last else [])],
            [a.link.link_id for a in batch if a.link.link_id not in unknown],
            cursors=None if blocked or not last else next_cursors,
            failures=[*unreadable, *failures],
            retried=() if blocked or not last else retried,
        )
        unreadable = []
        if last:
            outcome.cursors_committed = not blocked
            quiet = []
    if not busy:
        await store.commit(
            mailbox_id,
            kind,
            quiet,
            [],
            cursors=next_cursors,
            failures=unreadable,
            retried=retried,
        )
        outcome.cursors_committed = True
    wrote = [s for s in Side if outcome.created[s] + outcome.updated[s] + outcome.deleted[s]]
    if outcome.cursors_committed and wrote:
        await _absorb_own_writes(
            mailbox_id, kind, {s: sides[s] for s in wrote}, store, links, committed, next_cursors
        )
    return outcome


async def _both(first: Coroutine[Any, Any, A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Both results, or the first failure with the other call cancelled (not left running)."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        return await one, await two
    except BaseException:
        one.cancel()
        two.cancel()
        raise


async def _listing(
    port: SyncSide, kind: Kind, cursor: str, links: Sequence[Link], known: Mapping[str, str]
) -> tuple[list[Change], str, list[ItemFailure]]:
    changes: list[Change] = []
    failures: list[ItemFailure] = []
    echoes: list[str] = []
    full = not cursor
    for _ in range(MAX_PAGES):
        page = await port.list_changes(kind, cursor, known)
        if page.full_resync_required:
            # What was listed so far under the dead cursor is still true, but the listing
            # starts over from nothing so it ends complete.
            changes, failures, echoes, cursor, full = [], [], [], "", True
            continue
        changes.extend(page.changes)
        failures.extend(page.failures)
        echoes.extend(page.echoes)
        cursor = page.next_cursor
        if not page.has_more:
            break
    else:
        raise SessionFailure(
            f"the {port.side} side listed more than {MAX_PAGES} pages of kind {kind}",
            "TOO_MANY_PAGES",
            retryable=False,
        )
    if full:
        # An unreadable item still exists: it is quarantined, not deleted.
        present = [
            *changes,
            *(Change(port.side, f.native_id, None) for f in failures),
            *(Change(port.side, native, None) for native in echoes),
        ]
        changes.extend(await _vanished(port, kind, present, links))
    return changes, cursor, failures


async def _absorb_own_writes(
    mailbox_id: str,
    kind: Kind,
    sides: dict[Side, SyncSide],
    store: LinkStore,
    links: Sequence[Link],
    written: Sequence[Link],
    cursors: dict[Side, str],
) -> None:
    """Move each written side's cursor past Concord's own writes, so the next session does
    not list them again (issue #18: after an initial sync, the next session lists nothing).

    The side is listed from the cursor just committed; a page holding only echoes (items at
    the version Concord wrote) and removals no live link cares about is settled, and its
    cursor is committed. The first page with anything else stops the walk before its cursor:
    that change, whoever made it, is listed and planned by the next session as before.
    """
    latest = {link.link_id: link for link in links}
    latest.update((link.link_id, link) for link in written)
    for side, port in sides.items():
        cursor = cursors.get(side, "")
        if not cursor:
            continue
        known = known_versions(latest.values(), side)
        live = {n for link in latest.values() if link.live and (n := link.native(side))}
        settled_cursor = cursor
        for _ in range(MAX_PAGES):
            try:
                page = await port.list_changes(kind, cursor, known)
            except PeerError:
                # Only a saving: the session's work is committed, and the next session lists
                # from the cursor it holds.
                break
            if (
                page.full_resync_required
                or page.failures
                or not all(settled(c, known, live) for c in page.changes)
            ):
                break
            cursor = settled_cursor = page.next_cursor
            if not page.has_more or not cursor:
                break
        if settled_cursor and settled_cursor != cursors[side]:
            await store.commit(mailbox_id, kind, [], [], cursors={side: settled_cursor})


async def _vanished(
    port: SyncSide, kind: Kind, listed: Sequence[Change], links: Sequence[Link]
) -> list[Change]:
    """Deletes a full listing implies, each confirmed by reading the item.

    Absence from a listing proves nothing (a window, a filter, a listing cut short); only an
    item the side says does not exist is gone.
    """
    seen = {c.native_id for c in listed}
    missing = sorted(
        native
        for link in links
        if link.live and (native := link.native(port.side)) is not None and native not in seen
    )
    if not missing:
        return []
    found = await port.fetch(kind, missing)
    return [Change(port.side, native, None) for native in missing if native not in found]


async def _recover(
    mailbox_id: str, kind: Kind, sides: dict[Side, SyncSide], store: LinkStore
) -> tuple[int, set[str]]:
    """Settle the intents a crash left behind, by looking each write's target up.

    A create is found by the link id it carried, an update or delete by the item's native
    id. An intent whose writes all landed commits its link; any other is dropped, because its
    changes were not acknowledged (the cursors did not move) and are listed and planned again.
    Returns how many were adopted, and the link ids of all of them: a write planned again
    under one of those ids may still meet its first attempt landing late.
    """
    intents = await store.pending_intents(mailbox_id, kind)
    if not intents:
        return 0, set()
    by_link: dict[Side, dict[str, tuple[str, Snapshot]]] = {}
    by_native: dict[Side, dict[str, Snapshot]] = {}
    for side, port in sides.items():
        writes = [w for i in intents for w in i.writes if w.side is side]
        link_ids = sorted({w.link_id for w in writes if w.op is WriteOp.CREATE})
        natives = sorted({w.native_id for w in writes if w.native_id})
        by_link[side] = dict(await port.find(kind, link_ids)) if link_ids else {}
        by_native[side] = dict(await port.fetch(kind, natives)) if natives else {}
    adopted: list[Link] = []
    for intent in intents:
        link: Link | None = intent.link_after
        for write in intent.writes:
            if link is None:
                break
            link = _landed(link, write, by_link[write.side], by_native[write.side])
        if link is not None:
            adopted.append(link)
    await store.commit(mailbox_id, kind, adopted, [i.link_id for i in intents])
    return len(adopted), {i.link_id for i in intents}


def _landed(
    link: Link,
    write: Write,
    by_link: dict[str, tuple[str, Snapshot]],
    by_native: dict[str, Snapshot],
) -> Link | None:
    """`link` completed with what `write` left on its side, or None if it did not land."""
    expected = link.hash_of(write.side)
    if write.op is WriteOp.CREATE:
        # Found by its link id, the create landed, whatever the user did to it since: the
        # link records what was written, so a later edit is listed as a change to carry.
        hit = by_link.get(write.link_id)
        if hit is None:
            return None
        return link.on(write.side, native_id=hit[0], version="", hash=expected)
    found = by_native.get(write.native_id or "")
    if write.op is WriteOp.UPDATE:
        if found is None or found.hash != expected:
            return None
        return link.on(write.side, native_id=write.native_id, version=found.version, hash=expected)
    if write.op in (WriteOp.DELETE, WriteOp.UNSHARE):
        return link if found is None else None
    # A mark leaves no trace to look up; planning it again is harmless.
    return None


async def _execute(
    mailbox_id: str,
    kind: Kind,
    batch: Sequence[Action],
    sides: dict[Side, SyncSide],
    store: LinkStore,
    outcome: PairOutcome,
    written: set[str],
) -> tuple[list[Link], list[ItemFailure], bool, set[str]]:
    await store.journal(mailbox_id, [Intent(a.link.link_id, kind, a.link, a.writes) for a in batch])
    results: dict[tuple[Side, str], WriteResult] = {}
    unknown: set[str] = set()
    for side, port in sides.items():
        writes = [_proved_new(w, a, written) for a in batch for w in a.writes if w.side is side]
        if not writes:
            continue
        try:
            answered = await port.apply(kind, writes)
        except PeerError as error:
            if not error.retryable:
                raise
            # A lost answer: the writes may have landed. Their intents stay journalled, so
            # the next session looks them up before planning anything.
            answered = [
                WriteResult(w.link_id, ok=False, reason=error.code or "UNAVAILABLE") for w in writes
            ]
            unknown.update(w.link_id for w in writes)
        for write, result in zip(writes, answered, strict=True):
            results[(side, write.link_id)] = result

    done: list[Link] = []
    failures: list[ItemFailure] = []
    retry = False
    for action in batch:
        link = action.link
        ok = True
        for write in action.writes:
            result = results[(write.side, write.link_id)]
            if not result.ok:
                ok = False
                outcome.errors[write.side] += 1
                if result.retryable:
                    retry = True
                else:
                    failures.append(_failure(kind, action, write.side, result))
                continue
            if write.op in (WriteOp.CREATE, WriteOp.UPDATE):
                link = link.on(
                    write.side,
                    native_id=result.native_id or link.native(write.side),
                    version=result.version,
                    hash=result.hash or content_hash(link.base),
                )
        if not ok:
            if any(not results[(w.side, w.link_id)].retryable for w in action.writes):
                outcome.quarantined += 1
                if action.previous is not None:
                    done.append(replace(action.previous, state=LinkState.QUARANTINED))
            elif action.previous is not None and action.conflicts:
                # The other write may have landed with the winner's value: the losing value
                # is recorded now, whatever happens to the item before the retry.
                done.append(replace(action.previous, conflicts=action.link.conflicts))
            continue
        _count(outcome, action)
        done.append(link)
    return done, failures, retry, unknown


def _proved_new(write: Write, action: Action, written: set[str]) -> Write:
    """`write`, marked known new when no item can carry its link id yet.

    A link id reaches an item only by a write of Concord's, which is committed as its link or
    stays journalled as an intent; so a create for a brand-new link (no link before it, no
    intent left by a crash) has nothing to find, and the side may skip the look-up by link id
    that makes a replayed create find its first copy: on a first sync that look-up is one
    search of the mailbox per batch, for nothing.
    """
    if write.op is not WriteOp.CREATE or action.previous is not None or write.link_id in written:
        return write
    return replace(write, known_new=True)


def _failure(kind: Kind, action: Action, side: Side, result: WriteResult) -> ItemFailure:
    # The item that failed to mirror is the one on the other side, the one the user sees.
    source = side.other
    native = action.link.native(source) or action.link.native(side) or ""
    return ItemFailure(
        kind=kind,
        side=source,
        native_id=native,
        link_id=action.link.link_id,
        reason=result.reason or "WRITE_REJECTED",
        version=action.link.version_of(source),
    )


def _count(outcome: PairOutcome, action: Action) -> None:
    for write in action.writes:
        if write.op is WriteOp.CREATE:
            outcome.created[write.side] += 1
        elif write.op in (WriteOp.UPDATE, WriteOp.MARK):
            outcome.updated[write.side] += 1
        else:
            outcome.deleted[write.side] += 1
