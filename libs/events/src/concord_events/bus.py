"""Concord's NATS connection: topology, traced publish, traced consume, event watches, leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import nats
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, PubAck, StorageType
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from concord_events.leases import LeaseStore
from concord_events.topology import LEASES, Topology
from concord_telemetry import attributes as attrs
from concord_telemetry import extract, inject

_log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

CONTENT_TYPE = "application/protobuf"
HEADER_CONTENT_TYPE = "Content-Type"
HEADER_MESSAGE_TYPE = "Concord-Message-Type"
HEADER_MSG_ID = "Nats-Msg-Id"

# Back-off for unexpected handler failures, by delivery attempt: 1 s, 2 s, 4 s ... capped.
_BACKOFF_BASE_SECONDS = 1.0
_BACKOFF_CAP_SECONDS = 60.0
# A publish no stream answered was not stored. On a cluster that happens for a few seconds
# after a node is lost (its streams elect new leaders, the client moves to another node), so
# the publish is tried again for this long before the caller hears of it.
PUBLISH_RETRY_SECONDS = 10.0
_PUBLISH_RETRY_FIRST_SECONDS = 0.1
_PUBLISH_RETRY_MAX_SECONDS = 1.0


class Retry(Exception):
    """Raised by a handler: the message should come back after `delay` seconds."""

    def __init__(self, delay: float = 1.0, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}s")
        self.delay = delay


class Reject(Exception):
    """Raised by a handler: the message can never succeed; it is terminated, not redelivered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """One message handed to a consumer's handler."""

    message: M
    subject: str
    attempt: int  # 1 on first delivery
    max_deliver: int
    msg_id: str | None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def last_attempt(self) -> bool:
        """No redelivery follows a Retry now: the caller should give up and report failure."""
        return self.max_deliver > 0 and self.attempt >= self.max_deliver


@dataclass(frozen=True)
class Envelope:
    """A message seen on a core subscription (watch), parsed on demand."""

    subject: str
    data: bytes
    headers: Mapping[str, str]

    @property
    def message_type(self) -> str | None:
        return self.headers.get(HEADER_MESSAGE_TYPE)

    def parse(self, message_type: type[M]) -> M:
        message = message_type()
        message.ParseFromString(self.data)
        return message


class EventWatch:
    """A core NATS subscription; messages published after `watch()` returned are seen."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue()

    async def _deliver(self, msg: Msg) -> None:
        await self._queue.put(Envelope(msg.subject, msg.data, dict(msg.headers or {})))

    async def next(self) -> Envelope:
        """The next message; bound the wait with `asyncio.timeout`."""
        return await self._queue.get()


Handler = Callable[[Delivery[M]], Awaitable[None]]


def servers(url: str) -> list[str]:
    """The servers of `NATS_URL`: one URL, or several comma-separated (a cluster's nodes, as
    the NATS tools spell them), so a client can connect while any one node is down."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("NATS_URL names no server")
    return found


