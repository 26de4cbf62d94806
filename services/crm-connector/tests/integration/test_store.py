from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_crm_connector.adapters.store import SqlOrgStore, SqlStreamReports
from concord_crm_connector.adapters.tables import api_budget, org_connections, sync_cursors
from concord_crm_connector.changes.model import StreamMode, StreamReport, StreamState
from concord_crm_connector.domain.errors import EtagMismatch
from concord_crm_connector.domain.model import AuthFlow, Budget, ConnectionUpdate, Cursor
from concord_secrets import SecretBox

pytestmark = pytest.mark.integration


def update(**changes: object) -> ConnectionUpdate:
    fields: dict[str, object] = {
        "org": "demo",
        "login_url": "https://login.example.com",
        "auth_flow": AuthFlow.CLIENT_CREDENTIALS,
        "client_id": "cid",
        "username": "integration@example.com",
        "api_version": "62.0",
        "secret": b"s3cret",
    }
    return ConnectionUpdate(**(fields | changes))  # type: ignore[arg-type]


async def test_connection_round_trip_with_encrypted_secret(
    store: SqlOrgStore, engine: AsyncEngine, cipher: SecretBox
) -> None:
    written = await store.upsert(update(request_id="r1"))
    assert await store.get("demo") == written
    assert written.has_secret
    assert written.auth_flow == AuthFlow.CLIENT_CREDENTIALS
    async with engine.connect() as conn:
        raw = (await conn.execute(select(org_connections.c.secret_ciphertext))).scalar_one()
    assert b"s3cret" not in raw
    assert cipher.open(raw) == b"s3cret"
    # A retry of the same request changes nothing; an update without a secret keeps it.
    assert await store.upsert(update(request_id="r1", client_id="other")) == written
    kept = await store.upsert(update(secret=None, client_id="other"))
    assert kept.client_id == "other"
    assert await store.secret("demo") == b"s3cret"
    with pytest.raises(EtagMismatch):
        await store.upsert(update(expected_etag=written.etag))


async def test_cursor_and_budget_are_read_from_their_tables(
    store: SqlOrgStore, engine: AsyncEngine
) -> None:
    assert await store.cursor("demo", "Event") is None
    assert await store.budget("demo") is None
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(sync_cursors).values(
                org="demo", sobject_type="Event", token="t", update_time=now
            )
        )
        await conn.execute(
            insert(api_budget).values(
                org="demo", used=120, limit=15000, concord_used=40, update_time=now
            )
        )
    assert await store.cursor("demo", "Event") == Cursor("Event", "t")
    assert await store.budget("demo") == Budget(120, 15000, 40, now)


async def test_parallel_first_calls_of_an_org_record_every_call(store: SqlOrgStore) -> None:
    # A session lists Event, Task and Contact at once: the org's first budget row is raced for.
    await asyncio.gather(*(store.record_usage("fresh", 10, 15000, 1) for _ in range(6)))
    budget = await store.budget("fresh")
    assert budget is not None
    assert budget.concord_used == 6


async def test_concords_count_restarts_with_each_24_hour_window(
    engine: AsyncEngine, cipher: SecretBox
) -> None:
    now = [datetime(2026, 1, 2, 12, tzinfo=UTC)]
    store = SqlOrgStore(engine, cipher, clock=lambda: now[0])
    await store.record_usage("demo", 10, 15000, 3)
    now[0] += timedelta(hours=23)
    assert (await store.record_usage("demo", 20, 15000, 2)).concord_used == 5
    now[0] += timedelta(hours=2)
    restarted = await store.record_usage("demo", 30, 15000, 4)
    assert restarted.concord_used == 4
    assert restarted.used == 30


async def test_a_stream_report_is_one_row_per_org_rewritten_by_its_holder(
    engine: AsyncEngine,
) -> None:
    times = iter([datetime(2026, 12, 5, 9, 0, s, tzinfo=UTC) for s in (1, 2)])
    reports = SqlStreamReports(engine, clock=lambda: next(times))
    assert await reports.get("demo") is None
    await reports.put("demo", StreamState(StreamMode.FAILING, reason="Event: UNAVAILABLE"))
    committed = datetime(2026, 12, 5, 8, 59, 58, tzinfo=UTC)
    streaming = StreamState(
        StreamMode.STREAMING,
        last_commit=committed,
        last_event=committed + timedelta(seconds=1),
        resync_reason="/data/EventChangeEvent: GAP_OVERFLOW",
        resync_time=committed,
    )
    await reports.put("demo", streaming)
    assert await reports.get("demo") == StreamReport(
        streaming, datetime(2026, 12, 5, 9, 0, 2, tzinfo=UTC)
    )
    assert await reports.get("other") is None
