"""The process's tracer provider, configured only from the standard `OTEL_*` variables."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

_log = logging.getLogger(__name__)

_grpc_lock = threading.Lock()
_grpc_instrumented = False
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass
class Telemetry:
    """What `setup` built; `shutdown()` flushes pending spans before the process exits."""

    service_name: str
    provider: TracerProvider | None
    processors: list[SpanProcessor] = field(default_factory=list)
    _shut_down: bool = field(default=False, init=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer(self, name: str) -> trace.Tracer:
        return trace.get_tracer(name, tracer_provider=self.provider)

    def force_flush(self, timeout_millis: int = 5_000) -> bool:
        if self.provider is None or self._shut_down:
            return True
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        # Called from signal handlers and `finally` blocks alike; the SDK warns on a second call.
        if self._shut_down:
            return
        self._shut_down = True
        if self.provider is not None:
            self.provider.shutdown()


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def exporters_from_env(env: Mapping[str, str]) -> list[str]:
    """The exporter names `OTEL_TRACES_EXPORTER` asks for, resolved against the endpoint.

    The spec's default is `otlp`, but a developer laptop has no collector on localhost:4317, so
    `otlp` is only implied when an endpoint is configured; naming it explicitly still enables it.
    """
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    has_endpoint = bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not raw:
        return ["otlp"] if has_endpoint else []
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if "none" in names:
        return []
    unknown = sorted(set(names) - {"otlp", "console"})
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER names unsupported exporters {unknown}; use otlp, console or none"
        )
    return list(dict.fromkeys(names))


def _processors_from_env(env: Mapping[str, str]) -> list[SpanProcessor]:
    processors: list[SpanProcessor] = []
    for name in exporters_from_env(env):
        if name == "otlp":
            # Imported here: the exporter pulls in grpc, which a process without a collector
            # never needs. It reads endpoint, headers, TLS and timeouts from OTEL_* itself.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
    return processors


def instrument_grpc(provider: TracerProvider | None) -> bool:
    """Instrument grpc.aio servers and clients created from now on; only the first call counts.

    The instrumentors patch `grpc.aio.server`/channel factories process-wide, so a second call
    could only double the interceptors. Returns whether this call instrumented.
    """
    global _grpc_instrumented
    with _grpc_lock:
        if _grpc_instrumented:
            return False
        from opentelemetry.instrumentation.grpc import (
            GrpcAioInstrumentorClient,
            GrpcAioInstrumentorServer,
            filters,
        )

        # Not the health service: its Watch streams by `context.write`, which the aio server
        # interceptor cannot wrap (it iterates the handler, and fails every Watch: the
        # client-side health checks of balanced channels), and probes would only add noise.
        untraced = filters.negate(filters.service_name(HEALTH_SERVICE))
        GrpcAioInstrumentorServer(filter_=untraced).instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        GrpcAioInstrumentorClient().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        _grpc_instrumented = True
        return True


def setup(
    service_name: str,
    *,
    span_exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    set_global: bool = True,
    grpc: bool = True,
    env: Mapping[str, str] | None = None,
) -> Telemetry:
    """Build the tracer provider for this process from the standard `OTEL_*` variables.

    `span_exporter` (wrapped in a SimpleSpanProcessor, so tests see spans at once) and
    `span_processor` are added on top of what the environment selects. Without any exporter
    the provider is still real, so log lines carry trace ids and context still propagates.
    """
    env = os.environ if env is None else env
    name = env.get("OTEL_SERVICE_NAME") or service_name
    if _env_flag(env, "OTEL_SDK_DISABLED"):
        _log.info("OpenTelemetry SDK disabled by OTEL_SDK_DISABLED")
        return Telemetry(service_name=name, provider=None)

    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES; the explicit service.name wins.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    processors = _processors_from_env(env)
    if span_exporter is not None:
        processors.append(SimpleSpanProcessor(span_exporter))
    if span_processor is not None:
        processors.append(span_processor)
    for processor in processors:
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    if grpc:
        instrument_grpc(provider)
    return Telemetry(service_name=name, provider=provider, processors=processors)
