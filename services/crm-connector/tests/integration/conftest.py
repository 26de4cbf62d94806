from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_crm_connector.adapters.store import SqlOrgStore
from concord_crm_connector.api.servicer import CrmConnectorServicer
from concord_crm_connector.domain.service import CrmConnector
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import serving_in_process


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
async def stub(tmp_path: Path) -> AsyncIterator[pb_grpc.CrmConnectorServiceStub]:
    """The real servicer on SQLite behind a real server on port 0, through a real channel."""
    engine = create_engine(f"sqlite:///{tmp_path}/api.db")
    await migrate(engine, MIGRATIONS)
    store = SqlOrgStore(engine, SecretBox(Fernet.generate_key()))
    servicer = CrmConnectorServicer(CrmConnector(store, salesforce=None), budget_share=0.5)
    try:
        async with serving_in_process(
            "crm-connector",
            SERVICE_NAME,
            lambda s: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, s),
        ) as chan:
            yield pb_grpc.CrmConnectorServiceStub(chan)
    finally:
        await engine.dispose()
