"""The scheduler's cost per push hint does not grow with the fleet (issue #18, scale): a
Salesforce change that names its records' owners reads those mailboxes only, never the whole
schedule, whose read grows with every mailbox's session history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from nats.aio.msg import Msg
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from concord.common.v1 import resources_pb2 as res
from concord.events.v1 import events_pb2
from concord_events import EventBus, Topology, crm_changed
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.names import new_session_id
from concord_reconciler.kernel.schema import sessions as sessions_table
from concord_reconciler.kernel.sql import to_us
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState
from concord_reconciler.sessions.adapters.messaging import NatsSessionQueue
from concord_reconciler.sessions.adapters.scheduler import Scheduler, ScheduleReader
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.sessions.domain.schedule import ScheduleRow
from concord_testing import NatsServer

pytestmark = pytest.mark.integration

ANN, BO, CY, DI = (f"00500000000000{n}AAA" for n in range(1, 5))


class CountingReader(ScheduleReader):
    """Counts the whole-schedule reads."""

    whole_reads = 0

    async def rows(self, only: str | None = None) -> list[ScheduleRow]:
        if only is None:
            self.whole_reads += 1
        return await super().rows(only)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(nats_server.url, "scale-test", topology=Topology())
    await bus.ensure_topology()
    yield bus
    await bus.close()


async def _mailbox(
    store: SqlStore, mailbox_id: str, crm_user: str, state: MailboxState = MailboxState.ACTIVE
) -> None:
    await store.insert_mailbox(
        MailboxRecord(
            mailbox_id=mailbox_id,
            org_id="acme",
            owner_user_id=mailbox_id,
            crm_user_id=crm_user,
            address=f"{mailbox_id}@example.com",
            provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
            state=state,
            update_time=utcnow() - timedelta(hours=2),
        )
    )


async def _finished(
    store: SqlStore,
    mailbox_id: str,
    state: SessionState,
    retry_not_before: datetime | None,
    code: str = "EWS_THROTTLED",
) -> None:
    when = utcnow() - timedelta(seconds=5)
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
    assert await store.save_session(running, expected=SessionState.QUEUED)
    done = running.to(state, end_time=when, failure_code=code, failure_reason="busy")
    assert await store.save_session(done, expected=SessionState.RUNNING)
    if retry_not_before is not None:
        async with store.engine.begin() as conn:
            await conn.execute(
                update(sessions_table)
                .where(sessions_table.c.session_id == session.session_id)
                .values(retry_not_before_us=to_us(retry_not_before))
            )


async def test_a_salesforce_change_naming_owners_reads_only_their_mailboxes(
    store: SqlStore, bus: EventBus
) -> None:
    await _mailbox(store, "ann", ANN)
    await _mailbox(store, "bo", BO, MailboxState.BACKING_OFF)
    await _mailbox(store, "cy", CY)
    await _mailbox(store, "di", DI)
    # Di's last session was throttled: no session before its retry-after, pushed or not.
    await _finished(store, "di", SessionState.FAILED, utcnow() + timedelta(minutes=5))
    reader = CountingReader(store.engine, timedelta(minutes=30))
    scheduler = Scheduler(bus, store, NatsSessionQueue(bus), reader, owner="r1", tick_seconds=60)
    hint = events_pb2.CrmChanged(org="acme", owner_ids=[ANN, BO, DI])

    await scheduler._on_crm_changed(
        Msg(bus.client, crm_changed("acme"), data=hint.SerializeToString())
    )

    pushed = {
        mailbox_id
        for mailbox_id in ("ann", "bo", "cy", "di")
        for s in await store.list_sessions(mailbox_id, after=None, limit=10)
        if s.trigger == res.SESSION_TRIGGER_PUSH
    }
    # Ann only: Bo backs off, Di waits for its retry-after, Cy was not named.
    assert pushed == {"ann"}
    assert reader.whole_reads == 0

    # A hint that cannot tell which mailboxes (a gap in the stream) still reads them all.
    gap = events_pb2.CrmChanged(org="acme", everyone=True, reason="GAP_OVERFLOW")
    await scheduler._on_crm_changed(
        Msg(bus.client, crm_changed("acme"), data=gap.SerializeToString())
    )
    assert reader.whole_reads == 1


def _msg(bus: EventBus, hint: events_pb2.CrmChanged) -> Msg:
    return Msg(bus.client, crm_changed(hint.org), data=hint.SerializeToString())


class CountingHolds(ScheduleReader):
    """Counts the reads of an org's holds (the org's whole session history)."""

    hold_reads = 0

    async def _org_holds(self, conn: AsyncConnection, org_id: str | None) -> dict[str, datetime]:
        self.hold_reads += 1
        return await super()._org_holds(conn, org_id)


async def test_push_checks_read_an_orgs_holds_at_most_once_per_max_age(store: SqlStore) -> None:
    for mailbox_id, crm_user in (("ann", ANN), ("bo", BO), ("cy", CY)):
        await _mailbox(store, mailbox_id, crm_user)
    clock = [100.0]
    reader = CountingHolds(store.engine, timedelta(minutes=30), monotonic=lambda: clock[0])
    for mailbox_id in ("ann", "bo", "cy", "ann"):
        assert await reader.held_until(mailbox_id, org_hold_max_age=1.0) is None
    assert reader.hold_reads == 1

    # Ann's session meets the org's spent Salesforce allocation: the org is held. Within the
    # max age a check does not see it yet; after it, every check does.
    until = utcnow() + timedelta(minutes=5)
    await _finished(store, "ann", SessionState.FAILED, until, code="SALESFORCE_API_LIMIT")
    assert await reader.held_until("bo", org_hold_max_age=1.0) is None
    clock[0] += 1.5
    assert await reader.held_until("bo", org_hold_max_age=1.0) == until
    assert await reader.held_until("cy", org_hold_max_age=1.0) == until
    assert reader.hold_reads == 2
    # Without a max age (the dashboard, the tests of the hold itself) the read is fresh.
    assert await reader.held_until("cy") == until
    assert reader.hold_reads == 3
