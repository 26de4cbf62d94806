from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from concord_events import EventBus, Topology
from concord_testing import NatsServer


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def bus(nats_server: NatsServer, spans: InMemorySpanExporter) -> AsyncIterator[EventBus]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    bus = await EventBus.connect(
        nats_server.url,
        "test",
        topology=Topology(lease_ttl_seconds=1.0),
        tracer_provider=provider,
    )
    await bus.ensure_topology()
    yield bus
    await bus.close()
