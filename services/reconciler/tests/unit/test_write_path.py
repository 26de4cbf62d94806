"""The executor's write path for big sessions (issue #18): a create for a link no item can
carry yet is sent as known new, so the side skips its look-up by link id; a create that may
replay an earlier attempt is not."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.executor import PairOutcome, sync_pair
from concord_reconciler.mirror.domain.planner import SyncPolicy
from concord_reconciler.mirror.domain.sync import Side, Write, WriteOp, WriteResult

pytestmark = pytest.mark.unit

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class Sent:
    """A side that keeps every write it is sent; `drop` loses the next batch whole (neither
    applied nor answered: a connection cut before the request arrived)."""

    def __init__(self, inner: MemorySide) -> None:
        self._inner = inner
        self.side = inner.side
        self.writes: list[Write] = []
        self.drop = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        self.writes.extend(writes)
        if self.drop:
            self.drop = False
            raise PeerError("mail-connector", "ApplyItems", "UNAVAILABLE", "connection reset")
        return await self._inner.apply(kind, writes)


class World:
    def __init__(self) -> None:
        ticks = itertools.count(1)
        self.mail = Sent(MemorySide(Side.MAIL, lambda: next(ticks)))
        self.crm = Sent(MemorySide(Side.CRM, lambda: next(ticks)))
        self.store = MemoryLinkStore()
        self.policy = SyncPolicy(kind=KIND)

    def sync(self) -> PairOutcome:
        return asyncio.run(
            sync_pair("mb", self.policy, self.mail, self.crm, self.store, NOW, batch_size=4)
        )


def test_a_first_syncs_creates_are_sent_as_known_new_on_both_sides() -> None:
    world = World()
    for n in range(5):
        world.crm.create({"name": f"record {n}"})
        world.mail.create({"name": f"item {n}"})
    outcome = world.sync()
    assert (outcome.created[Side.MAIL], outcome.created[Side.CRM]) == (5, 5)
    sent = [*world.mail.writes, *world.crm.writes]
    assert len(sent) == 10
    assert all(w.op is WriteOp.CREATE and w.known_new for w in sent)


def test_a_create_whose_answer_was_lost_is_sent_again_without_the_mark() -> None:
    """The batch was lost before it landed: the next session's recovery finds nothing and
    plans the creates again, under the same link ids; their first attempt might still land
    late, so the side looks each up before writing."""
    world = World()
    for n in range(3):
        world.crm.create({"name": f"record {n}"})
    world.mail.drop = True
    lost = world.sync()
    assert not lost.cursors_committed
    assert len(world.mail.writes) == 3
    world.mail.writes.clear()
    world.crm.create({"name": "record 3"})
    again = world.sync()
    assert again.created[Side.MAIL] == 4
    replayed = {w.link_id for w in world.store.links.values()} - {
        w.link_id for w in world.mail.writes if w.known_new
    }
    assert len(replayed) == 3
    assert [w.known_new for w in world.mail.writes].count(True) == 1
    assert len(world.mail.shared_items()) == 4


def test_a_create_under_a_link_that_exists_is_not_known_new() -> None:
    """An item recreated for a live link (its copy in the mailbox deleted, its record edited):
    the link id has been written before, so the create is not vouched for."""
    world = World()
    native = world.crm.create({"name": "record"})
    world.sync()
    (item,) = world.mail.shared_items()
    world.mail.delete(item)
    world.crm.edit(native, "name", "edited")
    world.mail.writes.clear()
    world.sync()
    creates = [w for w in world.mail.writes if w.op is WriteOp.CREATE]
    assert len(creates) == 1
    assert not creates[0].known_new
