"""Salesforce → Concord in seconds (issue #19): an edit saved in Salesforce to its
`concord.crm.changed` hint, through the emulator's Pub/Sub API and crm-connector's change
streams, on a real nats-server. Printed, in one run:

- edit → hint latency p50/p99 over 200 edits made as a person (REST, not Concord), each edit
  timed from the person's request to the hint naming its record (target p99 ≤ 3 s; the schedule
  alone: up to 30 minutes);
- hints caused by 200 of Concord's own writes (target 0).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from concord.events.v1 import events_pb2
from concord_crm_connector.adapters.hints import NatsHints, NatsOrgLeases
from concord_crm_connector.adapters.pubsub import PubSubSource
from concord_crm_connector.adapters.salesforce import SalesforceOptions, SalesforceOrgs
from concord_crm_connector.adapters.store import SqlOrgStore, SqlReplayStore
from concord_crm_connector.changes.model import StreamMode
from concord_crm_connector.changes.streams import ChangeStreams
from concord_crm_connector.domain.model import AuthFlow, ConnectionUpdate
from concord_events import EventBus, Topology, crm_changed
from concord_salesforce_emulator.app import Running, running_in_thread
from concord_salesforce_emulator.server import Settings as EmulatorSettings
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import NatsServer

pytestmark = pytest.mark.integration

EDITS = 200
EVENTS = "/data/EventChangeEvent"
MIGRATIONS = "concord_crm_connector.adapters.migrations"


class Owners:
    def __init__(self, store: SqlOrgStore, salesforce: SalesforceOrgs) -> None:
        self.store = store
        self.salesforce = salesforce

    async def owners(self, org: str, ids_by_type: Mapping[str, Sequence[str]]) -> dict[str, str]:
        connection = await self.store.get(org)
        assert connection is not None
        return await self.salesforce.owners(connection, ids_by_type)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Running]:
    with running_in_thread(tmp_path / "salesforce", EmulatorSettings(), demo=True) as running:
        yield running


def _rest(emulator: Running, *, concord: bool) -> tuple[requests.Session, str]:
    settings = emulator.emulator.settings
    http = requests.Session()
    http.trust_env = False
    http.verify = str(emulator.ca_cert)
    token = http.post(
        f"{emulator.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "username": settings.username,
            "password": settings.password,
        },
        timeout=10,
    ).json()
    http.headers["Authorization"] = f"Bearer {token['access_token']}"
    if concord:
        http.headers["Sforce-Call-Options"] = "client=concord"
    return http, f"{emulator.url}/services/data/v62.0/sobjects/Event"


@pytest.fixture
async def streaming(
    emulator: Running, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[EventBus]:
    engine = create_engine(f"sqlite:///{tmp_path}/crm.db")
    await migrate(engine, MIGRATIONS)
    store = SqlOrgStore(engine, SecretBox(Fernet.generate_key()))
    settings = emulator.emulator.settings
    await store.upsert(
        ConnectionUpdate(
            org="demo",
            login_url=emulator.url,
            auth_flow=AuthFlow.PASSWORD,
            client_id=settings.client_id,
            username=settings.username,
            api_version="62.0",
            secret=json.dumps(
                {"client_secret": settings.client_secret, "password": settings.password}
            ).encode(),
        )
    )
    salesforce = SalesforceOrgs(store, SalesforceOptions(ca_bundle=str(emulator.ca_cert)))
    bus = await EventBus.connect(nats_server.url, "bench", topology=Topology(lease_ttl_seconds=5))
    await bus.ensure_topology()
    source = PubSubSource(
        store, salesforce, emulator.pubsub_addr, root_certificates=emulator.ca_cert.read_bytes()
    )
    streams = ChangeStreams(
        store.connected,
        source,
        SqlReplayStore(engine),
        Owners(store, salesforce),
        NatsHints(bus),
        NatsOrgLeases(bus, "bench"),
        channels=[EVENTS],
        rescan_seconds=1.0,
    )
    await streams.start()
    async with asyncio.timeout(20):
        while (state := streams.state("demo")) is None or state.mode is not StreamMode.STREAMING:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    try:
        yield bus
    finally:
        await streams.stop()
        await source.close()
        await bus.close()
        salesforce.close()
        await engine.dispose()


def _event(subject: str) -> dict[str, Any]:
    return {
        "Subject": subject,
        "StartDateTime": "2026-06-01T09:00:00.000+0000",
        "EndDateTime": "2026-06-01T10:00:00.000+0000",
    }


async def test_bench_edit_to_hint_latency(emulator: Running, streaming: EventBus) -> None:
    person, url = _rest(emulator, concord=False)
    ours, _ = _rest(emulator, concord=True)
    latencies: list[float] = []
    concord_hints = 0
    async with streaming.watch(crm_changed("demo")) as watch:
        # Concord's own writes first: none may come back as a hint.
        for n in range(EDITS):
            answer = await asyncio.to_thread(ours.post, url, json=_event(f"ours {n}"), timeout=10)
            assert answer.status_code == 201, answer.text
        marker = await asyncio.to_thread(person.post, url, json=_event("marker"), timeout=10)
        marker_id = marker.json()["id"]
        async with asyncio.timeout(30):
            while True:
                hint = (await watch.next()).parse(events_pb2.CrmChanged)
                if marker_id in hint.ids:
                    break
                concord_hints += 1
        for n in range(EDITS):
            # Timed from the request, not the answer: the hint may beat the HTTP answer back.
            saved = time.perf_counter()
            answer = await asyncio.to_thread(person.post, url, json=_event(f"edit {n}"), timeout=10)
            record_id = answer.json()["id"]
            async with asyncio.timeout(30):
                while record_id not in (await watch.next()).parse(events_pb2.CrmChanged).ids:
                    pass
            latencies.append(time.perf_counter() - saved)
    person.close()
    ours.close()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"\nCDC edit → hint over {EDITS} edits: p50 {cuts[49] * 1000:.0f} ms,"
        f" p99 {cuts[98] * 1000:.0f} ms (target p99 ≤ 3,000 ms; the schedule alone: 30 min);"
        f" hints from {EDITS} of Concord's own writes: {concord_hints} (target 0)"
    )
    assert concord_hints == 0
