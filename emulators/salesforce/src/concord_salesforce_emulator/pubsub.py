"""Change Data Capture through Salesforce's Pub/Sub API (`eventbus.v1.PubSub`, gRPC over TLS).

Every committed write to a record of a captured object becomes one change event on its channel
(`/data/<Object>ChangeEvent`, and `/data/ChangeEvents` for all), Avro-encoded with the schema
`GetSchema` returns for its id, as Salesforce does:

- the header: entityName, recordIds, changeType, changeOrigin (the API and the client named in
  `Sforce-Call-Options`), transactionKey, sequenceNumber, commitTimestamp (epoch ms),
  commitNumber, commitUser, nulledFields, diffFields, changedFields;
- then the object's fields, each optional: all of them set on a CREATE, only the changed ones on
  an UPDATE, none on a DELETE or UNDELETE.

Subscribers get events strictly after their replay id, never more than they asked for
(`num_requested`), and an empty keepalive with the latest replay id when the channel is idle.
Events are kept for the retention period (72 hours); a replay id older than that is refused as
Salesforce refuses it. `/__admin/pubsub/...` injects gap and overflow events, expires the
retention, and closes open streams.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import datetime as dt
import hashlib
import io
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import fastavro
import grpc
from eventbus.v1 import pubsub_api_pb2 as pb
from eventbus.v1 import pubsub_api_pb2_grpc as pb_grpc

from concord_salesforce_emulator import timefmt
from concord_salesforce_emulator.schema import Schema, SObjectType
from concord_salesforce_emulator.store import StoredRecord

__all__ = ["CAPTURED", "ChangeBus", "PubSubServicer", "WriteContext", "current_write"]

# The objects whose changes are captured (Salesforce: selected in Setup → Change Data Capture).
CAPTURED = ("Event", "Task", "Contact", "Lead", "Account", "Opportunity")
ALL_CHANGES = "/data/ChangeEvents"
RETENTION_SECONDS = 72 * 3600.0
KEEPALIVE_SECONDS = 270.0
REPLAY_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
AUTH_FAILED = "sfdc.platform.eventbus.grpc.service.auth.error"
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.topic.not.found"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.not.found"
PUBLISH_REFUSED = "sfdc.platform.eventbus.grpc.publish.not.allowed"
REPLAY_MESSAGE = "The Replay ID validation failed."

# Fields Salesforce sets itself: never in changedFields.
_SYSTEM = {"Id", "IsDeleted", "SystemModstamp", "LastModifiedDate", "LastModifiedById"}


@dataclass(frozen=True)
class WriteContext:
    """Who is writing, set by the REST layer for the request being served."""

    user_id: str
    # `com/salesforce/api/rest/62.0` plus `;client=…` from Sforce-Call-Options.
    origin: str


current_write: contextvars.ContextVar[WriteContext | None] = contextvars.ContextVar(
    "current_write", default=None
)


def channel_of(sobject: str) -> str:
    return f"/data/{sobject}ChangeEvent"


def _avro_type(described: dict[str, Any]) -> Any:
    kind = described.get("type", "string")
    if kind == "boolean":
        return "boolean"
    if kind in ("int",):
        return "int"
    if kind in ("double", "currency", "percent"):
        return "double"
    if kind == "datetime":
        return {"type": "long", "logicalType": "timestamp-millis"}
    if kind == "date":
        return {"type": "int", "logicalType": "date"}
    return "string"


def _header_schema() -> dict[str, Any]:
    strings = {"type": "array", "items": "string"}
    return {
        "type": "record",
        "name": "ChangeEventHeader",
        "namespace": "com.sforce.eventbus",
        "fields": [
            {"name": "entityName", "type": "string"},
            {"name": "recordIds", "type": strings},
            {
                "name": "changeType",
                "type": {
                    "type": "enum",
                    "name": "ChangeType",
                    "namespace": "com.sforce.eventbus",
                    "symbols": [
                        "CREATE",
                        "UPDATE",
                        "DELETE",
                        "UNDELETE",
                        "GAP_CREATE",
                        "GAP_UPDATE",
                        "GAP_DELETE",
                        "GAP_UNDELETE",
                        "GAP_OVERFLOW",
                        "SNAPSHOT",
                    ],
                },
            },
            {"name": "changeOrigin", "type": "string"},
            {"name": "transactionKey", "type": "string"},
            {"name": "sequenceNumber", "type": "int"},
            {"name": "commitTimestamp", "type": "long"},
            {"name": "commitNumber", "type": "long"},
            {"name": "commitUser", "type": "string"},
            {"name": "nulledFields", "type": strings},
            {"name": "diffFields", "type": strings},
            {"name": "changedFields", "type": strings},
        ],
    }


def event_schema(sobject: SObjectType) -> dict[str, Any]:
    """The Avro schema of `<Object>ChangeEvent`: the header, then every field, optional."""
    fields: list[dict[str, Any]] = [
        {"name": "ChangeEventHeader", "type": _header_schema(), "doc": "Data:ChangeEventHeader"}
    ]
    for described in sorted(sobject.fields.values(), key=lambda f: str(f["name"])):
        name = str(described["name"])
        if name in ("Id",) or described.get("type") in ("address", "location", "base64"):
            continue
        fields.append({"name": name, "type": ["null", _avro_type(described)], "default": None})
    return {
        "type": "record",
        "name": f"{sobject.name}ChangeEvent",
        "namespace": "com.sforce.eventbus",
        "fields": fields,
    }


def schema_id_of(schema: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


@dataclass(frozen=True)
class StoredEvent:
    replay: int
    schema_id: str
    payload: bytes
    event_id: str
    at: float


@dataclass
class _Channel:
    events: list[StoredEvent] = field(default_factory=list)
    # Replay positions at or below this were dropped (retention): resuming from them fails.
    expired_through: int = 0


class ChangeBus:
    """The org's change events, per channel, in commit order.

    Writes commit on the REST API's worker threads and streams read on the loop: channels
    change under `_lock`, and a commit wakes the streams through the loop.
    """

    def __init__(self, schema: Schema, org_id: str, clock: Callable[[], float] = time.time) -> None:
        self.org_id = org_id
        self.clock = clock
        self.retention_seconds = RETENTION_SECONDS
        self.keepalive_seconds = KEEPALIVE_SECONDS
        self._schemas: dict[str, tuple[str, Any, str]] = {}  # schema id -> (json, parsed, entity)
        self._schema_of_entity: dict[str, str] = {}
        self._channels: dict[str, _Channel] = {}
        self._positions = itertools.count(1)
        self._commits = itertools.count(1)
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the streams', once one waits
        self._lock = threading.Lock()
        self._closing = 0  # bumped to close every open stream
        for name in CAPTURED:
            sobject = schema.get(name)
            if sobject is None:
                continue
            described = event_schema(sobject)
            schema_id = schema_id_of(described)
            self._schemas[schema_id] = (
                json.dumps(described),
                fastavro.parse_schema(described),
                name,
            )
            self._schema_of_entity[name] = schema_id
            self._channels[channel_of(name)] = _Channel()
        self._channels[ALL_CHANGES] = _Channel()

    # ---- topics and schemas --------------------------------------------------------------------

    def has_channel(self, topic: str) -> bool:
        return topic in self._channels

    def schema_of_topic(self, topic: str) -> str:
        if topic == ALL_CHANGES:
            return self._schema_of_entity.get("Event", "")
        entity = topic.removeprefix("/data/").removesuffix("ChangeEvent")
        return self._schema_of_entity.get(entity, "")

    def schema_json(self, schema_id: str) -> str | None:
        found = self._schemas.get(schema_id)
        return found[0] if found else None

    # ---- publishing ----------------------------------------------------------------------------

    def committed(self, changes: Iterable[tuple[StoredRecord | None, StoredRecord]]) -> None:
        """One transaction's records (before, after): one change event per captured record."""
        write = current_write.get()
        transaction = str(uuid.uuid4())
        commit = next(self._commits)
        now_ms = int(self.clock() * 1000)
        sequence = itertools.count(1)
        for before, after in changes:
            if after.sobject not in self._schema_of_entity:
                continue
            change_type, changed, nulled = _what_changed(before, after)
            if change_type is None:
                continue
            values = (
                {}
                if change_type in ("DELETE", "UNDELETE")
                else {k: after.fields.get(k) for k in changed}
            )
            header = {
                "entityName": after.sobject,
                "recordIds": [after.id],
                "changeType": change_type,
                "changeOrigin": write.origin if write else "",
                "transactionKey": transaction,
                "sequenceNumber": next(sequence),
                "commitTimestamp": now_ms,
                "commitNumber": commit,
                "commitUser": write.user_id if write else "",
                "nulledFields": sorted(nulled),
                "diffFields": [],
                "changedFields": sorted(changed) if change_type == "UPDATE" else [],
            }
            self._append(after.sobject, header, values)

    def gap(self, sobject: str, change_type: str, record_ids: list[str]) -> None:
        """A gap event (Salesforce lost the detail of a change) or an overflow."""
        header = {
            "entityName": sobject,
            "recordIds": record_ids,
            "changeType": change_type,
            "changeOrigin": "",
            "transactionKey": str(uuid.uuid4()),
            "sequenceNumber": 1,
            "commitTimestamp": int(self.clock() * 1000),
            "commitNumber": next(self._commits),
            "commitUser": "",
            "nulledFields": [],
            "diffFields": [],
            "changedFields": [],
        }
        self._append(sobject, header, {})

    def _append(self, sobject: str, header: dict[str, Any], values: dict[str, Any]) -> None:
        schema_id = self._schema_of_entity[sobject]
        _, parsed, _ = self._schemas[schema_id]
        record: dict[str, Any] = {"ChangeEventHeader": header}
        for avro_field in parsed["fields"][1:]:
            name = avro_field["name"]
            record[name] = _avro_value(values.get(name), avro_field["type"])
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        with self._lock:
            event = StoredEvent(
                next(self._positions),
                schema_id,
                buffer.getvalue(),
                str(uuid.uuid4()),
                self.clock(),
            )
            self._channels[channel_of(sobject)].events.append(event)
            self._channels[ALL_CHANGES].events.append(event)
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or loop is here:
            self._wake_streams()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_streams)

    def _wake_streams(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- retention -------------------------------------------------------------------------------

    def expire(self, older_than: float | None = None) -> int:
        """Drops events past retention (or every event when `older_than` is None)."""
        cutoff = self.clock() - self.retention_seconds if older_than is None else older_than
        dropped = 0
        with self._lock:
            for channel in self._channels.values():
                keep = [e for e in channel.events if e.at > cutoff]
                gone = channel.events[: len(channel.events) - len(keep)]
                if gone:
                    channel.expired_through = max(channel.expired_through, gone[-1].replay)
                    dropped += len(gone)
                channel.events = keep
        return dropped

    def close_streams(self) -> None:
        self._closing += 1
        self._wake()

    # ---- reading ---------------------------------------------------------------------------------

    def latest(self, topic: str) -> int:
        with self._lock:
            channel = self._channels[topic]
            return channel.events[-1].replay if channel.events else channel.expired_through

    def after(self, topic: str, position: int) -> list[StoredEvent]:
        self.expire()
        with self._lock:
            channel = self._channels[topic]
            if position < channel.expired_through:
                raise ReplayExpired(topic)
            return [e for e in channel.events if e.replay > position]

    def check_replay(self, topic: str, position: int) -> None:
        """A subscriber's replay id must name an event still retained: one whose event passed
        retention is refused, even when nothing newer was lost."""
        self.expire()
        if 0 < position <= self._channels[topic].expired_through:
            raise ReplayExpired(topic)

    async def wait(self, seconds: float) -> bool:
        """Until something is published or streams are closed; False after `seconds`."""
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
            return True
        except TimeoutError:
            return False


class ReplayExpired(Exception):
    pass


def _what_changed(
    before: StoredRecord | None, after: StoredRecord
) -> tuple[str | None, set[str], set[str]]:
    was_deleted = before is not None and before.deleted_at is not None
    if after.deleted_at is not None:
        return ("DELETE", set(), set()) if not was_deleted else (None, set(), set())
    if was_deleted:
        return "UNDELETE", set(), set()
    if before is None:
        changed = {k for k, v in after.fields.items() if v is not None and k not in ("Id",)}
        return "CREATE", changed, set()
    changed = {
        k
        for k in set(before.fields) | set(after.fields)
        if before.fields.get(k) != after.fields.get(k) and k not in _SYSTEM
    }
    if not changed:
        return None, set(), set()
    nulled = {k for k in changed if after.fields.get(k) is None}
    return "UPDATE", changed | {"LastModifiedDate"}, nulled


def _avro_value(value: Any, avro_type: Any) -> Any:
    if value is None:
        return None
    inner = next(t for t in avro_type if t != "null") if isinstance(avro_type, list) else avro_type
    logical = inner.get("logicalType") if isinstance(inner, dict) else None
    base = inner.get("type") if isinstance(inner, dict) else inner
    try:
        if logical == "timestamp-millis":
            return timefmt.parse_datetime(str(value))
        if logical == "date":
            return dt.date.fromisoformat(str(value)[:10])
        if base == "boolean":
            return bool(value)
        if base == "int":
            return int(value)
        if base == "double":
            return float(value)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _replay_bytes(position: int) -> bytes:
    return position.to_bytes(8, "big")


def _position(replay_id: bytes) -> int:
    if len(replay_id) != 8:
        raise ValueError("malformed replay id")
    return int.from_bytes(replay_id, "big")


class PubSubServicer(pb_grpc.PubSubServicer):
    """`eventbus.v1.PubSub` for one emulated org: GetTopic, GetSchema, Subscribe."""

    def __init__(
        self, bus: ChangeBus, valid_token: Callable[[str], bool], base_url: Callable[[], str]
    ):
        self.bus = bus
        self.valid_token = valid_token
        self.base_url = base_url

    async def _authorized(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        token = str(metadata.get("accesstoken", ""))
        tenant = str(metadata.get("tenantid", ""))
        instance = str(metadata.get("instanceurl", "")).rstrip("/")
        if not token or not self.valid_token(token):
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, AUTH_FAILED, "invalid session")
        if tenant[:15] != self.bus.org_id[:15]:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, AUTH_FAILED, "tenant mismatch")
        if instance and instance != self.base_url().rstrip("/"):
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, AUTH_FAILED, "wrong instance")

    async def GetTopic(self, request: pb.TopicRequest, context: Any) -> pb.TopicInfo:
        await self._authorized(context)
        if not self.bus.has_channel(request.topic_name):
            await _abort(context, grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND, "no such topic")
        return pb.TopicInfo(
            topic_name=request.topic_name,
            tenant_guid=self.bus.org_id,
            can_publish=False,
            can_subscribe=True,
            schema_id=self.bus.schema_of_topic(request.topic_name),
            rpc_id=str(uuid.uuid4()),
        )

    async def GetSchema(self, request: pb.SchemaRequest, context: Any) -> pb.SchemaInfo:
        await self._authorized(context)
        found = self.bus.schema_json(request.schema_id)
        if found is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND, "no such schema")
        return pb.SchemaInfo(
            schema_json=found or "", schema_id=request.schema_id, rpc_id=str(uuid.uuid4())
        )

    async def Subscribe(
        self, request_iterator: AsyncIterator[pb.FetchRequest], context: Any
    ) -> AsyncIterator[pb.FetchResponse]:
        await self._authorized(context)
        requests = request_iterator.__aiter__()
        first = await requests.__anext__()
        topic = first.topic_name
        if not self.bus.has_channel(topic):
            await _abort(context, grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND, "no such topic")
        if first.replay_preset == pb.ReplayPreset.CUSTOM:
            try:
                position = _position(first.replay_id)
                self.bus.check_replay(topic, position)
            except (ValueError, ReplayExpired):
                await _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    REPLAY_INVALID,
                    "The Replay ID validation failed.",
                )
        elif first.replay_preset == pb.ReplayPreset.EARLIEST:
            position = self.bus._channels[topic].expired_through
        else:
            position = self.bus.latest(topic)
        # The stream is open: say so now rather than with the first event (a client waits
        # for these headers to know its subscription stands).
        await context.send_initial_metadata(())
        credit = max(first.num_requested, 0)
        more: asyncio.Queue[int] = asyncio.Queue()

        async def read_requests() -> None:
            async for later in requests:
                await more.put(max(later.num_requested, 0))

        reader = asyncio.create_task(read_requests())
        closing = self.bus._closing
        waiting: set[asyncio.Future[Any]] = set()
        try:
            while True:
                while not more.empty():
                    credit += more.get_nowait()
                if self.bus._closing != closing:
                    return
                pending = self.bus.after(topic, position) if credit else []
                if pending:
                    batch = pending[: min(credit, 100)]
                    credit -= len(batch)
                    position = batch[-1].replay
                    yield pb.FetchResponse(
                        events=[
                            pb.ConsumerEvent(
                                event=pb.ProducerEvent(
                                    id=e.event_id, schema_id=e.schema_id, payload=e.payload
                                ),
                                replay_id=_replay_bytes(e.replay),
                            )
                            for e in batch
                        ],
                        latest_replay_id=_replay_bytes(position),
                        rpc_id=str(uuid.uuid4()),
                        pending_num_requested=credit,
                    )
                    continue
                waiter = asyncio.ensure_future(self.bus.wait(self.bus.keepalive_seconds))
                asked = asyncio.ensure_future(more.get())
                waiting = {waiter, asked}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if asked in done:
                    credit += asked.result()
                else:
                    asked.cancel()
                if waiter in done and not waiter.result():
                    # Idle: a keepalive with the latest replay id.
                    yield pb.FetchResponse(
                        latest_replay_id=_replay_bytes(max(position, self.bus.latest(topic))),
                        rpc_id=str(uuid.uuid4()),
                        pending_num_requested=credit,
                    )
                elif waiter not in done:
                    waiter.cancel()
        except ReplayExpired:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                REPLAY_INVALID,
                "The Replay ID validation failed.",
            )
        finally:
            # The client went away (or the stream closed): nothing of this call may linger.
            for pending_future in (*waiting, reader):
                pending_future.cancel()
            await asyncio.gather(*waiting, reader, return_exceptions=True)

    async def Publish(self, request: pb.PublishRequest, context: Any) -> pb.PublishResponse:
        await self._authorized(context)
        await _abort(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            "sfdc.platform.eventbus.grpc.publish.not.allowed",
            "change event channels cannot be published to",
        )
        raise AssertionError


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    error_code: str,
    message: str,
) -> None:
    # Salesforce names its error in the `error-code` trailer; clients branch on it.
    context.set_trailing_metadata((("error-code", error_code),))
    await context.abort(code, message)


def change_origin(version: str, call_options: str) -> str:
    """changeOrigin as Salesforce writes it for a REST call."""
    origin = f"com/salesforce/api/rest/{version}"
    client = next(
        (p.strip() for p in call_options.split(",") if p.strip().lower().startswith("client=")), ""
    )
    return f"{origin};{client}" if client else origin


def now_iso() -> str:
    return timefmt.format_datetime(timefmt.now())
