"""The sync engine's invariants, checked by hypothesis over two in-memory sides.

As vdirsyncer does: a state machine edits both sides at random, makes writes fail, loses
answers, loses and replays cursors, invalidates them, crashes mid-session; after every settled
sync it checks convergence, quiescence, exact linkage, no resurrection and no lost update.

`CONCORD_HYPOTHESIS_PROFILE=nightly` runs many more examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.executor import PairOutcome, sync_pair
from concord_reconciler.mirror.domain.planner import ConflictPolicy, SyncPolicy
from concord_reconciler.mirror.domain.sync import LinkState, Side, TombstoneReason, Value

pytestmark = [pytest.mark.unit, pytest.mark.timeout(600)]

settings.register_profile(
    "concord-default",
    max_examples=500,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=2000,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("CONCORD_HYPOTHESIS_PROFILE", "concord-default")
PROFILE_EXAMPLES = settings.get_profile(PROFILE).max_examples

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)
FIELDS = ("name", "phone", "title")
values = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3))
field_dicts = st.dictionaries(
    st.sampled_from(FIELDS), st.sampled_from(["a", "b", "c", "d"]), min_size=1
)
sides = st.sampled_from([Side.MAIL, Side.CRM])


class Crash(BaseException):
    """The process died; BaseException so no `except Exception` in the engine swallows it."""


@dataclass
class Steps:
    """Counts port calls and dies right after the `crash_at`-th one (0: never)."""

    crash_at: int = 0
    count: int = 0

    def tick(self) -> None:
        self.count += 1
        if self.count == self.crash_at:
            raise Crash


class Crashing:
    """A port whose every call counts as a step, the call's effect landing before the crash."""

    def __init__(self, inner: Any, steps: Steps) -> None:
        self._inner = inner
        self._steps = steps
        self.side = getattr(inner, "side", None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            finally:
                self._steps.tick()

        return call


@dataclass
class World:
    mail: MemorySide
    crm: MemorySide
    store: MemoryLinkStore
    policy: SyncPolicy
    ticks: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def new(cls, policy: SyncPolicy) -> World:
        ticks = itertools.count(1)

        def clock() -> int:
            return next(ticks)

        return cls(
            MemorySide(Side.MAIL, clock),
            MemorySide(Side.CRM, clock),
            MemoryLinkStore(),
            policy,
            ticks,
        )

    def side(self, side: Side) -> MemorySide:
        return self.mail if side is Side.MAIL else self.crm

    def sync(self, steps: Steps | None = None) -> PairOutcome:
        mail: Any = self.mail
        crm: Any = self.crm
        store: Any = self.store
        if steps is not None:
            mail, crm, store = (Crashing(p, steps) for p in (mail, crm, store))
        return asyncio.run(sync_pair("mb", self.policy, mail, crm, store, NOW, batch_size=3))

    def settle(self) -> PairOutcome:
        """Sync with healthy sides until a session writes nothing; that session's outcome."""
        for side in (self.mail, self.crm):
            side.fail_next, side.lose_next_answer = 0, False
        for _ in range(6):
            outcome = self.sync()
            if outcome.writes == 0 and outcome.cursors_committed:
                return outcome
        raise AssertionError("no quiescence after six healthy sessions")

    def contents(self) -> tuple[list[str], list[str]]:
        def of(side: MemorySide) -> list[str]:
            return sorted(repr(sorted(i.fields.items())) for i in side.shared_items().values())

        return of(self.mail), of(self.crm)


def check_settled(world: World) -> None:
    live = [link for link in world.store.links.values() if link.live]
    for side in Side:
        shared = world.side(side).shared_items()
        # Exact linkage: every shared item is in exactly one live link, and back.
        linked = [link.native(side) for link in live]
        assert sorted(n for n in linked if n) == sorted(shared), f"{side} linkage"
        assert len(set(linked)) == len(linked), f"{side} item in two links"
        carried = [i.link_id for i in shared.values() if i.link_id]
        assert len(set(carried)) == len(carried), f"{side} duplicate copies"
    for link in live:
        # Convergence: both sides hold the base.
        assert link.state is LinkState.ACTIVE
        assert link.mail_id is not None
        assert link.crm_id is not None
        assert world.mail.items[link.mail_id].fields == dict(link.base)
        assert world.crm.items[link.crm_id].fields == dict(link.base)
    for link in world.store.links.values():
        if link.state is LinkState.TOMBSTONE:
            # No resurrection: what a tombstone names stays gone from both sides.
            for side in Side:
                native = link.native(side)
                assert native is None or native not in world.side(side).shared_items()
            assert link.tombstone in (TombstoneReason.DELETED, TombstoneReason.UNSHARED)
    assert not world.store.intents, "intents left after a clean session"


@dataclass(frozen=True)
class Edit:
    side: Side
    native: str
    name: str
    value: Value
    before: Value


class SyncMachine(RuleBasedStateMachine):
    """Two sides of one mailbox's contacts, users on both, a flaky network between."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World.new(SyncPolicy(kind=KIND))
        self.edits: list[Edit] = []
        self.deleted: set[tuple[Side, str]] = set()

    @initialize(
        conflict=st.sampled_from(
            [ConflictPolicy.MAIL_WINS, ConflictPolicy.CRM_WINS, ConflictPolicy.NEWEST_WINS]
        ),
        delete_mail_item=st.booleans(),
    )
    def configure(self, conflict: ConflictPolicy, delete_mail_item: bool) -> None:
        self.world.policy = SyncPolicy(
            kind=KIND,
            conflict=conflict,
            delete_mail_item=delete_mail_item,
            guard_min_items=10_000,  # the guard has its own property below
        )

    def _pick(self, side: Side, index: int) -> str | None:
        natives = sorted(self.world.side(side).shared_items())
        return natives[index % len(natives)] if natives else None

    @rule(side=sides, fields=field_dicts)
    def create(self, side: Side, fields: dict[str, Value]) -> None:
        self.world.side(side).create(fields)

    @rule(side=sides, index=st.integers(0, 3), name=st.sampled_from(FIELDS), value=values)
    def edit(self, side: Side, index: int, name: str, value: Value) -> None:
        native = self._pick(side, index)
        if native is None:
            return
        before = self.world.side(side).items[native].fields.get(name)
        if value is None and len(self.world.side(side).items[native].fields) == 1:
            return  # an item keeps at least one field, as a real one would
        self.world.side(side).edit(native, name, value)
        if value != before:
            self.edits.append(Edit(side, native, name, value, before))

    @rule(side=sides, index=st.integers(0, 3))
    def touch(self, side: Side, index: int) -> None:
        native = self._pick(side, index)
        if native is not None:
            self.world.side(side).touch(native)

    @rule(side=sides, index=st.integers(0, 3))
    def delete(self, side: Side, index: int) -> None:
        native = self._pick(side, index)
        if native is not None:
            # Edits of the partner that this item already shows were carried before the
            # delete: the delete rightly wins over them.
            fields = self.world.side(side).items[native].fields
            partner = next(
                (
                    x.native(side.other)
                    for x in self.world.store.links.values()
                    if x.native(side) == native
                ),
                None,
            )
            self.edits = [
                e
                for e in self.edits
                if not (
                    e.side is side.other and e.native == partner and fields.get(e.name) == e.value
                )
            ]
            self.world.side(side).delete(native)
            self.deleted.add((side, native))

    @rule(
        side=sides,
        fault=st.sampled_from(
            ["flaky_writes", "lose_answer", "lose_cursor", "replay", "invalidate"]
        ),
        count=st.integers(1, 4),
    )
    def network_fault(self, side: Side, fault: str, count: int) -> None:
        """Writes that fail, an answer lost after its write landed, a cursor lost, replayed
        (notifications delivered again) or invalidated by the server (410, expired token)."""
        target = self.world.side(side)
        key = ("mb", KIND, side)
        if fault == "flaky_writes":
            target.fail_next = count
        elif fault == "lose_answer":
            target.lose_next_answer = True
        elif fault == "lose_cursor":
            self.world.store.cursors.pop(key, None)
        elif fault == "replay":
            if key in self.world.store.cursors:
                position = int(self.world.store.cursors[key] or 0)
                self.world.store.cursors[key] = str(max(0, position - count))
        else:
            target.invalid_before = len(target.log) + 1

    @rule()
    def sync(self) -> None:
        outcome = self.world.sync()
        if outcome.cursors_committed and not any(outcome.errors.values()):
            # A clean session settled everything listed before it: what users did up to
            # here is checked now, and a later delete rightly wins over an earlier edit.
            self._checked_clean_session()

    @rule(step=st.integers(1, 12))
    def crash_during_sync(self, step: int) -> None:
        cursors = dict(self.world.store.cursors)
        with contextlib.suppress(Crash):
            self.world.sync(Steps(crash_at=step))
        if self.world.store.cursors != cursors:
            # The crash came after the session's last commit: it carried every change.
            self._checked_clean_session()

    def _checked_clean_session(self) -> None:
        check_settled(self.world)
        self._check_no_lost_update()
        self.edits.clear()
        self.deleted.clear()

    @rule()
    def settle_and_check(self) -> None:
        world = self.world
        world.settle()
        check_settled(world)
        # Quiescence: one more session writes nothing.
        assert world.sync().writes == 0
        # A lost cursor resyncs to the same state, writing nothing.
        before = (copy.deepcopy(world.store.links), world.contents())
        world.store.cursors.clear()
        resync = world.sync()
        assert resync.writes == 0
        assert (world.store.links, world.contents()) == before
        self._check_no_lost_update()
        self.edits.clear()
        self.deleted.clear()

    def _check_no_lost_update(self) -> None:
        """Every value a user wrote is on both sides, overwritten by a later edit of the same
        field, or recorded as a conflict's losing value; unless its item was deleted."""
        links = list(self.world.store.links.values())
        last: dict[tuple[str, str], list[Edit]] = {}
        for edit in self.edits:
            link = next((x for x in links if x.native(edit.side) == edit.native), None)
            if (edit.side, edit.native) in self.deleted or link is None:
                continue
            last.setdefault((link.link_id, edit.name), []).append(edit)
        for (link_id, name), edits in last.items():
            link = self.world.store.links[link_id]
            if not link.live:
                # Modify beats delete: a pair whose partner was deleted since the edit lives
                # on, unless the edits cancelled out (content back to the base is no change).
                assert edits[-1].value == link.base.get(name), f"an edit of {name} lost to a delete"
                for e in edits:
                    # Cancelled out: the item is as it was, or gone with its partner's delete.
                    item = self.world.side(e.side).items.get(e.native)
                    assert item is None or item.fields == dict(link.base)
                continue
            final = link.base.get(name)
            latest = {e.side: e.value for e in edits}
            recorded = {
                v for c in link.conflicts if c.field == name for v in (c.mail_value, c.crm_value)
            }
            for side, value in latest.items():
                assert (
                    value == final
                    or value in recorded
                    or any(e.side is not side and e.value == final for e in edits)
                ), f"lost update of {name} on {side}"

    @invariant()
    def links_never_share_a_native_id(self) -> None:
        for side in Side:
            natives = [x.native(side) for x in self.world.store.links.values() if x.native(side)]
            assert len(natives) == len(set(natives))


SyncMachine.TestCase.settings = settings.get_profile(PROFILE)
test_sync_state_machine = SyncMachine.TestCase


# -- crash after every step equals a clean run -----------------------------------------------


operations = st.lists(
    st.tuples(st.sampled_from(["create", "edit", "delete"]), sides, field_dicts, st.integers(0, 9)),
    max_size=12,
)


def _apply(world: World, ops: list[tuple[str, Side, dict[str, Value], int]]) -> None:
    for op, side, fields, index in ops:
        target = world.side(side)
        natives = sorted(target.shared_items())
        if op == "create" or not natives:
            target.create(fields)
        elif op == "edit":
            native = natives[index % len(natives)]
            for name, value in fields.items():
                target.edit(native, name, value)
        else:
            target.delete(natives[index % len(natives)])


CRASH_EXAMPLES = settings(settings.get_profile(PROFILE), max_examples=PROFILE_EXAMPLES // 2)


@CRASH_EXAMPLES
@given(first=operations, second=operations)
def test_a_crash_after_any_step_then_resuming_equals_a_clean_run(
    first: list[tuple[str, Side, dict[str, Value], int]],
    second: list[tuple[str, Side, dict[str, Value], int]],
) -> None:
    start = World.new(SyncPolicy(kind=KIND, guard_min_items=10_000))
    _apply(start, first)
    start.settle()
    _apply(start, second)

    clean = copy.deepcopy(start)
    steps = Steps()
    clean.sync(steps)
    clean.settle()
    expected = (
        clean.contents(),
        sorted(repr(sorted(x.base.items())) for x in clean.store.links.values() if x.live),
    )

    for k in range(1, steps.count + 1):
        crashed = copy.deepcopy(start)
        with pytest.raises(Crash):
            crashed.sync(Steps(crash_at=k))
        crashed.settle()
        check_settled(crashed)
        got = (
            crashed.contents(),
            sorted(repr(sorted(x.base.items())) for x in crashed.store.links.values() if x.live),
        )
        assert got == expected, f"crash after step {k} of {steps.count}"
