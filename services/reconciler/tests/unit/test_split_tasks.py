"""Recurring tasks split as Exchange splits them: a completed occurrence becomes a new item, a
copy of the task carrying its link id, and the task moves on to its next occurrence. No two
mailbox items keep one link id, and a completion replayed after a crash completes nothing more.
(The emulator's split, end to end: tests/integration/test_sync_connectors.py.)"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import replace
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

TASK = res.OBJECT_KIND_TASK
NOW = datetime(2026, 6, 1, tzinfo=UTC)


class SplittingMailbox:
    """The mailbox as Exchange keeps recurring tasks (`recurring`, by native id): completing
    one, by the user or by an update, splits the occurrence off as a new item that copies
    the task with its link id (an update's answer names it), and the task moves on a week,
    open again. Like EWS, every update stores its link id in the item."""

    def __init__(self, inner: MemorySide) -> None:
        self.inner = inner
        self.side = inner.side
        self.recurring: set[str] = set()
        # The next apply lands, then its answer is lost (a crash, a gRPC deadline) or comes
        # back retryable (the connector's connection to the server died mid-response).
        self.lose_next_answer = False
        self.answer_next_retryable = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def complete(self, native: str) -> str:
        """The user completes the task's current occurrence in Outlook: the one-off's id."""
        self.inner.edit(native, "status", "done")
        return self._split(native)

    def _split(self, native: str) -> str:
        task = self.inner.items[native]
        one_off = self.inner.create(dict(task.fields), link_id=task.link_id)
        task.fields.update(status="open", due=int(str(task.fields["due"])) + 7)
        self.inner.touch(native)
        return one_off

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        before = {n: dict(i.fields) for n, i in self.inner.items.items()}
        results = list(await self.inner.apply(kind, writes))
        for index, (write, result) in enumerate(zip(writes, results, strict=True)):
            item = self.inner.items.get(write.native_id or "")
            if write.op is not WriteOp.UPDATE or item is None or not result.ok:
                continue
            item.link_id = write.link_id
            was = before[write.native_id or ""].get("status")
            if write.native_id in self.recurring and item.fields["status"] == "done" != was:
                one_off = self._split(write.native_id or "")
                version = str(self.inner.items[one_off].version)
                results[index] = replace(result, native_id=one_off, version=version)
        if self.lose_next_answer:
            # What a crash after the write landed, before its commit, leaves: the intent.
            self.lose_next_answer = False
            raise PeerError("mail-connector", "ApplyItems", "UNAVAILABLE", "answer lost")
        if self.answer_next_retryable:
            self.answer_next_retryable = False
            lost = WriteResult("", False, reason="PROVIDER_UNAVAILABLE", maybe_landed=True)
            return [replace(lost, link_id=w.link_id) for w in writes]
        return results


class World:
    def __init__(self) -> None:
        ticks = itertools.count(1)
        self.mailbox = SplittingMailbox(MemorySide(Side.MAIL, lambda: next(ticks)))
        self.crm = MemorySide(Side.CRM, lambda: next(ticks))
        self.store = MemoryLinkStore()

    def sync(self) -> PairOutcome:
        return asyncio.run(
            sync_pair(
                "mb",
                SyncPolicy(kind=TASK),
                self.mailbox,
                self.crm,
                self.store,
                NOW,
            )
        )

    def a_weekly_task_from_salesforce(self) -> tuple[str, str]:
        record = self.crm.create({"subject": "report", "due": 1, "status": "open"})
        self.sync()
        (task,) = self.mailbox.inner.items
        self.mailbox.recurring.add(task)
        return task, record

    def mailbox_state(self) -> list[tuple[int, str]]:
        items = self.mailbox.inner.items.values()
        return sorted((int(str(i.fields["due"])), str(i.fields["status"])) for i in items)

    def crm_state(self) -> list[tuple[int, str]]:
        items = self.crm.items.values()
        return sorted((int(str(i.fields["due"])), str(i.fields["status"])) for i in items)

    def link_ids_in_mailbox(self) -> list[str]:
        return [i.link_id for i in self.mailbox.inner.items.values()]


def test_the_one_off_split_off_in_the_mailbox_gets_its_own_link_id_written_into_it() -> None:
    world = World()
    task, record = world.a_weekly_task_from_salesforce()
    one_off = world.mailbox.complete(task)
    copied = world.mailbox.inner.items[one_off].link_id
    assert copied == world.mailbox.inner.items[task].link_id  # Exchange copied it

    adopted = world.sync()
    assert (adopted.created[Side.CRM], adopted.updated[Side.CRM]) == (1, 1)
    # The one-off is a Task of its own, and now carries that Task's link id, not the copy.
    assert adopted.updated[Side.MAIL] == 1
    ids = world.link_ids_in_mailbox()
    assert len(set(ids)) == 2, ids
    own = next(link for link in world.store.links.values() if link.mail_id == one_off)
    assert world.mailbox.inner.items[one_off].link_id == own.link_id != copied
    assert world.sync().writes == 0

    # The task deleted in the mailbox, its Task edited: recreated under its link id, whose
    # look-up must find nothing (it found the one-off, and took it for the task).
    world.mailbox.inner.delete(task)
    world.crm.edit(record, "subject", "report (edited)")
    recreated = world.sync()
    assert recreated.created[Side.MAIL] == 1, recreated
    assert len(world.mailbox.inner.items) == 2
    assert world.mailbox.inner.items[one_off].fields["subject"] == "report"
    assert sorted(link.mail_id or "" for link in world.store.links.values()) == sorted(
        world.mailbox.inner.items
    )


def test_a_task_moved_on_by_concords_completion_gets_its_own_link_id_written_into_it() -> None:
    world = World()
    task, record = world.a_weekly_task_from_salesforce()
    first = world.mailbox.inner.items[task].link_id
    world.crm.edit(record, "status", "done")
    world.sync()  # the completion, split off; the link follows the one-off
    moved_on = world.sync()  # the task, moved on, is a Task of its own
    assert moved_on.created[Side.CRM] == 1
    assert world.mailbox.inner.items[task].link_id not in ("", first)
    assert len(set(world.link_ids_in_mailbox())) == 2
    assert world.sync().writes == 0


@pytest.mark.parametrize("lost", ["crash", "retryable answer"])
def test_a_completion_replayed_after_a_crash_completes_no_second_occurrence(lost: str) -> None:
    clean = World()
    _, record = clean.a_weekly_task_from_salesforce()
    clean.crm.edit(record, "status", "done")
    for _ in range(3):
        clean.sync()

    crashed = World()
    _, record = crashed.a_weekly_task_from_salesforce()
    crashed.crm.edit(record, "status", "done")
    if lost == "crash":
        crashed.mailbox.lose_next_answer = True
    else:
        crashed.mailbox.answer_next_retryable = True
    crashed.sync()
    journalled = len(crashed.store.intents)  # landed and split, not committed
    resumed = crashed.sync()
    crashed.sync()

    # The next occurrence is still open, in the mailbox and as a Task of its own: as if
    # nothing had crashed.
    assert crashed.mailbox_state() == clean.mailbox_state() == [(1, "done"), (8, "open")]
    assert crashed.crm_state() == clean.crm_state() == [(1, "done"), (8, "open")]
    assert len(set(crashed.link_ids_in_mailbox())) == 2
    assert (journalled, resumed.recovered) == (1, 1)
    assert resumed.updated[Side.MAIL] == 1  # the moved-on task's relink, nothing more
    assert crashed.sync().writes == 0
