"""The scheduler over a real store (SQLite) and a real nats-server: the schedule read from the
session history, push hints coalesced into sessions, one leader among replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from google.protobuf import duration_pb2
from sqlalchemy import event, update

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.events.v1 import events_pb2
from concord_events import SESSIONS, EventBus, Topology, crm_changed, mail_changed
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.names import new_session_id
from concord_reconciler.kernel.schema import requests
from concord_reconciler.kernel.schema import sessions as sessions_table
from concord_reconciler.kernel.sql import to_us
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.domain.sync import Link
from concord_reconciler.sessions.adapters.messaging import NatsSessionQueue
from concord_reconciler.sessions.adapters.scheduler import Scheduler, ScheduleReader
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.sessions.domain.schedule import SchedulePolicy, StateChange
from concord_testing import NatsServer

pytestmark = pytest.mark.integration

DEFAULT = timedelta(minutes=30)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(
        nats_server.url, "scheduler-test", topology=Topology(lease_ttl_seconds=1.5)
    )
    await bus.ensure_topology()
    yield bus
    await bus.close()


async def add_mailbox(store: SqlStore, mailbox_id: str, org: str = "acme", **kw: object) -> None:
    await store.insert_mailbox(
        MailboxRecord(
            mailbox_id=mailbox_id,
            org_id=org,
            owner_user_id="user-1",
            crm_user_id="005000000000001AAA",
            address=f"{mailbox_id}@example.com",
            provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
            **kw,  # type: ignore[arg-type]
        )
    )


async def add_session(
    store: SqlStore, mailbox_id: str, state: SessionState, code: str = "", ago: float = 60.0
) -> SessionRecord:
    when = utcnow() - timedelta(seconds=ago)
    queued = SessionRecord(
        session_id=new_session_id(),
        mailbox_id=mailbox_id,
        trigger=res.SESSION_TRIGGER_SCHEDULE,
        request_id="",
        request_time=when,
    )
    session, _ = await store.enqueue_session(queued)
    if state is SessionState.QUEUED:
        return session
    running = session.to(SessionState.RUNNING, start_time=when)
    assert await store.save_session(running, expected=SessionState.QUEUED)
    if state is SessionState.RUNNING:
        return running
    done = running.to(state, end_time=when, failure_code=code, failure_reason="it broke")
    assert await store.save_session(done, expected=SessionState.RUNNING)
    return done


async def test_rows_come_from_the_mailboxes_and_their_session_history(store: SqlStore) -> None:
    await add_mailbox(store, "fresh")
    await add_mailbox(store, "flaky", sync_interval_seconds=300.0)
    await add_mailbox(store, "busy", org="other")
    await add_session(store, "flaky", SessionState.COMPLETED, ago=50)
    await add_session(store, "flaky", SessionState.FAILED, "PROVIDER_UNAVAILABLE", ago=40)
    await add_session(store, "flaky", SessionState.FAILED, "MAILBOX_CREDENTIALS_REJECTED", ago=30)
    await add_session(store, "busy", SessionState.RUNNING)
    await store.put_org_settings(
        "other",
        st.OrgSettings(sync_interval=duration_pb2.Duration(seconds=600)),
        expected_etag="",
    )
    rows = {r.mailbox_id: r for r in await ScheduleReader(store.engine, DEFAULT).rows()}

    assert rows["fresh"].last_request is None
    assert rows["fresh"].interval == DEFAULT
    assert rows["flaky"].interval == timedelta(minutes=5)
    assert rows["busy"].interval == timedelta(minutes=10)
    assert rows["busy"].pending
    assert rows["busy"].queued_since is None  # running, not queued
    assert rows["busy"].running
    assert not rows["flaky"].running


async def test_failures_count_only_after_the_mailbox_last_changed(store: SqlStore) -> None:
    await add_mailbox(store, "flaky", update_time=utcnow() - timedelta(hours=1))
    await add_session(store, "flaky", SessionState.COMPLETED, ago=50)
    await add_session(store, "flaky", SessionState.FAILED, "PROVIDER_UNAVAILABLE", ago=40)
    await add_session(store, "flaky", SessionState.CANCELLED, ago=35)
    await add_session(store, "flaky", SessionState.FAILED, "MAILBOX_CREDENTIALS_REJECTED", ago=30)
    reader = ScheduleReader(store.engine, DEFAULT)

    [flaky] = await reader.rows()
    assert flaky.failures_in_row == 2  # the cancelled one never ran: it does not break the run
    assert flaky.last_outcome is SessionState.FAILED
    assert flaky.last_failure_code == "MAILBOX_CREDENTIALS_REJECTED"

    # A resume (any state change) starts a clean slate.
    await store.set_mailbox_state("flaky", MailboxState.ACTIVE, "")
    [flaky] = await reader.rows()
    assert flaky.failures_in_row == 0
    assert flaky.last_outcome is None


async def test_a_state_change_loses_to_a_concurrent_user_change(store: SqlStore) -> None:
    await add_mailbox(store, "m1")
    reader = ScheduleReader(store.engine, DEFAULT)
    await store.set_mailbox_state("m1", MailboxState.SUSPENDED, "by the user")
    change = StateChange("m1", MailboxState.ACTIVE, MailboxState.BACKING_OFF, "3 failures")
    assert not await reader.change_state(change)
    mailbox = await store.get_mailbox("m1")
    assert mailbox is not None
    assert mailbox.suspended_reason == "by the user"


def scheduler(bus: EventBus, store: SqlStore, owner: str = "r1") -> Scheduler:
    return Scheduler(
        bus,
        store,
        NatsSessionQueue(bus),
        ScheduleReader(store.engine, DEFAULT),
        owner=owner,
        tick_seconds=0.1,
        policy=SchedulePolicy(base_delay=timedelta(seconds=1)),
    )


async def sessions_of(store: SqlStore, mailbox_id: str) -> list[SessionRecord]:
    return await store.list_sessions(mailbox_id, after=None, limit=100)


async def test_a_tick_requests_due_sessions_and_suspends_on_credentials(
    store: SqlStore, bus: EventBus
) -> None:
    await add_mailbox(store, "due", update_time=utcnow() - timedelta(hours=2))
    await add_mailbox(store, "recent", update_time=utcnow() - timedelta(hours=2))
    await add_mailbox(store, "locked", update_time=utcnow() - timedelta(hours=2))
    await add_session(store, "recent", SessionState.COMPLETED, ago=60)
    await add_session(store, "locked", SessionState.FAILED, "MAILBOX_CREDENTIALS_REJECTED")

    plan = await scheduler(bus, store).tick()

    assert [s.mailbox_id for s in plan.sessions] == ["due"]
    [queued] = await sessions_of(store, "due")
    assert queued.state is SessionState.QUEUED
    assert queued.trigger == res.SESSION_TRIGGER_SCHEDULE
    locked = await store.get_mailbox("locked")
    assert locked is not None
    assert locked.state is MailboxState.SUSPENDED
    assert "MAILBOX_CREDENTIALS_REJECTED" in locked.suspended_reason


async def test_a_burst_of_push_hints_coalesces_into_one_session(
    store: SqlStore, bus: EventBus
) -> None:
    await add_mailbox(store, "pushed")
    # Synced a minute ago, so the schedule's own tick does not race the hints with a session.
    await add_session(store, "pushed", SessionState.COMPLETED, ago=60)
    await add_mailbox(store, "resting", state=MailboxState.BACKING_OFF)
    running = scheduler(bus, store)
    await running.start()
    try:
        for _ in range(100):
            await bus.client.publish(mail_changed("pushed"), b"")
        await bus.client.publish(mail_changed("resting"), b"")
        await bus.client.publish(mail_changed("unknown"), b"")
        await bus.client.flush()

        async def pushed_sessions() -> list[SessionRecord]:
            return [
                s
                for s in await sessions_of(store, "pushed")
                if s.trigger == res.SESSION_TRIGGER_PUSH
            ]

        async with asyncio.timeout(5):
            while not await pushed_sessions():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # let the rest of the burst arrive
        assert len(await pushed_sessions()) == 1
        # Back-off is not defeated by pushes.
        assert [
            s for s in await sessions_of(store, "resting") if s.trigger == res.SESSION_TRIGGER_PUSH
        ] == []
    finally:
        await running.stop()


async def test_one_replica_leads_and_another_takes_over_when_it_stops(
    store: SqlStore, bus: EventBus
) -> None:
    first, second = scheduler(bus, store, "r1"), scheduler(bus, store, "r2")
    await first.start()
    try:
        async with asyncio.timeout(5):
            while not first.leading:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await second.start()
        await asyncio.sleep(0.3)
        assert first.leading
        assert not second.leading
        await first.stop()
        async with asyncio.timeout(5):
            while not second.leading:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await first.stop()
        await second.stop()


async def test_one_mailboxs_row_reads_only_its_own_history(store: SqlStore) -> None:
    await add_mailbox(store, "quiet", update_time=utcnow() - timedelta(hours=1))
    await add_mailbox(store, "flaky", update_time=utcnow() - timedelta(hours=1))
    await add_session(store, "quiet", SessionState.COMPLETED, ago=30)
    await add_session(store, "flaky", SessionState.FAILED, "PROVIDER_UNAVAILABLE", ago=20)
    await add_session(store, "flaky", SessionState.QUEUED, ago=10)
    reader = ScheduleReader(store.engine, DEFAULT)

    [flaky] = await reader.rows(only="flaky")
    everyone = {r.mailbox_id: r for r in await reader.rows()}
    assert flaky == everyone["flaky"]
    assert flaky.failures_in_row == 1
    assert flaky.pending
    assert await reader.rows(only="nobody") == []


async def test_a_queued_session_whose_message_was_lost_is_published_again(
    store: SqlStore, bus: EventBus
) -> None:
    # Published, then taken off the queue without running (a replica killed at the wrong
    # moment): the store still says QUEUED. The re-queue must reach the queue, not collapse
    # with the first message in JetStream's duplicate window.
    await add_mailbox(store, "lost", update_time=utcnow())
    queued = await add_session(store, "lost", SessionState.QUEUED, ago=600)
    await NatsSessionQueue(bus).enqueue(queued, "orgs/acme")
    taker = await bus.js.pull_subscribe(
        "concord.sessions.requested.>", durable="taker", stream=SESSIONS
    )
    [taken] = await taker.fetch(batch=1, timeout=5)
    await taken.ack_sync()
    await taker.unsubscribe()
    await bus.js.delete_consumer(SESSIONS, "taker")
    assert (await bus.js.stream_info(SESSIONS)).state.messages == 0

    plan = await scheduler(bus, store).tick()

    assert plan.requeued == ["lost"]
    assert (await bus.js.stream_info(SESSIONS)).state.messages == 1
    # Within one re-queue period, ticks add no more.
    await scheduler(bus, store).tick()
    assert (await bus.js.stream_info(SESSIONS)).state.messages == 1


async def test_stored_request_answers_are_forgotten_after_their_retention(
    store: SqlStore, bus: EventBus
) -> None:
    # Nothing pruned the table: every mutation's answer (once a 20 MiB one) stayed for ever.
    await store.save_response("SuspendMailbox", "old", b"answer")
    await store.save_response("SuspendMailbox", "new", b"answer")
    async with store.engine.begin() as conn:
        await conn.execute(
            update(requests)
            .where(requests.c.request_id == "old")
            .values(create_time_us=to_us(utcnow() - timedelta(days=2)))
        )
    await scheduler(bus, store).tick()
    assert await store.get_response("SuspendMailbox", "old") is None
    assert await store.get_response("SuspendMailbox", "new") == b"answer"


async def test_the_leading_scheduler_prunes_finished_sessions_past_their_retention(
    store: SqlStore, bus: EventBus
) -> None:
    # Nothing pruned them: the schedule's reads grew with every mailbox's whole history.
    await add_mailbox(store, "old", update_time=utcnow() - timedelta(days=60))
    week = 7 * 86400
    history = [
        await add_session(store, "old", SessionState.COMPLETED, ago=week + 3600 * (n + 1))
        for n in range(30)
    ]
    await scheduler(bus, store).tick()
    kept = {s.session_id for s in await store.list_sessions("old", after=None, limit=100)}
    # The newest 25 stay, whatever their age (and the tick's own request).
    assert {s.session_id for s in history[:25]} <= kept
    assert not kept & {s.session_id for s in history[25:]}


async def test_a_session_failed_by_a_throttled_peer_holds_the_mailbox_until_the_retry_after(
    store: SqlStore, bus: EventBus
) -> None:
    await add_mailbox(store, "busy", update_time=utcnow() - timedelta(hours=2))
    done = await add_session(store, "busy", SessionState.FAILED, "API_LIMIT_EXCEEDED", ago=3600)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(sessions_table)
            .where(sessions_table.c.session_id == done.session_id)
            .values(retry_not_before_us=to_us(utcnow() + timedelta(minutes=5)))
        )
    reader = ScheduleReader(store.engine, DEFAULT)
    [row] = await reader.rows(only="busy")
    assert row.retry_not_before is not None
    assert await reader.held_until("busy") == row.retry_not_before
    running = scheduler(bus, store)
    plan = await running.tick()
    assert plan.sessions == []
    await running.start()
    try:
        await bus.client.publish(mail_changed("busy"), b"")
        await bus.client.flush()
        await asyncio.sleep(0.5)
    finally:
        await running.stop()
    # Neither the schedule nor a push started a session.
    assert [s.state for s in await sessions_of(store, "busy")] == [SessionState.FAILED]


async def test_a_spent_salesforce_allocation_holds_every_mailbox_of_the_org(
    store: SqlStore, bus: EventBus
) -> None:
    """Issue #17: crm-connector's SALESFORCE_API_LIMIT (retry after 300 s) met by one mailbox's
    session holds the whole org: no mailbox of it starts a session, by schedule or push; other
    orgs go on; a completed session of the org lifts the hold."""
    for mailbox_id, org in (("met", "acme"), ("sibling", "acme"), ("elsewhere", "globex")):
        await add_mailbox(store, mailbox_id, org=org, update_time=utcnow() - timedelta(hours=2))
    spent = await add_session(store, "met", SessionState.FAILED, "SALESFORCE_API_LIMIT", ago=5)
    until = utcnow() + timedelta(seconds=300)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(sessions_table)
            .where(sessions_table.c.session_id == spent.session_id)
            .values(retry_not_before_us=to_us(until))
        )
    reader = ScheduleReader(store.engine, DEFAULT)
    [sibling] = await reader.rows(only="sibling")
    assert sibling.org_held_until is not None
    assert abs((sibling.org_held_until - until).total_seconds()) < 0.001
    assert await reader.held_until("sibling") == sibling.org_held_until
    assert await reader.held_until("elsewhere") is None
    running = scheduler(bus, store)
    plan = await running.tick()
    assert [s.mailbox_id for s in plan.sessions] == ["elsewhere"]
    await running.start()
    try:
        await bus.client.publish(mail_changed("sibling"), b"")
        await bus.client.publish(
            crm_changed("acme"), events_pb2.CrmChanged(everyone=True).SerializeToString()
        )
        await bus.client.flush()
        await asyncio.sleep(0.5)
    finally:
        await running.stop()
    assert await sessions_of(store, "sibling") == []
    assert [s.state for s in await sessions_of(store, "met")] == [SessionState.FAILED]
    # A forced sync of the org completed since (the allocation is back): the hold is lifted.
    await add_session(store, "met", SessionState.COMPLETED, ago=1)
    assert await reader.held_until("sibling") is None
    [sibling] = await reader.rows(only="sibling")
    assert sibling.org_held_until is None


async def test_a_salesforce_change_syncs_the_owners_and_the_mirroring_mailboxes_only(
    store: SqlStore, bus: EventBus
) -> None:
    """Issue #19: a CrmChanged hint names owners and records; only their mailboxes sync,
    unless the hint says the stream lost track (everyone)."""
    owners = {"ann": "005000000000001AAA", "bob": "005000000000002AAA", "cy": "005000000000003AAA"}
    for mailbox_id, crm_user in owners.items():
        await store.insert_mailbox(
            MailboxRecord(
                mailbox_id=mailbox_id,
                org_id="acme",
                owner_user_id=mailbox_id,
                crm_user_id=crm_user,
                address=f"{mailbox_id}@example.com",
                provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
            )
        )
        await add_session(store, mailbox_id, SessionState.COMPLETED, ago=60)
    await add_mailbox(store, "elsewhere", org="globex")
    await add_session(store, "elsewhere", SessionState.COMPLETED, ago=60)
    # Bob mirrors an Event that Ann owns now (handed over, or about to be deleted).
    await SqlLinkStore(store.engine).commit(
        "bob",
        res.OBJECT_KIND_CALENDAR_ITEM,
        [
            Link(
                link_id="l-1",
                mailbox_id="bob",
                kind=res.OBJECT_KIND_CALENDAR_ITEM,
                mail_id="AAMk-1",
                crm_id="00U000000000001AAA",
            )
        ],
        [],
    )
    running = scheduler(bus, store)
    await running.start()

    async def pushed() -> set[str]:
        return {
            mailbox_id
            for mailbox_id in [*owners, "elsewhere"]
            for s in await sessions_of(store, mailbox_id)
            if s.trigger == res.SESSION_TRIGGER_PUSH and s.state is SessionState.QUEUED
        }

    async def after(hint: events_pb2.CrmChanged, expected: set[str]) -> None:
        await bus.client.publish(crm_changed(hint.org), hint.SerializeToString())
        await bus.client.flush()
        async with asyncio.timeout(5):
            while await pushed() != expected:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert await pushed() == expected

    try:
        await after(
            events_pb2.CrmChanged(
                org="acme", owner_ids=[owners["ann"]], ids=["00U000000000001AAA"]
            ),
            {"ann", "bob"},
        )
        await after(
            events_pb2.CrmChanged(org="acme", everyone=True, reason="GAP_OVERFLOW"),
            {
                "ann",
                "bob",
                "cy",
            },
        )
    finally:
        await running.stop()


async def test_a_push_hint_reads_its_mailbox_once(store: SqlStore, bus: EventBus) -> None:
    """A hint's SQL runs for every push (issue #18): the mailbox is read once, for its state,
    its org's hold and the session's request alike."""
    await add_mailbox(store, "pushed")
    await add_session(store, "pushed", SessionState.COMPLETED, ago=60)
    running = scheduler(bus, store)
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(" ".join(str(args[2]).split()[:2]))

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        await running._push("pushed")
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    # The mailbox, its newest finished session, its org's hold; the session requested.
    assert seen == [
        "SELECT mailboxes.mailbox_id,",
        "SELECT sessions.state,",
        "SELECT mailboxes.org_id,",
        "INSERT INTO",
    ], seen
    requested = await sessions_of(store, "pushed")
    assert requested[0].trigger == res.SESSION_TRIGGER_PUSH
