"""Round-trip fidelity on the real calendars shipped inside `icalendar` and
`recurring-ical-events`: iCalendar (a mailbox's form) -> canonical -> Salesforce -> canonical ->
EWS pattern and Windows zone (Exchange's form) -> canonical, compared with the first canonical
form by expanding each series. Shared by the test (which sets a bar) and `make bench`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events  # type: ignore[import-untyped]

from concord_mapping.adapters.packaged import table_data
from concord_mapping.domain import recurrence as rec
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.mapper import map_to_crm, map_to_mail
from concord_mapping.domain.model import Kind
from concord_mapping.domain.table import Table
from concord_mapping.domain.timezones import iana_zone, windows_zone
from concord_mapping.domain.transforms import format_instant, parse_instant

YEARS = timedelta(days=2 * 366)
# Enough to cover two years of a minutely series without letting one file dominate the run.
MAX_OCCURRENCES = 3000
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def calendar_files() -> list[Path]:
    roots = [Path(icalendar.__file__).parent, Path(recurring_ical_events.__file__).parent]
    return sorted(
        Path(folder) / name
        for root in roots
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".ics")
    )


@dataclass
class Outcome:
    """`status`: exact, lossy (losses reported, occurrences equal), unsupported (refused with a
    reason), unreadable (the input itself is broken) or altered (changed silently: a defect)."""

    status: str
    reason: str = ""
    source: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    def share(self, *statuses: str) -> float:
        mapped = [o for o in self.outcomes if o.status != "unreadable"]
        return sum(o.status in statuses for o in mapped) / max(1, len(mapped))

    def reasons(self, status: str) -> Counter[str]:
        return Counter(o.reason for o in self.outcomes if o.status == status)


def _zone_name(value: Any, prop: Any) -> str:
    tz = getattr(value, "tzinfo", None)
    if tz is None:
        return ""
    if isinstance(tz, ZoneInfo):
        return tz.key
    if value.utcoffset() == timedelta(0) and str(tz) in ("UTC", "tzutc()"):
        return "UTC"
    return str(prop.params.get("TZID", "")) or str(tz)


def canonical(event: icalendar.Event) -> dict[str, Any]:
    """The canonical calendar item (protobuf JSON form) of one VEVENT, as a connector gives it."""
    start_prop = event["DTSTART"]
    start = event.decoded("DTSTART")
    if "DTEND" in event:
        end = event.decoded("DTEND")
    elif "DURATION" in event:
        end = start + event.decoded("DURATION")
    else:
        end = start + timedelta(days=1) if not isinstance(start, datetime) else start
    item: dict[str, Any] = {
        "subject": str(event.get("SUMMARY", "")),
        "location": str(event.get("LOCATION", "")),
        "body_text": str(event.get("DESCRIPTION", "")),
        "body_html": "",
        "show_as": "SHOW_AS_BUSY",
        "is_private": str(event.get("CLASS", "")).upper() == "PRIVATE",
        "attendees": [],
        "start_date": "",
        "end_date": "",
    }
    if isinstance(start, datetime):
        item["all_day"] = False
        item["time_zone"] = _zone_name(start, start_prop)
        if start.tzinfo is None:
            raise MappingFailure("FLOATING_TIME", "a timed event without a zone", "start")
        item["start"] = format_instant(start)
        end = end if isinstance(end, datetime) else datetime.combine(end, start.timetz())
        item["end"] = format_instant(
            end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=start.tzinfo)
        )
    else:
        item["all_day"] = True
        item["time_zone"] = ""
        item["start_date"] = start.isoformat()
        last = end.date() if isinstance(end, datetime) else end
        item["end_date"] = max(last, start + timedelta(days=1)).isoformat()
    if "RECURRENCE-ID" in event:
        # An exception: the reconciler keys it by the start it had in the series.
        original = event.decoded("RECURRENCE-ID")
        if isinstance(original, datetime) and original.tzinfo is not None:
            item["original_start"] = format_instant(original)
    rules = [f"RRULE:{r.to_ical().decode()}" for r in _as_list(event.get("RRULE"))]
    rules += [f"RDATE:{r.to_ical().decode()}" for r in _as_list(event.get("RDATE"))]
    if rules:
        excluded = [d.dt for ex in _as_list(event.get("EXDATE")) for d in ex.dts]
        item["recurrence"] = {
            "rules": rules,
            "time_zone": item["time_zone"],
            "excluded_starts": [
                format_instant(d) for d in excluded if isinstance(d, datetime) and d.tzinfo
            ],
            "excluded_dates": [d.isoformat() for d in excluded if not isinstance(d, datetime)],
        }
    return item


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def to_exchange_and_back(item: dict[str, Any]) -> dict[str, Any]:
    """Through Exchange's form: Windows zone name and EWS recurrence pattern."""
    out = dict(item)
    if item.get("time_zone"):
        windows = windows_zone(iana_zone(item["time_zone"]))
        if windows is None:
            raise MappingFailure("UNKNOWN_TIME_ZONE", "no Windows name for the zone", "time_zone")
        out["time_zone"] = iana_zone(windows)
    recurrence = item.get("recurrence")
    if recurrence:
        rule = rec.parse_rrule(recurrence["rules"][0])
        start = _series_start(item)
        pattern, span = rec.rrule_to_ews(rule, start)
        tz = ZoneInfo(out["time_zone"]) if out.get("time_zone") else None
        back = rec.ews_to_rrule(pattern, span, tz)
        out["recurrence"] = recurrence | {
            "rules": [back.text()],
            "time_zone": out.get("time_zone", ""),
        }
    return out


