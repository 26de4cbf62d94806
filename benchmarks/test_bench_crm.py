"""Writing Events through crm-connector against the Salesforce emulator, and what it costs.

The emulator runs as its own process (as under `make up`), so it does not share an
interpreter with the connector. Printed, in one run:
- API calls used to write 1,000 (and 10,000) new Events vs the floor: 1 per 200 records with
  Collections, 1 per 1,000 with Composite (5 collections a call);
- records/s through the connector (gRPC → Composite) vs the emulator's raw Collections
  throughput, measured by direct simple-salesforce Collections calls in the same run;
- API calls per object type for a ListChanges session with no changes.
Targets (issue #3): ≤ 1.1 times the Composite floor, ≥ 50% of raw throughput, 1 call per object.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from google.protobuf import struct_pb2
from simple_salesforce.api import Salesforce

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_crm_connector.adapters.salesforce import SalesforceOptions, SalesforceOrgs
from concord_crm_connector.adapters.store import SqlOrgStore, SqlStreamReports
from concord_crm_connector.api.servicer import CrmConnectorServicer
from concord_crm_connector.changes.status import StreamStatus
from concord_crm_connector.domain.service import CrmConnector
from concord_salesforce_emulator.certs import tls_files
from concord_salesforce_emulator.server import Settings as EmulatorSettings
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import free_port, serving_in_process

pytestmark = pytest.mark.integration

TOKEN = "POST /services/oauth2/token"
START = datetime(2026, 6, 1, 9, tzinfo=UTC)
# 10,000 runs only when 1,000 shows it fits in this many seconds.
LARGE_RUN_BUDGET_SECONDS = 60.0


@dataclass
class Emulator:
    url: str
    ca_cert: Path
    admin: requests.Session

    def calls(self) -> dict[str, int]:
        body = self.admin.get(f"{self.url}/__admin/calls").json()
        return {k: n for k, n in body["calls"].items() if k != TOKEN}

    def reset(self) -> None:
        self.admin.post(f"{self.url}/__admin/reset").raise_for_status()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    port = free_port()
    data = tmp_path / "salesforce"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concord_salesforce_emulator",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--seed",
            "demo",
            "--daily-api-limit",
            "5000000",
        ],
        stderr=subprocess.DEVNULL,
    )
    admin = requests.Session()
    admin.trust_env = False
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.verify = str(tls_files(data).ca_cert)
                if admin.get(f"{url}/__admin/health", timeout=1).ok:
                    break
            except (requests.RequestException, OSError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the Salesforce emulator did not start")
            time.sleep(0.1)
        yield Emulator(url, tls_files(data).ca_cert, admin)
    finally:
        admin.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def connector(
    emulator: Emulator, tmp_path: Path
) -> AsyncIterator[pb_grpc.CrmConnectorServiceStub]:
    engine = create_engine(f"sqlite:///{tmp_path}/crm.db")
    await migrate(engine, MIGRATIONS)
    store = SqlOrgStore(engine, SecretBox(Fernet.generate_key()))
    salesforce = SalesforceOrgs(store, SalesforceOptions(ca_bundle=str(emulator.ca_cert)))
    # Change streams are #19's own benchmark (test_bench_cdc.py); here they are off.
    streams = StreamStatus(SqlStreamReports(engine), enabled=False, silent_after=timedelta(0))
    servicer = CrmConnectorServicer(
        CrmConnector(store, salesforce), budget_share=0.5, streams=streams
    )
    defaults = EmulatorSettings()
    try:
        async with serving_in_process(
            "crm-connector",
            SERVICE_NAME,
            lambda s: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, s),
        ) as chan:
            stub = pb_grpc.CrmConnectorServiceStub(chan)
            secret = {"client_secret": defaults.client_secret, "password": defaults.password}
            await stub.UpsertOrgConnection(
                pb.UpsertOrgConnectionRequest(
                    connection=pb.OrgConnection(
                        name="orgs/bench/connection",
                        login_url=emulator.url,
                        auth_flow=pb.AUTH_FLOW_PASSWORD,
                        client_id=defaults.client_id,
                        username=defaults.username,
                        secret=json.dumps(secret).encode(),
                    )
                )
            )
            yield stub
    finally:
        salesforce.close()
        await engine.dispose()


def event_fields(n: int) -> dict[str, Any]:
    start = START + timedelta(minutes=30 * n)
    return {
        "Subject": f"Benchmark meeting {n}",
        "StartDateTime": start.isoformat(),
        "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
        "Location": "Room 1",
    }


def login(emulator: Emulator) -> Salesforce:
    """simple-salesforce as the emulator's admin, on a session of its own."""
    defaults = EmulatorSettings()
    http = requests.Session()
    http.trust_env = False
    http.verify = str(emulator.ca_cert)
    token = http.post(
        f"{emulator.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": defaults.client_id,
            "client_secret": defaults.client_secret,
            "username": defaults.username,
            "password": defaults.password,
        },
    ).json()
    return Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=http,
        version="62.0",
    )


