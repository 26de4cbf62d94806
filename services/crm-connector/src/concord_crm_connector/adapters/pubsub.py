"""Salesforce's Pub/Sub API (`eventbus.v1`, gRPC over TLS): an org's change events, decoded.

The org's OAuth session (the same login the REST calls use) goes with each call as
`accesstoken`, `instanceurl` and `tenantid`. `Subscribe` is a bidirectional stream: events come
only as far as requested, so the subscriber asks for a batch and asks again as it handles them.
Payloads are Avro, each with the schema `GetSchema` returns for its id (kept once read).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import fastavro
import grpc
from eventbus.v1 import pubsub_api_pb2 as pb
from eventbus.v1 import pubsub_api_pb2_grpc as pb_grpc

from concord_crm_connector.changes.model import ChangeEvent
from concord_crm_connector.changes.ports import ChangeBatch, ReplayTooOld
from concord_crm_connector.domain.model import OrgConnection
from concord_crm_connector.domain.service import LoginInfo

__all__ = ["PubSubSource", "decode_event"]

log = logging.getLogger(__name__)

# Events asked for at a time; another batch is asked for once half of one was handled.
BATCH = 100
_REPLAY_INVALID = "replayid"


class Connections(Protocol):
    async def get(self, org: str) -> OrgConnection | None: ...


class Sessions(Protocol):
    """The org's OAuth session, as the REST calls use it (`SalesforceOrgs.session`)."""

    async def session(self, connection: OrgConnection, *, renew: bool = False) -> LoginInfo: ...


def decode_event(channel: str, event: pb.ConsumerEvent, schema: Any) -> ChangeEvent:
    """One consumer event as Concord reads it: its header, and the owner if it carries one.

    Raises ValueError for any payload that does not read as a change event: whatever a broken
    payload makes the Avro reader raise (EOF, an index or overflow error, bad UTF-8), so one bad
    event never fails the stream (it would come back at every retry from the same replay id).
    """
    try:
        record = fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema)
        if not isinstance(record, dict):
            raise ValueError("not a record")
        header = record.get("ChangeEventHeader")
        if not isinstance(header, dict):
            raise ValueError("no ChangeEventHeader")
        committed = header.get("commitTimestamp")
        return ChangeEvent(
            channel=channel,
            replay_id=event.replay_id,
            entity=str(header.get("entityName", "")),
            change_type=str(header.get("changeType", "")),
            record_ids=tuple(str(r) for r in header.get("recordIds") or ()),
            change_origin=str(header.get("changeOrigin") or ""),
            commit_time=datetime.fromtimestamp(committed / 1000, UTC) if committed else None,
            owner_id=str(record.get("OwnerId") or ""),
        )
    except Exception as error:
        raise ValueError(
            f"unreadable change event payload ({type(error).__name__}: {error})"
        ) from error


class PubSubSource:
    """`ChangeSource` over the Pub/Sub API endpoint (`api.pubsub.salesforce.com:7443`)."""

    def __init__(
        self,
        connections: Connections,
        sessions: Sessions,
        endpoint: str,
        *,
        root_certificates: bytes | None = None,
    ) -> None:
        self._connections = connections
        self._sessions = sessions
        self._endpoint = endpoint
        self._credentials = grpc.ssl_channel_credentials(root_certificates)
        self._schemas: dict[str, Any] = {}
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> pb_grpc.PubSubStub:
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(self._endpoint, self._credentials)
        return pb_grpc.PubSubStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _metadata(self, org: str, renew: bool = False) -> tuple[tuple[str, str], ...]:
        connection = await self._connections.get(org)
        if connection is None:
            raise LookupError(f"{org} is not connected")
        info = await self._sessions.session(connection, renew=renew)
        return (
            ("accesstoken", info.access_token),
            ("instanceurl", info.instance_url),
            ("tenantid", info.organization_id),
        )

    async def _schema(self, schema_id: str, metadata: Sequence[tuple[str, str]]) -> Any:
        if schema_id not in self._schemas:
            info = await self._stub().GetSchema(
                pb.SchemaRequest(schema_id=schema_id), metadata=metadata
            )
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(info.schema_json))
        return self._schemas[schema_id]

    async def subscribe(
        self, org: str, channel: str, replay_id: bytes | None
    ) -> AsyncIterator[ChangeBatch]:
        metadata = await self._metadata(org)
        asks: asyncio.Queue[pb.FetchRequest | None] = asyncio.Queue()
        await asks.put(
            pb.FetchRequest(
                topic_name=channel,
                replay_preset=pb.ReplayPreset.CUSTOM if replay_id else pb.ReplayPreset.LATEST,
                replay_id=replay_id or b"",
                num_requested=BATCH,
            )
        )

        async def requests() -> AsyncIterator[pb.FetchRequest]:
            while (ask := await asks.get()) is not None:
                yield ask

        call = self._stub().Subscribe(requests(), metadata=metadata)
        try:
            # Accepted (headers received): the stream stands before its first event.
            await call.initial_metadata()
            yield ChangeBatch()
            async for response in call:
                batch = []
                for event in response.events:
                    try:
                        schema = await self._schema(event.event.schema_id, metadata)
                        batch.append(decode_event(channel, event, schema))
                    except (ValueError, KeyError, EOFError, grpc.aio.AioRpcError) as error:
                        # Unreadable (an unknown schema, a malformed payload): said so, and
                        # the org synced in full, so nothing it meant is lost.
                        log.warning("%s %s: unreadable change event: %s", org, channel, error)
                        batch.append(
                            ChangeEvent(channel, event.replay_id, "", "GAP_UNREADABLE", ())
                        )
                if response.pending_num_requested < BATCH // 2:
                    await asks.put(pb.FetchRequest(num_requested=BATCH))
                yield ChangeBatch(batch, response.latest_replay_id)
        except grpc.aio.AioRpcError as error:
            trailers = dict(error.trailing_metadata() or ())
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT and _REPLAY_INVALID in str(
                trailers.get("error-code", "")
            ):
                raise ReplayTooOld(f"{channel}: {error.details()}") from None
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                await self._metadata(org, renew=True)  # the next try logs in again
            raise
        finally:
            await asks.put(None)
            call.cancel()
