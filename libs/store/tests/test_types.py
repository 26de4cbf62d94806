from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from concord_store import UtcDateTime, create_engine

pytestmark = pytest.mark.integration

_metadata = sa.MetaData()
_events = sa.Table(
    "events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=True),
)


async def test_aware_in_utc_aware_out_and_ordered(database_url: str) -> None:
    paris = timezone(timedelta(hours=2))
    early = datetime(2026, 5, 1, 12, 0, tzinfo=paris)  # 10:00 UTC
    late = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)
            await conn.execute(
                sa.insert(_events),
                [{"id": 1, "at": late}, {"id": 2, "at": early}, {"id": 3, "at": None}],
            )
            rows = (await conn.execute(sa.select(_events).order_by(_events.c.id))).all()
            after = (
                await conn.execute(sa.select(_events.c.id).where(_events.c.at > early))
            ).scalars()
            ids_after = list(after)
    finally:
        await engine.dispose()
    assert [row.at for row in rows] == [late, early, None]
    assert all(row.at.tzinfo is UTC for row in rows[:2])
    assert rows[1].at.hour == 10
    assert ids_after == [1]


@pytest.mark.unit
def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        UtcDateTime().process_bind_param(
            datetime(2026, 1, 1), sa.create_engine("sqlite://").dialect
        )


@pytest.mark.unit
def test_the_ddl_is_a_timezone_aware_datetime() -> None:
    assert UtcDateTime().impl.timezone is True
