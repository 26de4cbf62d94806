"""Database fixtures: every store test runs against SQLite and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord_testing import PostgresCluster

SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """A fresh database per test, so tests never see each other's tables."""
    # As configuration spells it; create_engine must pick the async driver itself.
    return postgres.new_database("store").replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    # A directory that does not exist yet: create_engine must make it.
    return f"sqlite:///{tmp_path}/var/store.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def sample_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the sample services' migration packages importable (`concord_alpha.migrations`)."""
    monkeypatch.syspath_prepend(str(SAMPLES))
