"""A Concord service run as a real subprocess, the way `make up` runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class ServiceProcess:
    """`python -m <module>` with `env` added to this process's environment.

    stdout and stderr go to `log_path`, so a failing test can show what the service said.
    """

    def __init__(
        self,
        module: str,
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.module = module
        self.name = name or module
        self.log_path = log_dir / f"{self.name}.log"
        self._env = dict(env or {})
        self._args = args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self._args],
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self._env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def log_tail(self, lines: int = 50) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_serving(self, addr: str, timeout: float = 20.0, service: str = "") -> None:
        """Block until the gRPC health service at `addr` answers SERVING for `service`.

        Fails at once, with the log tail, if the process exits first.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        with grpc.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self._process.returncode} before serving:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    response = stub.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=0.5
                    )
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                except grpc.RpcError as error:
                    last = error.code()
                time.sleep(0.05)
        raise TimeoutError(
            f"{self.name} at {addr} not SERVING after {timeout}s (last: {last}):\n{self.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode
