"""A service process's gRPC server: health, reflection, readiness, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from concord_rpc.client import MESSAGE_SIZE_OPTIONS
from concord_rpc.interceptor import ErrorInterceptor

__all__ = ["LIVENESS", "GrpcService", "ReadinessCheck", "ShutdownHook", "run"]

log = logging.getLogger(__name__)

#: Raises (anything) while the dependency is not ready, returns when it is.
ReadinessCheck = Callable[[], Awaitable[object]]
ShutdownHook = Callable[[], Awaitable[object]]
Register = Callable[[grpc.aio.Server], object]

#: Health name for liveness probes: SERVING from the moment the server starts until it stops,
#: so a process waiting for its dependencies is not restarted (readiness uses "").
LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Matches the clients' keepalive (concord_rpc.client): without it the server would answer their
# 30 s pings on quiet streams with GOAWAY "too_many_pings".
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    *MESSAGE_SIZE_OPTIONS,
)

# How long a client's connection lives before the server asks it to open a new one (GOAWAY;
# calls in flight finish on the old one, however long they take). A balanced client resolves
# its target again when it reconnects (a headless Service's name), so replicas added by a
# scale-out get their share of its calls within this time (gRFC A9).
MAX_CONNECTION_AGE_SECONDS = 300.0


class GrpcService:
    """One service's gRPC server and its life cycle.

    `serve()` = `start()` (bound, health NOT_SERVING) -> readiness checks pass (SERVING) ->
    SIGTERM/SIGINT or `request_stop()` -> NOT_SERVING, refuse new calls, drain in-flight calls
    for `drain_seconds`, run shutdown hooks in reverse order.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        drain_seconds: float = 5.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        readiness_checks: Sequence[ReadinessCheck] = (),
        max_check_interval: float = 5.0,
        max_connection_age_seconds: float = MAX_CONNECTION_AGE_SECONDS,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.drain_seconds = drain_seconds
        self.health = HealthServicer()
        self._interceptors = [ErrorInterceptor(name), *interceptors]
        self._registrations: list[tuple[str, Register]] = []
        self._readiness_checks = list(readiness_checks)
        self._max_check_interval = max_check_interval
        self._max_connection_age_ms = int(max_connection_age_seconds * 1000)
        self._shutdown_hooks: list[ShutdownHook] = []
        self._stop = asyncio.Event()
        self._server: grpc.aio.Server | None = None

    def add_service(self, full_name: str, register: Register) -> None:
        """`register(server)` adds the servicer of `full_name` (`concord.linker.v1.LinkerService`).

        Health and reflection report that name; take it from the generated descriptor.
        """
        self._registrations.append((full_name, register))

    def add_interceptor(self, interceptor: grpc.aio.ServerInterceptor) -> None:
        """Add a server interceptor; call it before `start()`.

        Added interceptors run inside the ErrorInterceptor, so a :class:`DomainError` they raise
        from a wrapped handler (an authentication failure, say) reaches the client as a status
        with ErrorInfo like any other. `concord_runtime` builds the service before `build()`
        runs, which is why this is a method and not only a constructor argument.
        """
        if self._server is not None:
            raise RuntimeError(f"{self.name}: interceptors must be added before start()")
        self._interceptors.append(interceptor)

    def add_readiness_check(self, check: ReadinessCheck) -> None:
        self._readiness_checks.append(check)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Run `hook` after draining; hooks run in reverse order (last opened, first closed)."""
        self._shutdown_hooks.append(hook)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start serving with health NOT_SERVING; returns the port (useful with 0)."""
        options = [*SERVER_OPTIONS, ("grpc.max_connection_age_ms", self._max_connection_age_ms)]
        server = grpc.aio.server(interceptors=self._interceptors, options=options)
        names = [name for name, _ in self._registrations]
        for _, register in self._registrations:
            register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        for name in ["", *names]:
            await self.health.set(name, NOT_SERVING)
        await self.health.set(LIVENESS, SERVING)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        await server.start()
        self._server = server
        log.info("%s listening on %s", self.name, self.address)
        return self.port

    async def become_ready(self) -> None:
        """Retry the readiness checks with back-off until all pass, then report SERVING."""
        delay = 0.05
        for check in self._readiness_checks:
            while True:
                try:
                    await check()
                    break
                except Exception as exc:
                    log.warning("%s not ready: %s: %s", self.name, _name(check), exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_check_interval)
        for name in ["", *(name for name, _ in self._registrations)]:
            await self.health.set(name, SERVING)
        log.info("%s serving", self.name)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_for_termination(self) -> None:
        """Wait for SIGTERM/SIGINT (or `request_stop()`), then drain and run the shutdown hooks."""
        await self._wait_for_stop()
        await self.shutdown()

    async def _wait_for_stop(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._stop.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def shutdown(self) -> None:
        # Load balancers and probes see NOT_SERVING first; later health updates are ignored.
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            log.info("%s draining for up to %ss", self.name, self.drain_seconds)
            await self._server.stop(grace=self.drain_seconds)
            self._server = None
        while self._shutdown_hooks:
            hook = self._shutdown_hooks.pop()
            try:
                await hook()
            except Exception:
                # The remaining hooks (telemetry flush especially) must still run.
                log.exception("%s: shutdown hook %s failed", self.name, _name(hook))

    async def serve(self) -> None:
        """start -> ready -> wait for a signal -> drain -> hooks. Hooks run even if start fails."""
        ready: asyncio.Task[None] | None = None
        try:
            await self.start()
            ready = asyncio.create_task(self.become_ready())
            await self._wait_for_stop()
        finally:
            if ready is not None:
                # A stop requested while dependencies are still coming up ends the wait for them.
                ready.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ready
            await self.shutdown()


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def run(main: Coroutine[Any, Any, object]) -> int:
    """Run a service's `main()` coroutine; the process exit code (0, or 1 if it raised)."""
    try:
        asyncio.run(main)
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        return 130
    except Exception:
        log.exception("service failed")
        return 1
    return 0
