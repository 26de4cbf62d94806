"""NATS for the reconciler: queue requested sessions, announce outcomes, consume requests.

Subjects and streams come from concord_events.topology; messages from concord.events.v1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, TracerProvider

from concord.events.v1 import events_pb2
from concord_events import (
    ALL_SESSION_REQUESTS,
    SESSIONS,
    Delivery,
    EventBus,
    EventWatch,
    LeaseLost,
    LeaseStore,
    Retry,
    crm_changed,
    mail_changed,
    session_event,
    session_requested,
)
from concord_reconciler.kernel.errors import SessionFailure
from concord_reconciler.kernel.names import parse_org_name
from concord_reconciler.kernel.wire import timestamp
from concord_reconciler.mirror.domain.hints import PendingPushes
from concord_reconciler.mirror.domain.sync import Side
from concord_reconciler.sessions.domain.model import SessionRecord
from concord_reconciler.sessions.domain.ports import SessionStore
from concord_reconciler.sessions.domain.runner import SyncEngine
from concord_reconciler.sessions.domain.sessions import abandon_session, execute_session
from concord_reconciler.sessions.wire import session_to_proto
from concord_rpc.identity import Identity, acting_as
from concord_telemetry import attributes as attrs

__all__ = [
    "CONSUMER",
    "NatsSessionEvents",
    "NatsSessionQueue",
    "SessionConsumer",
    "lease_key",
]

log = logging.getLogger(__name__)

CONSUMER = "reconciler"
SPAN_NAME = "sync.session"
# Whom a session calls the peers as.
SESSION_CALLER = "concord-reconciler"
# After an unexpected consumer failure (NATS gone, stream deleted), wait this long and resume.
RESTART_SECONDS = 1.0
STOP_RETRY_SECONDS = 0.5


def lease_key(mailbox_id: str) -> str:
    return f"mailboxes.{mailbox_id}"


class NatsSessionQueue:
    """SessionQueue on SESSIONS: one message per pending session, de-duplicated by its id."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def enqueue(self, session: SessionRecord, org: str, *, republish: str = "") -> None:
        message = events_pb2.SessionRequested(
            session_id=session.session_id,
            session=session.name,
            mailbox=session.mailbox,
            org=org,
            trigger=session.trigger,
            request_time=timestamp(session.request_time),
            request_id=session.request_id,
        )
        msg_id = f"{session.session_id}-{republish}" if republish else session.session_id
        await self.bus.publish(session_requested(session.mailbox_id), message, msg_id=msg_id)


class NatsSessionEvents:
    """SessionEvents on EVENTS: `concord.events.sessions.<id>.<started|completed|failed>`."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def started(self, session: SessionRecord, org: str) -> None:
        assert session.start_time is not None
        message = events_pb2.SessionStarted(
            session_id=session.session_id,
            session=session.name,
            mailbox=session.mailbox,
            org=org,
            start_time=timestamp(session.start_time),
        )
        await self._publish(session, "started", message)

    async def completed(self, session: SessionRecord, org: str) -> None:
        message = events_pb2.SessionCompleted(session=session_to_proto(session), org=org)
        await self._publish(session, "completed", message)

    async def failed(
        self, session: SessionRecord, org: str, reason: str, code: str, retryable: bool
    ) -> None:
        message = events_pb2.SessionFailed(
            session=session_to_proto(session),
            org=org,
            reason=reason,
            code=code,
            retryable=retryable,
        )
        await self._publish(session, "failed", message)

    async def _publish(
        self,
        session: SessionRecord,
        kind: str,
        message: events_pb2.SessionStarted | events_pb2.SessionCompleted | events_pb2.SessionFailed,
    ) -> None:
        await self.bus.publish(session_event(session.session_id, kind), message)


class NatsSessionMessaging:
    """`SessionMessaging` over the process's bus, which exists once readiness connected it:
    until then `bus()` raises QueueUnavailable and callers get UNAVAILABLE."""

    def __init__(self, bus: Callable[[], EventBus]) -> None:
        self.bus = bus

    def queue(self) -> NatsSessionQueue:
        return NatsSessionQueue(self.bus())

    def events(self) -> NatsSessionEvents:
        return NatsSessionEvents(self.bus())

    def watch(self, session_id: str) -> AbstractAsyncContextManager[EventWatch]:
        return self.bus().watch(session_event(session_id, "*"))


class _Slot:
    """One fetch loop's claim on one of the replica's session slots."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self.held = False
        # The session this loop runs ran long and gave its slot to another mailbox's.
        self.aside = False

    async def take(self) -> None:
        if not self.held:
            await self._slots.acquire()
            self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()


