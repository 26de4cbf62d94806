"""Calendar items and tasks from real iCalendar files, as Exchange stores what it imports.

For the demo seed: real calendars (Outlook, SabreDAV, BlackBerry exports) are messier than
anything written by hand. Every file is moved by whole weeks, in each series' own zone, so its
first event lands in the coming weeks and weekdays and wall-clock times stay what they were.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import pathlib
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from lxml import etree

from concord_exchange_emulator.xmlns import T, sub, t

__all__ = ["Imported", "UnsupportedCalendar", "import_calendar"]

_WEEKDAYS = {
    "MO": "Monday",
    "TU": "Tuesday",
    "WE": "Wednesday",
    "TH": "Thursday",
    "FR": "Friday",
    "SA": "Saturday",
    "SU": "Sunday",
}
_RESPONSES = {
    "ACCEPTED": "Accept",
    "TENTATIVE": "Tentative",
    "DECLINED": "Decline",
    "NEEDS-ACTION": "NoResponseReceived",
}
_SENSITIVITY = {"PRIVATE": "Private", "CONFIDENTIAL": "Confidential"}
_TASK_STATUS = {"NEEDS-ACTION": "NotStarted", "IN-PROCESS": "InProgress", "COMPLETED": "Completed"}


class UnsupportedCalendar(ValueError):
    """Something the importer does not translate; the seed refuses rather than approximates."""


@dataclass
class Imported:
    """One item to store; `exceptions` are edited occurrences of a series, as (original start
    in UTC, the edited occurrence's Subject/Location/Start/End)."""

    kind: str
    element: etree._Element
    exceptions: list[tuple[dt.datetime, dict[str, str]]] = field(default_factory=list)


@functools.cache
def _windows_ids() -> dict[str, str]:
    path = pathlib.Path(__file__).parent / "windows_zones.json"
    zones: dict[str, str] = json.loads(path.read_text())["zones"]
    return {iana: ms for ms, iana in sorted(zones.items())}


def windows_zone(zone: dt.tzinfo, around: dt.datetime) -> str:
    """The Windows id Exchange would store for an IANA zone. The shipped CLDR table holds one
    zone per Windows id, so another city of the same region (Vienna) gets the Windows zone whose
    offsets match through the whole year; ties go to the first id, equal in every instant."""
    key = getattr(zone, "key", None)
    if key in (None, "UTC", "Etc/UTC"):
        return "UTC"
    ids = _windows_ids()
    if key in ids:
        return ids[key]
    samples = [around + dt.timedelta(days=14 * n) for n in range(27)]

    def offsets(tz: dt.tzinfo) -> list[dt.timedelta | None]:
        return [s.astimezone(tz).utcoffset() for s in samples]

    wanted = offsets(zone)
    for iana, ms_id in sorted(ids.items(), key=lambda kv: kv[1]):
        if offsets(ZoneInfo(iana)) == wanted:
            return ms_id
    raise UnsupportedCalendar(f"no Windows zone matches {key}")


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _address(value: Any) -> str:
    return str(value).split(":", 1)[-1]


def _start_of(component: Any) -> dt.datetime | None:
    if "DTSTART" not in component:
        return None
    value = component.decoded("DTSTART")
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)


def import_calendar(raw: bytes, now: dt.datetime) -> list[Imported]:
    calendar = icalendar.Calendar.from_ical(raw)
    components = [c for c in calendar.walk() if c.name in ("VEVENT", "VTODO")]
    starts = [s for c in components if (s := _start_of(c)) is not None]
    first = min(starts, default=now)
    # Whole weeks, so weekly patterns keep their weekdays; at least one, so nothing is past.
    delta = dt.timedelta(weeks=max(1, math.ceil((now - first) / dt.timedelta(weeks=1)) + 1))
    masters: dict[str, Imported] = {}
    found: list[Imported] = []
    for component in components:
        if component.name == "VTODO":
            found.append(Imported("Task", _task(component, delta)))
        elif "RECURRENCE-ID" not in component:
            item = _event(component, delta)
            masters[str(component.get("UID", ""))] = item
            found.append(item)
    for component in components:
        if component.name == "VEVENT" and "RECURRENCE-ID" in component:
            master = masters.get(str(component.get("UID", "")))
            if master is None:
                raise UnsupportedCalendar("an edited occurrence without its series")
            master.exceptions.append(_exception(component, delta))
    return found


