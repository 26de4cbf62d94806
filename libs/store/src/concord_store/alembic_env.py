"""The body of every service's Alembic `env.py`::

from concord_store import alembic_env
from concord_linker.adapters.tables import metadata
alembic_env.run(metadata)
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from concord_store.migrations import CONNECTION, VERSION_TABLE

__all__ = ["run"]


def run(target_metadata: MetaData | None) -> None:
    """Run the migrations over the connection :func:`concord_store.migrate` opened."""
    connection = context.config.attributes.get(CONNECTION)
    if connection is None:
        raise RuntimeError("run migrations with concord_store.migrate(), not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=context.config.attributes[VERSION_TABLE],
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
