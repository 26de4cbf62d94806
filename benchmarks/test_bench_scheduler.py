"""The scheduler's cost, printed as measured in one run (never gated on times).

500 mailboxes, each with a history of sessions, in the reconciler's SQLite store and a real
nats-server: the CPU one leading replica spends reading the schedule every tick (four queries,
whatever the number of mailboxes) and requesting the sessions that fall due, as a share of one
core at the default tick (5 s) and interval (30 min). Target: under 5% of one core.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_events import EventBus, Topology
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.names import new_session_id
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.sessions.adapters.messaging import NatsSessionQueue
from concord_reconciler.sessions.adapters.scheduler import Scheduler, ScheduleReader
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.settings import ReconcilerSettings
from concord_store import create_engine, migrate
from concord_testing import NatsServer

MAILBOXES = 500
HISTORY = 10
TICKS = 20
TARGET_SHARE = 0.05


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'reconciler.db'}")
    await migrate(engine, "concord_reconciler.migrations")
    store = SqlStore(engine)
    past = utcnow() - timedelta(days=1)
    for n in range(MAILBOXES):
        mailbox_id = f"m{n:03d}"
        await store.insert_mailbox(
            MailboxRecord(
                mailbox_id=mailbox_id,
                org_id=f"org{n % 10}",
                owner_user_id=f"user-{n}",
                crm_user_id="005000000000001AAA",
                address=f"{mailbox_id}@example.com",
                provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
                update_time=past,
            )
        )
        for age in range(HISTORY, 0, -1):
            when = utcnow() - timedelta(minutes=30 * age + n % 30)
            session, _ = await store.enqueue_session(
                SessionRecord(
                    session_id=new_session_id(),
                    mailbox_id=mailbox_id,
                    trigger=res.SESSION_TRIGGER_SCHEDULE,
                    request_id="",
                    request_time=when,
                )
            )
            running = session.to(SessionState.RUNNING, start_time=when)
            await store.save_session(running, expected=SessionState.QUEUED)
            state = SessionState.FAILED if age % 4 == 0 else SessionState.COMPLETED
            await store.save_session(running.to(state, end_time=when), SessionState.RUNNING)
    yield store
    await store.engine.dispose()


async def test_scheduler_cost_for_500_mailboxes(store: SqlStore, nats_server: NatsServer) -> None:
    settings = ReconcilerSettings()
    bus = await EventBus.connect(nats_server.url, "bench", topology=Topology())
    await bus.ensure_topology()
    try:
        scheduler = Scheduler(
            bus,
            store,
            NatsSessionQueue(bus),
            ScheduleReader(store.engine, timedelta(seconds=settings.default_sync_interval_seconds)),
            owner="bench",
            tick_seconds=settings.schedule_tick_seconds,
        )
        # The first tick finds every mailbox due (their last session is 30+ minutes old):
        # that is the cost of requesting sessions, per session.
        cpu = time.process_time()
        first = await scheduler.tick()
        request_cpu = (time.process_time() - cpu) / max(1, len(first.sessions))
        # Later ticks find them all pending: the steady cost of reading the schedule.
        cpu = time.process_time()
        for _ in range(TICKS):
            plan = await scheduler.tick()
            assert plan.sessions == []
        tick_cpu = (time.process_time() - cpu) / TICKS
    finally:
        await bus.close()

    assert len(first.sessions) == MAILBOXES
    per_second = tick_cpu / settings.schedule_tick_seconds
    sessions_per_second = MAILBOXES / settings.default_sync_interval_seconds
    share = per_second + request_cpu * sessions_per_second
    print()
    print(f"scheduler, {MAILBOXES} mailboxes x {HISTORY} past sessions each:")
    print(
        f"  one tick (read + plan): {tick_cpu * 1000:.1f} ms CPU, "
        f"every {settings.schedule_tick_seconds:g} s"
    )
    print(f"  one scheduled session request: {request_cpu * 1000:.2f} ms CPU")
    print(
        f"  share of one core: {share:.2%} (target < {TARGET_SHARE:.0%}; "
        f"ratio to target {share / TARGET_SHARE:.2f}x)"
    )
    assert share > 0
