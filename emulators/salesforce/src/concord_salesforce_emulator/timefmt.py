"""Salesforce's date and datetime text forms."""

from __future__ import annotations

import datetime as dt


def format_datetime(value: dt.datetime) -> str:
    """`2011-07-07T00:37:00.000+0000`: what Salesforce returns, always UTC, milliseconds."""
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> dt.datetime:
    """Accepts what clients send: `Z`, `+0000`, `+00:00`, with or without fractions."""
    cleaned = text.strip()
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1] + "+00:00"
    if len(cleaned) > 5 and cleaned[-5] in "+-" and cleaned[-3] != ":":
        cleaned = cleaned[:-2] + ":" + cleaned[-2:]
    value = dt.datetime.fromisoformat(cleaned)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text.strip())


def now() -> dt.datetime:
    """Now at Salesforce's precision (milliseconds), so stored and returned values agree."""
    value = dt.datetime.now(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
