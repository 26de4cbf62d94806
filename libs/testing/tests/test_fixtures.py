from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from concord_testing import (
    NatsServer,
    OtlpReceiver,
    PostgresCluster,
    ServiceProcess,
    free_port,
    ports,
    wait_for_port,
)

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).parent


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    handed = [free_port() for _ in range(50)]
    assert len(set(handed)) == len(handed)
    assert all(port < low for port in handed)


def test_a_port_another_live_process_claimed_is_not_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken, stale, other = _unclaimed_ports(3)
    (ports.CLAIMS / str(taken)).write_text(str(os.getppid()))  # a live process, not us
    dead = subprocess.Popen(["true"])
    dead.wait()
    (ports.CLAIMS / str(stale)).write_text(str(dead.pid))
    offered = iter([taken, stale, other])
    monkeypatch.setattr(random, "choice", lambda _range: next(offered))
    assert free_port() == stale  # the claim of a process that is gone is taken over
    assert (ports.CLAIMS / str(stale)).read_text() == str(os.getpid())
    (ports.CLAIMS / str(taken)).unlink()


def _unclaimed_ports(count: int) -> list[int]:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports.CLAIMS.mkdir(parents=True, exist_ok=True)
    found = [p for p in range(low - 1, low - 2000, -1) if not (ports.CLAIMS / str(p)).exists()]
    return found[:count]


def test_unique_prefix_differs_per_call(unique_prefix: str) -> None:
    assert unique_prefix.isidentifier()
    assert len(unique_prefix) > 8


async def test_nats_server_has_jetstream(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url)
    try:
        info = await client.jetstream().account_info()
        assert info.limits is not None
    finally:
        await client.close()


def test_nats_server_stop_leaves_no_process(tmp_path: Path) -> None:
    server = NatsServer(tmp_path).start()
    port = server.port
    assert wait_for_port("127.0.0.1", port, 1)
    server.stop()
    server.stop()  # idempotent: fixtures stop again on the error path
    assert not server.running
    assert not wait_for_port("127.0.0.1", port, 0.2)


async def test_session_nats_server_is_shared(nats_server_session: NatsServer) -> None:
    client = await nats.connect(nats_server_session.url)
    await client.close()
    assert nats_server_session.running


def test_postgres_creates_separate_databases(postgres: PostgresCluster) -> None:
    first, second = postgres.new_database(), postgres.new_database()
    assert first != second
    assert first.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/")
    name = first.rsplit("/", 1)[1]
    postgres.psql(name, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
    assert postgres.psql(name, "SELECT x FROM t") == "42"
    with pytest.raises(RuntimeError):
        postgres.psql(second.rsplit("/", 1)[1], "SELECT x FROM t")


def test_postgres_refuses_unsafe_database_names(postgres: PostgresCluster) -> None:
    with pytest.raises(ValueError, match="database name"):
        postgres.database('x"; DROP DATABASE postgres; --')


def test_otlp_receiver_collects_spans_from_an_sdk_exporter(otlp_receiver: OtlpReceiver) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver.endpoint, insecure=True))
    )
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("outer", kind=trace.SpanKind.SERVER) as outer,
        tracer.start_as_current_span("inner", attributes={"concord.mailbox": "demo"}),
    ):
        pass
    provider.shutdown()
    otlp_receiver.wait_for(lambda spans: len(spans) == 2, timeout=10)
    trace_id = trace.format_trace_id(outer.get_span_context().trace_id)
    spans = {s.name: s for s in otlp_receiver.trace(trace_id)}
    assert spans["outer"].service_name == "gateway"
    assert spans["outer"].kind == "SERVER"
    assert spans["outer"].parent_span_id is None
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert spans["inner"].kind == "INTERNAL"
    assert spans["inner"].attributes == {"concord.mailbox": "demo"}


def test_otlp_receiver_wait_for_times_out(otlp_receiver: OtlpReceiver) -> None:
    with pytest.raises(TimeoutError):
        otlp_receiver.wait_for(lambda spans: bool(spans), timeout=0.1)


def _health_env(mode: str = "") -> dict[str, str]:
    return {
        "HEALTH_PORT": str(free_port()),
        "HEALTH_MODE": mode,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path]),
    }


def test_service_process_serves_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess],
) -> None:
    env = _health_env()
    process = service_process("health_app", env=env)
    process.wait_serving(f"127.0.0.1:{env['HEALTH_PORT']}", timeout=20)
    assert process.stop(grace=10) == 0
    assert "health_app starting" in process.log_tail()


def test_service_process_that_exits_fails_fast_with_its_log(
    service_process: Callable[..., ServiceProcess],
) -> None:
    env = _health_env("crash")
    process = service_process("health_app", env=env)
    with pytest.raises(RuntimeError, match="crashing on purpose"):
        process.wait_serving(f"127.0.0.1:{env['HEALTH_PORT']}", timeout=20)


def test_service_process_ignoring_sigterm_is_killed(
    service_process: Callable[..., ServiceProcess],
) -> None:
    env = _health_env("stubborn")
    process = service_process("health_app", env=env)
    process.wait_serving(f"127.0.0.1:{env['HEALTH_PORT']}", timeout=20)
    assert process.stop(grace=0.5) == -9


def test_failing_test_report_shows_the_service_log(tmp_path: Path) -> None:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(TESTS_DIR)!r})

            def test_fails(service_process):
                process = service_process("health_app", env={{"HEALTH_MODE": "crash"}})
                process._process.wait()
                assert False
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:concord_testing",
            "-p",
            "concord_testing.plugin",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-q",
            str(test_file),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "log of health_app" in result.stdout
    assert "crashing on purpose" in result.stdout
