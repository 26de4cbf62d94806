"""Finished sessions are pruned after their retention, and the reads the schedule makes every
tick and every push hint read the open and held sessions through their indexes, not the whole
history (issue #18, scale), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Select, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.names import new_session_id
from concord_reconciler.kernel.schema import sessions
from concord_reconciler.kernel.sql import to_us
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.sessions.adapters.scheduler import (
    ScheduleReader,
    held_sessions,
    open_sessions,
)
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.model import SessionState
from concord_store import create_engine, migrate
from concord_testing import PostgresCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RETENTION = timedelta(days=7)
KEPT = 25  # each mailbox's newest finished sessions, whatever their age


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        url = cluster.new_database("reconciler")
    engine = create_engine(url)
    await migrate(engine, "concord_reconciler.migrations")
    store = SqlStore(engine)
    for mailbox_id in ("busy", "quiet"):
        await store.insert_mailbox(
            MailboxRecord(
                mailbox_id=mailbox_id,
                org_id="acme",
                owner_user_id=mailbox_id,
                crm_user_id="005000000000001AAA",
                address=f"{mailbox_id}@example.com",
                provider=res.MAIL_PROVIDER_GRAPH,
            )
        )
    yield engine
    await engine.dispose()


async def _add(
    engine: AsyncEngine,
    mailbox_id: str,
    state: SessionState,
    ago: timedelta,
    *,
    code: str = "",
    retry_not_before: datetime | None = None,
) -> str:
    when = utcnow() - ago
    session_id = new_session_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(sessions).values(
                session_id=session_id,
                mailbox_id=mailbox_id,
                state=int(state),
                trigger=res.SESSION_TRIGGER_SCHEDULE,
                request_time_us=to_us(when),
                start_time_us=to_us(when) if state is not SessionState.QUEUED else None,
                end_time_us=to_us(when) if state.terminal else None,
                failure_code=code,
                retry_not_before_us=to_us(retry_not_before) if retry_not_before else None,
            )
        )
    return session_id


async def _ids(engine: AsyncEngine, mailbox_id: str) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.execute(
            select(sessions.c.session_id).where(sessions.c.mailbox_id == mailbox_id)
        )
        return set(found.scalars())


async def test_finished_sessions_past_their_retention_are_pruned_but_the_newest_and_open_kept(
    engine: AsyncEngine,
) -> None:
    outcomes = (SessionState.COMPLETED, SessionState.FAILED, SessionState.CANCELLED)
    # 40 finished sessions of 8 to 12 days ago, newest first, and two of the last hour.
    old = [
        await _add(engine, "busy", outcomes[n % 3], timedelta(days=8, hours=n * 2))
        for n in range(40)
    ]
    recent = [
        await _add(engine, "busy", SessionState.COMPLETED, timedelta(minutes=m)) for m in (5, 50)
    ]
    # Open sessions requested long ago stay whatever their age: they have not finished.
    running = await _add(engine, "busy", SessionState.RUNNING, timedelta(days=30))
    queued = await _add(engine, "busy", SessionState.QUEUED, timedelta(days=30))
    # An old failure whose throttled peer's retry-after is still ahead still holds the org.
    held = await _add(
        engine,
        "busy",
        SessionState.FAILED,
        timedelta(days=20),
        code="SALESFORCE_API_LIMIT",
        retry_not_before=utcnow() + timedelta(hours=1),
    )
    # A mailbox with fewer old sessions than are kept loses none.
    quiet = {
        await _add(engine, "quiet", SessionState.FAILED, timedelta(days=9 + n)) for n in range(5)
    }
    reader = ScheduleReader(engine, timedelta(minutes=30))
    now = utcnow()

    assert await reader.forget_sessions(now - RETENTION, now) == 40 - (KEPT - len(recent))

    kept = await _ids(engine, "busy")
    assert kept == {*recent, *old[: KEPT - len(recent)], running, queued, held}
    assert await _ids(engine, "quiet") == quiet
    # Nothing more is due.
    assert await reader.forget_sessions(now - RETENTION, now) == 0


async def test_the_schedule_reads_of_open_and_held_sessions_use_their_indexes(
    engine: AsyncEngine,
) -> None:
    # A history of finished sessions the reads must not go through.
    for n in range(30):
        await _add(engine, "busy", SessionState.FAILED, timedelta(hours=n))
    await _add(engine, "busy", SessionState.RUNNING, timedelta(minutes=1))
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # On a table this small a sequential scan is cheapest; without it the plan shows
            # whether an index's condition leads to the rows.
            await conn.execute(text("SET enable_seqscan = off"))
            await conn.execute(text("SET enable_bitmapscan = off"))
        held = await _plan(conn, held_sessions(None, utcnow()))
        held_in_org = await _plan(conn, held_sessions("acme", utcnow()))
        pending = await _plan(conn, open_sessions())
        total = await conn.scalar(select(func.count()).select_from(sessions))
    assert total == 31
    if engine.dialect.name == "sqlite":
        for plan in (held, held_in_org):
            assert (
                "SEARCH sessions USING INDEX ix_sessions_held (state=? AND retry_not_before_us>?)"
                in plan
            )
        assert "SEARCH sessions USING INDEX ix_sessions_" in pending
        assert "(state=?)" in pending
    else:
        for plan in (held, held_in_org):
            assert "Index Scan using ix_sessions_held on sessions" in plan
            assert "retry_not_before_us >" in plan
        assert "Index Scan using ix_sessions_" in pending
        assert "Index Cond: (state = ANY" in pending


async def _plan(conn: AsyncConnection, query: Select[str, int, int]) -> str:
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
    rows = await conn.execute(text(explain + sql))
    return "\n".join(str(row[-1]) for row in rows)


async def test_the_schedule_reads_the_newest_completed_session_and_the_failures_since(
    engine: AsyncEngine,
) -> None:
    # The read takes each mailbox's newest completed session and the failed ones after it
    # (not every finished session): what the back-off counts must come out the same.
    for state, minutes in (
        (SessionState.FAILED, 50),
        (SessionState.COMPLETED, 40),
        (SessionState.COMPLETED, 30),
        (SessionState.FAILED, 20),
        (SessionState.CANCELLED, 15),
        (SessionState.FAILED, 10),
    ):
        await _add(engine, "busy", state, timedelta(minutes=minutes), code="PROVIDER_UNAVAILABLE")
    for minutes in (30, 20):
        await _add(engine, "quiet", SessionState.FAILED, timedelta(minutes=minutes), code="X")
    async with engine.begin() as conn:
        # The mailboxes changed before all of it (they were created just now).
        await conn.execute(
            text("UPDATE mailboxes SET update_time_us = :t"),
            {"t": to_us(utcnow() - timedelta(hours=1))},
        )
    rows = {r.mailbox_id: r for r in await ScheduleReader(engine, timedelta(minutes=30)).rows()}

    busy, quiet = rows["busy"], rows["quiet"]
    assert busy.failures_in_row == 2
    assert busy.last_outcome is SessionState.FAILED
    assert busy.last_failure_code == "PROVIDER_UNAVAILABLE"
    assert busy.last_end is not None
    assert utcnow() - busy.last_end < timedelta(minutes=11)
    # No completed session at all: every failure since the mailbox changed counts.
    assert quiet.failures_in_row == 2
    assert quiet.last_outcome is SessionState.FAILED
