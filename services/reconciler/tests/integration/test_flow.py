"""RequestSession -> SESSIONS -> consumer -> peers -> EVENTS -> WaitSession, for real."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from concord.common.v1 import resources_pb2 as res
from concord.events.v1 import events_pb2
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.domain.sync import Side
from concord_rpc import error_info, from_rpc_error
from concord_telemetry import attributes as attrs
from concord_testing import eventually

from .conftest import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

FORCE = res.SESSION_TRIGGER_FORCE


def _wait(name: str, seconds: float = 5.0) -> api.WaitSessionRequest:
    timeout = duration_pb2.Duration()
    timeout.FromMilliseconds(int(seconds * 1000))
    return api.WaitSessionRequest(name=name, timeout=timeout)


async def test_a_requested_session_completes_and_wait_returns_it(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    await reconciler.start_consumer()
    requested = await reconciler.stub.RequestSession(
        api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE, request_id="r1")
    )
    assert requested.session.state == rres.SESSION_STATE_QUEUED
    assert not requested.coalesced
    waited = await reconciler.stub.WaitSession(_wait(requested.session.name))
    assert not waited.timed_out
    session = waited.session
    assert session.state == rres.SESSION_STATE_COMPLETED
    assert session.HasField("start_time")
    assert session.HasField("end_time")
    # A first session with nothing to do: one listing per two-way pair on each side (emails
    # are shared one way, issue #7) and the pair's table (a listing from scratch selects the
    # fields it reads), nothing to map, link or write.
    assert sorted(reconciler.peer_call_names()) == (
        ["crm.ListChanges"] * 3 + ["mail.ListChanges"] * 3 + ["mapping.GetMappingTable"] * 3
    )
    # The cursors the listings returned are kept with the links for the next session.
    links = SqlLinkStore(reconciler.store.engine)
    assert await links.load_cursors("demo", res.OBJECT_KIND_TASK) == {Side.MAIL: "t", Side.CRM: ""}
    # The same request id returns the same answer, and queues nothing new.
    again = await reconciler.stub.RequestSession(
        api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE, request_id="r1")
    )
    assert again.session.session_id == session.session_id


async def test_the_session_span_continues_the_requesters_trace(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    await reconciler.start_consumer()
    requested = await reconciler.stub.RequestSession(
        api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE)
    )
    waited = await reconciler.stub.WaitSession(_wait(requested.session.name))
    # The session ends (and WaitSession returns) before the consumer's span does: it closes only
    # after the message is acknowledged.
    process_name = "concord.sessions.requested.demo process"
    async with asyncio.timeout(5):
        while process_name not in {s.name for s in reconciler.spans.get_finished_spans()}:  # noqa: ASYNC110 (spans are polled: the exporter has no event)
            await asyncio.sleep(0.02)
    spans = {span.name: span for span in reconciler.spans.get_finished_spans()}
    session_span = spans["sync.session"]
    process = spans[process_name]
    publish = spans["concord.sessions.requested.demo publish"]
    assert session_span.parent is not None
    assert session_span.parent.span_id == process.context.span_id
    assert process.parent is not None
    assert process.parent.span_id == publish.context.span_id
    assert session_span.context.trace_id == publish.context.trace_id
    assert waited.session.trace_id == format(session_span.context.trace_id, "032x")
    assert session_span.attributes is not None
    assert session_span.attributes[attrs.MAILBOX] == "mailboxes/demo"
    assert session_span.attributes[attrs.SESSION_ID] == requested.session.session_id
    assert session_span.attributes["concord.session.trigger"] == FORCE
    assert session_span.attributes[attrs.OUTCOME] == "completed"


async def test_concurrent_requests_coalesce_into_one_queued_session(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()
    # Another session holds the mailbox, so the queued one stays queued while requests pour in.
    leases = await reconciler.bus.leases()
    held = await leases.acquire("mailboxes.demo", "another-session")
    assert held is not None
    await reconciler.start_consumer()
    responses = await asyncio.gather(
        *(
            reconciler.stub.RequestSession(
                api.RequestSessionRequest(
                    mailbox="mailboxes/demo", trigger=res.SESSION_TRIGGER_PUSH
                )
            )
            for _ in range(12)
        )
    )
    assert len({r.session.session_id for r in responses}) == 1
    assert sum(r.coalesced for r in responses) == 11
    # The mailbox busy: the session waits (still queued) rather than failing...
    pending = await reconciler.stub.WaitSession(_wait(responses[0].session.name, 0.5))
    assert pending.timed_out
    assert pending.session.state == rres.SESSION_STATE_QUEUED
    # ...and runs once the other session lets go.
    await held.release()
    done = await reconciler.stub.WaitSession(_wait(responses[0].session.name))
    assert done.session.state == rres.SESSION_STATE_COMPLETED
    listed = await reconciler.stub.ListSessions(api.ListSessionsRequest(parent="mailboxes/demo"))
    assert len(listed.sessions) == 1


async def test_an_unknown_mailbox_is_not_found(reconciler: Reconciler) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reconciler.stub.RequestSession(
            api.RequestSessionRequest(mailbox="mailboxes/nobody", trigger=FORCE)
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(raised.value)
    assert info is not None
    assert info.reason == "MAILBOX_NOT_FOUND"
    assert info.domain == "reconciler.concord.dev"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (api.RequestSessionRequest(mailbox="demo", trigger=FORCE), "mailbox"),
        (api.RequestSessionRequest(mailbox="mailboxes/a.b", trigger=FORCE), "mailbox"),
        (api.RequestSessionRequest(mailbox="mailboxes/demo"), "trigger"),
    ],
)
async def test_a_malformed_request_is_an_invalid_argument(
    reconciler: Reconciler, request_: api.RequestSessionRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reconciler.stub.RequestSession(request_)
    failure = from_rpc_error(raised.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in failure.field_violations] == [field]


async def test_a_dead_peer_fails_the_session_naming_it(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    await reconciler.peers.stop("crm-connector")
    await reconciler.start_consumer()
    async with reconciler.bus.watch("concord.events.sessions.*.failed") as watch:
        requested = await reconciler.stub.RequestSession(
            api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE)
        )
        waited = await reconciler.stub.WaitSession(_wait(requested.session.name, 10))
        async with asyncio.timeout(5):
            envelope = await watch.next()
    session = waited.session
    assert session.state == rres.SESSION_STATE_FAILED
    assert session.failure_reason.startswith("crm-connector unavailable (ListChanges)")
    assert session.failure_code == "DEPENDENCY_UNAVAILABLE"
    failed = envelope.parse(events_pb2.SessionFailed)
    assert envelope.subject == f"concord.events.sessions.{session.session_id}.failed"
    assert failed.session.session_id == session.session_id
    assert failed.code == "DEPENDENCY_UNAVAILABLE"
    assert failed.retryable
    # Recorded, not lost: GetSession says the same.
    got = await reconciler.stub.GetSession(api.GetSessionRequest(name=session.name))
    assert got.session.failure_reason == session.failure_reason


async def test_a_suspended_mailbox_refuses_sessions_until_resumed(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    leases = await reconciler.bus.leases()
    held = await leases.acquire("mailboxes.demo", "another-session")
    assert held is not None
    await reconciler.start_consumer()
    queued = await reconciler.stub.RequestSession(
        api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE)
    )
    suspended = await reconciler.stub.SuspendMailbox(
        api.SuspendMailboxRequest(name="mailboxes/demo", reason="left the company")
    )
    assert suspended.mailbox.state == rres.MAILBOX_STATE_SUSPENDED
    assert suspended.mailbox.suspended_reason == "left the company"
    # The queued session will not run; its waiter hears so at once.
    cancelled = await reconciler.stub.WaitSession(_wait(queued.session.name, 3))
    assert cancelled.session.state == rres.SESSION_STATE_CANCELLED
    assert cancelled.session.failure_code == "MAILBOX_SUSPENDED"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reconciler.stub.RequestSession(
            api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(raised.value).reason == "MAILBOX_SUSPENDED"
    await held.release()
    resumed = await reconciler.stub.ResumeMailbox(api.ResumeMailboxRequest(name="mailboxes/demo"))
    assert resumed.mailbox.state == rres.MAILBOX_STATE_ACTIVE
    done = await reconciler.stub.WaitSession(_wait(resumed.session.name))
    assert done.session.state == rres.SESSION_STATE_COMPLETED


async def test_a_replayed_request_for_a_finished_session_changes_nothing(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()
    await reconciler.start_consumer()
    requested = await reconciler.stub.RequestSession(
        api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=FORCE)
    )
    done = await reconciler.stub.WaitSession(_wait(requested.session.name))
    calls = len(reconciler.peer_calls())
    # Published again past JetStream's de-duplication (another msg id): acked and ignored.
    replay = events_pb2.SessionRequested(
        session_id=requested.session.session_id,
        session=requested.session.name,
        mailbox="mailboxes/demo",
        org="orgs/acme",
    )
    await reconciler.bus.publish("concord.sessions.requested.demo", replay, msg_id="replay-1")

    async def consumed() -> bool:
        info = await reconciler.bus.js.consumer_info("SESSIONS", "reconciler")
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await eventually(consumed)
    assert len(reconciler.peer_calls()) == calls
    after = await reconciler.stub.GetSession(api.GetSessionRequest(name=done.session.name))
    assert after.session == done.session
