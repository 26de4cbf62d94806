from __future__ import annotations

import asyncio
import socket

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from concord_store import create_engine, migrate, normalize_url, ping, version_table


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@db/concord", "postgresql+asyncpg://u@db/concord"),
        ("postgres://u@db/concord", "postgresql+asyncpg://u@db/concord"),
        ("postgresql+asyncpg://u@db/concord", "postgresql+asyncpg://u@db/concord"),
        ("sqlite:///var/linker.db", "sqlite+aiosqlite:///var/linker.db"),
        ("sqlite+aiosqlite:///var/linker.db", "sqlite+aiosqlite:///var/linker.db"),
    ],
)
def test_urls_get_the_async_driver(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.unit
def test_each_service_has_its_own_version_table() -> None:
    assert version_table("concord_mail_connector.migrations") == "alembic_version_mail_connector"
    assert version_table("concord_linker.migrations") == "alembic_version_linker"


pytestmark = pytest.mark.integration


async def test_ping_answers(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await ping(engine)
    finally:
        await engine.dispose()


async def test_ping_fails_when_the_database_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{port}/none")
    try:
        with pytest.raises(ConnectionRefusedError):
            await ping(engine)
    finally:
        await engine.dispose()


async def test_sqlite_is_configured_for_concurrent_use(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as connection:
            pragma = {
                name: (await connection.execute(sa.text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000}


@pytest.mark.usefixtures("sample_migrations")
async def test_migrations_apply_once_and_again_without_change(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "concord_alpha.migrations")
        await migrate(engine, "concord_alpha.migrations")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            versions = (
                await connection.execute(sa.text("SELECT version_num FROM alembic_version_alpha"))
            ).all()
        assert {"alpha_mailbox", "alpha_session", "alembic_version_alpha"} <= tables
        assert "alembic_version" not in tables
        assert versions == [("0001",)]
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("sample_migrations")
async def test_foreign_keys_are_enforced(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine, "concord_alpha.migrations")
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    sa.text("INSERT INTO alpha_session (id, mailbox_id) VALUES (1, 42)")
                )
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("sample_migrations")
async def test_services_sharing_a_database_keep_separate_versions(database_url: str) -> None:
    # From a URL, as a service's __main__ may call it; the engine is disposed afterwards.
    await migrate(database_url, "concord_alpha.migrations")
    await migrate(database_url, "concord_beta.migrations")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            alpha = (await connection.execute(sa.text("SELECT * FROM alembic_version_alpha"))).all()
            beta = (await connection.execute(sa.text("SELECT * FROM alembic_version_beta"))).all()
            tables = await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert (alpha, beta) == ([("0001",)], [("b001",)])
    assert {"alpha_mailbox", "beta_link"} <= tables


@pytest.mark.usefixtures("sample_migrations")
async def test_replicas_migrating_postgresql_at_once_do_not_collide(postgres_url: str) -> None:
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(e, "concord_alpha.migrations") for e in engines))
    finally:
        for engine in engines:
            await engine.dispose()
