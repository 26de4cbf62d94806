from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from concord_rpc import GrpcService, ReadinessCheck, channel

SERVICE = "test.v1.Echo"

Unary = Callable[[StringValue, grpc.aio.ServicerContext], Awaitable[StringValue]]
Stream = Callable[[StringValue, grpc.aio.ServicerContext], AsyncIterator[StringValue]]

_CODEC: dict[str, Any] = {
    "request_deserializer": StringValue.FromString,
    "response_serializer": StringValue.SerializeToString,
}


def register(unary: Mapping[str, Unary], stream: Mapping[str, Stream]) -> Callable[[Any], None]:
    """A servicer made of plain functions over StringValue, so no Concord protos are needed."""

    def add(server: grpc.aio.Server) -> None:
        handlers = {n: grpc.unary_unary_rpc_method_handler(f, **_CODEC) for n, f in unary.items()}
        handlers |= {
            n: grpc.unary_stream_rpc_method_handler(f, **_CODEC) for n, f in stream.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return add


@contextlib.asynccontextmanager
async def running(
    unary: Mapping[str, Unary] | None = None,
    stream: Mapping[str, Stream] | None = None,
    *,
    name: str = "test",
    checks: Sequence[ReadinessCheck] = (),
    drain_seconds: float = 5.0,
) -> AsyncIterator[GrpcService]:
    service = GrpcService(name, port=0, drain_seconds=drain_seconds, readiness_checks=checks)
    service.add_service(SERVICE, register(unary or {}, stream or {}))
    await service.start()
    try:
        yield service
    finally:
        await service.shutdown()


async def call(addr: str, method: str, value: str = "", *, retry: bool = False) -> str:
    async with channel(addr, retry=retry) as ch:
        stub = ch.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=StringValue.SerializeToString,
            response_deserializer=StringValue.FromString,
        )
        response: StringValue = await stub(StringValue(value=value), timeout=10)
        return response.value


async def call_error(addr: str, method: str, value: str = "", *, retry: bool = False) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(addr, method, value, retry=retry)
    return raised.value
