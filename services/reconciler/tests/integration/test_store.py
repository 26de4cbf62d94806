"""The SQL store on SQLite and PostgreSQL: schema, the one-queued-session rule, CAS writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.counts import KindCounts, SessionCounts, SideCounts
from concord_reconciler.kernel.errors import EtagMismatch, MailboxAlreadyExists
from concord_reconciler.kernel.names import new_session_id
from concord_reconciler.kernel.schema import metadata
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.sessions.wire import session_to_proto
from concord_store import create_engine, migrate, version_table
from concord_testing import PostgresCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MIGRATIONS = "concord_reconciler.migrations"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        url = cluster.new_database("reconciler")
    engine = create_engine(url)
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> SqlStore:
    store = SqlStore(engine)
    await store.insert_mailbox(
        MailboxRecord(
            mailbox_id="demo",
            org_id="acme",
            owner_user_id="u1",
            crm_user_id="005000000000001AAA",
            address="demo@example.com",
            provider=res.MAIL_PROVIDER_GRAPH,
        )
    )
    return store


def _session() -> SessionRecord:
    return SessionRecord(new_session_id(), "demo", res.SESSION_TRIGGER_PUSH)


async def test_the_migrations_create_exactly_the_tables_the_code_uses(engine: AsyncEngine) -> None:
    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(
            connection,  # type: ignore[arg-type]
            opts={"version_table": version_table(MIGRATIONS)},
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_concurrent_requests_queue_one_session(store: SqlStore) -> None:
    results = await asyncio.gather(*(store.enqueue_session(_session()) for _ in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({session.session_id for session, _ in results}) == 1


async def test_a_running_session_does_not_block_the_next_queued_one(store: SqlStore) -> None:
    first, _ = await store.enqueue_session(_session())
    assert await store.save_session(first.to(SessionState.RUNNING), SessionState.QUEUED)
    second, created = await store.enqueue_session(_session())
    assert created
    assert second.session_id != first.session_id


async def test_session_writes_are_compare_and_set_on_state(store: SqlStore) -> None:
    session, _ = await store.enqueue_session(_session())
    running = session.to(SessionState.RUNNING, trace_id="ab" * 16)
    assert await store.save_session(running, SessionState.QUEUED)
    # A stale writer that still believes the session is queued changes nothing.
    assert not await store.save_session(session.to(SessionState.CANCELLED), SessionState.QUEUED)
    stored = await store.get_session(session.session_id)
    assert stored == running


async def test_ending_a_back_off_is_compare_and_set_on_the_mailbox_state(store: SqlStore) -> None:
    assert not await store.end_back_off("demo")  # active: nothing to end
    await store.set_mailbox_state("demo", MailboxState.BACKING_OFF, "3 sessions failed")
    assert await store.end_back_off("demo")
    mailbox = await store.get_mailbox("demo")
    assert mailbox is not None
    assert (mailbox.state, mailbox.suspended_reason) == (MailboxState.ACTIVE, "")
    # A person's suspend in between wins.
    await store.set_mailbox_state("demo", MailboxState.SUSPENDED, "on holiday")
    assert not await store.end_back_off("demo")
    mailbox = await store.get_mailbox("demo")
    assert mailbox is not None
    assert mailbox.state is MailboxState.SUSPENDED


async def test_session_counts_keep_skipped_and_the_per_kind_numbers(store: SqlStore) -> None:
    session, _ = await store.enqueue_session(_session())
    running = session.to(SessionState.RUNNING)
    assert await store.save_session(running, SessionState.QUEUED)
    counts = SessionCounts(
        mail_changes_seen=3,
        crm=SideCounts(created=2, errors=1),
        quarantined=1,
        skipped=4,
        kinds=(
            KindCounts(
                kind=res.OBJECT_KIND_CALENDAR_ITEM,
                mail_changes_seen=3,
                crm=SideCounts(created=2, errors=1),
                quarantined=1,
                skipped=3,
            ),
            KindCounts(kind=res.OBJECT_KIND_TASK, skipped=1, guarded=True),
        ),
    )
    done = running.to(SessionState.COMPLETED, counts=counts)
    assert await store.save_session(done, SessionState.RUNNING)
    stored = await store.get_session(session.session_id)
    assert stored is not None
    assert stored.counts == counts
    assert session_to_proto(stored).counts.kinds[1].guarded


async def test_a_mailbox_id_is_unique(store: SqlStore) -> None:
    mailbox = await store.get_mailbox("demo")
    assert mailbox is not None
    with pytest.raises(MailboxAlreadyExists):
        await store.insert_mailbox(mailbox)


async def test_settings_writes_check_the_etag(store: SqlStore) -> None:
    settings = st.OrgSettings(conflict_policy=st.CONFLICT_POLICY_MANUAL)
    first = await store.put_org_settings("acme", settings, expected_etag='W/"0"')
    with pytest.raises(EtagMismatch):
        await store.put_org_settings("acme", settings, expected_etag='W/"0"')
    second = await store.put_org_settings("acme", settings, expected_etag=first.etag)
    assert second.etag != first.etag


async def test_completing_a_session_ends_its_mailboxs_back_off_in_the_same_transaction(
    store: SqlStore,
) -> None:
    session, _ = await store.enqueue_session(_session())
    running = session.to(SessionState.RUNNING, start_time=utcnow())
    assert await store.save_session(running, SessionState.QUEUED)
    await store.set_mailbox_state("demo", MailboxState.BACKING_OFF, "3 sessions failed")
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    event.listen(store.engine.sync_engine, "commit", committed)
    try:
        completed = running.to(SessionState.COMPLETED, end_time=utcnow())
        assert await store.complete_session(completed) == (True, True)
    finally:
        event.remove(store.engine.sync_engine, "commit", committed)
    assert len(commits) == 1
    assert await store.get_session(session.session_id) == completed
    mailbox = await store.get_mailbox("demo")
    assert mailbox is not None
    assert mailbox.state is MailboxState.ACTIVE
    # Once over, the session is not completed again, and an active mailbox stays as it is.
    assert await store.complete_session(completed) == (False, False)


async def test_a_mailbox_context_is_the_mailbox_and_its_settings_in_one_statement(
    store: SqlStore,
) -> None:
    """As a session starts on it (issue #18): one statement where there were three."""
    context = await store.mailbox_context("demo")
    assert context is not None
    assert context.mailbox == await store.get_mailbox("demo")
    assert (context.org_settings, context.mailbox_settings) == (None, None)
    await store.put_org_settings(
        "acme", st.OrgSettings(conflict_policy=st.CONFLICT_POLICY_MANUAL), expected_etag=""
    )
    await store.put_mailbox_settings(
        "demo", st.MailboxSettings(blacklist=["x.com"]), expected_etag=""
    )
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        context = await store.mailbox_context("demo")
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert context is not None
    assert context.mailbox == await store.get_mailbox("demo")
    assert context.org_settings == await store.get_org_settings("acme")
    assert context.mailbox_settings == await store.get_mailbox_settings("demo")
    assert await store.mailbox_context("nobody") is None


async def test_deleting_a_mailbox_deletes_its_sessions_and_settings(store: SqlStore) -> None:
    session, _ = await store.enqueue_session(_session())
    await store.put_mailbox_settings(
        "demo", st.MailboxSettings(blacklist=["x.com"]), expected_etag=""
    )
    await store.delete_mailbox("demo")
    assert await store.get_session(session.session_id) is None
    assert await store.get_mailbox_settings("demo") is None
    assert await store.get_mailbox("demo") is None
