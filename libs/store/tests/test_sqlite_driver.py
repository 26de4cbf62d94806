"""SQLite engines go to aiosqlite's thread once per statement (concord_store.sqlite_driver)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiosqlite
import pytest
import pytest_asyncio
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_store import create_engine

pytestmark = pytest.mark.integration

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", String, nullable=False, unique=True),
)


@pytest_asyncio.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(sqlite_url)
    async with made.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield made
    await made.dispose()


@contextmanager
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The calls sent to aiosqlite's connection thread, by name."""
    sent: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object) -> object:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args)  # type: ignore[no-untyped-call]

    with monkeypatch.context() as patch:
        patch.setattr(aiosqlite.Connection, "_execute", counted)
        yield sent


async def test_a_read_takes_one_trip_and_no_rollback(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(notes), [{"body": "a"}, {"body": "b"}])
    with trips(monkeypatch) as sent:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(notes.c.body).order_by("body"))).all()
    assert [r.body for r in rows] == ["a", "b"]
    # SQLAlchemy's adapter: cursor, execute, fetchall, close, and a rollback of nothing.
    assert sent == ["_statement"]


async def test_a_write_is_committed_in_one_more_trip_and_reports_what_it_did(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trips(monkeypatch) as sent:
        async with engine.begin() as connection:
            inserted = await connection.execute(insert(notes).values(body="a"))
            assert inserted.inserted_primary_key == (1,)
            many = await connection.execute(insert(notes), [{"body": "b"}, {"body": "c"}])
            assert many.rowcount == 2
            changed = await connection.execute(
                update(notes).where(notes.c.body != "a").values(body=notes.c.body + "!")
            )
            assert changed.rowcount == 2
    assert sent == ["_statement", "_statements", "_statement", "commit"]
    async with engine.connect() as connection:
        bodies = (await connection.execute(select(notes.c.body).order_by("id"))).scalars()
        assert list(bodies) == ["a", "b!", "c!"]


async def test_a_write_left_uncommitted_is_rolled_back(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(insert(notes).values(body="never"))
        # No commit: closing the connection rolls the write back (and frees the lock).
    async with engine.begin() as connection:
        await connection.execute(insert(notes).values(body="kept"))
    async with engine.connect() as connection:
        assert (await connection.execute(select(notes.c.body))).scalars().all() == ["kept"]


async def test_errors_and_streamed_results_are_sqlalchemys(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(notes).values(body="a"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(insert(notes).values(body="a"))
    async with engine.connect() as connection:
        streamed = await connection.stream(text("SELECT body FROM notes"))
        assert [row.body async for row in streamed] == ["a"]
