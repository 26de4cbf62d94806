from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from concord_telemetry import configure_logging

pytestmark = pytest.mark.unit


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("DEBUG", "mapping", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_line_with_the_current_trace(log_stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("concord.test").info("hello %s", "world")
    logging.getLogger("concord.test").warning("outside")
    inside, outside = _lines(log_stream)
    context = span.get_span_context()
    assert inside["message"] == "hello world"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "concord.test"
    assert inside["service"] == "mapping"
    assert inside["trace_id"] == trace.format_trace_id(context.trace_id)
    assert inside["span_id"] == trace.format_span_id(context.span_id)
    assert isinstance(inside["time"], str)
    assert outside["trace_id"] is None


def test_exception_is_logged(log_stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    (line,) = _lines(log_stream)
    assert "RuntimeError: boom" in str(line["exception"])


def test_secrets_subjects_bodies_and_addresses_are_redacted(log_stream: io.StringIO) -> None:
    log = logging.getLogger("concord.test")
    log.info(
        "syncing %s for alice@example.com",
        "bob.smith+tag@mail.example.org",
        extra={
            "password": "hunter2",
            "access_token": "tok-123",
            "Authorization": "Bearer abc",
            "client_secret": "s3cr3t",
            "mail_subject": "Quarterly numbers",
            "body": "Dear Bob",
            "mailbox": "demo",
            "participants": ["carol@example.net", "demo"],
        },
    )
    try:
        raise ValueError("cannot deliver to dave@example.com")
    except ValueError:
        log.exception("delivery failed", extra={"headers": {"token": "t", "host": "x"}})
    raw = log_stream.getvalue()
    for secret in [
        "alice@example.com",
        "bob.smith+tag@mail.example.org",
        "hunter2",
        "tok-123",
        "Bearer abc",
        "s3cr3t",
        "Quarterly numbers",
        "Dear Bob",
        "carol@example.net",
        "dave@example.com",
    ]:
        assert secret not in raw
    first, second = _lines(log_stream)
    assert first["message"] == "syncing [email] for [email]"
    assert first["password"] == "[redacted]"
    assert first["mailbox"] == "demo"
    assert first["participants"] == ["[email]", "demo"]
    assert second["headers"] == {"token": "[redacted]", "host": "x"}
    assert "cannot deliver to [email]" in str(second["exception"])


def test_configuring_twice_keeps_one_handler(log_stream: io.StringIO) -> None:
    other = io.StringIO()
    handler = configure_logging("INFO", "mapping", stream=other)
    try:
        logging.getLogger("x").info("once")
        assert log_stream.getvalue() == ""
        assert len(_lines(other)) == 1
    finally:
        logging.getLogger().removeHandler(handler)