class SessionConsumer:
    """Runs requested sessions: the durable pull consumer `reconciler` on SESSIONS.

    For each request: skip it if the session is gone or over; take the mailbox lease (busy:
    retry later, the message stays queued); run the session under the span `sync.session`,
    whose parent is the request's publish (so the trace continues from the caller).

    Fairness (issue #18): the replica runs `concurrency` sessions at once, and a session that
    runs longer than `long_after_seconds` (a first sync of thousands of items) gives its slot
    to the next request, so one mailbox's big session never holds another's small one back;
    at most `max_long` sessions run long at once beside the `concurrency` others. While a
    session runs, the push hints for its mailbox are heard and served between its chunks.
    """

    def __init__(
        self,
        bus: EventBus,
        store: SessionStore,
        engine: SyncEngine,
        *,
        deadline_seconds: float,
        busy_retry_seconds: float,
        concurrency: int = 1,
        ack_wait_seconds: float = 30.0,
        long_after_seconds: float = 2.0,
        max_long: int | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.engine = engine
        # A replica killed mid-session leaves its request unacknowledged: NATS redelivers it
        # to another replica this long after the last sign of life (running sessions keep
        # signalling progress, so this bounds recovery, not session length).
        self.ack_wait_seconds = ack_wait_seconds
        self.events = NatsSessionEvents(bus)
        self.deadline_seconds = deadline_seconds
        self.busy_retry_seconds = busy_retry_seconds
        self.concurrency = concurrency
        self.long_after_seconds = long_after_seconds
        self.max_long = concurrency if max_long is None else max_long
        self.running_long = 0
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._leases: LeaseStore | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._leases = await self.bus.leases()
        slots = asyncio.Semaphore(self.concurrency)
        # One fetch loop per slot, and one more for each session that may run long: a loop
        # whose session stood aside keeps running it, and another loop takes the slot.
        for index in range(self.concurrency + self.max_long):
            self._tasks.append(
                asyncio.create_task(self._consume(_Slot(slots)), name=f"session-consumer-{index}")
            )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            # Cancelled again until done: on Python 3.11 `asyncio.wait_for` (under nats-py's
            # fetch, which times out every second) can swallow a cancellation that lands as
            # its timeout fires, and the consumer would then fetch on for ever.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_RETRY_SECONDS)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _consume(self, slot: _Slot) -> None:
        while True:
            try:
                # Unlimited deliveries: a request waits for a busy mailbox as long as it
                # takes, and every request is recorded in the store, so none may be dropped.
                await self.bus.consume(
                    SESSIONS,
                    CONSUMER,
                    ALL_SESSION_REQUESTS,
                    events_pb2.SessionRequested,
                    functools.partial(self._handle_in, slot),
                    max_deliver=-1,
                    ack_wait=self.ack_wait_seconds,
                    before_fetch=slot.take,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session consumer stopped; restarting in %ss", RESTART_SECONDS)
                await asyncio.sleep(RESTART_SECONDS)

    async def _handle_in(
        self, slot: _Slot, delivery: Delivery[events_pb2.SessionRequested]
    ) -> None:
        timer = asyncio.get_running_loop().call_later(
            self.long_after_seconds, self._stand_aside, slot
        )
        try:
            await self.handle(delivery)
        finally:
            timer.cancel()
            if slot.aside:
                slot.aside = False
                self.running_long -= 1
            slot.give_back()

    def _stand_aside(self, slot: _Slot) -> None:
        """The session ran long: its slot goes to the next request, if few enough stand aside."""
        if slot.held and self.running_long < self.max_long:
            slot.give_back()
            slot.aside = True
            self.running_long += 1

    async def handle(self, delivery: Delivery[events_pb2.SessionRequested]) -> None:
        request = delivery.message
        session = await self.store.get_session(request.session_id)
        if session is None or session.state.terminal:
            return  # a replay, or its mailbox was deleted: nothing to do
        assert self._leases is not None, "start() first"
        lease = await self._leases.acquire(lease_key(session.mailbox_id), request.session_id)
        if lease is None:
            raise Retry(self.busy_retry_seconds, "the mailbox is busy with another session")
        try:
            async with lease:
                await self._run(session, request.org)
        except LeaseLost:
            failure = SessionFailure(
                "the mailbox lease was lost (the session took longer than the lease could be "
                "kept); it runs again with the next request",
                "LEASE_LOST",
                retryable=True,
            )
            await abandon_session(session.session_id, failure, store=self.store, events=self.events)

    async def _run(self, session: SessionRecord, org: str) -> None:
        attributes: dict[str, str | int] = {
            attrs.MAILBOX: session.mailbox,
            attrs.SESSION_ID: session.session_id,
            attrs.ORG: org,
            attrs.SESSION_TRIGGER: session.trigger,
            attrs.LEASE_KEY: lease_key(session.mailbox_id),
        }
        # Nobody called for this session: its calls to the peers go as the reconciler, for the
        # mailbox's org (concord_rpc.identity; identities carry the org id, not its name).
        caller = Identity(subject=SESSION_CALLER, org=parse_org_name(org), role="service")
        with (
            acting_as(caller),
            self._tracer.start_as_current_span(SPAN_NAME, attributes=attributes) as span,
        ):
            trace_id = format(span.get_span_context().trace_id, "032x")
            # Read once, under the lease, for the hints and the session alike.
            context = await self.store.mailbox_context(session.mailbox_id)
            crm_user = context.mailbox.crm_user_id if context is not None else ""
            async with self._hints(session.mailbox_id, parse_org_name(org), crm_user) as hints:
                result = await execute_session(
                    session.session_id,
                    store=self.store,
                    events=self.events,
                    engine=self.engine,
                    deadline_seconds=self.deadline_seconds,
                    trace_id=trace_id,
                    hints=hints,
                    session=session,
                    context=context,
                )
                if hints.noted:
                    span.set_attribute("concord.push_hints", hints.noted)
            if result is None:
                span.set_attribute(attrs.OUTCOME, "skipped")
                return
            span.set_attribute(attrs.OUTCOME, result.state.name.lower())
            if result.failure_code:
                span.set_status(Status(StatusCode.ERROR, result.failure_code))

    @contextlib.asynccontextmanager
    async def _hints(
        self, mailbox_id: str, org_id: str, crm_user: str
    ) -> AsyncIterator[PendingPushes]:
        """The push hints for the mailbox while its session runs (plain subscriptions, not
        the scheduler's queue group: every hint reaches the replica running the session)."""
        hints = PendingPushes()

        async def on_mail(msg: Msg) -> None:
            hints.note(Side.MAIL)

        async def on_crm(msg: Msg) -> None:
            hint = events_pb2.CrmChanged()
            with contextlib.suppress(DecodeError):
                hint.ParseFromString(msg.data)
            # Another user's records only, by the hint's own word: not this mailbox's.
            mine = not hint.owner_ids or crm_user in hint.owner_ids
            if not (mine or hint.everyone or hint.ids):
                return
            hints.note(Side.CRM)

        client = self.bus.client
        subscriptions = [
            await client.subscribe(mail_changed(mailbox_id), cb=on_mail),
            await client.subscribe(crm_changed(org_id), cb=on_crm),
        ]
        try:
            yield hints
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
