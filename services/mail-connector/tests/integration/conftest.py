from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_mail_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.api.servicer import MailConnectorServicer
from concord_mail_connector.domain.service import MailConnector
from concord_rpc import GrpcService, channel
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import PostgresCluster


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/mail-connector.db"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database("mail")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mail-connector.db"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
def cipher() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def store(engine: AsyncEngine, cipher: SecretBox) -> SqlAccountStore:
    return SqlAccountStore(engine, cipher)


@pytest.fixture
async def stub(sqlite_url: str) -> AsyncIterator[pb_grpc.MailConnectorServiceStub]:
    """The real servicer on SQLite behind a real server on port 0, through a real channel."""
    engine = create_engine(sqlite_url)
    await migrate(engine, MIGRATIONS)
    store = SqlAccountStore(engine, SecretBox(Fernet.generate_key()))
    servicer = MailConnectorServicer(MailConnector(store, providers={}))
    server = GrpcService("mail-connector", port=0)
    server.add_service(
        SERVICE_NAME, lambda s: pb_grpc.add_MailConnectorServiceServicer_to_server(servicer, s)
    )
    port = await server.start()
    try:
        async with channel(f"127.0.0.1:{port}", retry=False) as chan:
            yield pb_grpc.MailConnectorServiceStub(chan)
    finally:
        await server.shutdown()
        await engine.dispose()
