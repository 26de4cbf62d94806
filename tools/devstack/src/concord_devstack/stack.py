"""The local stack: nats-server and the six services, started in dependency order.

Two profiles: `embedded` (the default: one nats-server, each service on its own SQLite file)
and `production` (as deployed, on loopback: PostgreSQL with a database per service, a 3-node
nats-server cluster keeping 3 copies of every stream, and two reconciler replicas).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord_devstack import emulators
from concord_devstack.emulators import EmulatorSpec
from concord_devstack.postgres import Postgres
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

EMBEDDED = "embedded"
PRODUCTION = "production"
PROFILES: tuple[str, ...] = (EMBEDDED, PRODUCTION)
# The production profile, as deploy/k8s/overlays/prod runs it: a 3-node NATS cluster with every
# stream kept on each node, and two reconciler replicas.
NATS_CLUSTER_SIZE = 3
NATS_CLUSTER_NAME = "concord"
REPLICAS: Mapping[str, int] = {"reconciler": 2}
# The production profile's fixed ports (without --free-ports): clients, routes, monitoring.
NATS_NODE_PORTS = (4222, 6222, 8222)
POSTGRES_PORT = 50058
REPLICA_PORTS: Mapping[str, int] = {"reconciler-2": 50056}


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
    # What stops it cleanly (also what it gets if the supervisor dies), and whom it runs as.
    stop_signal: int = signal.SIGTERM
    user: str | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.restart_at = None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                die_with_parent(self.argv, user=self.user, death_signal=self.stop_signal),
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
        self.popen.send_signal(self.stop_signal)
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


def die_with_parent(
    argv: list[str], *, user: str | None = None, death_signal: int = signal.SIGTERM
) -> list[str]:
    """`argv` run so that the kernel sends it SIGTERM (or `death_signal`) if the supervisor is
    killed outright: `make up` must never leave a service behind.

    util-linux's setpriv sets the parent-death signal and execs the command (the signal
    survives exec). Not a `preexec_fn`: that runs Python between fork and exec, and with the
    gRPC threads the supervisor has by then, the child can deadlock on a lock another thread
    held at fork time; Popen then blocks for ever waiting for the exec (seen in CI: the
    reconciler never started and `make up` hung past every deadline).

    With `user`, the same setpriv also switches to that user: one exec, so the parent-death
    signal is set after the switch (a change of user clears it).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or sys.platform != "linux":
        return ["runuser", "-u", user, "--", *argv] if user else argv
    switch = [f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
    name = signal.Signals(death_signal).name.removeprefix("SIG")
    return [setpriv, *switch, "--pdeathsig", name, "--", *argv]


@dataclass(frozen=True)
class NatsNode:
    """One server of the production profile's NATS cluster."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int


@dataclass
class Layout:
    """Where everything listens and lives for one run of the stack."""

    var_dir: Path
    ports: dict[str, int]
    nats_port: int
    emulator_ports: dict[str, int] = field(default_factory=dict)
    host: str = "127.0.0.1"
    profile: str = EMBEDDED
    # The production profile's parts; empty/None on the embedded default.
    nats_nodes: tuple[NatsNode, ...] = ()
    postgres_port: int | None = None
    # Replicas beyond each service's first, by process name (`reconciler-2`); their ports are
    # in `ports` too.
    replicas: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        var_dir: Path,
        *,
        free_ports: FreePorts | None,
        emulator_names: list[str],
        profile: str = EMBEDDED,
    ) -> Layout:
        if profile not in PROFILES:
            raise StackError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
        if free_ports is not None:
            layout = cls(
                var_dir,
                {name: free_ports.take() for name in SERVICES},
                free_ports.take(),
                {name: free_ports.take(with_next=True) for name in emulator_names},
                profile=profile,
            )
        else:
            layout = cls(
                var_dir,
                {name: DEFAULT_PORTS[name] for name in SERVICES},
                NATS_PORT,
                emulators.default_ports(emulator_names),
                profile=profile,
            )
        if profile == PRODUCTION:
            layout._add_production_parts(free_ports)
        return layout

    def _add_production_parts(self, free_ports: FreePorts | None) -> None:
        def port(default: int) -> int:
            return free_ports.take() if free_ports else default

        client, route, monitor = NATS_NODE_PORTS
        self.nats_nodes = tuple(
            NatsNode(f"nats-{i + 1}", port(client + i), port(route + i), port(monitor + i))
            for i in range(NATS_CLUSTER_SIZE)
        )
        self.nats_port = self.nats_nodes[0].port
        self.postgres_port = port(POSTGRES_PORT)
        for service, count in REPLICAS.items():
            for n in range(2, count + 1):
                name = f"{service}-{n}"
                self.replicas[name] = service
                self.ports[name] = port(REPLICA_PORTS[name])

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    def replicas_of(self, service: str) -> list[str]:
        """The process names running `service`: itself, then its extra replicas."""
        return [service, *(name for name, of in self.replicas.items() if of == service)]

    def target(self, service: str) -> str:
        """What its callers get as `<SERVICE>_ADDR`: its address, or, when it runs replicas,
        the gRPC target listing every one (`ipv4:127.0.0.1:50051,127.0.0.1:50056`), as a
        headless Service's name does under Kubernetes, so a caller can use all of them."""
        names = self.replicas_of(service)
        if len(names) == 1:
            return self.address(service)
        return "ipv4:" + ",".join(self.address(name) for name in names)

    @property
    def nats_url(self) -> str:
        """What the services get as NATS_URL: the server, or every node of the cluster."""
        if self.nats_nodes:
            return ",".join(f"nats://{self.host}:{node.port}" for node in self.nats_nodes)
        return f"nats://{self.host}:{self.nats_port}"

    @property
    def postgres(self) -> Postgres | None:
        if self.postgres_port is None:
            return None
        return Postgres(self.var_dir, self.postgres_port, host=self.host)


@dataclass
class Stack:
    layout: Layout
    base_env: Mapping[str, str]
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    emulators: dict[str, EmulatorSpec] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    # Each service's PostgreSQL URL (production profile), once its database exists.
    database_urls: dict[str, str] = field(default_factory=dict)

    def nats_process(self) -> Process:
        data = self.layout.var_dir / "nats"
        argv = [_nats_server(), "-a", self.layout.host, "-p", str(self.layout.nats_port), "-js"]
        argv += ["-sd", str(data)]
        return Process("nats", argv, dict(self.base_env), self._log("nats"))

    def nats_node_process(self, node: NatsNode) -> Process:
        """One server of the cluster: routes to every node (its own is skipped by the server),
        JetStream in its own store, monitoring on for the cluster's health."""
        host = self.layout.host
        routes = ",".join(f"nats://{host}:{n.cluster_port}" for n in self.layout.nats_nodes)
        argv = [_nats_server(), "-n", node.name, "-a", host, "-p", str(node.port)]
        argv += ["-m", str(node.monitor_port), "-js", "-sd", str(self.layout.var_dir / node.name)]
        argv += ["--cluster_name", NATS_CLUSTER_NAME]
        argv += ["--cluster", f"nats://{host}:{node.cluster_port}", "--routes", routes]
        return Process(node.name, argv, dict(self.base_env), self._log(node.name))

    def service_process(self, service: str, name: str | None = None) -> Process:
        """`service`'s process; `name` is a second replica's (`reconciler-2`), on its own port."""
        name = name or service
        env = dict(self.base_env)
        env["CONCORD_VAR_DIR"] = str(self.layout.var_dir)
        env["NATS_URL"] = self.layout.nats_url
        env["OTEL_SERVICE_NAME"] = service
        # Which replica exported a span (`reconciler-2`), as a pod's name says under Kubernetes.
        resource = [env.get("OTEL_RESOURCE_ATTRIBUTES", ""), f"service.instance.id={name}"]
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(part for part in resource if part)
        for peer in SERVICES:
            env[env_prefix(peer) + "ADDR"] = self.layout.target(peer)
        prefix = env_prefix(service)
        env[prefix + "HOST"] = self.layout.host
        env[prefix + "PORT"] = str(self.layout.ports[name])
        if self.layout.nats_nodes:
            env["NATS_JETSTREAM_REPLICAS"] = str(len(self.layout.nats_nodes))
        if service in self.database_urls:
            env[prefix + "DATABASE_URL"] = self.database_urls[service]
        env.update(self.extra_env.get(service, {}))
        argv = [sys.executable, "-m", module_name(service)]
        return Process(name, argv, env, self._log(name))

    def _log(self, name: str) -> Path:
        return self.layout.var_dir / "log" / f"{name}.log"

    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        postgres = self.layout.postgres
        if postgres is not None:
            postgres.initdb()
            server = Process(
                "postgres",
                postgres.server_argv(),
                dict(self.base_env),
                self._log("postgres"),
                # PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
                stop_signal=signal.SIGINT,
                user=postgres.server_user,
            )
            self.processes["postgres"] = server
            server.start()
        if self.layout.nats_nodes:
            for node in self.layout.nats_nodes:
                self.processes[node.name] = self.nats_node_process(node)
                self.processes[node.name].start()
        else:
            self.processes["nats"] = self.nats_process()
            self.processes["nats"].start()
        # Emulators stand for the outside world: up before any service that may call them.
        for spec in self.emulators.values():
            process = Process(spec.name, spec.argv, dict(self.base_env), self._log(spec.name))
            self.processes[spec.name] = process
            process.start()
        if postgres is not None:
            postgres.wait_ready(lambda: _raise_if_exited(self.processes["postgres"]), deadline)
            self.database_urls = postgres.ensure_databases(SERVICES)
        if self.layout.nats_nodes:
            for node in self.layout.nats_nodes:
                _wait_tcp(self.processes[node.name], self.layout.host, node.port, deadline)
            self.wait_nats_cluster(deadline)
        else:
            _wait_tcp(self.processes["nats"], self.layout.host, self.layout.nats_port, deadline)
        for spec in self.emulators.values():
            _wait_emulator(self.processes[spec.name], spec, deadline)
        for wave in WAVES:
            names = [
                (service, name) for service in wave for name in self.layout.replicas_of(service)
            ]
            for service, name in names:
                process = self.service_process(service, name)
                self.processes[name] = process
                process.start()
            for _service, name in names:
                wait_serving(self.processes[name], self.layout.address(name), deadline)

    def nats_cluster(self, node: NatsNode) -> dict[str, object]:
        """What `node` knows of the JetStream cluster (its monitoring `/jsz`'s `meta_cluster`):
        `leader`, `cluster_size`, and the other peers as `replicas`."""
        url = f"http://{self.layout.host}:{node.monitor_port}/jsz"
        with urllib.request.urlopen(url, timeout=2) as reply:
            meta = json.loads(reply.read()).get("meta_cluster") or {}
        return dict(meta)

    def wait_nats_cluster(self, deadline: float) -> None:
        """Block until every node sees the same JetStream leader in a cluster of all of them:
        before that, creating a replicated stream fails."""
        size = len(self.layout.nats_nodes)
        while True:
            leaders: set[object] = set()
            for node in self.layout.nats_nodes:
                _raise_if_exited(self.processes[node.name])
                meta: dict[str, object] = {}
                with contextlib.suppress(OSError, ValueError):
                    meta = self.nats_cluster(node)
                whole = meta.get("cluster_size") == size
                leaders.add((meta.get("leader") or None) if whole else None)
            if len(leaders) == 1 and None not in leaders:
                return
            if time.monotonic() > deadline:
                raise StackError("the NATS cluster did not elect a JetStream leader in time")
            time.sleep(0.1)

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


def _nats_server() -> str:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    binary = binary or shutil.which("nats-server")
    if binary is None:
        raise StackError("nats-server not found: install the workspace (make install)")
    return binary


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
