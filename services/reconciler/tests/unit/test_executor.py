"""The executor by example: journal before writes, cursors with their items, full resyncs
that never guess deletes, quarantine that lets the session go on, and the mass-delete guard."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.executor import PairOutcome, sync_pair
from concord_reconciler.mirror.domain.planner import ConflictPolicy, SyncPolicy
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.mirror.domain.sync import FieldConflict, LinkState, Side, Write

pytestmark = pytest.mark.unit

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class World:
    def __init__(self, **policy: Any) -> None:
        ticks = itertools.count(1)
        self.mail = MemorySide(Side.MAIL, lambda: next(ticks))
        self.crm = MemorySide(Side.CRM, lambda: next(ticks))
        self.store = MemoryLinkStore()
        self.policy = SyncPolicy(kind=KIND, **policy)

    def sync(self, mail: Any = None, crm: Any = None, store: Any = None) -> PairOutcome:
        return asyncio.run(
            sync_pair(
                "mb",
                self.policy,
                mail or self.mail,
                crm or self.crm,
                store or self.store,
                NOW,
                batch_size=4,
            )
        )

    def linked(self, count: int) -> None:
        for n in range(count):
            self.mail.create({"name": f"n{n}"})
        self.sync()


class Recording:
    def __init__(self, inner: Any, log: list[str], name: str) -> None:
        self._inner, self._log, self._name = inner, log, name
        self.side = getattr(inner, "side", None)

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._inner, attr)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append(f"{self._name}.{attr}")
            return await method(*args, **kwargs)

        return call


def test_intents_are_journalled_before_writes_and_cursors_commit_last() -> None:
    world = World()
    for n in range(6):
        world.mail.create({"name": f"n{n}"})
    log: list[str] = []
    outcome = world.sync(
        Recording(world.mail, log, "mail"),
        Recording(world.crm, log, "crm"),
        Recording(world.store, log, "store"),
    )
    writes = [e for e in log if e.endswith((".journal", ".apply", ".commit"))]
    # Two batches of at most four: journal, write, commit each; then the CRM cursor moves
    # past the six records Concord just wrote (their echoes), in a commit of its own.
    assert writes == ["store.journal", "crm.apply", "store.commit"] * 2 + ["store.commit"]
    assert outcome.created[Side.CRM] == 6
    assert outcome.cursors_committed
    assert world.store.intents == {}


def test_a_failed_write_holds_the_cursors_and_the_next_session_retries() -> None:
    world = World()
    world.linked(3)
    world.mail.edit("mail-1", "name", "new")
    cursors = dict(world.store.cursors)
    world.crm.fail_next = 1
    failed = world.sync()
    assert (failed.errors[Side.CRM], failed.cursors_committed) == (1, False)
    assert world.store.cursors == cursors
    retried = world.sync()
    assert (retried.updated[Side.CRM], retried.cursors_committed) == (1, True)
    assert world.crm.items["crm-1"].fields == {"name": "new"}


class EditedInFlight:
    """The CRM side with someone editing the record in Salesforce while Concord's write is in
    flight: the edit lands first, so the write's version precondition fails (crm-connector's
    conditional PATCH answers CONFLICT, which the sync side reads as VERSION_MISMATCH)."""

    def __init__(self, inner: MemorySide, native: str, value: str) -> None:
        self._inner, self._native, self._value = inner, native, value
        self.side = inner.side

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    async def apply(self, kind: Kind, writes: list[Write]) -> Any:
        self._inner.edit(self._native, "name", self._value)
        return await self._inner.apply(kind, writes)


@pytest.mark.parametrize("policy", [ConflictPolicy.NEWEST_WINS, ConflictPolicy.MANUAL])
def test_a_salesforce_edit_during_concords_write_is_a_conflict_and_nothing_is_lost(
    policy: ConflictPolicy,
) -> None:
    """Issue #17 case 1: the write refused by its precondition is not retried blindly; the
    next session sees both edits and the org's policy decides, the losing value kept."""
    world = World(conflict=policy)
    world.linked(1)
    world.mail.edit("mail-1", "name", "from the mailbox")
    raced = world.sync(crm=EditedInFlight(world.crm, "crm-1", "from Salesforce"))
    assert (raced.errors[Side.CRM], raced.cursors_committed) == (1, False)
    # The edit made in Salesforce while the write was in flight is still there.
    assert world.crm.items["crm-1"].fields == {"name": "from Salesforce"}
    merged = world.sync()
    assert merged.conflicts == 1
    (link,) = world.store.links.values()
    (conflict,) = link.conflicts
    assert (conflict.mail_value, conflict.crm_value) == ("from the mailbox", "from Salesforce")
    if policy is ConflictPolicy.NEWEST_WINS:
        # Salesforce's edit is the newer: both sides hold it, the mailbox's value is kept.
        assert conflict.winner is Side.CRM
        assert world.mail.items["mail-1"].fields == {"name": "from Salesforce"}
    else:
        # Held for the user: neither side is written until they choose.
        assert conflict == FieldConflict("name", "from the mailbox", "from Salesforce", None)
        assert link.state is LinkState.CONFLICT
        assert world.mail.items["mail-1"].fields == {"name": "from the mailbox"}
    assert world.crm.items["crm-1"].fields == {"name": "from Salesforce"}
    assert world.sync().writes == 0


