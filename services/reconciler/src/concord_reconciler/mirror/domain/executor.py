"""One pair's sync: recover, list, plan, then journalled writes in batches, then the cursors.

Crash safety comes from three rules (isync/mbsync's): an action's intent is journalled before
its writes; every write carries the link id, so a side finds a replayed create instead of
making a second copy; and links and cursors are committed only after the writes they cover,
so a crash at any point replays the same changes against the same links.

While one side still lists, the other's listing complete, the items nothing can pair with are
created at once, page by page (`_EarlyCreates`): a first sync writes from its first page on.
A big pair (a first sync) is written in chunks of `batch_size` actions, each committing its
links, and before and between chunks it serves a push hint for its mailbox (`hints.py`): the
hinted side is listed since the pair's listing and the rest of the backlog re-planned with it,
the push's actions first, in a chunk of their own. The cursors still move once, with the last chunk.
After that, each side written is listed past Concord's own writes (`echoes.py`).

The module is long because these steps share one pair's state (links committed so far, the
backlog, the cursors, what was listed) and read best top to bottom as one sequence.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from concord_reconciler.kernel.errors import PeerError, SessionFailure
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.domain.echoes import known_versions, settled
from concord_reconciler.mirror.domain.hints import PushHints
from concord_reconciler.mirror.domain.planner import (
    Action,
    MergePlan,
    SyncPolicy,
    pairing_keys,
    plan,
)
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


# Actions per chunk. Each chunk costs a journal entry, a commit, and a listing when a push is
# served after it: at 500 those are a small part of a first sync (the sides split a chunk
# into calls of their own size), and a push waits about a second of writes.
BATCH_SIZE = 500
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
    hints: PushHints | None = None,
    walks: list[asyncio.Task[None]] | None = None,
) -> PairOutcome:
    """Sync one pair. With `walks`, the walk past the pair's own writes (which only moves
    cursors) is started there instead of awaited, for the caller to await: it then overlaps
    the next pair's listing, which needs the mailbox connector far less than the walk does."""
    kind = policy.kind
    sides = {Side.MAIL: mail, Side.CRM: crm}
    outcome = PairOutcome(kind=kind)
    outcome.recovered, replayed = await _recover(mailbox_id, kind, sides, store, batch_size)

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
    early = _EarlyCreates(mailbox_id, policy, sides, store, links, now, batch_size, written, hints)
    mail_listing, crm_listing = await early.listing(
        _listing(mail, kind, cursors.get(Side.MAIL, ""), links, known[Side.MAIL], early.heard),
        _listing(crm, kind, cursors.get(Side.CRM, ""), links, known[Side.CRM], early.heard),
        outcome,
    )
    listed = {Side.MAIL: mail_listing[0], Side.CRM: crm_listing[0]}
    next_cursors = {Side.MAIL: mail_listing[1], Side.CRM: crm_listing[1]}
    unreadable = [*mail_listing[2], *crm_listing[2]]
    outcome.mail_seen = len(listed[Side.MAIL]) + len(mail_listing[2])
    outcome.crm_seen = len(listed[Side.CRM]) + len(crm_listing[2])
    outcome.quarantined += len(unreadable)

    # What was created while the listing ran is committed (its links are in `early.links`)
    # or settled; the rest is planned here as one.
    links = early.links
    rest = {side: early.left(listed[side]) for side in Side}
    merge = await _plan_aside(mailbox_id, rest[Side.MAIL], rest[Side.CRM], links, policy, now)
    outcome.skipped += merge.skipped
    if merge.guarded:
        # The pair stops whole: no write, and the cursors stay so nothing listed is lost.
        outcome.guarded, outcome.guard_reason = True, merge.guard_reason
        if unreadable:
            await store.commit(mailbox_id, kind, [], [], failures=unreadable)
        return outcome
    outcome.conflicts += merge.conflicts

    blocked = early.blocked
    quiet = [a for a in merge.actions if not a.writes]
    backlog = deque([*early.handover(rest), *(a for a in merge.actions if a.writes)])
    # What was listed, by side and native id: a push served mid-pair re-plans the backlog's
    # items from it, with the push's newer changes laid over.
    seen = {side: {c.native_id: c for c in listed[side]} for side in Side}
    # The links as committed so far (the chunks done are in them, the backlog's are not),
    # kept here rather than read again for every push.
    committed = {link.link_id: link for link in links}
    chunks = early.chunks
    lost = early.lost
    # How many actions at the backlog's head a served push put there: they go in a chunk of
    # their own, so they wait for no backlog write.
    urgent = 0
    while True:
        # Between chunks: a push hint for this mailbox is served before the backlog goes on,
        # so a big session holds none of the mailbox's other changes hostage; before the first
        # chunk too when there are several, since a push heard during the listing has waited
        # for all of it already. Not after a lost answer: its item may exist unlinked, and only
        # the next session's recovery finds it.
        if (chunks or len(backlog) > batch_size) and backlog and hints is not None and not lost:
            hinted = hints.take()
            if hinted:
                served = await _serve_push(
                    mailbox_id,
                    policy,
                    sides,
                    hinted,
                    next_cursors,
                    seen,
                    backlog,
                    quiet,
                    committed,
                    now,
                    outcome,
                )
                if served is not None:
                    backlog, quiet, next_cursors, pushed_failures, urgent = served
                    unreadable.extend(pushed_failures)
        size = min(urgent, batch_size) if urgent else batch_size
        urgent = 0
        batch = [backlog.popleft() for _ in range(min(size, len(backlog)))]
        last = not backlog
        done: list[Link] = []
        failures: list[ItemFailure] = []
        unknown: set[str] = set()
        if batch:
            done, failures, retry, unknown = await _execute(
                mailbox_id, kind, batch, sides, store, outcome, written
            )
            # Any write attempted may have put its link id into an item: a later create under
            # that id (a push's re-plan) looks it up first.
            written.update(a.link.link_id for a in batch)
            blocked = blocked or retry
            # A write refused for now (throttled, a version moved) is tried next session; a
            # lost answer may have left an item the push's listing would take for a new one.
            lost = lost or bool(unknown)
        # Every chunk commits its links (so a crash replays only what is left); the cursors
        # move only with the last, once every change they cover is applied.
        await store.commit(
            mailbox_id,
            kind,
            [*done, *([a.link for a in quiet] if last else [])],
            [a.link.link_id for a in batch if a.link.link_id not in unknown],
            cursors=None if blocked or not last else next_cursors,
            failures=[*unreadable, *failures],
            retried=() if blocked or not last else retried,
        )
        unreadable = []
        committed.update((link.link_id, link) for link in done)
        chunks += 1
        if last:
            outcome.cursors_committed = not blocked
            wrote = [
                s for s in Side if outcome.created[s] + outcome.updated[s] + outcome.deleted[s]
            ]
            if outcome.cursors_committed and wrote:
                walk = _absorb_own_writes(
                    mailbox_id,
                    kind,
                    {s: sides[s] for s in wrote},
                    store,
                    list(committed.values()),
                    [],
                    next_cursors,
                )
                if walks is None:
                    await walk
                else:
                    walks.append(asyncio.ensure_future(walk))
            return outcome


