"""Creates written while the other side still lists (issue #18).

A first sync of 10,000 Salesforce Events spent its first seconds listing them before the first
write. Once one side's listing is complete, an item of the other side that nothing can pair
with is created at once, page by page; anything else waits for the whole listing as before.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.executor import PLAN_ASIDE_FROM, PairOutcome, sync_pair
from concord_reconciler.mirror.domain.hints import PendingPushes
from concord_reconciler.mirror.domain.planner import SyncPolicy
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.mirror.domain.sync import Side, Write, WriteResult

pytestmark = pytest.mark.unit

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class Mailbox(MemorySide):
    """The mail side, telling when Concord first wrote to it."""

    def __init__(self, clock: Any) -> None:
        super().__init__(Side.MAIL, clock)
        self.written = asyncio.Event()
        # How long a write takes, in turns of the event loop (a page takes 5).
        self.turns = 8

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        # The listing goes on meanwhile.
        for _ in range(self.turns):
            await asyncio.sleep(0)
        results = await super().apply(kind, writes)
        self.written.set()
        return results


class SlowOrg(MemorySide):
    """Salesforce listing in pages; with `wait_for`, every page after the first waits for it."""

    def __init__(self, clock: Any) -> None:
        super().__init__(Side.CRM, clock, page_size=3)
        self.wait_for: asyncio.Event | None = None
        # Done once the session's first page is listed (a user's edit meanwhile).
        self.after_first_page: Callable[[], None] | None = None

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        # The session's delta starts at cursor "0" (the first session listed nothing).
        if self.wait_for is not None and cursor and int(cursor) > 0:
            await asyncio.wait_for(self.wait_for.wait(), 5)
        # A page takes time, as over the network: the session goes on meanwhile.
        for _ in range(5):
            await asyncio.sleep(0)
        page = await super().list_changes(kind, cursor, known)
        if cursor == "0" and self.after_first_page is not None:
            self.after_first_page()
            self.after_first_page = None
        return page


class World:
    def __init__(self, **policy: Any) -> None:
        ticks = itertools.count(1)
        self.mail = Mailbox(lambda: next(ticks))
        self.crm = SlowOrg(lambda: next(ticks))
        self.store = MemoryLinkStore()
        self.policy = SyncPolicy(kind=KIND, **policy)
        # The first session lists two empty sides: both hold a cursor after it, so what
        # Salesforce gets next is listed as a delta, page by page.
        self.sync()

    def sync(self) -> PairOutcome:
        async def run() -> PairOutcome:
            self.mail.written.clear()
            return await sync_pair(
                "mb", self.policy, self.mail, self.crm, self.store, NOW, batch_size=2
            )

        return asyncio.run(run())

    def mailbox(self) -> list[dict[str, Any]]:
        return sorted(
            (dict(i.fields) for i in self.mail.items.values()), key=lambda f: str(f.get("name"))
        )


def test_salesforce_records_reach_the_mailbox_while_later_pages_are_listed() -> None:
    world = World()
    for n in range(10):
        world.crm.create({"name": f"c{n}"})
    # Every page after the first waits until the mailbox was written: it would wait in vain
    # (5 s, then fail) if the writes began only once the listing ended.
    world.crm.wait_for = world.mail.written
    outcome = world.sync()
    assert outcome.created[Side.MAIL] == 10
    assert outcome.cursors_committed
    assert sorted(f["name"] for f in world.mailbox()) == sorted(f"c{n}" for n in range(10))
    # The next session lists Concord's writes only: nothing to do, nothing twice.
    world.crm.wait_for = None
    again = world.sync()
    assert again.writes == 0
    assert len(world.mail.items) == 10


def test_a_record_that_pairs_with_a_mail_item_is_linked_not_created_early() -> None:
    world = World()
    world.mail.create({"name": "lunch (mailbox)", "uid": "u-lunch"})
    world.crm.create({"name": "lunch (salesforce)", "uid": "u-lunch"})
    for n in range(5):
        world.crm.create({"name": f"c{n}"})
    world.sync()
    lunches = [f for f in world.mailbox() if f.get("uid") == "u-lunch"]
    assert len(lunches) == 1
    assert len(world.mail.items) == 6
    assert sum(1 for i in world.crm.items.values() if i.fields.get("uid") == "u-lunch") == 1


@pytest.mark.parametrize("turns", [8, 20], ids=["listing-goes-on", "listing-ends"])
@pytest.mark.parametrize("edited", range(3))
def test_a_record_listed_again_after_its_early_plan_is_mirrored_at_its_latest(
    edited: int, turns: int
) -> None:
    world = World()
    # A write of a page and a half: the page with the edit is planned early too; of four
    # pages: the listing ends while the first chunk is written.
    world.mail.turns = turns
    for n in range(5):
        world.crm.create({"name": f"c{n}"})
    # Edited once the first page is listed, so listed again on the last: its early create is
    # written by then (the first chunk's two), or still waiting (the third).
    native = next(n for n, i in world.crm.items.items() if i.fields["name"] == f"c{edited}")

    def meanwhile() -> None:
        world.crm.edit(native, "title", "edited")
        # More records after the edit: pages are still coming when it is listed again.
        for n in range(5, 11):
            world.crm.create({"name": f"c{n}"})

    world.crm.after_first_page = meanwhile
    outcome = world.sync()
    assert len(world.mail.items) == 11
    assert outcome.errors[Side.MAIL] == 0
    mirrored = next(f for f in world.mailbox() if f["name"] == f"c{edited}")
    assert mirrored.get("title") == "edited"
    assert world.sync().writes == 0


def test_no_early_create_where_the_mass_delete_guard_may_stop_the_pair() -> None:
    world = World(guard_min_items=4, guard_ratio=0.5)
    for n in range(6):
        world.crm.create({"name": f"c{n}"})
    world.sync()
    assert len(world.mail.items) == 6
    # Five of six records deleted, two made: the guard stops the pair whole, and the new
    # records listed on the first pages must not have been written meanwhile.
    for native in sorted(world.crm.items)[:5]:
        world.crm.delete(native)
    world.crm.create({"name": "new-1"})
    world.crm.create({"name": "new-2"})
    outcome = world.sync()
    assert outcome.guarded
    assert outcome.writes == 0
    assert len(world.mail.items) == 6


def test_a_record_refused_early_is_quarantined_once() -> None:
    world = World()
    for n in range(5):
        world.crm.create({"name": f"c{n}"})
    world.mail.reject_value = "c1"
    outcome = world.sync()
    assert outcome.errors[Side.MAIL] == 1
    assert outcome.quarantined == 1
    assert len(world.mail.items) == 4


def test_a_push_waiting_stops_the_early_writes_until_the_listing_is_complete() -> None:
    world = World()
    for n in range(10):
        world.crm.create({"name": f"c{n}"})
    happened: list[str] = []
    listed, applied = world.crm.list_changes, world.mail.apply

    async def list_changes(*args: Any) -> ChangePage:
        page = await listed(*args)
        happened.append("page" if page.has_more else "last page")
        return page

    async def apply(*args: Any) -> Sequence[WriteResult]:
        happened.append("write")
        return await applied(*args)

    world.crm.list_changes = list_changes  # type: ignore[method-assign,assignment]
    world.mail.apply = apply  # type: ignore[method-assign,assignment]
    # A meeting saved in the mailbox as the big session starts: its push waits.
    hints = PendingPushes()
    hints.note(Side.MAIL)

    async def run() -> PairOutcome:
        return await sync_pair(
            "mb", world.policy, world.mail, world.crm, world.store, NOW, batch_size=2, hints=hints
        )

    outcome = asyncio.run(run())
    # Early writes would slow the listing the push has to wait for: none until it is complete.
    assert happened.index("last page") < happened.index("write")
    assert outcome.created[Side.MAIL] == 10
    assert not hints.waiting()  # served between the backlog's chunks


def test_a_listing_that_ends_while_a_big_page_is_planned_aside_does_not_hang_the_pair() -> None:
    """A push waiting, a page big enough to be planned off the event loop, and the listing's
    last page arriving meanwhile: the listing is complete, and the pair goes on to serve the
    push and write (it waited for news that would never come, until the session's deadline)."""
    world = World()
    world.crm.page_size = PLAN_ASIDE_FROM + 50
    for n in range(PLAN_ASIDE_FROM + 100):
        world.crm.create({"name": f"c{n}"})
    hints = PendingPushes()
    hints.note(Side.MAIL)

    async def run() -> PairOutcome:
        return await asyncio.wait_for(
            sync_pair(
                "mb",
                world.policy,
                world.mail,
                world.crm,
                world.store,
                NOW,
                batch_size=100,
                hints=hints,
            ),
            timeout=20,
        )

    outcome = asyncio.run(run())
    assert outcome.created[Side.MAIL] == PLAN_ASIDE_FROM + 100
    assert not hints.waiting()
