from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.errors import (
    MailboxNotFound,
    MailboxSuspended,
    PeerError,
    QueueUnavailable,
    SessionFailure,
)
from concord_reconciler.mailboxes.domain.model import MailboxState
from concord_reconciler.mailboxes.domain.settings import default_org_settings
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.sessions.domain.sessions import (
    abandon_session,
    execute_session,
    request_session,
)

from .conftest import MemoryEngine, MemoryStore, RecordedEvents, RecordingQueue

pytestmark = pytest.mark.unit

FORCE = res.SESSION_TRIGGER_FORCE


async def _requested(store: MemoryStore, queue: RecordingQueue) -> str:
    session, coalesced = await request_session("demo", FORCE, "r1", store=store, queue=queue)
    assert not coalesced
    return session.session_id


async def test_a_request_queues_a_session_and_publishes_it(
    store: MemoryStore, queue: RecordingQueue
) -> None:
    session_id = await _requested(store, queue)
    assert store.sessions[session_id].state is SessionState.QUEUED
    assert queue.queued == [session_id]


async def test_requests_while_one_is_queued_coalesce_and_republish(
    store: MemoryStore, queue: RecordingQueue
) -> None:
    first = await _requested(store, queue)
    second, coalesced = await request_session("demo", FORCE, "r2", store=store, queue=queue)
    assert coalesced
    assert second.session_id == first
    assert len(store.sessions) == 1
    # Republished under the same id: JetStream drops the repeat, or delivers a lost one.
    assert queue.queued == [first, first]


async def test_a_request_during_a_running_session_queues_the_next(
    store: MemoryStore, queue: RecordingQueue
) -> None:
    first = await _requested(store, queue)
    store.sessions[first] = store.sessions[first].to(SessionState.RUNNING)
    second, coalesced = await request_session("demo", FORCE, "r2", store=store, queue=queue)
    assert not coalesced
    assert second.session_id != first


async def test_unknown_and_suspended_mailboxes_are_refused(
    store: MemoryStore, queue: RecordingQueue
) -> None:
    with pytest.raises(MailboxNotFound):
        await request_session("nope", FORCE, "", store=store, queue=queue)
    store.suspend("demo", "on holiday")
    with pytest.raises(MailboxSuspended) as raised:
        await request_session("demo", FORCE, "", store=store, queue=queue)
    assert raised.value.reason == "MAILBOX_SUSPENDED"
    assert "on holiday" in raised.value.message
    assert not store.sessions


async def test_a_failed_publish_keeps_the_session_for_the_retry(
    store: MemoryStore, queue: RecordingQueue
) -> None:
    queue.broken = True
    with pytest.raises(QueueUnavailable):
        await request_session("demo", FORCE, "r1", store=store, queue=queue)
    queue.broken = False
    session, coalesced = await request_session("demo", FORCE, "r1", store=store, queue=queue)
    assert coalesced
    assert queue.queued == [session.session_id]