def raw_collections(emulator: Emulator, count: int) -> float:
    """Records/s of direct simple-salesforce Collections upserts, 200 a call, in sequence."""
    sf = login(emulator)
    http = sf.session
    prefix = uuid.uuid4().hex[:8]
    records = [
        {
            "attributes": {"type": "Event"},
            "Concord_Link_Id__c": f"raw-{prefix}-{n}",
            **event_fields(n),
        }
        for n in range(count)
    ]
    began = time.perf_counter()
    for start in range(0, count, 200):
        results = sf.restful(
            "composite/sobjects/Event/Concord_Link_Id__c",
            method="PATCH",
            json={"allOrNone": False, "records": records[start : start + 200]},
        )
        assert results is not None
        assert all(r["success"] for r in results)
    elapsed = time.perf_counter() - began
    http.close()
    return count / elapsed


async def write_through_connector(
    stub: pb_grpc.CrmConnectorServiceStub, count: int
) -> tuple[float, int]:
    """(seconds, records) writing `count` new Events in ApplyBatch requests of 1,000."""
    prefix = uuid.uuid4().hex[:8]
    writes = []
    for n in range(count):
        fields = struct_pb2.Struct()
        fields.update(event_fields(n))
        writes.append(
            pb.CrmWrite(
                operation=pb.CRM_WRITE_OPERATION_UPSERT,
                sobject_type="Event",
                link_id=f"bench-{prefix}-{n}",
                fields=fields,
            )
        )
    began = time.perf_counter()
    written = 0
    for start in range(0, count, 1000):
        response = await stub.ApplyBatch(
            pb.ApplyBatchRequest(org="orgs/bench", writes=writes[start : start + 1000])
        )
        written += sum(1 for r in response.results if r.status == res.WRITE_STATUS_OK)
    return time.perf_counter() - began, written