def test_a_lost_answer_is_looked_up_by_link_id_before_writing_again() -> None:
    world = World()
    world.mail.create({"name": "a"})
    world.crm.lose_next_answer = True
    world.sync()
    assert len(world.store.intents) == 1
    second = world.sync()
    assert second.recovered == 1
    assert second.writes == 0
    assert len(world.crm.items) == 1
    assert world.crm.calls["find"] == 1


class Truncated:
    """A side whose full listings leave items out (a window, a filter, a listing cut short)."""

    def __init__(self, inner: MemorySide, hidden: set[str]) -> None:
        self._inner, self._hidden = inner, hidden
        self.side = inner.side

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        page = await self._inner.list_changes(kind, cursor, known)
        return ChangePage(
            [c for c in page.changes if c.native_id not in self._hidden],
            page.next_cursor,
            page.full_resync_required,
            page.has_more,
            echoes=[n for n in page.echoes if n not in self._hidden],
        )

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


def test_a_partial_full_listing_never_deletes() -> None:
    world = World()
    world.linked(5)
    world.store.cursors.clear()
    hidden = {"crm-1", "crm-2", "crm-3", "crm-4", "crm-5"}
    outcome = world.sync(crm=Truncated(world.crm, hidden))
    assert outcome.writes == 0
    assert len(world.mail.shared_items()) == 5
    assert all(link.state is LinkState.ACTIVE for link in world.store.links.values())


def test_an_invalidated_cursor_resyncs_and_only_confirmed_deletes_propagate() -> None:
    world = World()
    world.linked(4)
    world.crm.delete("crm-2")
    world.crm.edit("crm-3", "name", "edited")
    world.crm.invalid_before = len(world.crm.log) + 1
    outcome = world.sync()
    assert outcome.deleted[Side.MAIL] == 1  # unshared, the org's default
    assert outcome.updated[Side.MAIL] == 1
    assert not world.mail.items["mail-2"].shared
    assert world.mail.items["mail-3"].fields == {"name": "edited"}
    assert world.sync().writes == 0


def test_a_rejected_item_is_quarantined_and_the_session_goes_on() -> None:
    world = World()
    world.crm.reject_value = "bad"
    world.mail.create({"name": "bad"})
    world.mail.create({"name": "good"})
    outcome = world.sync()
    assert outcome.quarantined == 1
    assert outcome.created[Side.CRM] == 1
    assert outcome.cursors_committed
    assert [(f.native_id, f.reason) for f in world.store.failures] == [("mail-1", "INVALID_FIELD")]
    # Not retried until it changes; then it is.
    assert world.sync().writes == 0
    world.mail.edit("mail-1", "name", "fixed")
    assert world.sync().created[Side.CRM] == 1


@settings(max_examples=60, deadline=None, database=None)
@given(links=st.integers(1, 60), deleted=st.integers(0, 60), side=st.sampled_from(list(Side)))
def test_the_mass_delete_guard_holds(links: int, deleted: int, side: Side) -> None:
    deleted = min(deleted, links)
    world = World(delete_mail_item=True)
    world.linked(links)
    before = (dict(world.mail.items), dict(world.crm.items), dict(world.store.cursors))
    source = world.mail if side is Side.MAIL else world.crm
    for native in sorted(source.items)[:deleted]:
        source.delete(native)
    outcome = world.sync()
    should_stop = deleted >= 20 and deleted > 0.5 * links
    assert outcome.guarded is should_stop
    other = world.crm if side is Side.MAIL else world.mail
    if should_stop:
        assert outcome.writes == 0
        assert len(other.items) == links
        assert world.store.cursors == before[2]
    else:
        assert len(other.items) == links - deleted
