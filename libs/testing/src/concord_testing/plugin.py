"""pytest plugin (entry point `pytest11`): fixtures for real embedded servers in Concord's tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from concord_testing.nats import NatsServer
from concord_testing.otlp import OtlpReceiver
from concord_testing.postgres import PostgresCluster, PostgresMissingError
from concord_testing.processes import ServiceProcess

_processes_key = pytest.StashKey[list[ServiceProcess]]()


@pytest.fixture
def unique_prefix() -> str:
    """A per-test prefix for names shared with other tests (streams, databases, keys)."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream for this test (~50 ms); `.url` to connect."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture(scope="session")
def nats_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the whole session; isolate tests by `unique_prefix` in names."""
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the session; `new_database()` returns a fresh database URL."""
    try:
        cluster = PostgresCluster()
    except PostgresMissingError as error:
        pytest.fail(str(error), pytrace=False)
    with cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database for this test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database("store")


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/gRPC trace receiver; point OTEL_EXPORTER_OTLP_ENDPOINT at `.endpoint`."""
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def service_process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `python -m <module>` processes; all are stopped after the test.

    A failing test's report shows the tail of each process's log.
    """
    started: list[ServiceProcess] = []
    request.node.stash[_processes_key] = started

    def start(
        module: str,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        args: tuple[str, ...] = (),
    ) -> ServiceProcess:
        process = ServiceProcess(module, tmp_path / "logs", env=env, name=name, args=args)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and call.when in ("setup", "call"):
        for process in item.stash.get(_processes_key, []):
            report.sections.append((f"log of {process.name}", process.log_tail()))
    return report
