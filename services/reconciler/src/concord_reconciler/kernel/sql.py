"""How the reconciler's rows hold times (microseconds since the epoch, UTC) and versions (etags)."""

from __future__ import annotations

from datetime import UTC, datetime


def to_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


def etag(version: int) -> str:
    return f'W/"{version}"'
