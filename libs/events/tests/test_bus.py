from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from nats.js.errors import NoStreamResponseError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from concord_events import (
    EVENTS,
    LEASES,
    SESSIONS,
    Delivery,
    EventBus,
    Reject,
    Retry,
    Topology,
    session_event,
    session_requested,
)
from concord_testing import NatsServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

Consumer = Callable[[Delivery[StringValue]], Awaitable[None]]


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        # Polls server-side state (stream and consumer counters): there is no event to await.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _consume(bus: EventBus, handler: Consumer, **options: float) -> asyncio.Task[None]:
    return asyncio.create_task(
        bus.consume(
            SESSIONS,
            "reconciler",
            "concord.sessions.requested.>",
            StringValue,
            handler,
            max_deliver=int(options.pop("max_deliver", 5)),
            ack_wait=options.pop("ack_wait", 30.0),
            fetch_timeout=0.2,
        )
    )


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _stream_messages(bus: EventBus, stream: str) -> int:
    info = await bus.js.stream_info(stream)
    return int(info.state.messages)


async def test_topology_is_idempotent_and_updates_the_lease_ttl(
    nats_server: NatsServer, bus: EventBus
) -> None:
    await bus.ensure_topology()
    sessions = await bus.js.stream_info(SESSIONS)
    assert sessions.config.retention == "workqueue"
    assert sessions.config.duplicate_window == 120
    events = await bus.js.stream_info(EVENTS)
    assert events.config.max_age == 7 * 24 * 3600
    assert (await bus.js.stream_info(f"KV_{LEASES}")).config.max_age == 1.0

    other = await EventBus.connect(
        nats_server.url, "other", topology=Topology(lease_ttl_seconds=5.0)
    )
    try:
        await other.ensure_topology()
        await other.ensure_topology()
        assert (await other.js.stream_info(f"KV_{LEASES}")).config.max_age == 5.0
    finally:
        await other.close()


async def test_same_msg_id_coalesces_on_sessions(bus: EventBus) -> None:
    subject = session_requested("demo")
    first = await bus.publish(subject, StringValue(value="a"), msg_id="demo-1")
    second = await bus.publish(subject, StringValue(value="b"), msg_id="demo-1")
    third = await bus.publish(subject, StringValue(value="c"), msg_id="demo-2")
    assert not first.duplicate
    assert second.duplicate
    assert not third.duplicate
    assert await _stream_messages(bus, SESSIONS) == 2


async def test_a_publish_no_stream_answers_is_tried_again_until_one_does(bus: EventBus) -> None:
    # As while a cluster elects a stream leader after losing a node: nobody answers for a while.
    await bus.js.delete_stream(SESSIONS)
    publish = asyncio.create_task(
        bus.publish(session_requested("demo"), StringValue(value="a"), msg_id="demo-1")
    )
    await asyncio.sleep(0.5)
    assert not publish.done()
    await bus.ensure_topology()
    ack = await asyncio.wait_for(publish, 5)
    assert ack.stream == SESSIONS
    assert await _stream_messages(bus, SESSIONS) == 1
    # Not for ever: past the window the caller hears of it.
    await bus.js.delete_stream(SESSIONS)
    bus.publish_retry_seconds = 0.3
    with pytest.raises(NoStreamResponseError):
        await bus.publish(session_requested("demo"), StringValue(value="b"), msg_id="demo-2")


async def test_work_queue_delivers_each_message_to_one_consumer(bus: EventBus) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def recorder(name: str) -> Consumer:
        async def handle(delivery: Delivery[StringValue]) -> None:
            seen[name].append(delivery.message.value)
            await asyncio.sleep(0.01)  # let the other replica pull meanwhile

        return handle

    replicas = [_consume(bus, recorder("a")), _consume(bus, recorder("b"))]
    sent = [f"m{i}" for i in range(20)]
    for value in sent:
        await bus.publish(session_requested(value), StringValue(value=value), msg_id=value)

    async def all_handled() -> bool:
        # Acked work leaves the queue.
        return await _stream_messages(bus, SESSIONS) == 0

    await _eventually(all_handled)
    await _stop(*replicas)
    assert sorted(seen["a"] + seen["b"]) == sorted(sent)
    assert seen["a"]
    assert seen["b"]


async def test_retry_redelivers_and_reject_does_not(bus: EventBus) -> None:
    attempts: dict[str, list[int]] = {}

    async def handle(delivery: Delivery[StringValue]) -> None:
        attempts.setdefault(delivery.message.value, []).append(delivery.attempt)
        if delivery.message.value == "retry" and delivery.attempt == 1:
            raise Retry(0.1)
        if delivery.message.value == "reject":
            raise Reject("mailbox unknown")

    consumer = _consume(bus, handle)
    await bus.publish(session_requested("retry"), StringValue(value="retry"))
    await bus.publish(session_requested("reject"), StringValue(value="reject"))

    async def settled() -> bool:
        return attempts.get("retry") == [1, 2] and await _stream_messages(bus, SESSIONS) == 0

    await _eventually(settled)
    await asyncio.sleep(0.3)  # a redelivery of the rejected message would show up by now
    await _stop(consumer)
    assert attempts == {"retry": [1, 2], "reject": [1]}