async def _serve_push(
    mailbox_id: str,
    policy: SyncPolicy,
    sides: dict[Side, SyncSide],
    hinted: frozenset[Side],
    cursors: dict[Side, str],
    seen: dict[Side, dict[str, Change]],
    backlog: deque[Action],
    quiet: list[Action],
    links: dict[str, Link],
    now: datetime,
    outcome: PairOutcome,
) -> tuple[deque[Action], list[Action], dict[Side, str], list[ItemFailure], int] | None:
    """List the hinted sides since the pair's listing and re-plan what they brought with the
    backlog's actions it concerns; the push's actions go first.

    Nothing is committed here: the pair's cursors, now past the push's changes, still move
    only once every action is applied. None leaves the backlog as it was (the push is then
    served by the next session): a cursor the side no longer accepts, or a guarded re-plan.
    """
    kind = policy.kind
    delta: dict[Side, list[Change]] = {Side.MAIL: [], Side.CRM: []}
    moved = dict(cursors)
    failures: list[ItemFailure] = []
    for side in sorted(hinted):
        if not cursors.get(side):
            continue  # the side listed nothing a cursor could follow: not a delta to serve
        try:
            listing = await _delta(
                sides[side], kind, cursors[side], known_versions(links.values(), side)
            )
        except PeerError as error:
            # The backlog goes on: a push the side cannot list now waits for the next session.
            if not error.retryable:
                raise
            listing = None
        if listing is None:
            continue
        delta[side], moved[side], side_failures = listing
        failures.extend(side_failures)
    if moved == cursors:
        return None
    outcome.mail_seen += len(delta[Side.MAIL])
    outcome.crm_seen += len(delta[Side.CRM])
    outcome.quarantined += len(failures)
    for side in Side:
        seen[side].update((c.native_id, c) for c in delta[side])
    touched = {side: {c.native_id for c in delta[side]} for side in Side}
    keys = {
        key
        for side in Side
        for change in delta[side]
        if change.snapshot is not None
        for key in pairing_keys(mailbox_id, kind, side, change)
    }

    def affected(action: Action) -> bool:
        """Whether the push concerns the action's items: it changed one of them, or brought
        an item that could be paired with one (the same meeting made on both sides)."""
        for link in (action.link, action.previous):
            if link is None:
                continue
            for side in Side:
                native = link.native(side)
                if native is None:
                    continue
                if native in touched[side]:
                    return True
                listed = seen[side].get(native)
                if (
                    listed is not None
                    and listed.snapshot is not None
                    and keys.intersection(pairing_keys(mailbox_id, kind, side, listed))
                ):
                    return True
        return False

    # Only what the push concerns is planned again (the rest of the backlog stands as it was
    # planned): the cost of a push is its delta's, not the backlog's.
    hit = [a for a in (*backlog, *quiet) if affected(a)]
    hit_ids = {id(a) for a in hit}
    merged: dict[Side, dict[str, Change]] = {Side.MAIL: {}, Side.CRM: {}}
    for action in hit:
        for link in (action.link, action.previous):
            for side in Side:
                native = link.native(side) if link is not None else None
                if native is not None and native in seen[side]:
                    merged[side][native] = seen[side][native]
    for side in Side:
        merged[side].update((c.native_id, c) for c in delta[side])
    replan = plan(
        mailbox_id,
        list(merged[Side.MAIL].values()),
        list(merged[Side.CRM].values()),
        list(links.values()),
        policy,
        now,
    )
    if replan.guarded:
        return None
    outcome.conflicts += replan.conflicts - sum(len(a.conflicts) for a in hit)
    outcome.skipped += replan.skipped
    first = [a for a in replan.actions if a.writes]
    return (
        deque([*first, *(a for a in backlog if id(a) not in hit_ids)]),
        [*(a for a in quiet if id(a) not in hit_ids), *(a for a in replan.actions if not a.writes)],
        moved,
        failures,
        len(first),
    )