class EventBus:
    """One NATS connection with JetStream, as Concord uses it."""

    def __init__(
        self,
        client: Client,
        *,
        topology: Topology | None = None,
        tracer_provider: TracerProvider | None = None,
        publish_retry_seconds: float = PUBLISH_RETRY_SECONDS,
    ) -> None:
        self.client = client
        self.js: JetStreamContext = client.jetstream()
        self.topology = topology or Topology()
        self.publish_retry_seconds = publish_retry_seconds
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        topology: Topology | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> EventBus:
        client = await nats.connect(servers(url), name=name, max_reconnect_attempts=-1)
        return cls(client, topology=topology, tracer_provider=tracer_provider)

    async def close(self) -> None:
        """Drain: finish in-flight deliveries and flush pending publishes, then disconnect."""
        if not self.client.is_closed:
            await self.client.drain()

    async def ensure_topology(self) -> None:
        """Create or update the streams and the KV bucket; safe to run from every replica."""
        for config in self.topology.streams():
            try:
                await self.js.stream_info(str(config.name))
            except NotFoundError:
                try:
                    await self.js.add_stream(config)
                    continue
                except BadRequestError:
                    pass  # another replica created it in between; fall through to update
            await self.js.update_stream(config)
        await self._ensure_leases_bucket()

    async def _ensure_leases_bucket(self) -> None:
        ttl = self.topology.lease_ttl_seconds
        config = KeyValueConfig(
            bucket=LEASES,
            history=1,
            ttl=ttl,
            storage=StorageType.FILE,
            replicas=self.topology.replicas,
        )
        try:
            await self.js.create_key_value(config)
        except BadRequestError:
            # Exists with another TTL: create refuses to change a stream, so update its age.
            info = await self.js.stream_info(f"KV_{LEASES}")
            stream = info.config
            stream.max_age = ttl
            stream.duplicate_window = min(120.0, ttl)
            stream.num_replicas = self.topology.replicas
            await self.js.update_stream(stream)

    async def leases(self) -> LeaseStore:
        return LeaseStore(await self.js.key_value(LEASES), self.topology.lease_ttl_seconds)

    async def publish(self, subject: str, message: Message, *, msg_id: str | None = None) -> PubAck:
        """Publish `message` to JetStream with the trace context in its headers.

        With `msg_id`, JetStream drops a repeat within the stream's duplicate window and
        answers `duplicate=True`: the caller's request coalesced with an earlier one.
        """
        data = message.SerializeToString()
        span_attributes: dict[str, str | int] = {
            attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_NATS,
            attrs.MESSAGING_DESTINATION_NAME: subject,
            attrs.MESSAGING_OPERATION_TYPE: "publish",
            attrs.MESSAGING_OPERATION_NAME: "publish",
            attrs.MESSAGING_MESSAGE_BODY_SIZE: len(data),
        }
        if msg_id is not None:
            span_attributes[attrs.MESSAGING_MESSAGE_ID] = msg_id
        with self._tracer.start_as_current_span(
            f"{subject} publish", kind=SpanKind.PRODUCER, attributes=span_attributes
        ) as span:
            headers = {
                HEADER_CONTENT_TYPE: CONTENT_TYPE,
                HEADER_MESSAGE_TYPE: message.DESCRIPTOR.full_name,
            }
            if msg_id is not None:
                headers[HEADER_MSG_ID] = msg_id
            inject(headers)
            ack = await self._publish_until_stored(subject, data, headers, msg_id is not None)
            span.set_attribute(attrs.MESSAGING_STREAM_NAME, ack.stream)
            span.set_attribute("messaging.nats.duplicate", bool(ack.duplicate))
            return ack

    async def _publish_until_stored(
        self, subject: str, data: bytes, headers: dict[str, str], deduplicated: bool
    ) -> PubAck:
        """Publish, again while no stream leader answers (a cluster electing one). A timeout
        is tried again only with a message id: the stream may have stored the first try, and
        only the id makes the repeat harmless."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_retry_seconds
        delay = _PUBLISH_RETRY_FIRST_SECONDS
        while True:
            try:
                ack: PubAck = await self.js.publish(subject, data, headers=headers)
                return ack
            except (NoStreamResponseError, ServiceUnavailableError, NatsTimeoutError) as error:
                unsure = isinstance(error, NatsTimeoutError) and not deduplicated
                if unsure or loop.time() + delay > deadline:
                    raise
                _log.info("publish to %s not stored yet (%s); again", subject, type(error).__name__)
                await asyncio.sleep(delay)
                delay = min(_PUBLISH_RETRY_MAX_SECONDS, delay * 2)

    async def consume(
        self,
        stream: str,
        durable: str,
        filter_subject: str,
        message_type: type[M],
        handler: Handler[M],
        *,
        max_deliver: int = 5,
        ack_wait: float = 30.0,
        fetch_timeout: float = 1.0,
        before_fetch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Process messages from a durable pull consumer until cancelled.

        `before_fetch`, when given, is awaited before each fetch: a consumer that may not take
        more work right now (all its slots busy) waits there instead of holding a message.

        Each message runs `handler` inside a CONSUMER span parented by the publisher's span.
        Success acks; `Retry` naks with its delay; `Reject` and unparseable messages are
        terminated; any other exception naks with exponential back-off. While the handler
        runs, the message is marked in progress so a long session is not redelivered.
        """
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            filter_subject=filter_subject,
        )
        await self._create_or_update_consumer(stream, config)
        subscription = await self.js.pull_subscribe(
            filter_subject, durable=durable, stream=stream, config=config
        )
        try:
            while True:
                if before_fetch is not None:
                    await before_fetch()
                try:
                    messages = await subscription.fetch(batch=1, timeout=fetch_timeout)
                except NatsTimeoutError:
                    continue
                for msg in messages:
                    await self._process(msg, durable, message_type, handler, max_deliver, ack_wait)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _create_or_update_consumer(self, stream: str, config: ConsumerConfig) -> None:
        """Make the durable consumer have `config`: pull_subscribe alone binds to an existing
        one as it is, so a redeploy with a new ack wait or delivery limit would keep the old.
        With replicas on different settings (mid-rollout), the last one started wins."""
        try:
            await self.js.add_consumer(stream, config)
        except APIError as error:
            # A change the server cannot make in place (say, the ack policy): go on with the
            # consumer as it is rather than stop consuming.
            _log.warning(
                "consumer %s on %s keeps its settings: %s", config.durable_name, stream, error
            )

    async def _process(
        self,
        msg: Msg,
        durable: str,
        message_type: type[M],
        handler: Handler[M],
        max_deliver: int,
        ack_wait: float,
    ) -> None:
        headers = dict(msg.headers or {})
        attempt = msg.metadata.num_delivered
        span_attributes: dict[str, str | int] = {
            attrs.MESSAGING_SYSTEM: attrs.MESSAGING_SYSTEM_NATS,
            attrs.MESSAGING_DESTINATION_NAME: msg.subject,
            attrs.MESSAGING_OPERATION_TYPE: "process",
            attrs.MESSAGING_OPERATION_NAME: "process",
            attrs.MESSAGING_CONSUMER_GROUP_NAME: durable,
            attrs.MESSAGING_DELIVERY_COUNT: attempt,
            attrs.MESSAGING_MESSAGE_BODY_SIZE: len(msg.data),
        }
        msg_id = headers.get(HEADER_MSG_ID)
        if msg_id is not None:
            span_attributes[attrs.MESSAGING_MESSAGE_ID] = msg_id
        with self._tracer.start_as_current_span(
            f"{msg.subject} process",
            context=extract(headers),
            kind=SpanKind.CONSUMER,
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                message = message_type()
                message.ParseFromString(msg.data)
            except DecodeError:
                _log.error("terminating a message that does not parse as %s", message_type)
                span.set_status(Status(StatusCode.ERROR, "unparseable message"))
                await msg.term()
                return
            delivery = Delivery(message, msg.subject, attempt, max_deliver, msg_id, headers)
            heartbeat = asyncio.create_task(_keep_in_progress(msg, ack_wait))
            try:
                await handler(delivery)
            except Retry as retry:
                span.set_attribute(attrs.OUTCOME, "retry")
                await msg.nak(delay=retry.delay)
            except Reject as reject:
                span.set_attribute(attrs.OUTCOME, "rejected")
                span.set_status(Status(StatusCode.ERROR, reject.reason))
                await msg.term()
            except asyncio.CancelledError:
                # Shutting down mid-message: hand it back now rather than after ack_wait.
                await msg.nak()
                raise
            except Exception as error:
                delay = min(_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), _BACKOFF_CAP_SECONDS)
                _log.exception("handler failed; redelivering in %.0fs", delay)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                await msg.nak(delay=delay)
            else:
                span.set_attribute(attrs.OUTCOME, "acked")
                await msg.ack_sync()
            finally:
                heartbeat.cancel()

    @contextlib.asynccontextmanager
    async def watch(self, subject_filter: str) -> AsyncIterator[EventWatch]:
        """Subscribe to `subject_filter` (core NATS) for the body's duration.

        Subscribe first, then check stored state, then wait: an event published in between is
        not missed.
        """
        watch = EventWatch()
        subscription = await self.client.subscribe(subject_filter, cb=watch._deliver)
        await self.client.flush()  # the server has the interest before we return
        try:
            yield watch
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def wait_for(self, subject_filter: str) -> Envelope:
        """The first message on `subject_filter` published from now on.

        Bound it with `asyncio.timeout`. To avoid missing an event that races a state check,
        use `watch` and check inside it instead.
        """
        async with self.watch(subject_filter) as watch:
            return await watch.next()


async def _keep_in_progress(msg: Msg, ack_wait: float) -> None:
    while True:
        await asyncio.sleep(ack_wait / 3)
        await msg.in_progress()