def _moved(value: Any, zone: dt.tzinfo | None, delta: dt.timedelta) -> Any:
    """Moved in wall-clock time of `zone` (the series' zone), so DST cannot shift the hour."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=zone or dt.UTC)
        return aware.astimezone(zone or dt.UTC) + delta
    return value + delta


def _event(component: Any, delta: dt.timedelta) -> Imported:
    node = etree.Element(t("CalendarItem"), nsmap={"t": T})
    start = component.decoded("DTSTART")
    zone = start.tzinfo if isinstance(start, dt.datetime) else None
    start = _moved(start, zone, delta)
    if "DTEND" in component:
        end = _moved(component.decoded("DTEND"), zone, delta)
    elif "DURATION" in component:
        end = start + component.decoded("DURATION")
    else:
        # RFC 5545: a date lasts the day; a date-time without an end lasts no time.
        end = start + dt.timedelta(days=1) if not isinstance(start, dt.datetime) else start
    sub(node, t("Subject"), str(component.get("SUMMARY", "")))
    sensitivity = _SENSITIVITY.get(str(component.get("CLASS", "")).upper(), "Normal")
    sub(node, t("Sensitivity"), sensitivity)
    description = str(component.get("DESCRIPTION", ""))
    if description:
        sub(node, t("Body"), description, BodyType="Text")
    # The demo shares what it imports: the `Salesforce` category selects calendar items.
    categories = sub(node, t("Categories"))
    for name in [*(str(c) for c in _categories(component)), "Salesforce"]:
        sub(categories, t("String"), name)
    all_day = not isinstance(start, dt.datetime)
    if all_day:
        sub(node, t("Start"), f"{start.isoformat()}T00:00:00Z")
        sub(node, t("End"), f"{end.isoformat()}T00:00:00Z")
    else:
        sub(node, t("Start"), _utc(start))
        sub(node, t("End"), _utc(end))
    sub(node, t("IsAllDayEvent"), "true" if all_day else "false")
    location = str(component.get("LOCATION", ""))
    if location:
        sub(node, t("Location"), location)
    _people(node, component)
    if component.get("ORGANIZER") is not None:
        # An invitation someone else sent: the demo user said yes to it.
        sub(node, t("MyResponseType"), "Accept")
    if "RRULE" in component:
        _recurrence(node, component, start, zone, delta)
    if zone is not None:
        ms_id = windows_zone(zone, start)
        sub(node, t("StartTimeZone"), Id=ms_id)
        sub(node, t("EndTimeZone"), Id=ms_id)
    uid = str(component.get("UID", ""))
    if uid:
        sub(node, t("UID"), uid)
    return Imported("CalendarItem", node)


def _categories(component: Any) -> list[str]:
    found: list[str] = []
    for value in _list(component.get("CATEGORIES")):
        found += [str(c) for c in getattr(value, "cats", [value])]
    return found


def _people(node: etree._Element, component: Any) -> None:
    organizer = component.get("ORGANIZER")
    if organizer is not None:
        mbx = sub(sub(node, t("Organizer")), t("Mailbox"))
        if organizer.params.get("CN"):
            sub(mbx, t("Name"), str(organizer.params["CN"]))
        sub(mbx, t("EmailAddress"), _address(organizer))
        sub(mbx, t("RoutingType"), "SMTP")
    required: list[Any] = []
    optional: list[Any] = []
    for attendee in _list(component.get("ATTENDEE")):
        role = str(attendee.params.get("ROLE", "REQ-PARTICIPANT")).upper()
        (optional if role == "OPT-PARTICIPANT" else required).append(attendee)
    for name, group in (("RequiredAttendees", required), ("OptionalAttendees", optional)):
        if not group:
            continue
        container = sub(node, t(name))
        for attendee in group:
            entry = sub(container, t("Attendee"))
            mbx = sub(entry, t("Mailbox"))
            if attendee.params.get("CN"):
                sub(mbx, t("Name"), str(attendee.params["CN"]))
            sub(mbx, t("EmailAddress"), _address(attendee))
            status = str(attendee.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
            sub(entry, t("ResponseType"), _RESPONSES.get(status, "Unknown"))


def _recurrence(
    node: etree._Element,
    component: Any,
    start: Any,
    zone: dt.tzinfo | None,
    delta: dt.timedelta,
) -> None:
    rule = component["RRULE"]
    rule = rule[0] if isinstance(rule, list) else rule
    freq = rule["FREQ"][0]
    interval = str(rule.get("INTERVAL", [1])[0])
    local_start = start if not isinstance(start, dt.datetime) else start.date()
    recurrence = sub(node, t("Recurrence"))
    if freq == "DAILY":
        sub(sub(recurrence, t("DailyRecurrence")), t("Interval"), interval)
    elif freq == "WEEKLY":
        days = [str(d)[-2:] for d in rule.get("BYDAY", [])] or [
            list(_WEEKDAYS)[local_start.weekday()]
        ]
        weekly = sub(recurrence, t("WeeklyRecurrence"))
        sub(weekly, t("Interval"), interval)
        sub(weekly, t("DaysOfWeek"), " ".join(_WEEKDAYS[d] for d in days))
        sub(weekly, t("FirstDayOfWeek"), _WEEKDAYS[str(rule.get("WKST", ["MO"])[0])])
    elif freq == "MONTHLY" and "BYDAY" not in rule:
        monthly = sub(recurrence, t("AbsoluteMonthlyRecurrence"))
        sub(monthly, t("Interval"), interval)
        sub(monthly, t("DayOfMonth"), str(rule.get("BYMONTHDAY", [local_start.day])[0]))
    else:
        raise UnsupportedCalendar(f"RRULE FREQ={freq} with these parts")
    if "COUNT" in rule:
        numbered = sub(recurrence, t("NumberedRecurrence"))
        sub(numbered, t("StartDate"), local_start.isoformat())
        sub(numbered, t("NumberOfOccurrences"), str(rule["COUNT"][0]))
    elif "UNTIL" in rule:
        until = _moved(rule["UNTIL"][0], zone, delta)
        last = until.date() if isinstance(until, dt.datetime) else until
        ranged = sub(recurrence, t("EndDateRecurrence"))
        sub(ranged, t("StartDate"), local_start.isoformat())
        sub(ranged, t("EndDate"), last.isoformat())
    else:
        sub(sub(recurrence, t("NoEndRecurrence")), t("StartDate"), local_start.isoformat())
    excluded = [d.dt for value in _list(component.get("EXDATE")) for d in value.dts]
    if excluded:
        deleted = sub(node, t("DeletedOccurrences"))
        for value in excluded:
            sub(sub(deleted, t("DeletedOccurrence")), t("Start"), _utc(_moved(value, zone, delta)))


def _exception(component: Any, delta: dt.timedelta) -> tuple[dt.datetime, dict[str, str]]:
    original = component.decoded("RECURRENCE-ID")
    zone = original.tzinfo
    start = _moved(component.decoded("DTSTART"), zone, delta)
    end = _moved(component.decoded("DTEND"), zone, delta) if "DTEND" in component else start
    fields = {"Subject": str(component.get("SUMMARY", "")), "Start": _utc(start), "End": _utc(end)}
    if component.get("LOCATION"):
        fields["Location"] = str(component["LOCATION"])
    return _moved(original, zone, delta).astimezone(dt.UTC), fields


def _task(component: Any, delta: dt.timedelta) -> etree._Element:
    node = etree.Element(t("Task"), nsmap={"t": T})
    sub(node, t("Subject"), str(component.get("SUMMARY", "")))
    categories = sub(node, t("Categories"))
    sub(categories, t("String"), "Salesforce")
    for name, prop in (("DueDate", "DUE"), ("StartDate", "DTSTART")):
        if prop in component:
            value = _moved(component.decoded(prop), None, delta)
            stamp = (
                value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
            )
            sub(node, t(name), _utc(stamp.replace(tzinfo=stamp.tzinfo or dt.UTC)))
    status = str(component.get("STATUS", "NEEDS-ACTION")).upper()
    sub(node, t("Status"), _TASK_STATUS.get(status, "NotStarted"))
    return node
