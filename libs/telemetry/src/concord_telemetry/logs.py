"""JSON log lines on stderr, carrying the current trace and span ids, with secrets redacted.

Redaction happens in a filter on the handler, so it covers every logger that reaches the root
handler, including third-party libraries that log a URL with credentials or a mail address.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

REDACTED = "[redacted]"
EMAIL_MASK = "[email]"

_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Key names whose values are secrets or mail content: passwords, tokens, auth headers, API keys,
# cookies, and a message's subject/body (personal data, never logged).
_SENSITIVE_KEY = re.compile(
    r"pass(word|wd)?|token|secret|authori[sz]ation|api[_-]?key|cookie|credential|"
    r"private[_-]?key|subject|body",
    re.IGNORECASE,
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def redact_text(text: str) -> str:
    """`text` with every mail address masked."""
    return _EMAIL.sub(EMAIL_MASK, text)


def is_sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY.search(key) is not None


def redact_value(key: str, value: Any) -> Any:
    """A value safe to log under `key`: masked whole for sensitive keys, addresses masked else."""
    if is_sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(key, v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Masks addresses in the message and traceback, and sensitive `extra` values, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS:
                record.__dict__[key] = redact_value(key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, service, trace/span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        context = trace.get_current_span().get_span_context()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
            "trace_id": trace.format_trace_id(context.trace_id) if context.is_valid else None,
            "span_id": trace.format_span_id(context.span_id) if context.is_valid else None,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


class _ConcordHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` owns, so a second call replaces it."""


def configure_logging(
    level: str | int = "INFO", service: str = "concord", *, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record through redaction to `stream` (stderr) as one JSON line."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ConcordHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _ConcordHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
