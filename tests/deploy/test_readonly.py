"""Every service runs with its code read-only, writing only to its var dir and temp dirs.

The pods run with `readOnlyRootFilesystem`; here each service is started the way the image starts
it (`python -m concord_<name>`, no bytecode writes) inside a mount namespace where the whole
repository — code, virtualenv and working directory — is mounted read-only.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord_testing import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("mail-connector", "crm-connector", "mapping", "linker", "reconciler", "gateway")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (CI runs as root)"),
]


def _read_only(command: str) -> list[str]:
    """`command` in a private mount namespace where ROOT is read-only."""
    root = shlex.quote(str(ROOT))
    script = (
        f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && cd {root} && {command}"
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _prefix(service: str) -> str:
    return service.upper().replace("-", "_") + "_"


def test_the_namespace_really_is_read_only(tmp_path: Path) -> None:
    probe = ROOT / f".rw-probe-{os.getpid()}"
    result = subprocess.run(
        _read_only(f"touch {shlex.quote(str(probe))}"), capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert not probe.exists()


@pytest.fixture
def services(
    tmp_path: Path, nats_server: NatsServer
) -> Iterator[dict[str, tuple[str, subprocess.Popen[bytes]]]]:
    var_dir = tmp_path / "var"
    ports = {name: free_port() for name in SERVICES}
    env = dict(os.environ)
    env.update(
        CONCORD_VAR_DIR=str(var_dir),
        NATS_URL=nats_server.url,
        PYTHONDONTWRITEBYTECODE="1",
        TMPDIR=str(tmp_path / "tmp"),
        OTEL_TRACES_EXPORTER="none",
    )
    (tmp_path / "tmp").mkdir()
    for name, port in ports.items():
        env[_prefix(name) + "ADDR"] = f"127.0.0.1:{port}"
        env[_prefix(name) + "PORT"] = str(port)
    started: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    try:
        for name in SERVICES:
            module = "concord_" + name.replace("-", "_")
            log = (tmp_path / f"{name}.log").open("wb")
            command = f"exec {shlex.quote(sys.executable)} -m {module}"
            process = subprocess.Popen(
                _read_only(command), env=env, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
            started[name] = (f"127.0.0.1:{ports[name]}", process)
        yield started
    finally:
        for _, process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _serving(address: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False


def test_every_service_serves_and_stops_with_a_read_only_root(
    services: dict[str, tuple[str, subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    for name, (address, process) in services.items():
        assert _serving(address, process, tmp_path / f"{name}.log"), f"{name} never SERVING"
    for name, (_, process) in reversed(list(services.items())):
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    # What they did write went to the var dir: their stores and generated keys.
    written = {p.name for p in (tmp_path / "var").iterdir()}
    assert {"reconciler.db", "mail-connector.db", "secrets"} <= written
