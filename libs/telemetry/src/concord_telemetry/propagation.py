"""W3C trace context in NATS message headers.

NATS has no OpenTelemetry instrumentation, so publishers inject the current context into the
message headers by hand and consumers extract it to parent their processing span.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate
from opentelemetry.context import Context


def inject(headers: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Add `traceparent` (and `tracestate`/baggage) for the current span to `headers`."""
    propagate.inject(headers, context=context)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context:
    """The context a publisher injected, or an empty one when the message carries none."""
    return propagate.extract(dict(headers) if headers else {})
