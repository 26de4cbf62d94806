"""A big session holds none of its mailbox's other changes hostage (issue #18, fairness).

A first sync of many items writes in chunks; a push hint for the mailbox that arrives
meanwhile is served at the next chunk (the hinted side listed since the session's listing,
the backlog re-planned with it, the push's actions first), and a crash between chunks loses
and duplicates nothing: the next session goes on from the chunk in progress.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.executor import PairOutcome, sync_pair
from concord_reconciler.mirror.domain.hints import PendingPushes
from concord_reconciler.mirror.domain.planner import SyncPolicy
from concord_reconciler.mirror.domain.sync import Side, Write, WriteResult
from concord_reconciler.sessions.domain.runner import FINAL_ROUNDS, SyncPorts, sync_mailbox

pytestmark = pytest.mark.unit

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)
BACKLOG = 40
CHUNK = 4


class Crashed(Exception):
    """The replica died (here: in the middle of a chunk's writes)."""


class Watched:
    """A side whose every apply is logged, and which runs what a person does at the n-th."""

    def __init__(self, inner: MemorySide, log: list[tuple[Side, tuple[str, ...]]]) -> None:
        self._inner, self._log = inner, log
        self.side = inner.side
        self.at: dict[int, Callable[[], None]] = {}
        self.applies = 0

    async def list_changes(  # type: ignore[no-untyped-def]
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ):
        return await self._inner.list_changes(kind, cursor, known)

    async def find(self, kind: Kind, link_ids: Sequence[str]):  # type: ignore[no-untyped-def]
        return await self._inner.find(kind, link_ids)

    async def fetch(self, kind: Kind, native_ids: Sequence[str]):  # type: ignore[no-untyped-def]
        return await self._inner.fetch(kind, native_ids)

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        self.applies += 1
        if self.applies in self.at:
            self.at[self.applies]()
        names = tuple(str(w.fields.get("name", w.native_id)) for w in writes)
        self._log.append((self.side, names))
        return await self._inner.apply(kind, writes)


class World:
    def __init__(self) -> None:
        ticks = itertools.count(1)
        self.mail = MemorySide(Side.MAIL, lambda: next(ticks))
        self.crm = MemorySide(Side.CRM, lambda: next(ticks))
        self.store = MemoryLinkStore()
        self.policy = SyncPolicy(kind=KIND)
        self.log: list[tuple[Side, tuple[str, ...]]] = []
        self.hints = PendingPushes()
        for n in range(BACKLOG):
            self.crm.create({"name": f"backlog-{n:02d}", "uid": f"uid-{n:02d}"})

    def sides(self) -> tuple[Watched, Watched]:
        return Watched(self.mail, self.log), Watched(self.crm, self.log)

    def sync(self, mail: Watched | None = None, crm: Watched | None = None) -> PairOutcome:
        default_mail, default_crm = self.sides()
        return asyncio.run(
            sync_pair(
                "mb",
                self.policy,
                mail or default_mail,
                crm or default_crm,
                self.store,
                NOW,
                batch_size=CHUNK,
                hints=self.hints,
            )
        )

    def names(self, side: MemorySide) -> list[str]:
        """Every item's name, sorted (twice if it is there twice)."""
        return sorted(str(i.fields["name"]) for i in side.items.values())

    def chunk_of(self, name: str) -> int:
        """How many chunks of the backlog were written to the mailbox before `name` was
        written to either side."""
        chunks = 0
        for side, names in self.log:
            if name in names:
                return chunks
            chunks += side is Side.MAIL
        raise AssertionError(f"{name} was never written")


def test_a_meeting_saved_during_a_big_first_sync_is_served_at_the_next_chunk() -> None:
    world = World()
    mail, crm = world.sides()

    def save_meeting() -> None:
        world.mail.create({"name": "saved-meanwhile"})
        world.hints.note(Side.MAIL)

    # While the second chunk is written, someone saves a meeting in the mailbox.
    mail.at[2] = save_meeting
    outcome = world.sync(mail, crm)

    # Served right after the chunk in progress, not after the other eight.
    assert world.chunk_of("saved-meanwhile") == 2
    assert outcome.cursors_committed
    assert outcome.created == {Side.MAIL: BACKLOG, Side.CRM: 1}
    assert world.names(world.crm) == sorted(
        ["saved-meanwhile", *(f"backlog-{n:02d}" for n in range(BACKLOG))]
    )
    assert world.names(world.mail) == world.names(world.crm)
    # The cursors moved past the push's change and the session's own writes: nothing is
    # written twice, nothing is left.
    assert world.sync().writes == 0


class SavedAfterListing(Watched):
    """The mailbox side: a meeting is saved, and its push heard, just after it was listed."""

    def __init__(self, world: World) -> None:
        super().__init__(world.mail, world.log)
        self._world = world

    async def list_changes(  # type: ignore[no-untyped-def]
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ):
        page = await super().list_changes(kind, cursor, known)
        if not cursor:
            self._world.mail.create({"name": "saved-meanwhile"})
            self._world.hints.note(Side.MAIL)
        return page


def test_a_meeting_saved_while_a_big_first_sync_lists_is_served_before_its_first_chunk() -> None:
    world = World()
    outcome = world.sync(mail=SavedAfterListing(world))
    # It waited for the listing; it waits for no chunk of the backlog.
    assert world.chunk_of("saved-meanwhile") == 0
    assert outcome.cursors_committed
    assert outcome.created == {Side.MAIL: BACKLOG, Side.CRM: 1}
    assert world.names(world.mail) == world.names(world.crm)
    assert world.sync().writes == 0


def test_a_salesforce_edit_to_an_item_still_in_the_backlog_is_written_once_as_edited() -> None:
    world = World()
    mail, crm = world.sides()
    # The last items of the backlog, edited and deleted in Salesforce before their turn.
    edited, deleted = "crm-40", "crm-39"

    def edit_in_salesforce() -> None:
        world.crm.edit(edited, "name", "backlog-39-edited")
        world.crm.delete(deleted)
        world.hints.note(Side.CRM)

    mail.at[2] = edit_in_salesforce
    outcome = world.sync(mail, crm)

    assert world.chunk_of("backlog-39-edited") == 2
    assert outcome.cursors_committed
    # Written once, as edited; the deleted one never reached the mailbox.
    assert outcome.created[Side.MAIL] == BACKLOG - 1
    assert "backlog-38" not in world.names(world.mail)
    assert world.names(world.mail) == world.names(world.crm)
    assert world.sync().writes == 0


def test_a_meeting_made_in_the_mailbox_like_one_still_in_the_backlog_is_linked_not_copied() -> None:
    """The same meeting, made on both sides before Concord mirrored it: first-sync matching
    pairs them (one meeting each side), as it would have in one listing."""
    world = World()
    mail, crm = world.sides()

    def make_the_same_meeting() -> None:
        world.mail.create({"name": "backlog-39", "uid": "uid-39"})
        world.hints.note(Side.MAIL)

    mail.at[2] = make_the_same_meeting
    outcome = world.sync(mail, crm)
    assert outcome.cursors_committed
    assert outcome.created == {Side.MAIL: BACKLOG - 1, Side.CRM: 0}
    assert world.names(world.mail) == world.names(world.crm)
    assert len(world.mail.items) == BACKLOG
    assert world.sync().writes == 0


def test_without_a_hint_the_backlog_keeps_its_order() -> None:
    world = World()
    outcome = world.sync()
    assert outcome.created[Side.MAIL] == BACKLOG
    assert [len(names) for _, names in world.log] == [CHUNK] * (BACKLOG // CHUNK)


@pytest.mark.parametrize("pushed", [False, True])
def test_a_crash_between_chunks_resumes_from_the_chunk_nothing_lost_or_twice(
    pushed: bool,
) -> None:
    world = World()
    mail, crm = world.sides()

    def save_meeting() -> None:
        world.mail.create({"name": "saved-meanwhile"})
        world.hints.note(Side.MAIL)

    def crash() -> None:
        raise Crashed

    if pushed:
        mail.at[2] = save_meeting
    mail.at[5] = crash
    with pytest.raises(Crashed):
        world.sync(mail, crm)

    # The chunks before the crash were committed with their links; no cursor moved past
    # what was applied.
    mirrored = sum(name.startswith("backlog-") for name in world.names(world.mail))
    assert mirrored >= 3 * CHUNK
    assert len(world.store.links) == len(world.mail.items) == mirrored + pushed
    assert world.store.cursors == {}

    world.log.clear()
    resumed = world.sync()
    # Only what the crash left undone is written: from the chunk in progress on.
    assert resumed.created == {Side.MAIL: BACKLOG - mirrored, Side.CRM: 0}
    assert resumed.cursors_committed
    assert world.names(world.mail) == world.names(world.crm)
    assert len(world.mail.items) == BACKLOG + pushed
    assert world.sync().writes == 0


class AnswersLost(Watched):
    """Every write lands, and every answer is lost (the mail-connector past its deadline)."""

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        await super().apply(kind, writes)
        raise PeerError("mail-connector", "ApplyItems", "DEADLINE_EXCEEDED", "deadline exceeded")


class Looked(Watched):
    """Counts the ids each lookup asks for."""

    def __init__(self, inner: MemorySide, log: list[tuple[Side, tuple[str, ...]]]) -> None:
        super().__init__(inner, log)
        self.asked: list[int] = []

    async def find(self, kind: Kind, link_ids: Sequence[str]):  # type: ignore[no-untyped-def]
        self.asked.append(len(link_ids))
        return await super().find(kind, link_ids)


def test_the_intents_of_many_lost_answers_are_looked_up_a_chunk_at_a_time() -> None:
    world = World()
    lost = AnswersLost(world.mail, world.log)
    outcome = world.sync(mail=lost)
    assert not outcome.cursors_committed
    assert len(world.store.intents) == BACKLOG

    looked = Looked(world.mail, world.log)
    resumed = world.sync(mail=looked)
    assert resumed.recovered == BACKLOG
    assert looked.asked == [CHUNK] * (BACKLOG // CHUNK)
    assert resumed.writes == 0
    assert len(world.mail.items) == BACKLOG
    assert world.store.intents == {}


class DeltaUnlistable(Watched):
    """A side whose listings after a cursor fail for now (its connector is overloaded)."""

    async def list_changes(  # type: ignore[no-untyped-def]
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ):
        if cursor:
            raise PeerError("mail-connector", "ListChanges", "DEADLINE_EXCEEDED", "deadline")
        return await super().list_changes(kind, cursor, known)


def test_a_push_that_cannot_be_listed_now_waits_for_the_next_session() -> None:
    world = World()
    mail = DeltaUnlistable(world.mail, world.log)

    def save_meeting() -> None:
        world.mail.create({"name": "saved-meanwhile"})
        world.hints.note(Side.MAIL)

    mail.at[2] = save_meeting
    outcome = world.sync(mail=mail)
    # The backlog went on and the cursors moved only as far as what was listed.
    assert outcome.cursors_committed
    assert outcome.created == {Side.MAIL: BACKLOG, Side.CRM: 0}
    following = world.sync()
    assert following.created == {Side.MAIL: 0, Side.CRM: 1}
    assert "saved-meanwhile" in world.names(world.crm)


def test_a_push_during_the_last_chunk_is_served_by_the_same_session() -> None:
    world = World()
    mail, crm = world.sides()

    def save_meeting() -> None:
        world.mail.create({"name": "saved-meanwhile"})
        world.hints.note(Side.MAIL)

    mail.at[1] = save_meeting  # the backlog is one chunk of the session's batch size
    ports = SyncPorts(mail, crm, world.store)
    counts = asyncio.run(sync_mailbox("mb", [world.policy], ports, NOW, world.hints))
    assert (counts.mail.created, counts.crm.created) == (BACKLOG, 1)
    assert [k.kind for k in counts.kinds] == [KIND]
    assert "saved-meanwhile" in world.names(world.crm)


class EchoingSide(Watched):
    """Every write to the mailbox comes back as a hint, as the mailbox's own notifications do."""

    def __init__(self, world: World) -> None:
        super().__init__(world.mail, world.log)
        self.hints = world.hints
        self.listings = 0

    async def list_changes(  # type: ignore[no-untyped-def]
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ):
        self.listings += 1
        self.hints.note(Side.MAIL)  # a hint always pending: only the bound ends the session
        return await super().list_changes(kind, cursor, known)


def test_hints_that_keep_coming_do_not_keep_the_session_going() -> None:
    world = World()
    mail = EchoingSide(world)
    _, crm = world.sides()
    counts = asyncio.run(
        sync_mailbox("mb", [world.policy], SyncPorts(mail, crm, world.store), NOW, world.hints)
    )
    assert counts.mail.created == BACKLOG
    # The pair's listing, one more listing past its own writes (echo suppression), and the
    # bounded rounds for hints still pending: the hints that keep coming add nothing.
    assert mail.listings == 1 + 1 + FINAL_ROUNDS


def test_a_write_refused_for_now_does_not_stop_pushes_being_served() -> None:
    world = World()
    mail, crm = world.sides()
    world.mail.fail_next = 1  # the backlog's first write is throttled: retried next session

    def save_meeting() -> None:
        world.mail.create({"name": "saved-meanwhile"})
        world.hints.note(Side.MAIL)

    mail.at[2] = save_meeting
    outcome = world.sync(mail, crm)
    assert world.chunk_of("saved-meanwhile") == 2
    assert not outcome.cursors_committed
    assert outcome.created == {Side.MAIL: BACKLOG - 1, Side.CRM: 1}
    following = world.sync()
    assert following.created == {Side.MAIL: 1, Side.CRM: 0}
    assert world.names(world.mail) == world.names(world.crm)
