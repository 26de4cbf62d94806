"""Echo suppression (issue #18): Concord's own writes, recognised by the version they left.

By example: after an initial sync the next session lists one page per side and writes
nothing; an echo is never mapped or planned. As a property: users edit and delete at any
point of a session (between any two port calls, so also right after Concord's write and
during the walk past its echoes), and no edit is ever dropped as an echo; also when Salesforce
stamps a user's edit with the SystemModstamp of Concord's write (the same second).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.echoes import is_echo, known_versions, settled
from concord_reconciler.mirror.domain.executor import PairOutcome, sync_pair
from concord_reconciler.mirror.domain.planner import ConflictPolicy, SyncPolicy
from concord_reconciler.mirror.domain.sync import Change, Link, LinkState, Side, Snapshot, Value

pytestmark = [pytest.mark.unit, pytest.mark.timeout(600)]

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)
FIELDS = ("name", "phone", "title")


@dataclass
class UserAction:
    """What a user does when the session reaches its `at`-th port call."""

    at: int
    side: Side
    index: int
    name: str
    delete: bool = False


@dataclass
class World:
    policy: SyncPolicy = field(default_factory=lambda: SyncPolicy(kind=KIND))
    page_size: int = 0
    # Salesforce's stamps to the second: an edit right after Concord's write keeps its version.
    same_second: bool = False

    def __post_init__(self) -> None:
        ticks = itertools.count(1)
        self.mail = MemorySide(Side.MAIL, lambda: next(ticks), page_size=self.page_size)
        self.crm = MemorySide(
            Side.CRM,
            lambda: next(ticks),
            page_size=self.page_size,
            same_second_edits=self.same_second,
        )
        self.store = MemoryLinkStore()
        self.values = itertools.count(1)
        # (side, native, field) -> the value a user last wrote there.
        self.edits: dict[tuple[Side, str, str], Value] = {}
        # (side, native, field) -> every value a user wrote there, oldest first.
        self.written: dict[tuple[Side, str, str], list[Value]] = {}
        # Link id -> (side, field) -> the values a user wrote into an item of that side deleted
        # while its link lived: any of them may have reached the other side before the delete,
        # and a change there (modify beats delete) keeps the pair, and that value, alive.
        self.deleted_edits: dict[str, dict[tuple[Side, str], set[Value]]] = {}

    def side(self, side: Side) -> MemorySide:
        return self.mail if side is Side.MAIL else self.crm

    def sync(self, hook: Callable[[], None] | None = None) -> PairOutcome:
        ports: list[Any] = [self.mail, self.crm, self.store]
        if hook is not None:
            ports = [Interleaved(p, hook) for p in ports]
        mail, crm, store = ports
        # Sessions are seconds apart: a user's edit shares the SystemModstamp of a write
        # Concord made in the same session only.
        self.crm.second += 1
        return asyncio.run(sync_pair("mb", self.policy, mail, crm, store, NOW, batch_size=3))

    def act(self, action: UserAction) -> None:
        target = self.side(action.side)
        natives = sorted(target.shared_items())
        if not natives:
            return
        native = natives[action.index % len(natives)]
        if action.delete:
            target.delete(native)
            holder = next(
                (x for x in self.store.links.values() if x.native(action.side) == native), None
            )
            for (side, item, name), values in self.written.items():
                if holder is not None and (side, item) == (action.side, native):
                    gone = self.deleted_edits.setdefault(holder.link_id, {})
                    gone.setdefault((side, name), set()).update(values)
            self.edits = {k: v for k, v in self.edits.items() if k[:2] != (action.side, native)}
            return
        value = f"user-{next(self.values)}"
        target.edit(native, action.name, value)
        self.edits[(action.side, native, action.name)] = value
        self.written.setdefault((action.side, native, action.name), []).append(value)

    def settle(self) -> None:
        for _ in range(6):
            if self.sync().writes == 0:
                return
        raise AssertionError("no quiescence after six sessions")


class Interleaved:
    """A port that lets users act between any two of the session's calls."""

    def __init__(self, inner: Any, hook: Callable[[], None]) -> None:
        self._inner, self._hook = inner, hook
        self.side = getattr(inner, "side", None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            finally:
                self._hook()

        return call


def _at_steps(world: World, actions: list[UserAction]) -> Callable[[], None]:
    steps = itertools.count(1)
    pending = sorted(actions, key=lambda a: a.at)

    def hook() -> None:
        step = next(steps)
        while pending and pending[0].at <= step:
            world.act(pending.pop(0))

    return hook


# -- by example ----------------------------------------------------------------------------


def test_the_session_after_an_initial_sync_lists_one_page_per_side_and_writes_nothing() -> None:
    world = World(page_size=10)
    for n in range(40):
        world.mail.create({"name": f"mail-{n}"})
        world.crm.create({"name": f"crm-{n}"})
    first = world.sync()
    assert (first.created[Side.CRM], first.created[Side.MAIL]) == (40, 40)
    world.mail.calls.clear()
    world.crm.calls.clear()

    second = world.sync()

    assert second.writes == 0
    assert (second.mail_seen, second.crm_seen) == (0, 0)
    # One listing per side, and nothing read, found or written.
    assert world.mail.calls == {"list": 1}
    assert world.crm.calls == {"list": 1}


def test_echoes_are_not_planned_even_when_listed_again() -> None:
    world = World()
    for n in range(5):
        world.mail.create({"name": f"n{n}"})
    world.sync()
    # The cursors fall back to before Concord's writes (a restored backup, a replayed hint).
    world.store.cursors = {k: "0" for k in world.store.cursors}
    again = world.sync()
    assert again.writes == 0
    assert (again.mail_seen, again.crm_seen) == (0, 0)


def test_an_edit_right_after_concords_write_is_carried() -> None:
    world = World()
    native = world.mail.create({"name": "Ann"})
    crm_item: list[str] = []

    def edit_after_the_crm_write() -> None:
        # The record Concord just created, edited in Salesforce before the session ends.
        if not crm_item and world.crm.items:
            crm_item.append(next(iter(world.crm.items)))
            world.crm.edit(crm_item[0], "title", "CEO")

    world.sync(edit_after_the_crm_write)
    world.settle()
    assert world.mail.items[native].fields == {"name": "Ann", "title": "CEO"}


def test_a_full_listing_counts_echoes_as_present() -> None:
    world = World()
    for n in range(3):
        world.mail.create({"name": f"n{n}"})
    world.sync()
    world.store.cursors.clear()  # a lost cursor: full listings, all of them echoes
    world.mail.calls.clear()
    world.crm.calls.clear()
    resync = world.sync()
    assert resync.writes == 0
    assert "fetch" not in world.mail.calls
    assert "fetch" not in world.crm.calls
    assert len(world.crm.items) == 3


def test_a_version_only_matches_itself() -> None:
    link = Link("l", "mb", KIND, mail_id="m1", crm_id="c1", mail_version="7", crm_version="")
    known = known_versions([link], Side.MAIL)
    assert is_echo(known, "m1", "7")
    assert not is_echo(known, "m1", "8")
    assert not is_echo(known, "m2", "7")
    # An empty version proves nothing.
    assert not is_echo(known_versions([link], Side.CRM), "c1", "")
    # Held, quarantined or tombstoned links lend no version.
    for state in (LinkState.CONFLICT, LinkState.QUARANTINED, LinkState.TOMBSTONE):
        held = Link("l", "mb", KIND, mail_id="m1", mail_version="7", state=state)
        assert known_versions([held], Side.MAIL) == {}


def test_a_removal_is_settled_only_when_no_live_link_holds_the_item() -> None:
    assert settled(Change(Side.MAIL, "gone", None), {"m1"})
    assert not settled(Change(Side.MAIL, "m1", None), {"m1"})
    # A change with content is never settled, even at the version its link holds: the side
    # has set its echoes apart already, and a Salesforce record at the stamp of Concord's write
    # may carry an edit made in the same second.
    assert not settled(Change(Side.CRM, "c1", Snapshot({"name": "a"}, version="7")), set())


def test_a_salesforce_edit_in_the_second_of_concords_write_is_carried() -> None:
    """SystemModstamp is kept to the second: the edit keeps the stamp Concord's write left,
    and is told apart by LastModifiedById alone (issue #18)."""
    world = World(same_second=True)
    native = world.mail.create({"name": "Ann"})
    world.sync()
    record = next(iter(world.crm.items))
    before = world.crm.items[record].version
    world.crm.edit(record, "title", "CEO")
    assert world.crm.items[record].version == before
    world.settle()
    assert world.mail.items[native].fields == {"name": "Ann", "title": "CEO"}


def test_a_same_second_edit_during_the_walk_past_concords_writes_is_carried() -> None:
    """The session walks its side's cursor past its own writes: a record edited in the second
    of Concord's write stops that walk instead of being passed as an echo."""
    world = World(same_second=True)
    native = world.mail.create({"name": "Ann"})
    edited: list[str] = []

    def edit_after_the_crm_write() -> None:
        if not edited and world.crm.items:
            edited.append(next(iter(world.crm.items)))
            world.crm.edit(edited[0], "title", "CEO")

    world.sync(edit_after_the_crm_write)
    world.settle()
    assert world.mail.items[native].fields == {"name": "Ann", "title": "CEO"}


def test_a_merge_one_side_refused_never_reads_as_the_other_sides_edit() -> None:
    """A merge writes both sides; the mailbox takes its half, Salesforce refuses its own (the
    record was edited in between). The mailbox item now holds Concord's write, not an edit of
    its user's: under mail_wins the Salesforce edit made in between still wins over the older
    Salesforce value Concord carried into the mailbox."""
    world = World(SyncPolicy(kind=KIND, conflict=ConflictPolicy.MAIL_WINS))
    native = world.mail.create({"name": "Ann"})
    world.sync()
    record = next(iter(world.crm.items))
    world.mail.edit(native, "name", "Bob")
    world.crm.edit(record, "phone", "1")

    edited: list[str] = []

    def edit_after_the_mailbox_write() -> None:
        # Concord's half of the merge landed in the mailbox: Salesforce is edited again
        # before Concord writes its other half, which is refused for the version it expected.
        if not edited and world.mail.items[native].fields.get("phone") == "1":
            edited.append(record)
            world.crm.edit(record, "phone", "2")

    half = world.sync(edit_after_the_mailbox_write)
    assert half.errors[Side.CRM] == 1
    assert not half.cursors_committed
    world.settle()
    expected = {"name": "Bob", "phone": "2"}
    assert world.mail.items[native].fields == expected
    assert world.crm.items[record].fields == expected
    # Nothing was in conflict: each side changed a field of its own.
    assert all(not link.conflicts for link in world.store.links.values())


def test_a_merge_one_side_rejected_for_good_keeps_its_later_edit_out_of_conflict() -> None:
    """The mailbox rejects its half of a merge for good (the item is quarantined) and
    Salesforce takes its own. Once the user retries, the mailbox's newer edit is carried: the
    value Concord wrote into Salesforce is not that side's edit, so it is no conflict to lose
    (under crm_wins it would be)."""
    world = World(SyncPolicy(kind=KIND, conflict=ConflictPolicy.CRM_WINS))
    native = world.mail.create({"name": "Ann"})
    world.sync()
    record = next(iter(world.crm.items))
    world.mail.edit(native, "name", "Bob")
    world.crm.edit(record, "phone", "bad")
    world.mail.reject_value = "bad"  # e.g. a value the mailbox's server refuses
    rejected = world.sync()
    assert rejected.quarantined == 1
    assert world.crm.items[record].fields == {"name": "Bob", "phone": "bad"}

    world.mail.edit(native, "name", "Carl")
    world.mail.reject_value = None
    world.store.release()  # RetryItem
    world.settle()
    expected = {"name": "Carl", "phone": "bad"}
    assert world.mail.items[native].fields == expected
    assert world.crm.items[record].fields == expected
    assert all(not link.conflicts for link in world.store.links.values())


# -- as a property -------------------------------------------------------------------------


actions = st.lists(
    st.builds(
        UserAction,
        at=st.integers(1, 40),
        side=st.sampled_from([Side.MAIL, Side.CRM]),
        index=st.integers(0, 7),
        name=st.sampled_from(FIELDS),
        delete=st.sampled_from([False, False, False, True]),
    ),
    max_size=8,
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    mail_items=st.integers(0, 5),
    crm_items=st.integers(0, 5),
    page_size=st.sampled_from([0, 1, 2, 5]),
    conflict=st.sampled_from(list(ConflictPolicy)[:3]),
    first=actions,
    second=actions,
    same_second=st.booleans(),
)
# Found by the property (a rare seed): Salesforce refuses its half of a merge the mailbox took;
# the mailbox's copy of the older Salesforce phone then beat the newer one under mail_wins.
@example(
    mail_items=1,
    crm_items=0,
    page_size=0,
    conflict=ConflictPolicy.MAIL_WINS,
    first=[UserAction(1, Side.MAIL, 0, "phone"), UserAction(8, Side.CRM, 0, "phone")],
    second=[UserAction(1, Side.MAIL, 0, "name"), UserAction(6, Side.CRM, 0, "phone")],
    same_second=False,
)
# Also found by it, and right: Salesforce's phone reaches the mailbox, then it is edited again
# and the record deleted; the mailbox's own edit (its name) keeps the pair (modify beats
# delete) with the phone the mailbox holds, which overwrote the mailbox's older one.
@example(
    mail_items=1,
    crm_items=0,
    page_size=0,
    conflict=ConflictPolicy.MAIL_WINS,
    first=[UserAction(1, Side.MAIL, 0, "phone")],
    second=[
        UserAction(1, Side.MAIL, 0, "name"),
        UserAction(1, Side.CRM, 0, "phone"),
        UserAction(6, Side.CRM, 0, "phone"),
        UserAction(6, Side.CRM, 0, "name", delete=True),
    ],
    same_second=False,
)
def test_no_user_edit_is_ever_dropped_as_an_echo(
    mail_items: int,
    crm_items: int,
    page_size: int,
    conflict: ConflictPolicy,
    first: list[UserAction],
    second: list[UserAction],
    same_second: bool,
) -> None:
    world = World(
        SyncPolicy(kind=KIND, conflict=conflict, guard_min_items=10_000), page_size, same_second
    )
    for n in range(mail_items):
        world.mail.create({"name": f"mail-{n}"})
    for n in range(crm_items):
        world.crm.create({"name": f"crm-{n}"})
    # Users act between any two calls of the initial sync, and of the session after it.
    world.sync(_at_steps(world, first))
    world.sync(_at_steps(world, second))
    world.settle()

    live = [link for link in world.store.links.values() if link.live]
    for link in live:
        for item_side in Side:
            partner = link.native(item_side)
            assert partner is not None
            assert world.side(item_side).items[partner].fields == dict(link.base)
    latest: dict[tuple[str, str], dict[Side, Value]] = {}
    for (side, native, name), value in world.edits.items():
        holder = next((x for x in live if x.native(side) == native), None)
        if holder is None:
            # Gone with its partner's delete, which wins over an edit already carried.
            assert native not in world.side(side).shared_items(), f"{side} {native} unlinked"
            continue
        latest.setdefault((holder.link_id, name), {})[side] = value
    for (link_id, name), by_side in latest.items():
        final = world.store.links[link_id].base.get(name)
        recorded = {
            v
            for c in world.store.links[link_id].conflicts
            if c.field == name
            for v in (c.mail_value, c.crm_value)
        }
        deleted = world.deleted_edits.get(link_id, {})
        for side, value in by_side.items():
            # On both sides, the losing value of a recorded conflict, or overwritten by a later
            # edit of the same field on the other side (also one made on an item deleted since).
            overwritten = final == by_side.get(side.other) or final in deleted.get(
                (side.other, name), set()
            )
            assert value == final or value in recorded or overwritten, (
                f"{side}'s edit of {name} dropped"
            )