async def test_bench_crm_writes_and_quiet_sessions(
    emulator: Emulator, connector: pb_grpc.CrmConnectorServiceStub
) -> None:
    print()
    print("crm-connector against the Salesforce emulator (separate process)")
    print(
        f"{'records':>8} {'calls':>6} {'floor C/Comp':>13} {'vs floor':>9} "
        f"{'conn rec/s':>11} {'raw rec/s':>10} {'ratio':>6}"
    )
    sizes = [1000, 10000]
    for size in sizes:
        raw = await asyncio.to_thread(raw_collections, emulator, min(size, 2000))
        emulator.reset()
        seconds, written = await write_through_connector(connector, size)
        calls = sum(emulator.calls().values())
        assert written == size
        collections_floor = math.ceil(size / 200)
        composite_floor = math.ceil(size / 1000)
        rate = size / seconds
        print(
            f"{size:>8} {calls:>6} {collections_floor:>6}/{composite_floor:<6} "
            f"{calls / composite_floor:>8.2f}x {rate:>11.0f} {raw:>10.0f} {rate / raw:>6.2f}"
        )
        if size == sizes[0] and seconds * 10 > LARGE_RUN_BUDGET_SECONDS:
            print(f"(10,000 skipped: 1,000 took {seconds:.1f} s)")
            break
    # A quiet session: list each object to its end, then once more with nothing changed.
    objects = ["Event", "Task", "Contact"]
    cursors: dict[str, str] = {}
    for name in objects:
        token = ""
        while True:
            page = await connector.ListChanges(
                pb.ListChangesRequest(
                    org="orgs/bench",
                    sobject_type=name,
                    cursor=res.Cursor(collection=name, token=token),
                    fields=["Concord_Link_Id__c"] if name != "Contact" else ["Email"],
                )
            )
            token = page.next_cursor.token
            if not page.has_more:
                break
        cursors[name] = token
    emulator.reset()
    for name in objects:
        page = await connector.ListChanges(
            pb.ListChangesRequest(
                org="orgs/bench",
                sobject_type=name,
                cursor=res.Cursor(collection=name, token=cursors[name]),
                fields=["Concord_Link_Id__c"] if name != "Contact" else ["Email"],
            )
        )
        assert not page.changes
    quiet = sum(emulator.calls().values())
    print(
        f"no-change session: {quiet} calls for {len(objects)} objects "
        f"= {quiet / len(objects):.2f} per object (floor 1)"
    )


async def test_bench_crm_guarded_updates(
    emulator: Emulator, connector: pb_grpc.CrmConnectorServiceStub
) -> None:
    """Updates that carry the version they were planned against (issue #17): what closing the
    window between the version check and the write costs, against the unguarded floor."""
    size = 1000
    prefix = uuid.uuid4().hex[:8]
    creates = []
    for n in range(size):
        fields = struct_pb2.Struct()
        fields.update(event_fields(n))
        creates.append(
            pb.CrmWrite(
                operation=pb.CRM_WRITE_OPERATION_UPSERT,
                sobject_type="Event",
                link_id=f"guard-{prefix}-{n}",
                fields=fields,
            )
        )
    created = await connector.ApplyBatch(pb.ApplyBatchRequest(org="orgs/bench", writes=creates))
    record_ids = [r.id for r in created.results]
    stamps = {}
    for start in range(0, size, 200):
        listed = await connector.GetRecords(
            pb.GetRecordsRequest(
                org="orgs/bench",
                sobject_type="Event",
                ids=record_ids[start : start + 200],
                fields=["SystemModstamp"],
            )
        )
        stamps.update({r.id: r.system_modstamp for r in listed.records})
    updates = []
    for n, record_id in enumerate(record_ids):
        fields = struct_pb2.Struct()
        fields.update({"Subject": f"Moved {n}"})
        write = pb.CrmWrite(
            operation=pb.CRM_WRITE_OPERATION_UPDATE,
            sobject_type="Event",
            id=record_id,
            link_id=f"guard-{prefix}-{n}",
            fields=fields,
        )
        write.expected_system_modstamp.CopyFrom(stamps[record_id])
        updates.append(write)
    emulator.reset()
    began = time.perf_counter()
    response = await connector.ApplyBatch(pb.ApplyBatchRequest(org="orgs/bench", writes=updates))
    seconds = time.perf_counter() - began
    assert all(r.status == res.WRITE_STATUS_OK for r in response.results)
    calls = sum(emulator.calls().values())
    # A conditional update is one sObject Rows PATCH: at most 25 to a Composite call.
    conditional_floor = math.ceil(size / 25)
    collections_floor = math.ceil(size / 200)
    composite_floor = math.ceil(size / 1000)
    print()
    print(
        f"{size} guarded updates (version query per 200 + If-Unmodified-Since PATCHes, 25 per "
        f"Composite): {calls} calls = {calls / conditional_floor:.3f} x the conditional floor "
        f"({conditional_floor}); unguarded floor {collections_floor}/{composite_floor} "
        f"(Collections/Composite); {size / seconds:.0f} rec/s"
    )
