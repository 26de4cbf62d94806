"""Change Data Capture through the Pub/Sub API, read as a client of a real org reads it: the
generated `eventbus.v1` stubs over TLS, the session as `accesstoken`/`instanceurl`/`tenantid`
metadata, each payload Avro-decoded with the schema `GetSchema` gives for its id."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import fastavro
import grpc
import pytest
import requests
from eventbus.v1 import pubsub_api_pb2 as pb
from eventbus.v1 import pubsub_api_pb2_grpc as pb_grpc

from concord_salesforce_emulator.app import Running

from .conftest import TypedSalesforce

EVENTS = "/data/EventChangeEvent"
START = "2026-03-02T09:00:00.000+0000"
END = "2026-03-02T10:00:00.000+0000"


class Client:
    """A Pub/Sub API client: one channel, schemas cached by id."""

    def __init__(self, emulator: Running, token: dict[str, Any]) -> None:
        credentials = grpc.ssl_channel_credentials(emulator.ca_cert.read_bytes())
        self.channel = grpc.aio.secure_channel(emulator.pubsub_addr, credentials)
        self.stub = pb_grpc.PubSubStub(self.channel)
        org_id = token["id"].rstrip("/").split("/")[-2]
        self.metadata = (
            ("accesstoken", token["access_token"]),
            ("instanceurl", token["instance_url"]),
            ("tenantid", org_id),
        )
        self.schemas: dict[str, Any] = {}

    async def decode(self, event: pb.ConsumerEvent) -> dict[str, Any]:
        schema_id = event.event.schema_id
        if schema_id not in self.schemas:
            info = await self.stub.GetSchema(
                pb.SchemaRequest(schema_id=schema_id), metadata=self.metadata
            )
            self.schemas[schema_id] = fastavro.parse_schema(json.loads(info.schema_json))
        decoded = fastavro.schemaless_reader(
            io.BytesIO(event.event.payload), self.schemas[schema_id]
        )
        assert isinstance(decoded, dict)
        return decoded

    async def fetch(
        self,
        count: int,
        *,
        replay: pb.ReplayPreset.ValueType = pb.ReplayPreset.EARLIEST,
        replay_id: bytes = b"",
        topic: str = EVENTS,
        more: list[int] | None = None,
    ) -> list[pb.FetchResponse]:
        """Responses until `count` events came (each FetchRequest asks for what `more` says)."""
        asks = [count] if more is None else more
        requests_ = asyncio.Queue[pb.FetchRequest | None]()
        await requests_.put(
            pb.FetchRequest(
                topic_name=topic, replay_preset=replay, replay_id=replay_id, num_requested=asks[0]
            )
        )
        for n in asks[1:]:
            await requests_.put(pb.FetchRequest(num_requested=n))

        async def outgoing() -> AsyncIterator[pb.FetchRequest]:
            while (request := await requests_.get()) is not None:
                yield request

        responses: list[pb.FetchResponse] = []
        got = 0
        call = self.stub.Subscribe(outgoing(), metadata=self.metadata)
        try:
            async with asyncio.timeout(10):
                async for response in call:
                    responses.append(response)
                    got += len(response.events)
                    if got >= count:
                        break
        finally:
            await requests_.put(None)  # the request stream ends, as a client closing it
            call.cancel()
            await asyncio.sleep(0)
        return responses

    async def close(self) -> None:
        await self.channel.close()


@pytest.fixture
async def client(emulator: Running, token: dict[str, Any]) -> AsyncIterator[Client]:
    running = Client(emulator, token)
    yield running
    await running.close()


def _event(sf: TypedSalesforce, subject: str) -> str:
    created = sf.Event.create(
        {"Subject": subject, "StartDateTime": START, "EndDateTime": END},
        headers={"Sforce-Call-Options": "client=somebody"},
    )
    return str(created["id"])


async def test_writes_become_change_events_with_salesforces_header(
    client: Client, sf: TypedSalesforce
) -> None:
    event_id = await asyncio.to_thread(_event, sf, "Kick-off")
    await asyncio.to_thread(sf.Event.update, event_id, {"Subject": "Kick-off (moved)"})
    await asyncio.to_thread(sf.Event.delete, event_id)
    responses = await client.fetch(3)
    events = [e for r in responses for e in r.events]
    decoded = [await client.decode(e) for e in events]
    headers = [d["ChangeEventHeader"] for d in decoded]
    assert [h["changeType"] for h in headers] == ["CREATE", "UPDATE", "DELETE"]
    assert {tuple(h["recordIds"]) for h in headers} == {(event_id,)}
    assert all(h["entityName"] == "Event" for h in headers)
    assert headers[0]["changeOrigin"] == "com/salesforce/api/rest/62.0;client=somebody"
    assert decoded[0]["Subject"] == "Kick-off"
    assert "Subject" in headers[1]["changedFields"]
    assert decoded[1]["Subject"] == "Kick-off (moved)"
    # An update carries only what changed.
    assert decoded[1]["Location"] is None
    replays = [int.from_bytes(e.replay_id, "big") for e in events]
    assert replays == sorted(replays)
    assert len(set(replays)) == 3


async def test_flow_control_and_resuming_from_a_replay_id(
    client: Client, sf: TypedSalesforce
) -> None:
    for n in range(5):
        await asyncio.to_thread(_event, sf, f"Meeting {n}")
    first = await client.fetch(2)
    assert sum(len(r.events) for r in first) == 2  # never more than asked for
    resume_from = [e for r in first for e in r.events][-1].replay_id
    rest = await client.fetch(3, replay=pb.ReplayPreset.CUSTOM, replay_id=resume_from)
    subjects = [(await client.decode(e))["Subject"] for r in rest for e in r.events]
    assert subjects == ["Meeting 2", "Meeting 3", "Meeting 4"]


async def test_concords_writes_say_so_in_change_origin(
    client: Client, emulator: Running, token: dict[str, Any], http: requests.Session
) -> None:
    response = http.post(
        f"{emulator.url}/services/data/v62.0/sobjects/Contact",
        json={"LastName": "Lee"},
        headers={
            "Authorization": f"Bearer {token['access_token']}",
            "Sforce-Call-Options": "client=concord",
        },
    )
    assert response.status_code == 201
    (only,) = [e for r in await client.fetch(1, topic="/data/ContactChangeEvent") for e in r.events]
    header = (await client.decode(only))["ChangeEventHeader"]
    assert header["changeOrigin"] == "com/salesforce/api/rest/62.0;client=concord"


async def test_gaps_overflows_and_expired_replay_ids(
    client: Client, emulator: Running, sf: TypedSalesforce, http: requests.Session
) -> None:
    await asyncio.to_thread(_event, sf, "Before")
    (before,) = [e for r in await client.fetch(1) for e in r.events]
    gap = http.post(
        f"{emulator.url}/__admin/pubsub/gap",
        json={"sobject": "Event", "change_type": "GAP_OVERFLOW", "record_ids": []},
    )
    assert gap.status_code == 200
    later = await client.fetch(1, replay=pb.ReplayPreset.CUSTOM, replay_id=before.replay_id)
    (overflow,) = [e for r in later for e in r.events]
    assert (await client.decode(overflow))["ChangeEventHeader"]["changeType"] == "GAP_OVERFLOW"
    assert http.post(f"{emulator.url}/__admin/pubsub/expire").status_code == 200
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.fetch(1, replay=pb.ReplayPreset.CUSTOM, replay_id=before.replay_id)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = dict(refused.value.trailing_metadata() or ())
    assert trailers["error-code"].endswith("replayid.validation.failed")


async def test_a_bad_session_or_tenant_is_refused(client: Client) -> None:
    client.metadata = (("accesstoken", "00Dx!forged"), *client.metadata[1:])
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await client.stub.GetTopic(pb.TopicRequest(topic_name=EVENTS), metadata=client.metadata)
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_topics_name_their_schema(client: Client) -> None:
    topic = await client.stub.GetTopic(pb.TopicRequest(topic_name=EVENTS), metadata=client.metadata)
    assert topic.can_subscribe
    assert not topic.can_publish
    schema = await client.stub.GetSchema(
        pb.SchemaRequest(schema_id=topic.schema_id), metadata=client.metadata
    )
    parsed = json.loads(schema.schema_json)
    assert parsed["name"] == "EventChangeEvent"
    assert parsed["fields"][0]["name"] == "ChangeEventHeader"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.stub.GetTopic(
            pb.TopicRequest(topic_name="/data/NoSuchChangeEvent"), metadata=client.metadata
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
