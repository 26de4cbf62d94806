"""A servicer served in process on port 0, and a service process's whole life, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from concord_rpc import GrpcService, channel
from concord_rpc.identity import Identity
from concord_testing.identity import TEST_CALLER, identity_env, vouched
from concord_testing.ports import free_port
from concord_testing.processes import ServiceProcess

__all__ = ["assert_process_lifecycle", "serving_in_process", "start_serving"]


@asynccontextmanager
async def serving_in_process(
    service: str, full_name: str, register: Callable[[grpc.aio.Server], Any]
) -> AsyncIterator[grpc.aio.Channel]:
    """A real server on port 0 with `register` applied, and a channel to it (no retries)."""
    server = GrpcService(service, port=0)
    server.add_service(full_name, register)
    port = await server.start()
    try:
        async with channel(f"127.0.0.1:{port}", retry=False) as chan:
            yield chan
    finally:
        await server.shutdown()


async def start_serving(
    service_process: Callable[..., ServiceProcess],
    module: str,
    *,
    port_variable: str,
    health_service: str,
    var_dir: Path,
    env: Mapping[str, str] | None = None,
) -> tuple[ServiceProcess, str]:
    """`python -m <module>` on a free port from `var_dir`, verifying caller identities signed
    with the test key (identity_env); returns once it reports `health_service` SERVING, with
    its `host:port`."""
    port = free_port()
    process = service_process(
        module,
        env={
            "CONCORD_VAR_DIR": str(var_dir),
            port_variable: str(port),
            "OTEL_TRACES_EXPORTER": "none",
            **identity_env(),
            **(env or {}),
        },
    )
    addr = f"127.0.0.1:{port}"
    # Blocking wait in a thread, so servers on this test's loop keep answering.
    await asyncio.to_thread(process.wait_serving, addr, service=health_service)
    return process, addr


async def assert_process_lifecycle(
    service_process: Callable[..., ServiceProcess],
    module: str,
    *,
    port_variable: str,
    health_service: str,
    var_dir: Path,
    call: Callable[[grpc.aio.Channel], Awaitable[None]],
    env: Mapping[str, str] | None = None,
    refuses_unvouched: bool = True,
    caller: Identity = TEST_CALLER,
) -> ServiceProcess:
    """`python -m <module>` from an empty `var_dir`: SERVING, `call` is refused without a caller
    identity (unless `refuses_unvouched` is off: a process that is no internal service) and
    succeeds with one for `caller` (as the gateway vouches for it), SIGTERM exits 0."""
    process, addr = await start_serving(
        service_process,
        module,
        port_variable=port_variable,
        health_service=health_service,
        var_dir=var_dir,
        env=env,
    )
    if refuses_unvouched:
        async with channel(addr, retry=False) as chan:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(chan)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
    async with channel(addr, retry=False, interceptors=vouched(caller=caller)) as chan:
        await call(chan)
    assert process.stop() == 0, process.log_tail()
    return process
