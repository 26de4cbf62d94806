"""The walk past a pair's own writes runs while the next pair lists (issue #18).

The walk only moves the written side's cursor past Concord's own writes; the next pair's listing
needs Salesforce and mapping far more than the mailbox. So `sync_mailbox` starts each walk and
goes on with the next pair, and the round ends once every walk has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore
from concord_reconciler.mirror.domain.planner import SyncPolicy
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.mirror.domain.sync import Side
from concord_reconciler.sessions.domain.runner import SyncPorts, sync_mailbox

from .conftest import ByKind

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CONTACT, TASK = res.OBJECT_KIND_CONTACT, res.OBJECT_KIND_TASK


class Watched(ByKind):
    """The conftest's per-kind side, recording its listings and holding some back."""

    def __init__(self, side: Side) -> None:
        super().__init__(side)
        self.listed: list[tuple[Kind, str]] = []
        # Per kind: a listing from a cursor (a walk, or a delta) waits for this first.
        self.hold: dict[Kind, asyncio.Event] = {}

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        self.listed.append((kind, cursor))
        if cursor and kind in self.hold:
            await asyncio.wait_for(self.hold[kind].wait(), 5)
        return await super().list_changes(kind, cursor, known)


def _world() -> tuple[Watched, Watched, MemoryLinkStore]:
    mail, crm = Watched(Side.MAIL), Watched(Side.CRM)
    for kind in (CONTACT, TASK):
        for n in range(3):
            crm.kinds[kind].create({"name": f"{kind}-{n}"})
    return mail, crm, MemoryLinkStore()


def test_a_pairs_walk_past_its_writes_runs_while_the_next_pair_lists() -> None:
    mail, crm, store = _world()
    policies = [SyncPolicy(kind=CONTACT), SyncPolicy(kind=TASK)]

    class TaskListingFreesTheWalk(Watched):
        async def list_changes(
            self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
        ) -> ChangePage:
            if kind == TASK:
                mail.hold[CONTACT].set()
            return await super().list_changes(kind, cursor, known)

    watched = TaskListingFreesTheWalk(Side.CRM)
    watched.kinds = crm.kinds

    async def session() -> None:
        # The contacts' walk waits until the tasks are listed in Salesforce: it would wait
        # forever (5 s, then fail) if the tasks' pair started only after it.
        mail.hold[CONTACT] = asyncio.Event()
        await sync_mailbox("mb", policies, SyncPorts(mail, watched, store), NOW)

    asyncio.run(session())
    for kind in (CONTACT, TASK):
        assert sorted(str(i.fields["name"]) for i in mail.kinds[kind].items.values()) == [
            f"{kind}-{n}" for n in range(3)
        ]
    # The walks moved both mailbox cursors past Concord's writes: the next session lists each
    # side and kind once, finds nothing and writes nothing.
    mail.listed.clear()
    counts = asyncio.run(sync_mailbox("mb", policies, SyncPorts(mail, crm, store), NOW))
    assert (counts.mail.created, counts.crm.created) == (0, 0)
    assert len(mail.listed) == 2
    assert all(cursor for _, cursor in mail.listed)


def test_a_walk_that_fails_fails_the_session_once_the_pairs_are_done() -> None:
    mail, crm, store = _world()

    class Broken(Watched):
        async def list_changes(
            self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
        ) -> ChangePage:
            if cursor and kind == CONTACT:
                raise RuntimeError("a bug in the walk")
            return await super().list_changes(kind, cursor, known)

    broken = Broken(Side.MAIL)
    broken.kinds = mail.kinds
    policies = [SyncPolicy(kind=CONTACT), SyncPolicy(kind=TASK)]
    with pytest.raises(RuntimeError, match="a bug in the walk"):
        asyncio.run(sync_mailbox("mb", policies, SyncPorts(broken, crm, store), NOW))
    # The tasks' pair ran meanwhile: its items are there.
    assert len(mail.kinds[TASK].items) == 3
