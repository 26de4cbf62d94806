from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_crm_connector.adapters.salesforce import SalesforceOptions, SalesforceOrgs
from concord_crm_connector.adapters.store import SqlOrgStore, SqlStreamReports
from concord_crm_connector.api.servicer import CrmConnectorServicer
from concord_crm_connector.changes.status import StreamStatus
from concord_crm_connector.domain.service import CrmConnector
from concord_salesforce_emulator.app import Running, running_in_thread
from concord_salesforce_emulator.server import Settings as EmulatorSettings
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import serving_in_process

SILENT_AFTER = timedelta(seconds=35)


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
def cipher() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def store(engine: AsyncEngine, cipher: SecretBox) -> SqlOrgStore:
    return SqlOrgStore(engine, cipher)


@pytest.fixture
async def api_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path}/api.db")
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def stub(api_engine: AsyncEngine) -> AsyncIterator[pb_grpc.CrmConnectorServiceStub]:
    """The real servicer on SQLite behind a real server on port 0, through a real channel."""
    store = SqlOrgStore(api_engine, SecretBox(Fernet.generate_key()))
    servicer = CrmConnectorServicer(
        CrmConnector(store, salesforce=None), budget_share=0.5, streams=_status(api_engine)
    )
    async with serving_in_process(
        "crm-connector",
        SERVICE_NAME,
        lambda s: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, s),
    ) as chan:
        yield pb_grpc.CrmConnectorServiceStub(chan)


# ---- against the Salesforce emulator ----------------------------------------------------------


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Running]:
    """The Salesforce emulator, seeded with the demo org, on a free port of 127.0.0.1."""
    with running_in_thread(tmp_path / "salesforce", EmulatorSettings(), demo=True) as running:
        yield running


TOKEN = "POST /services/oauth2/token"


@dataclass
class Org:
    """The connector wired to one emulator, through a real gRPC channel."""

    stub: pb_grpc.CrmConnectorServiceStub
    emulator: Running
    admin: requests.Session
    salesforce: SalesforceOrgs
    store: SqlOrgStore

    def admin_post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.admin.post(f"{self.emulator.url}/__admin/{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    def all_calls(self) -> dict[str, int]:
        response = self.admin.get(f"{self.emulator.url}/__admin/calls")
        response.raise_for_status()
        return dict(response.json()["calls"])

    def calls(self) -> dict[str, int]:
        """API calls per endpoint; logins are not API calls (the daily limit ignores them)."""
        return {k: n for k, n in self.all_calls().items() if TOKEN not in k}

    def logins(self) -> int:
        return self.all_calls().get(TOKEN, 0)

    def api_calls(self) -> int:
        return sum(self.calls().values())

    def fault(self, kind: str, **options: Any) -> None:
        self.admin_post("faults", {"kind": kind, **options})


def connection_for(emulator: Running, org: str = "demo", password: str = "") -> pb.OrgConnection:
    settings = emulator.emulator.settings
    secret = {
        "client_secret": settings.client_secret,
        "password": password or settings.password,
    }
    return pb.OrgConnection(
        name=f"orgs/{org}/connection",
        login_url=emulator.url,
        auth_flow=pb.AUTH_FLOW_PASSWORD,
        client_id=settings.client_id,
        username=settings.username,
        secret=json.dumps(secret).encode(),
    )


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def org(emulator: Running, tmp_path: Path) -> AsyncIterator[Org]:
    """A connector whose org `demo` is connected to the emulator (password flow)."""
    engine = create_engine(f"sqlite:///{tmp_path}/sf.db")
    await migrate(engine, MIGRATIONS)
    store = SqlOrgStore(engine, SecretBox(Fernet.generate_key()))
    salesforce = SalesforceOrgs(
        store,
        SalesforceOptions(ca_bundle=str(emulator.ca_cert), retry_base_seconds=0.01),
        sleep=_no_sleep,
    )
    servicer = CrmConnectorServicer(
        CrmConnector(store, salesforce), budget_share=0.5, streams=_status(engine)
    )
    admin = requests.Session()
    admin.trust_env = False
    admin.verify = str(emulator.ca_cert)
    try:
        async with serving_in_process(
            "crm-connector",
            SERVICE_NAME,
            lambda s: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, s),
        ) as chan:
            stub = pb_grpc.CrmConnectorServiceStub(chan)
            await stub.UpsertOrgConnection(
                pb.UpsertOrgConnectionRequest(connection=connection_for(emulator))
            )
            found = Org(stub, emulator, admin, salesforce, store)
            found.admin_post("reset")
            yield found
    finally:
        salesforce.close()
        admin.close()
        await engine.dispose()


def _status(engine: AsyncEngine) -> StreamStatus:
    return StreamStatus(SqlStreamReports(engine), enabled=True, silent_after=SILENT_AFTER)
