"""The local stack: nats-server and the six services, started in dependency order."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord_devstack import emulators
from concord_devstack.emulators import EmulatorSpec
from concord_settings import DEFAULT_PORTS, NATS_PORT

# Start order: a service starts only after every service it calls reports SERVING.
WAVES: tuple[tuple[str, ...], ...] = (
    ("mail-connector", "crm-connector"),
    ("mapping", "linker"),
    ("reconciler",),
    ("gateway",),
)
SERVICES: tuple[str, ...] = tuple(name for wave in WAVES for name in wave)
# A dead service or NATS is started again after 0.5 s, doubling while runs die within a minute.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0


class StackError(RuntimeError):
    """The stack could not be started; the message says which part and why."""


def env_prefix(service: str) -> str:
    return service.upper().replace("-", "_") + "_"


def module_name(service: str) -> str:
    return "concord_" + service.replace("-", "_")


class FreePorts:
    """Distinct free loopback ports for one run of the stack.

    Every port picked stays bound here until `release`, just before the children start: a
    port released at once can be handed out again by the kernel's next pick, and two children
    given one port fail to start (seen: the linker and the Salesforce emulator).
    """

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def take(self, *, with_next: bool = False) -> int:
        """A free port; with `with_next`, one whose next port is free too (an emulator may
        serve a second protocol there, as Salesforce's Pub/Sub API does)."""
        while True:
            port = self._hold(0)
            if port is not None and (not with_next or self._hold(port + 1) is not None):
                return port

    def release(self) -> None:
        for sock in self._held:
            sock.close()
        self._held.clear()

    def _hold(self, port: int) -> int | None:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        self._held.append(sock)
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """One child process of the stack, with its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    # Restarts in a row that died young (see Stack.revive); reset once a run lives long enough.
    crashes: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.restart_at = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                die_with_parent(self.argv),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen else 0

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def stop(self, grace: float) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv` run so that the kernel sends it SIGTERM if the supervisor is killed outright:
    `make up` must never leave a service behind.

    util-linux's setpriv sets the parent-death signal and execs the command (the signal
    survives exec). Not a `preexec_fn`: that runs Python between fork and exec, and with the
    gRPC threads the supervisor has by then, the child can deadlock on a lock another thread
    held at fork time; Popen then blocks for ever waiting for the exec (seen in CI: the
    reconciler never started and `make up` hung past every deadline).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or sys.platform != "linux":
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


@dataclass
class Layout:
    """Where everything listens and lives for one run of the stack."""

    var_dir: Path
    ports: dict[str, int]
    nats_port: int
    emulator_ports: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"

    @classmethod
    def create(
        cls, var_dir: Path, *, free_ports: FreePorts | None, emulator_names: list[str]
    ) -> Layout:
        if free_ports is not None:
            return cls(
                var_dir,
                {name: free_ports.take() for name in SERVICES},
                free_ports.take(),
                {name: free_ports.take(with_next=True) for name in emulator_names},
            )
        return cls(
            var_dir,
            {name: DEFAULT_PORTS[name] for name in SERVICES},
            NATS_PORT,
            emulators.default_ports(emulator_names),
        )

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.nats_port}"


@dataclass
class Stack:
    layout: Layout
    base_env: Mapping[str, str]
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    emulators: dict[str, EmulatorSpec] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)

    def nats_process(self) -> Process:
        binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
        binary = binary or shutil.which("nats-server")
        if binary is None:
            raise StackError("nats-server not found: install the workspace (make install)")
        data = self.layout.var_dir / "nats"
        argv = [binary, "-a", self.layout.host, "-p", str(self.layout.nats_port), "-js"]
        argv += ["-sd", str(data)]
        return Process("nats", argv, dict(self.base_env), self._log("nats"))

    def service_process(self, service: str) -> Process:
        env = dict(self.base_env)
        env["CONCORD_VAR_DIR"] = str(self.layout.var_dir)
        env["NATS_URL"] = self.layout.nats_url
        env["OTEL_SERVICE_NAME"] = service
        for peer in SERVICES:
            env[env_prefix(peer) + "ADDR"] = self.layout.address(peer)
        prefix = env_prefix(service)
        env[prefix + "HOST"] = self.layout.host
        env[prefix + "PORT"] = str(self.layout.ports[service])
        env.update(self.extra_env.get(service, {}))
        argv = [sys.executable, "-m", module_name(service)]
        return Process(service, argv, env, self._log(service))

    def _log(self, name: str) -> Path:
        return self.layout.var_dir / "log" / f"{name}.log"

    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        nats = self.nats_process()
        self.processes["nats"] = nats
        nats.start()
        # Emulators stand for the outside world: up before any service that may call them.
        for spec in self.emulators.values():
            process = Process(spec.name, spec.argv, dict(self.base_env), self._log(spec.name))
            self.processes[spec.name] = process
            process.start()
        _wait_tcp(nats, self.layout.host, self.layout.nats_port, deadline)
        for spec in self.emulators.values():
            _wait_emulator(self.processes[spec.name], spec, deadline)
        for wave in WAVES:
            for service in wave:
                process = self.service_process(service)
                self.processes[service] = process
                process.start()
            for service in wave:
                wait_serving(self.processes[service], self.layout.address(service), deadline)

    def stop(self, grace: float = 10.0) -> None:
        # Reverse order: callers stop before what they call, so no session fails on the way down.
        for name in reversed(list(self.processes)):
            self.processes[name].stop(grace)

    def dead(self) -> Iterator[Process]:
        for process in self.processes.values():
            if process.exited() is not None:
                yield process

    def revive(self, now: float | None = None) -> list[str]:
        """Start again what died, as Kubernetes' `restartPolicy: Always` would: NATS and the
        services after a back-off that doubles while runs keep dying young (crash loops cost
        little), never the emulators (they stand for the outside world; their state is gone with
        them). Returns what happened, a line each, for the supervisor to print."""
        now = time.monotonic() if now is None else now
        said: list[str] = []
        for process in self.processes.values():
            code = process.exited()
            if code is None or process.name in self.emulators:
                continue
            if process.restart_at is None:
                lived = now - process.started_at
                process.crashes = 0 if lived >= RESTART_RESET_SECONDS else process.crashes + 1
                delay = min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * 2**process.crashes)
                process.restart_at = now + delay
                said.append(
                    f"! {process.name} exited (code {code}); restarting in {delay:g} s "
                    f"(see {process.log_path})"
                )
            elif now >= process.restart_at:
                process.start()
                said.append(f"~ {process.name} restarted (pid {process.pid})")
        return said


def _wait_tcp(process: Process, host: str, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        _raise_if_exited(process)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise StackError(f"{process.name} did not listen on {host}:{port} in time")


def _wait_emulator(process: Process, spec: EmulatorSpec, deadline: float) -> None:
    while not emulators.is_ready(spec):
        _raise_if_exited(process)
        if time.monotonic() > deadline:
            raise StackError(f"emulator {spec.name} was not ready at {spec.ready_url} in time")
        time.sleep(0.1)


def wait_serving(process: Process, address: str, deadline: float) -> None:
    """Block until the process's gRPC health service reports SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            _raise_if_exited(process)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackError(f"{process.name} did not report SERVING on {address} in time")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=min(1.0, remaining))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)


def _raise_if_exited(process: Process) -> None:
    code = process.exited()
    if code is not None:
        raise StackError(
            f"{process.name} exited with code {code} during start-up; "
            f"its log ({process.log_path}) ends with:\n{process.log_tail()}"
        )


def service_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the children inherit: ours, with telemetry defaults that cost nothing."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
