"""The production profile's PostgreSQL: made once per state directory, run as the supervisor's
child, a database per service."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from concord_devstack.postgres import Postgres
from concord_devstack.stack import FreePorts, Process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    ports = FreePorts()
    port = ports.take()
    ports.release()
    cluster = Postgres(tmp_path / "var", port)
    yield cluster
    shutil.rmtree(cluster.root, ignore_errors=True)


def test_the_cluster_is_kept_for_its_state_directory_and_only_for_it(
    postgres: Postgres,
) -> None:
    postgres.initdb()
    assert (postgres.data_dir / "PG_VERSION").exists()
    planted = postgres.data_dir / "planted"
    planted.write_text("kept")
    postgres.initdb()
    assert planted.exists()  # a second `make up` finds its data

    # `make clean` removed var/ (its secrets with it): the old cluster is not this state's.
    shutil.rmtree(postgres.var_dir)
    postgres.initdb()
    assert (postgres.data_dir / "PG_VERSION").exists()
    assert not planted.exists()


def test_each_service_gets_its_own_database_once(postgres: Postgres) -> None:
    postgres.initdb()
    server = Process(
        "postgres",
        postgres.server_argv(),
        {},
        postgres.var_dir / "log" / "postgres.log",
        stop_signal=signal.SIGINT,
        user=postgres.server_user,
    )
    server.start()
    try:

        def running() -> None:
            assert server.exited() is None, server.log_tail()

        postgres.wait_ready(running, time.monotonic() + 60)
        urls = postgres.ensure_databases(("linker", "mail-connector"))
        assert urls == {
            "linker": postgres.url("concord_linker"),
            "mail-connector": postgres.url("concord_mail_connector"),
        }
        assert postgres.ensure_databases(("linker", "mail-connector")) == urls  # idempotent
        names = postgres.psql("postgres", "SELECT datname FROM pg_database").split()
        assert {"concord_linker", "concord_mail_connector"} <= set(names)
    finally:
        server.stop(10)
    assert server.exited() is not None
