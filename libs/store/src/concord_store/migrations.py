"""Run a service's Alembic migrations at start, without an alembic.ini."""

from __future__ import annotations

import importlib.resources
import zlib

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_store.engine import create_engine

__all__ = ["migrate", "version_table"]

# Keys for concord_store.alembic_env, which reads them from Config.attributes.
CONNECTION = "concord_store.connection"
VERSION_TABLE = "concord_store.version_table"


def version_table(migrations: str) -> str:
    """`concord_mail_connector.migrations` -> `alembic_version_mail_connector`.

    One version table per service lets services share a PostgreSQL database without
    overwriting each other's migration state.
    """
    package = migrations.split(".", 1)[0]
    return "alembic_version_" + package.removeprefix("concord_")


async def migrate(engine_or_url: AsyncEngine | str, migrations: str) -> None:
    """Upgrade the database to the newest revision of the dotted package `migrations`.

    The package holds `env.py` (calling :func:`concord_store.alembic_env.run`) and `versions/`.
    Safe to run on every start and from several replicas at once.
    """
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    config = Config()
    config.set_main_option("script_location", str(importlib.resources.files(migrations)))
    config.attributes[VERSION_TABLE] = version_table(migrations)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together queue here; the first migrates, the rest find
                # the database at head. Released when this transaction ends.
                lock = zlib.crc32(config.attributes[VERSION_TABLE].encode())
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})
            await connection.run_sync(_upgrade, config)
    finally:
        if engine is not engine_or_url:
            await engine.dispose()


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes[CONNECTION] = connection
    command.upgrade(config, "head")