def _series_start(item: dict[str, Any]) -> datetime:
    if item["all_day"]:
        return datetime.combine(date.fromisoformat(item["start_date"]), datetime.min.time())
    return parse_instant(item["start"]).astimezone(ZoneInfo(iana_zone(item["time_zone"])))


def occurrences(item: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(start, end) of every occurrence in the window, on the series' own wall clock."""
    start = _series_start(item)
    if item["all_day"]:
        length: timedelta = date.fromisoformat(item["end_date"]) - date.fromisoformat(
            item["start_date"]
        )
    else:
        length = parse_instant(item["end"]) - parse_instant(item["start"])
    recurrence = item.get("recurrence")
    if not recurrence:
        return [(start, start + length)]
    rule = rec.parse_rrule(recurrence["rules"][0])
    naive = start.tzinfo is None
    low = min(start.replace(tzinfo=None), NOW.replace(tzinfo=None)) - YEARS
    high = max(start.replace(tzinfo=None), NOW.replace(tzinfo=None)) + YEARS
    after, before = (low, high) if naive else (low.replace(tzinfo=UTC), high.replace(tzinfo=UTC))
    excluded = set(recurrence.get("excluded_starts") or []) | set(
        recurrence.get("excluded_dates") or []
    )
    found = []
    for moment in rec.occurrences(rule, start, after=after, before=before):
        key = moment.date().isoformat() if naive else format_instant(moment)
        if key not in excluded:
            found.append((moment, moment + length))
        if len(found) >= MAX_OCCURRENCES:
            break
    return found


def _same_zone(a: str, b: str) -> bool:
    if not a or not b:
        return a == b
    first, second = iana_zone(a), iana_zone(b)
    return first == second or windows_zone(first) == windows_zone(second)


def round_trip(item: dict[str, Any], table: Table) -> Outcome:
    describe = table_data().describes[table.target_sobject]
    try:
        mapped = map_to_crm(table, describe, "calendar_item", item)
        expected = occurrences(item)
        back = map_to_mail(table, describe, mapped.fields, item.get("time_zone") or "UTC")
        final = to_exchange_and_back(_complete(back.fields, item))
        got = occurrences(final)
    except MappingFailure as failure:
        return Outcome("unsupported", failure.reason)
    if got != expected:
        return Outcome("altered", "occurrences differ")
    if final.get("original_start") != item.get("original_start"):
        return Outcome("altered", "original start of an exception differs")
    timed_series = item.get("recurrence") and not item["all_day"]
    if timed_series and not _same_zone(item["time_zone"], final.get("time_zone", "")):
        return Outcome("altered", "time zone differs")
    losses = mapped.losses + back.losses
    if losses:
        return Outcome("lossy", losses[0].kind.value)
    return Outcome("exact")


def _complete(fields: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Fill what Salesforce does not keep for a single event (its zone: instants suffice)."""
    out = {"all_day": False, "start_date": "", "end_date": ""} | dict(fields)
    if not item.get("recurrence"):
        out["time_zone"] = item.get("time_zone", "")
    return out


def events() -> Iterator[tuple[str, icalendar.Event | None]]:
    for path in calendar_files():
        try:
            calendar = icalendar.Calendar.from_ical(path.read_bytes())
        except Exception:
            yield path.name, None
            continue
        for component in calendar.walk("VEVENT"):
            # walk("VEVENT") yields only events; icalendar types them as any component.
            yield path.name, cast(icalendar.Event, component)


def measure(table: Table | None = None) -> Report:
    table = table or table_data().defaults[Kind.CALENDAR_ITEM]
    report = Report()
    for name, event in events():
        if event is None or "DTSTART" not in event:
            report.outcomes.append(Outcome("unreadable", "no DTSTART or not iCalendar", name))
            continue
        try:
            item = canonical(event)
        except MappingFailure as failure:
            report.outcomes.append(Outcome("unsupported", failure.reason, name))
            continue
        except Exception as broken:
            report.outcomes.append(Outcome("unreadable", type(broken).__name__, name))
            continue
        outcome = round_trip(item, table)
        outcome.source = name
        report.outcomes.append(outcome)
    return report
