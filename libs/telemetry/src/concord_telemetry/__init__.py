"""OpenTelemetry for Concord processes: tracing from `OTEL_*`, NATS propagation, JSON logs."""

from __future__ import annotations

from concord_telemetry import attributes
from concord_telemetry.logs import (
    JsonFormatter,
    RedactingFilter,
    configure_logging,
    redact_text,
    redact_value,
)
from concord_telemetry.propagation import extract, inject
from concord_telemetry.tracing import Telemetry, exporters_from_env, instrument_grpc, setup

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "Telemetry",
    "attributes",
    "configure_logging",
    "exporters_from_env",
    "extract",
    "inject",
    "instrument_grpc",
    "redact_text",
    "redact_value",
    "setup",
]
