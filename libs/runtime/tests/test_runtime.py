"""serve_main: the `migrate` command, and a bad setting as one clear line."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from concord_runtime import ServiceProcess, serve_main
from concord_settings import ServiceSettings, SettingsConfigDict

pytestmark = pytest.mark.unit


class SampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SAMPLE_")
    service_name: ClassVar[str] = "sample"
    port: int = 0


async def never_built(process: ServiceProcess[SampleSettings]) -> None:
    raise AssertionError("`migrate` must not start the service")


@pytest.fixture
def migrations(tmp_path: Path) -> Iterator[str]:
    """A throwaway service package with one Alembic revision creating `sample_thing`."""
    package = tmp_path / "pkg" / "concord_sample" / "migrations"
    (package / "versions").mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "env.py").write_text(
        "from concord_store import alembic_env\nalembic_env.run(None)\n"
    )
    (package / "versions" / "s001_thing.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op

            revision = "s001"
            down_revision = None
            branch_labels = None
            depends_on = None

            def upgrade() -> None:
                op.create_table("sample_thing", sa.Column("id", sa.Integer, primary_key=True))
            """
        )
    )
    sys.path.insert(0, str(tmp_path / "pkg"))
    try:
        yield "concord_sample.migrations"
    finally:
        sys.path.remove(str(tmp_path / "pkg"))
        for name in [m for m in sys.modules if m.startswith("concord_sample")]:
            del sys.modules[name]


def test_migrate_command_upgrades_the_store_and_exits(
    migrations: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "sample.db"
    monkeypatch.setenv("SAMPLE_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    assert serve_main(SampleSettings, never_built, migrations=migrations, argv=["migrate"]) == 0
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"sample_thing", "alembic_version_sample"} <= tables


def test_a_bad_setting_is_one_line_naming_the_variable(
    migrations: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMPLE_PORT", "not-a-port")
    assert serve_main(SampleSettings, never_built, migrations=migrations, argv=[]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "SAMPLE_PORT" in err
