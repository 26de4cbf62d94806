"""The one clock the reconciler reads (UTC, aware), so tests and rows agree."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