async def _delta(
    port: SyncSide, kind: Kind, cursor: str, known: Mapping[str, str]
) -> tuple[list[Change], str, list[ItemFailure]] | None:
    """The changes after `cursor`, or None when the side asks for a full listing (not a
    delta: the next session does it, reconciled against the links)."""
    changes: list[Change] = []
    failures: list[ItemFailure] = []
    for _ in range(MAX_PAGES):
        # The chunks' own writes come back here: at the version their links hold, they are
        # echoes, neither mapped nor planned again.
        page = await port.list_changes(kind, cursor, known)
        if page.full_resync_required:
            return None
        changes.extend(page.changes)
        failures.extend(page.failures)
        cursor = page.next_cursor
        if not page.has_more:
            return changes, cursor, failures
    return None


Listed = tuple[list[Change], str, list[ItemFailure]]


class _EarlyCreates:
    """Creates written while the other side is still listing (issue #18: a first sync's
    writes begin with the first page of the bigger side, not after its last).

    Once one side's listing is complete, an item of the other side's pages that nothing can
    pair with is planned alone and its create written at once, a chunk at a time, while the
    rest of the listing comes. Nothing can pair with it when it carries no link id, no link
    names it, and no item of the complete side shares a pairing key with it: the whole
    listing would plan it just the same. (A later listing of the same item is planned against
    the link its create made, as an update.) Only while the mass-delete guard
    cannot fire (fewer live links than its minimum), since a guarded pair writes nothing and
    the guard needs the whole listing. Pushes are served between the later chunks, as before.
    """

    def __init__(
        self,
        mailbox_id: str,
        policy: SyncPolicy,
        sides: dict[Side, SyncSide],
        store: LinkStore,
        links: Sequence[Link],
        now: datetime,
        batch_size: int,
        written: set[str],
        hints: PushHints | None = None,
    ) -> None:
        self._mailbox_id, self._policy, self._sides, self._store = mailbox_id, policy, sides, store
        self._hints = hints
        self._now, self._batch_size, self._written = now, batch_size, written
        self._on = sum(link.live for link in links) < max(policy.guard_min_items, 1)
        # The links as committed so far: the pair's own, then the early creates'.
        self.links = list(links)
        self._linked = {s: {n for link in links if (n := link.native(s))} for s in Side}
        self._pending: dict[Side, list[Change]] = {Side.MAIL: [], Side.CRM: []}
        self._keys: dict[Side, set[str]] = {}
        self._attempted: set[tuple[Side, str, str, str]] = set()
        self._planned: set[tuple[Side, str]] = set()
        # Planned early, not written yet.
        self._backlog: deque[Action] = deque()
        self._news = asyncio.Event()
        self.chunks = 0
        self.blocked = False
        self.lost = False

    def heard(self, side: Side, changes: Sequence[Change]) -> None:
        if not self._on:
            return
        self._pending[side].extend(changes)
        self._news.set()

    async def listing(
        self,
        mail: Coroutine[Any, Any, Listed],
        crm: Coroutine[Any, Any, Listed],
        outcome: PairOutcome,
    ) -> tuple[Listed, Listed]:
        """Both sides' listings, writing early creates a chunk at a time meanwhile; what is
        planned and not yet written once both are listed is left to `handover`."""
        tasks = {Side.MAIL: asyncio.ensure_future(mail), Side.CRM: asyncio.ensure_future(crm)}
        try:
            while self._on and not all(t.done() for t in tasks.values()):
                if any(t.done() and (t.cancelled() or t.exception()) for t in tasks.values()):
                    break
                # Pages heard from here on (while a big one is planned aside, or a chunk is
                # written) wake the wait below at once.
                self._news.clear()
                for side in Side:
                    if tasks[side.other].done() and self._pending[side]:
                        await self._plan(side, tasks[side.other].result()[0], outcome)
                # A push waiting for this mailbox stops the early writes: they slow the
                # listing, and only once it is complete can the push be served (between the
                # chunks of the backlog, which the early actions not written join).
                if self._backlog and not (self._hints is not None and self._hints.waiting()):
                    await self._write_chunk(outcome)
                    continue
                running = [t for t in tasks.values() if not t.done()]
                if not running:
                    # Both listings ended while a page was planned: nothing is left to wait
                    # for (waiting for news here hung the pair until the session's deadline).
                    continue
                news = asyncio.ensure_future(self._news.wait())
                await asyncio.wait([news, *running], return_when=asyncio.FIRST_COMPLETED)
                news.cancel()
            return await tasks[Side.MAIL], await tasks[Side.CRM]
        except BaseException:
            for task in tasks.values():
                task.cancel()
            raise

    def left(self, changes: Sequence[Change]) -> list[Change]:
        """`changes` without the listings planned early: each is written once, and a
        refused one quarantined once."""
        return [c for c in changes if _attempt(c) not in self._attempted]

    def handover(self, listed: Mapping[Side, Sequence[Change]]) -> list[Action]:
        """The early actions not written yet, to go first in the pair's backlog; but not one
        whose item the rest of the listing holds again (edited since): the whole listing's
        plan, which has the later version, makes it instead."""
        again = {(c.side, c.native_id) for side in Side for c in listed[side]}
        return [
            action
            for action in self._backlog
            if not any((s, action.link.native(s)) in again for s in Side)
        ]

    async def _plan(self, side: Side, complete: Sequence[Change], outcome: PairOutcome) -> None:
        taken, self._pending[side] = self._pending[side], []
        if len(taken) < PLAN_ASIDE_FROM:
            alone, merge = self._alone_planned(side, complete, taken, self.links)
        else:
            # A page of thousands: searched and planned off the event loop (`_plan_aside`).
            alone, merge = await asyncio.to_thread(
                self._alone_planned, side, complete, taken, list(self.links)
            )
        if not alone:
            return
        self._attempted.update(_attempt(c) for c in alone)
        # Listed again later (edited meanwhile), an item is left to the whole listing's plan.
        self._planned.update((side, c.native_id) for c in alone)
        assert not merge.guarded, "the guard cannot fire below its minimum of live links"
        outcome.skipped += merge.skipped
        # An item alone plans a create or nothing (out of the window, private, a direction
        # not synced): every action writes.
        self._backlog.extend(a for a in merge.actions if a.writes)

    def _alone_planned(
        self, side: Side, complete: Sequence[Change], taken: Sequence[Change], links: list[Link]
    ) -> tuple[list[Change], MergePlan]:
        """The items of `taken` nothing can pair with, and their plan."""
        kind = self._policy.kind
        if side.other not in self._keys:
            self._keys[side.other] = {
                key
                for change in complete
                if change.snapshot is not None
                for key in pairing_keys(self._mailbox_id, kind, side.other, change)
            }
        keys = self._keys[side.other]
        alone = [
            change
            for change in taken
            if change.snapshot is not None
            and not change.snapshot.link_id
            and not change.snapshot.series_id
            and change.native_id not in self._linked[side]
            and (side, change.native_id) not in self._planned
            and keys.isdisjoint(pairing_keys(self._mailbox_id, kind, side, change))
        ]
        by_side: dict[Side, list[Change]] = {side: alone, side.other: []}
        merge = plan(
            self._mailbox_id, by_side[Side.MAIL], by_side[Side.CRM], links, self._policy, self._now
        )
        return alone, merge

    async def _write_chunk(self, outcome: PairOutcome) -> None:
        kind = self._policy.kind
        size = min(self._batch_size, len(self._backlog))
        batch = [self._backlog.popleft() for _ in range(size)]
        done, failures, retry, unknown = await _execute(
            self._mailbox_id, kind, batch, self._sides, self._store, outcome, self._written
        )
        self._written.update(a.link.link_id for a in batch)
        self.blocked = self.blocked or retry
        self.lost = self.lost or bool(unknown)
        await self._store.commit(
            self._mailbox_id,
            kind,
            done,
            [a.link.link_id for a in batch if a.link.link_id not in unknown],
            failures=failures,
        )
        self.links.extend(done)
        self.chunks += 1


