"""Expanding an EWS recurrence pattern into occurrences, in the series' own time zone."""

from __future__ import annotations

import datetime as dt
import functools
import json
import pathlib
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule
from lxml import etree

from concord_exchange_emulator.xmlns import local, t

# Generating a never-ending series stops here; CalendarView windows are far shorter.
MAX_OCCURRENCES = 5000

_DAYS = {
    "Monday": rrule.MO,
    "Tuesday": rrule.TU,
    "Wednesday": rrule.WE,
    "Thursday": rrule.TH,
    "Friday": rrule.FR,
    "Saturday": rrule.SA,
    "Sunday": rrule.SU,
}
_DAY_GROUPS = {
    "Day": list(_DAYS.values()),
    "Weekday": [rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR],
    "WeekendDay": [rrule.SA, rrule.SU],
}
_INDEX = {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": -1}
_MONTHS = {
    name: n
    for n, name in enumerate(
        [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        start=1,
    )
}


class RecurrenceNotSupported(Exception):
    """A pattern the emulator does not expand (never a wrong list of occurrences)."""


@functools.cache
def _windows_zones() -> dict[str, str]:
    path = pathlib.Path(__file__).parent / "windows_zones.json"
    zones: dict[str, str] = json.loads(path.read_text())["zones"]
    return zones


def zone_of(item: etree._Element) -> dt.tzinfo:
    """The series' zone: StartTimeZone's Windows id mapped to IANA (UTC when absent)."""
    node = item.find(t("StartTimeZone"))
    if node is None:
        return dt.UTC
    ms_id = node.get("Id", "")
    iana = _windows_zones().get(ms_id)
    if iana is None:
        raise RecurrenceNotSupported(f"unknown time zone {ms_id!r}")
    try:
        return ZoneInfo(iana)
    except ZoneInfoNotFoundError:
        raise RecurrenceNotSupported(f"unknown time zone {iana!r}") from None


def parse_utc(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _days(text: str) -> list[rrule.weekday]:
    found: list[rrule.weekday] = []
    for name in text.split():
        if name in _DAYS:
            found.append(_DAYS[name])
        elif name in _DAY_GROUPS:
            found.extend(_DAY_GROUPS[name])
        else:
            raise RecurrenceNotSupported(f"day {name!r}")
    return found


def _rule(item: etree._Element) -> rrule.rrule:
    recurrence = item.find(t("Recurrence"))
    start_text, end_text = item.findtext(t("Start")), item.findtext(t("End"))
    if recurrence is None or not start_text or not end_text:
        raise RecurrenceNotSupported("no recurrence")
    first = parse_utc(start_text).astimezone(zone_of(item))
    # Occurrences keep the master's wall-clock time across DST changes, as Exchange does.
    return pattern_rule(recurrence, first.time().replace(tzinfo=None))


def pattern_rule(
    recurrence: etree._Element, at: dt.time = dt.time(), *, bounded: bool = True
) -> rrule.rrule:
    """The occurrences of a pattern and range (calendar or task recurrence), each at `at` local
    time from the range's start date; `bounded=False` ignores the range's end."""
    pattern, range_ = recurrence[0], recurrence[1]
    kind = local(pattern.tag)
    interval = int(pattern.findtext(t("Interval")) or "1")
    args: dict[str, object] = {"interval": interval}
    if kind == "DailyRecurrence":
        freq = rrule.DAILY
    elif kind == "WeeklyRecurrence":
        freq = rrule.WEEKLY
        args["byweekday"] = _days(pattern.findtext(t("DaysOfWeek")) or "")
        args["wkst"] = _DAYS.get(pattern.findtext(t("FirstDayOfWeek")) or "Sunday", rrule.SU)
    elif kind == "AbsoluteMonthlyRecurrence":
        freq = rrule.MONTHLY
        args["bymonthday"] = int(pattern.findtext(t("DayOfMonth")) or "1")
    elif kind == "RelativeMonthlyRecurrence":
        freq = rrule.MONTHLY
        args["byweekday"] = _days(pattern.findtext(t("DaysOfWeek")) or "")
        args["bysetpos"] = _INDEX[pattern.findtext(t("DayOfWeekIndex")) or "First"]
    elif kind == "AbsoluteYearlyRecurrence":
        freq = rrule.YEARLY
        args["bymonth"] = _MONTHS[pattern.findtext(t("Month")) or "January"]
        args["bymonthday"] = int(pattern.findtext(t("DayOfMonth")) or "1")
    elif kind == "RelativeYearlyRecurrence":
        freq = rrule.YEARLY
        args["bymonth"] = _MONTHS[pattern.findtext(t("Month")) or "January"]
        args["byweekday"] = _days(pattern.findtext(t("DaysOfWeek")) or "")
        args["bysetpos"] = _INDEX[pattern.findtext(t("DayOfWeekIndex")) or "First"]
    else:
        raise RecurrenceNotSupported(f"pattern {kind}")
    start_date = dt.date.fromisoformat((range_.findtext(t("StartDate")) or "")[:10])
    dtstart = dt.datetime.combine(start_date, at)
    range_kind = local(range_.tag)
    if not bounded:
        args["count"] = MAX_OCCURRENCES
    elif range_kind == "NumberedRecurrence":
        args["count"] = int(range_.findtext(t("NumberOfOccurrences")) or "1")
    elif range_kind == "EndDateRecurrence":
        end_date = dt.date.fromisoformat((range_.findtext(t("EndDate")) or "")[:10])
        args["until"] = dt.datetime.combine(end_date, dt.time(23, 59, 59))
    elif range_kind == "NoEndRecurrence":
        args["count"] = MAX_OCCURRENCES
    else:
        raise RecurrenceNotSupported(f"range {range_kind}")
    return rrule.rrule(freq, dtstart=dtstart, **args)  # type: ignore[arg-type]


def occurrences(item: etree._Element) -> Iterator[tuple[int, dt.datetime, dt.datetime]]:
    """(1-based instance index, start, end) in UTC for every occurrence of the series, in order."""
    tz = zone_of(item)
    start = parse_utc(item.findtext(t("Start")) or "")
    duration = parse_utc(item.findtext(t("End")) or "") - start
    for index, local_start in enumerate(_rule(item), start=1):
        begins = local_start.replace(tzinfo=tz).astimezone(dt.UTC)
        yield index, begins, begins + duration


def occurrence(item: etree._Element, index: int) -> tuple[dt.datetime, dt.datetime] | None:
    for found, start, end in occurrences(item):
        if found == index:
            return start, end
        if found > index:
            break
    return None


def utc_text(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zone_named(item: etree._Element, element: str) -> dt.tzinfo:
    node = item.find(t(element))
    if node is None:
        return zone_of(item)
    iana = _windows_zones().get(node.get("Id", ""))
    try:
        return ZoneInfo(iana) if iana else zone_of(item)
    except ZoneInfoNotFoundError:
        return zone_of(item)


def _zone_or_utc(item: etree._Element, element: str) -> dt.tzinfo:
    try:
        return _zone_named(item, element)
    except RecurrenceNotSupported:
        return dt.UTC


def snap_all_day(item: etree._Element) -> None:
    """An all-day event spans whole days of its own time zone: Exchange moves a start that is not
    midnight back to the midnight before it and an end forward to the midnight after it."""
    if (item.findtext(t("IsAllDayEvent")) or "").strip().lower() not in {"true", "1"}:
        return
    for element, zone_element, forward in (
        ("Start", "StartTimeZone", False),
        ("End", "EndTimeZone", True),
    ):
        node = item.find(t(element))
        if node is None or not node.text:
            continue
        tz = _zone_or_utc(item, zone_element)
        local_time = parse_utc(node.text).astimezone(tz)
        midnight = dt.datetime.combine(local_time.date(), dt.time(), tzinfo=tz)
        if forward and local_time.replace(tzinfo=None) != midnight.replace(tzinfo=None):
            midnight = dt.datetime.combine(
                local_time.date() + dt.timedelta(days=1), dt.time(), tzinfo=tz
            )
        node.text = utc_text(midnight)


def _offset_suffix(tz: dt.tzinfo, day: dt.date) -> str:
    offset = dt.datetime.combine(day, dt.time(12), tzinfo=tz).utcoffset() or dt.timedelta()
    if not offset:
        return "Z"
    sign = "-" if offset < dt.timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def date_recurrence_range(item: etree._Element) -> None:
    """A recurrence's range starts and ends on dates: Exchange answers them as xs:date with the
    series' UTC offset ("2024-03-01+01:00"), however the client wrote them."""
    recurrence = item.find(t("Recurrence"))
    if recurrence is None:
        return
    tz = _zone_or_utc(item, "StartTimeZone")
    for range_ in recurrence:
        for name in ("StartDate", "EndDate"):
            node = range_.find(t(name))
            if node is None or not node.text or len(node.text) < 10:
                continue
            try:
                day = dt.date.fromisoformat(node.text[:10])
            except ValueError:
                continue
            node.text = day.isoformat() + _offset_suffix(tz, day)