async def test_unexpected_error_redelivers_with_backoff(bus: EventBus) -> None:
    attempts: list[float] = []

    async def handle(delivery: Delivery[StringValue]) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if delivery.attempt == 1:
            raise RuntimeError("peer unavailable")

    consumer = _consume(bus, handle)
    await bus.publish(session_requested("x"), StringValue(value="x"))

    async def redelivered() -> bool:
        return len(attempts) == 2 and await _stream_messages(bus, SESSIONS) == 0

    await _eventually(redelivered)
    await _stop(consumer)
    assert attempts[1] - attempts[0] >= 0.9  # first back-off step is 1 s


async def test_unparseable_message_is_terminated(bus: EventBus) -> None:
    handled: list[str] = []

    async def handle(delivery: Delivery[StringValue]) -> None:
        handled.append(delivery.message.value)

    consumer = _consume(bus, handle)
    await bus.js.publish(session_requested("junk"), b"\xff\xff\xff")
    await bus.publish(session_requested("ok"), StringValue(value="ok"))

    async def drained() -> bool:
        return handled == ["ok"] and await _stream_messages(bus, SESSIONS) == 0

    await _eventually(drained)
    await _stop(consumer)


async def test_last_attempt_is_flagged(bus: EventBus) -> None:
    flags: list[tuple[int, bool]] = []

    async def handle(delivery: Delivery[StringValue]) -> None:
        flags.append((delivery.attempt, delivery.last_attempt))
        if not delivery.last_attempt:
            raise Retry(0.05)

    consumer = _consume(bus, handle, max_deliver=3)
    await bus.publish(session_requested("x"), StringValue(value="x"))

    async def done() -> bool:
        return await _stream_messages(bus, SESSIONS) == 0

    await _eventually(done)
    await _stop(consumer)
    assert flags == [(1, False), (2, False), (3, True)]


async def test_long_handler_is_not_redelivered_while_running(bus: EventBus) -> None:
    attempts: list[int] = []

    async def handle(delivery: Delivery[StringValue]) -> None:
        attempts.append(delivery.attempt)
        await asyncio.sleep(2.5)  # well past ack_wait: only the in-progress beats keep it

    consumer = _consume(bus, handle, ack_wait=1.0)
    await bus.publish(session_requested("slow"), StringValue(value="slow"))

    async def done() -> bool:
        return await _stream_messages(bus, SESSIONS) == 0

    await _eventually(done, within=10)
    await _stop(consumer)
    assert attempts == [1]


async def test_trace_context_crosses_the_hop(bus: EventBus, spans: InMemorySpanExporter) -> None:
    handled = asyncio.Event()

    async def handle(delivery: Delivery[StringValue]) -> None:
        handled.set()

    consumer = _consume(bus, handle)
    subject = session_requested("demo")
    await bus.publish(subject, StringValue(value="demo"), msg_id="demo-7")
    async with asyncio.timeout(5):
        await handled.wait()
    await _stop(consumer)
    by_name = {span.name: span for span in spans.get_finished_spans()}
    publish, process = by_name[f"{subject} publish"], by_name[f"{subject} process"]
    assert publish.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == publish.context.trace_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.system"] == "nats"
    assert publish.attributes["messaging.message.id"] == "demo-7"
    assert publish.attributes["messaging.destination.name"] == subject


async def test_wait_for_sees_an_event_published_after_subscribing(bus: EventBus) -> None:
    async with bus.watch(session_event("s1", "*")) as watch:
        await bus.publish(session_event("s2", "completed"), StringValue(value="other"))
        await bus.publish(session_event("s1", "failed"), StringValue(value="boom"))
        async with asyncio.timeout(5):
            envelope = await watch.next()
    assert envelope.subject == "concord.events.sessions.s1.failed"
    assert envelope.message_type == "google.protobuf.StringValue"
    assert envelope.parse(StringValue).value == "boom"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await bus.wait_for(session_event("s3", "*"))


async def test_a_consumer_started_with_new_settings_updates_the_durable_one(bus: EventBus) -> None:
    # A redeploy that changes the ack wait or the delivery limit must not keep the old ones.
    async def ignore(delivery: Delivery[StringValue]) -> None:
        return None

    async def started(expected: tuple[float, int]) -> bool:
        # Configured as expected, and fetching (a pull request waiting): only then is the
        # consume loop past its set-up, where a cancellation can be lost in the client.
        try:
            info = await bus.js.consumer_info(SESSIONS, "reconciler")
        except Exception:
            return False
        config = (float(info.config.ack_wait or 0), int(info.config.max_deliver or 0))
        return config == expected and (info.num_waiting or 0) > 0

    first = _consume(bus, ignore, ack_wait=30.0, max_deliver=5)
    await _eventually(lambda: started((30.0, 5)))
    await _stop(first)
    second = _consume(bus, ignore, ack_wait=3.0, max_deliver=-1)
    await _eventually(lambda: started((3.0, -1)))
    await _stop(second)
