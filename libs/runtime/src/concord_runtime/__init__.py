"""A Concord service process, the same way for every service.

settings → JSON logs → telemetry → store (migrations) → gRPC server (NOT_SERVING) → readiness
checks → SERVING → SIGTERM: NOT_SERVING, drain, close the store, flush telemetry.

A service's ``__main__`` is then only what is its own::

    def main() -> int:
        return serve_main(LinkerSettings, build, migrations="concord_linker.adapters.migrations")

    async def build(process: ServiceProcess[LinkerSettings]) -> None:
        store = SqlResolutionStore(process.engine)
        process.server.add_service(SERVICE_NAME, lambda s: add_LinkerServiceServicer_to_server(...))

``python -m concord_<name> migrate`` only runs the migrations (the Kubernetes Job before a
rollout) and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from concord_rpc import GrpcService, run
from concord_rpc.identity import IdentityVerifier, RequireIdentity
from concord_runtime.identity import CallerIdentitySettings, identity_keys
from concord_settings import ServiceSettings, SettingsError
from concord_store import create_engine, migrate, ping
from concord_telemetry import Telemetry, configure_logging, setup

__all__ = ["ServiceProcess", "serve_main"]

S = TypeVar("S", bound=ServiceSettings)
log = logging.getLogger(__name__)


@dataclass
class ServiceProcess(Generic[S]):
    """What a service's `build` gets to wire its servicers, adapters and hooks onto."""

    settings: S
    telemetry: Telemetry
    engine: AsyncEngine
    server: GrpcService


Build = Callable[[ServiceProcess[S]], Awaitable[None]]


def serve_main(
    settings_type: type[S],
    build: Build[S],
    *,
    migrations: str,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` (`serve` by default, or `migrate`), run the process, return its exit code."""
    parser = argparse.ArgumentParser(prog=f"concord-{settings_type.service_name}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    try:
        settings = settings_type.from_env()
    except SettingsError as exc:
        print(f"concord-{settings_type.service_name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings_type.service_name)
    if args.command == "migrate":
        return run(migrate(settings.database_url, migrations))
    return run(_serve(settings, build, migrations))


async def _serve(settings: S, build: Build[S], migrations: str) -> None:
    telemetry = setup(settings.service_name)
    engine = create_engine(settings.database_url)
    server = GrpcService(
        settings.service_name,
        host=settings.host,
        port=settings.port,
        drain_seconds=settings.drain_seconds,
    )
    # Hooks run in reverse: the store closes, then telemetry flushes the spans of the drain.
    server.on_shutdown(_async(telemetry.shutdown))
    server.on_shutdown(engine.dispose)

    async def store_ready() -> None:
        await migrate(engine, migrations)
        await ping(engine)

    server.add_readiness_check(store_ready)
    # Every internal service mixes CallerIdentitySettings in; the gateway (which authenticates
    # people itself) does not. `object` so the check is not judged by S's bound alone.
    mixed_in: object = settings
    if isinstance(mixed_in, CallerIdentitySettings):
        _require_caller_identity(mixed_in, server)
    process = ServiceProcess(settings, telemetry, engine, server)
    try:
        await build(process)
    except BaseException:
        await engine.dispose()
        telemetry.shutdown()
        raise
    await server.serve()


def _require_caller_identity(settings: CallerIdentitySettings, server: GrpcService) -> None:
    # Only the gateway and its peers hold the key: a caller that merely reaches the port acts
    # as nobody (concord_rpc.identity).
    if settings.require_caller_identity:
        server.add_interceptor(RequireIdentity(IdentityVerifier(identity_keys(settings))))
    else:
        prefix = str(type(settings).model_config.get("env_prefix", ""))
        log.warning("%sREQUIRE_CALLER_IDENTITY is off: calls are not authenticated", prefix)


def _async(fn: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def hook() -> None:
        fn()

    hook.__qualname__ = getattr(fn, "__qualname__", "hook")
    return hook
