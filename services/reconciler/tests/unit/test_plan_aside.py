"""A big listing is planned off the event loop (issue #18, fairness).

A replica's sessions share one event loop. Planning a first sync of 10,000 items is a second or
more of CPU: on the loop, every other session of the replica (another mailbox's push) would
wait for it. So a plan of many items runs on a worker thread, and the loop runs meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.adapters.sync_sides import in_turns
from concord_reconciler.mirror.domain import executor
from concord_reconciler.mirror.domain.executor import PLAN_ASIDE_FROM, sync_pair
from concord_reconciler.mirror.domain.planner import SyncPolicy, plan
from concord_reconciler.mirror.domain.sync import Side

pytestmark = pytest.mark.unit

KIND = res.OBJECT_KIND_CONTACT
NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize("early", [True, False], ids=["created-early", "planned-whole"])
@pytest.mark.parametrize("records", [PLAN_ASIDE_FROM, 10])
def test_another_session_runs_while_a_big_listing_is_planned(
    monkeypatch: pytest.MonkeyPatch, records: int, early: bool
) -> None:
    ticks = itertools.count(1)
    mail, crm = (
        MemorySide(Side.MAIL, lambda: next(ticks)),
        MemorySide(Side.CRM, lambda: next(ticks)),
    )
    store = MemoryLinkStore()
    # Early creates run only below the guard's minimum of live links.
    policy = SyncPolicy(kind=KIND, guard_min_items=1_000_000 if early else 0)
    for n in range(records):
        crm.create({"name": f"c{n}"})
    planning_started, other_ran = threading.Event(), threading.Event()
    during: list[bool] = []

    def planning(*args: Any) -> Any:
        # Another coroutine of the loop gets to run while this plan does, or it never would.
        planning_started.set()
        during.append(other_ran.wait(5 if records >= PLAN_ASIDE_FROM else 0))
        return plan(*args)

    monkeypatch.setattr(executor, "plan", planning)

    async def run() -> None:
        async def other_session() -> None:
            while True:
                await asyncio.sleep(0.001)
                if planning_started.is_set():
                    other_ran.set()

        other = asyncio.ensure_future(other_session())
        try:
            outcome = await sync_pair("mb", policy, mail, crm, store, NOW, batch_size=500)
        finally:
            other.cancel()
        assert outcome.created[Side.MAIL] == records

    asyncio.run(run())
    assert during
    # Small plans stay on the loop: a thread would cost more than they do.
    assert all(during) == (records >= PLAN_ASIDE_FROM)


def test_a_page_turned_into_snapshots_gives_the_loop_back_in_turns() -> None:
    async def run() -> list[int]:
        others: list[int] = []
        seen: list[int] = []

        async def other_session() -> None:
            while True:
                others.append(len(seen))
                await asyncio.sleep(0)

        other = asyncio.ensure_future(other_session())
        await asyncio.sleep(0)
        async for value in in_turns(range(250), every=100):
            seen.append(value)  # no await of its own, as a page's snapshots are made
        other.cancel()
        assert seen == list(range(250))
        return others

    # The other session ran before the page began and after each hundred items.
    assert asyncio.run(run())[:3] == [0, 100, 200]
