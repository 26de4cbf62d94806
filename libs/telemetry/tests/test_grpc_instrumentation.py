from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

# Instrumentation patches grpc.aio process-wide, so the check runs in a fresh interpreter where
# no other test can have instrumented first with another provider.
_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import grpc
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from concord_telemetry import instrument_grpc, setup

    exporter = InMemorySpanExporter()
    telemetry = setup("svc", env={}, span_exporter=exporter, set_global=False)
    assert not instrument_grpc(telemetry.provider), "second instrumentation must be a no-op"

    async def echo(request, context):
        return request

    async def main():
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary("/test.Echo/Say")(b"hi") == b"hi"
        await server.stop(None)

    asyncio.run(main())
    telemetry.shutdown()
    spans = {s.kind.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"CLIENT", "SERVER"}, spans
    assert spans["SERVER"].parent.span_id == spans["CLIENT"].context.span_id
    print("ok")
    """
)


def test_grpc_aio_client_and_server_spans_are_linked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


_HEALTH_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from concord_telemetry import setup

    exporter = InMemorySpanExporter()
    telemetry = setup("svc", env={}, span_exporter=exporter, set_global=False)

    async def main():
        server = grpc.aio.server()
        health = HealthServicer()
        await health.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="test.Echo"), timeout=5)
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING, first
            watch.cancel()
        await server.stop(None)

    asyncio.run(main())
    telemetry.shutdown()
    served = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert served == [], served
    print("ok")
    """
)


def test_health_watch_streams_on_an_instrumented_server_and_is_not_traced() -> None:
    # Balanced channels watch each replica's health; the tracing interceptor broke the stream.
    result = subprocess.run(
        [sys.executable, "-c", _HEALTH_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