async def test_a_session_runs_to_completed_with_counts_and_events(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    engine.crm.kinds[res.OBJECT_KIND_TASK].create({"subject": "call"})
    session_id = await _requested(store, queue)
    result = await execute_session(
        session_id,
        store=store,
        events=events,
        engine=engine,
        deadline_seconds=5,
        trace_id="ab" * 16,
    )
    assert result is not None
    stored = store.sessions[session_id]
    assert stored.state is SessionState.COMPLETED
    assert stored.counts.crm_changes_seen == 1
    assert stored.trace_id == "ab" * 16
    assert stored.start_time is not None
    assert stored.end_time is not None
    assert events.kinds == ["started", "completed"]


async def test_a_completed_session_ends_a_back_off_before_it_is_announced(
    store: MemoryStore,
    queue: RecordingQueue,
    engine: MemoryEngine,
) -> None:
    """Not at the scheduler's next tick: until then push hints were dropped and the mailbox
    read as failing (the chaos harness saw it, #17)."""
    store.mailboxes["demo"] = replace(
        store.mailboxes["demo"], state=MailboxState.BACKING_OFF, suspended_reason="3 failed"
    )
    states: list[MailboxState] = []

    class Watching(RecordedEvents):
        async def completed(self, session: SessionRecord, org: str) -> None:
            states.append(store.mailboxes["demo"].state)

    engine.mail.broken = PeerError("mail-connector", "ListChanges", "UNAVAILABLE", "refused")
    failed = await _requested(store, queue)
    await execute_session(failed, store=store, events=Watching(), engine=engine, deadline_seconds=5)
    assert store.mailboxes["demo"].state is MailboxState.BACKING_OFF

    engine.mail.broken = None
    session_id = await _requested(store, queue)
    await execute_session(
        session_id, store=store, events=Watching(), engine=engine, deadline_seconds=5
    )
    assert store.sessions[session_id].state is SessionState.COMPLETED
    assert states == [MailboxState.ACTIVE]
    assert store.mailboxes["demo"].suspended_reason == ""


async def test_a_peer_failure_is_recorded_as_failed_with_its_reason(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    engine.mail.broken = PeerError("mail-connector", "ListChanges", "UNAVAILABLE", "refused")
    session_id = await _requested(store, queue)
    await execute_session(session_id, store=store, events=events, engine=engine, deadline_seconds=5)
    stored = store.sessions[session_id]
    assert stored.state is SessionState.FAILED
    assert stored.failure_reason.startswith("mail-connector unavailable")
    assert stored.failure_code == "DEPENDENCY_UNAVAILABLE"
    assert events.kinds == ["started", "failed"]


async def test_a_throttled_peer_fails_the_session_at_once_saying_when_to_retry(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    engine.crm.broken = PeerError(
        "crm-connector",
        "QueryRecords",
        "RESOURCE_EXHAUSTED",
        "the org's daily API allocation is spent",
        "API_LIMIT_EXCEEDED",
        retry_after=300,
    )
    session_id = await _requested(store, queue)
    await execute_session(session_id, store=store, events=events, engine=engine, deadline_seconds=5)
    stored = store.sessions[session_id]
    assert stored.state is SessionState.FAILED
    assert stored.failure_code == "API_LIMIT_EXCEEDED"
    assert stored.failure_reason.startswith("crm-connector resource exhausted (QueryRecords)")
    assert stored.failure_reason.endswith("; retry after 300 s")
    assert stored.end_time is not None
    assert stored.retry_not_before == stored.end_time + timedelta(seconds=300)


async def test_a_session_past_its_deadline_fails(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    async def hang(*_: object) -> ChangePage:
        await asyncio.sleep(10)
        raise AssertionError

    engine.mail.list_changes = hang  # type: ignore[assignment,method-assign]
    session_id = await _requested(store, queue)
    await execute_session(
        session_id, store=store, events=events, engine=engine, deadline_seconds=0.05
    )
    assert store.sessions[session_id].failure_code == "SESSION_DEADLINE_EXCEEDED"


async def test_an_unexpected_error_fails_the_session_without_its_text(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    engine.mail.broken = ValueError("subject: secret meeting")
    session_id = await _requested(store, queue)
    await execute_session(session_id, store=store, events=events, engine=engine, deadline_seconds=5)
    stored = store.sessions[session_id]
    assert stored.state is SessionState.FAILED
    assert stored.failure_code == "INTERNAL"
    assert "secret" not in stored.failure_reason


async def test_replayed_requests_change_nothing(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    session_id = await _requested(store, queue)
    for _ in range(2):
        await execute_session(
            session_id, store=store, events=events, engine=engine, deadline_seconds=5
        )
    assert events.kinds == ["started", "completed"]
    assert (
        await execute_session(
            "missing", store=store, events=events, engine=engine, deadline_seconds=5
        )
        is None
    )


async def test_a_session_of_a_suspended_mailbox_is_cancelled_not_run(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    session_id = await _requested(store, queue)
    store.suspend("demo", "on holiday")
    await execute_session(session_id, store=store, events=events, engine=engine, deadline_seconds=5)
    stored = store.sessions[session_id]
    assert stored.state is SessionState.CANCELLED
    assert stored.failure_code == "MAILBOX_SUSPENDED"
    assert not engine.scopes
    assert events.kinds == ["failed"]


async def test_the_mailbox_settings_decide_the_kinds_listed(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    store.mailbox_settings["demo"] = st.MailboxSettings(
        sharing=[
            st.ObjectSharing(kind=res.OBJECT_KIND_CALENDAR_ITEM, enabled=False),
            st.ObjectSharing(
                kind=res.OBJECT_KIND_TASK, enabled=True, direction=res.SYNC_DIRECTION_NONE
            ),
        ]
    )
    session_id = await _requested(store, queue)
    await execute_session(session_id, store=store, events=events, engine=engine, deadline_seconds=5)
    (scope,) = engine.scopes
    assert scope.kinds == (res.OBJECT_KIND_CONTACT, res.OBJECT_KIND_EMAIL)
    # Emails are shared one way (issue #7), not mirrored: only contacts are a pair.
    assert [p.kind for p in scope.policies] == [res.OBJECT_KIND_CONTACT]
    assert scope.categories == {}
    assert scope.resolution is not None


async def test_a_session_of_a_user_without_settings_access_runs_on_the_org_values(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    store.mailbox_settings["demo"] = st.MailboxSettings(
        sharing=[st.ObjectSharing(kind=res.OBJECT_KIND_CALENDAR_ITEM, enabled=False)]
    )
    org = default_org_settings("acme")
    org.settings_access_disabled_users.append("u1")  # the owner of "demo"
    store.org_settings["acme"] = org
    session_id = await _requested(store, queue)
    await execute_session(session_id, store=store, events=events, engine=engine, deadline_seconds=5)
    (scope,) = engine.scopes
    assert res.OBJECT_KIND_CALENDAR_ITEM in scope.kinds
    assert scope.mailbox_settings is not None
    assert scope.mailbox_settings.settings_access_disabled


async def test_abandoning_records_failed_once(
    store: MemoryStore, queue: RecordingQueue, events: RecordedEvents
) -> None:
    session_id = await _requested(store, queue)
    failure = SessionFailure("lease lost", "LEASE_LOST", retryable=True)
    await abandon_session(session_id, failure, store=store, events=events)
    await abandon_session(session_id, failure, store=store, events=events)
    assert store.sessions[session_id].failure_code == "LEASE_LOST"
    assert events.kinds == ["failed"]


async def test_a_session_read_before_its_lease_is_started_from_the_state_it_is_in_now(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    """The consumer reads the session before it takes the mailbox's lease and hands it over
    (not read again, issue #18); meanwhile another replica may have started it and died."""
    session_id = await _requested(store, queue)
    read_before = store.sessions[session_id]
    store.sessions[session_id] = read_before.to(SessionState.RUNNING)
    context = await store.mailbox_context("demo")
    result = await execute_session(
        session_id,
        store=store,
        events=events,
        engine=engine,
        deadline_seconds=5,
        session=read_before,
        context=context,
    )
    assert result is not None
    assert store.sessions[session_id].state is SessionState.COMPLETED
    assert events.kinds == ["started", "completed"]


async def test_a_session_read_before_its_lease_and_finished_since_is_left_alone(
    store: MemoryStore,
    queue: RecordingQueue,
    events: RecordedEvents,
    engine: MemoryEngine,
) -> None:
    session_id = await _requested(store, queue)
    read_before = store.sessions[session_id]
    finished = read_before.to(SessionState.RUNNING).to(SessionState.COMPLETED)
    store.sessions[session_id] = finished
    result = await execute_session(
        session_id,
        store=store,
        events=events,
        engine=engine,
        deadline_seconds=5,
        session=read_before,
    )
    assert result is None
    assert store.sessions[session_id] == finished
    assert events.kinds == []
