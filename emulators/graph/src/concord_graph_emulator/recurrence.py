"""A series' occurrences from Graph's patternedRecurrence, expanded in the series' own zone."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dateutil import rrule

__all__ = ["RecurrenceNotSupported", "local_starts"]

_DAYS = {
    "monday": rrule.MO,
    "tuesday": rrule.TU,
    "wednesday": rrule.WE,
    "thursday": rrule.TH,
    "friday": rrule.FR,
    "saturday": rrule.SA,
    "sunday": rrule.SU,
}
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
# A noEnd series is expanded this far at most past the asked range's end; never more.
_MAX_OCCURRENCES = 5000


class RecurrenceNotSupported(ValueError):
    """A pattern this emulator does not expand: refused (400), never expanded wrongly."""


def _weekdays(pattern: dict[str, Any], index: int | None = None) -> list[Any]:
    try:
        days = [_DAYS[d.lower()] for d in pattern.get("daysOfWeek") or ()]
    except KeyError as exc:
        raise RecurrenceNotSupported(f"unknown day {exc.args[0]!r}") from None
    if not days:
        raise RecurrenceNotSupported("the pattern names no day of the week")
    return [d(index) for d in days] if index is not None else days


def local_starts(
    recurrence: dict[str, Any], first: dt.datetime, until: dt.datetime
) -> list[dt.datetime]:
    """The naive local starts of a series whose first start is `first` (naive, local), up to
    `until` (naive, local) at most."""
    pattern, span = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    interval = int(pattern.get("interval") or 1)
    kind = pattern.get("type")
    freq: Any
    kwargs: dict[str, Any] = {"interval": interval, "dtstart": first}
    if kind == "daily":
        freq = rrule.DAILY
    elif kind == "weekly":
        freq = rrule.WEEKLY
        kwargs["byweekday"] = _weekdays(pattern)
        kwargs["wkst"] = _DAYS[(pattern.get("firstDayOfWeek") or "sunday").lower()]
    elif kind == "absoluteMonthly":
        freq = rrule.MONTHLY
        kwargs["bymonthday"] = int(pattern.get("dayOfMonth") or first.day)
    elif kind == "relativeMonthly":
        freq = rrule.MONTHLY
        kwargs["byweekday"] = _weekdays(pattern, _INDEX[pattern.get("index") or "first"])
    elif kind == "absoluteYearly":
        freq = rrule.YEARLY
        kwargs["bymonth"] = int(pattern.get("month") or first.month)
        kwargs["bymonthday"] = int(pattern.get("dayOfMonth") or first.day)
    elif kind == "relativeYearly":
        freq = rrule.YEARLY
        kwargs["bymonth"] = int(pattern.get("month") or first.month)
        kwargs["byweekday"] = _weekdays(pattern, _INDEX[pattern.get("index") or "first"])
    else:
        raise RecurrenceNotSupported(f"pattern type {kind!r}")
    range_type = span.get("type") or "noEnd"
    if range_type == "numbered":
        kwargs["count"] = int(span.get("numberOfOccurrences") or 1)
    elif range_type == "endDate":
        end = dt.date.fromisoformat(span["endDate"])
        kwargs["until"] = dt.datetime.combine(end, dt.time(23, 59, 59))
    elif range_type != "noEnd":
        raise RecurrenceNotSupported(f"range type {range_type!r}")
    out: list[dt.datetime] = []
    for start in rrule.rrule(freq, **kwargs):
        if start > until or len(out) >= _MAX_OCCURRENCES:
            break
        out.append(start)
    return out