# Below this many changes a plan takes less than the hop to a worker thread.
PLAN_ASIDE_FROM = 200


async def _plan_aside(
    mailbox_id: str,
    mail: Sequence[Change],
    crm: Sequence[Change],
    links: Sequence[Link],
    policy: SyncPolicy,
    now: datetime,
) -> MergePlan:
    """`plan`, on a worker thread when the listing is big. Planning 10,000 items takes a
    second or more of CPU; on the event loop that second would stall every other session of
    this replica (another mailbox's push among them, issue #18), while on a thread the loop
    keeps its turn every few milliseconds."""
    if len(mail) + len(crm) < PLAN_ASIDE_FROM:
        return plan(mailbox_id, mail, crm, links, policy, now)
    return await asyncio.to_thread(plan, mailbox_id, mail, crm, links, policy, now)


def _attempt(change: Change) -> tuple[Side, str, str, str]:
    snapshot = change.snapshot
    return (
        change.side,
        change.native_id,
        snapshot.version if snapshot is not None else "",
        snapshot.hash if snapshot is not None else "",
    )


async def _listing(
    port: SyncSide,
    kind: Kind,
    cursor: str,
    links: Sequence[Link],
    known: Mapping[str, str],
    heard: Callable[[Side, Sequence[Change]], None] | None = None,
) -> tuple[list[Change], str, list[ItemFailure]]:
    """Every change after `cursor`; `heard` is told each page's changes as they come."""
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
        if heard is not None:
            heard(port.side, page.changes)
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

    The side is listed from the cursor just committed; a page holding only echoes (items the
    side knows for Concord's writes) and removals no live link cares about is settled, and its
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
                or not all(settled(c, live) for c in page.changes)
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
    mailbox_id: str, kind: Kind, sides: dict[Side, SyncSide], store: LinkStore, batch_size: int
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
    by_link: dict[Side, dict[str, list[tuple[str, Snapshot]]]] = {}
    by_native: dict[Side, dict[str, Snapshot]] = {}
    for side, port in sides.items():
        writes = [(i.link_after, w) for i in intents for w in i.writes if w.side is side]
        natives = sorted({w.native_id for _, w in writes if w.native_id})
        # Looked up a batch at a time: a big session that lost many answers leaves many
        # intents, and one call for them all outlasted its deadline every time (the mailbox
        # then failed every session and backed off for good).
        by_link[side], by_native[side] = {}, {}
        for start in range(0, len(natives), batch_size):
            by_native[side].update(await port.fetch(kind, natives[start : start + batch_size]))
        # Creates are found by their link id; so is an update found at its target with other
        # content than it wrote, which may have landed on a split: Exchange answers an update
        # completing a recurring task's occurrence with the one-off it splits off (a copy that
        # carries the link id the update stored), and moves the task itself on to its next
        # occurrence. Read by its native id alone, that update would count as not landed, and
        # planned again it would complete the next occurrence too.
        link_ids = sorted(
            {w.link_id for _, w in writes if w.op is WriteOp.CREATE}
            | {w.link_id for link, w in writes if _moved_on(link, w, by_native[side])}
        )
        for start in range(0, len(link_ids), batch_size):
            found = await port.find(kind, link_ids[start : start + batch_size])
            for link_id, hits in found.items():
                by_link[side].setdefault(link_id, []).extend(hits)
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


def _moved_on(link: Link, write: Write, by_native: Mapping[str, Snapshot]) -> bool:
    """Whether `write` is an update whose target exists with content it did not write."""
    found = by_native.get(write.native_id or "")
    return write.op is WriteOp.UPDATE and found is not None and not _holds(link, write, found)


def _holds(link: Link, write: Write, found: Snapshot) -> bool:
    """Whether `found` is what `write` left: its content, and the link id a relink stored."""
    return found.hash == link.hash_of(write.side) and (
        not write.relink or found.link_id == write.link_id
    )


def _landed(
    link: Link,
    write: Write,
    by_link: Mapping[str, Sequence[tuple[str, Snapshot]]],
    by_native: Mapping[str, Snapshot],
) -> Link | None:
    """`link` completed with what `write` left on its side, or None if it did not land."""
    expected = link.hash_of(write.side)
    hits = by_link.get(write.link_id, ())
    if write.op is WriteOp.CREATE:
        # Found by its link id, the create landed, whatever the user did to it since: the
        # link records what was written, so a later edit is listed as a change to carry.
        if not hits:
            return None
        return link.on(write.side, native_id=hits[0][0], version="", hash=expected)
    found = by_native.get(write.native_id or "")
    if write.op is WriteOp.UPDATE:
        if found is not None and _holds(link, write, found):
            return link.on(
                write.side, native_id=write.native_id, version=found.version, hash=expected
            )
        # Split off (see `_recover`): the link follows the item holding what was written, as
        # it follows the one-off an answered update names; the task moved on comes back
        # unlinked and is an item of its own, its occurrence not completed again.
        split = [(n, s) for n, s in hits if n != write.native_id and s.hash == expected]
        if found is None or not split:
            return None
        native, snapshot = split[0]
        return link.on(write.side, native_id=native, version=snapshot.version, hash=expected)
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
            if result.maybe_landed:
                # Planned again from the next listing, a write that did land would be made
                # twice: a recurring task's completion, split off, completes the next
                # occurrence. Its intent is looked up first (`_recover`).
                unknown.add(write.link_id)

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
                # A relink alone changes no content: the item keeps the hash it was read at.
                alone = write.relink and not write.fields
                link = link.on(
                    write.side,
                    native_id=result.native_id or link.native(write.side),
                    version=result.version,
                    hash=result.hash
                    or (link.hash_of(write.side) if alone else content_hash(link.base)),
                )
        if not ok:
            # One side took its half of a merge and the other refused its own: the link the
            # planner made for that case (`planner._half_applied`), so Concord's write never
            # reads as the first side's edit.
            refused = [w.side for w in action.writes if not results[(w.side, w.link_id)].ok]
            half = action.if_refused.get(refused[0]) if len(refused) == 1 else None
            if any(not results[(w.side, w.link_id)].retryable for w in action.writes):
                outcome.quarantined += 1
                if action.previous is not None:
                    kept = half if half is not None else action.previous
                    done.append(replace(kept, state=LinkState.QUARANTINED))
            elif half is not None:
                done.append(half)
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
