from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from concord_telemetry import exporters_from_env, extract, inject, setup

pytestmark = pytest.mark.unit


def _exporters(processors: Sequence[SpanProcessor]) -> list[type]:
    return [type(p.span_exporter) for p in processors if isinstance(p, BatchSpanProcessor)]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, [OTLPSpanExporter]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, [OTLPSpanExporter]),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_TRACES_EXPORTER": "none",
            },
            [],
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, [OTLPSpanExporter, ConsoleSpanExporter]),
    ],
)
def test_setup_picks_exporters_from_standard_variables(
    env: dict[str, str], expected: list[type]
) -> None:
    telemetry = setup("svc", env=env, set_global=False, grpc=False)
    try:
        assert _exporters(telemetry.processors) == expected
        # A provider exists even without an exporter, so logs still get trace ids.
        assert telemetry.provider is not None
    finally:
        telemetry.shutdown()


def test_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="zipkin"):
        exporters_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_service_name_from_env_wins() -> None:
    telemetry = setup("svc", env={"OTEL_SERVICE_NAME": "other"}, set_global=False, grpc=False)
    assert telemetry.provider is not None
    assert telemetry.provider.resource.attributes["service.name"] == "other"
    telemetry.shutdown()
    fallback = setup("svc", env={}, set_global=False, grpc=False)
    assert fallback.provider is not None
    assert fallback.provider.resource.attributes["service.name"] == "svc"
    fallback.shutdown()


def test_sdk_disabled_builds_no_provider() -> None:
    telemetry = setup("svc", env={"OTEL_SDK_DISABLED": "true"}, set_global=False, grpc=False)
    assert not telemetry.enabled
    telemetry.shutdown()


def test_shutdown_flushes_and_is_idempotent() -> None:
    exporter = InMemorySpanExporter()
    telemetry = setup("svc", env={}, span_exporter=exporter, set_global=False, grpc=False)
    with telemetry.tracer("t").start_as_current_span("work"):
        pass
    telemetry.shutdown()
    telemetry.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["work"]


def test_context_crosses_inject_and_extract_as_parent() -> None:
    exporter = InMemorySpanExporter()
    telemetry = setup("svc", env={}, span_exporter=exporter, set_global=False, grpc=False)
    tracer = telemetry.tracer("t")
    with tracer.start_as_current_span("publish", kind=trace.SpanKind.PRODUCER):
        headers = inject({"Nats-Msg-Id": "m1"})
    assert headers["Nats-Msg-Id"] == "m1"
    assert "traceparent" in headers
    # The consumer runs with no current span: only the headers link it to the publisher.
    with tracer.start_as_current_span(
        "process", context=extract(headers), kind=trace.SpanKind.CONSUMER
    ):
        pass
    telemetry.shutdown()
    publish, process = exporter.get_finished_spans()
    assert process.parent is not None
    assert process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == publish.context.trace_id


def test_extract_without_headers_gives_a_root_context() -> None:
    assert not trace.get_current_span(extract(None)).get_span_context().is_valid
    assert not trace.get_current_span(extract({"other": "x"})).get_span_context().is_valid
