"""Events and to-dos from real iCalendar files, stored as Exchange Online would hold what a
client imported: the demo seed's real calendars (the files the Exchange emulator ships)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import icalendar

from concord_graph_emulator import resources as res
from concord_graph_emulator import zones
from concord_graph_emulator.store import Item, Mailbox, Store, new_id

__all__ = ["UnsupportedCalendar", "import_calendar"]

_DAYS = {"MO": "monday", "TU": "tuesday", "WE": "wednesday", "TH": "thursday",
         "FR": "friday", "SA": "saturday", "SU": "sunday"}  # fmt: skip
_RESPONSES = {"ACCEPTED": "accepted", "DECLINED": "declined", "TENTATIVE": "tentativelyAccepted"}


class UnsupportedCalendar(ValueError):
    """Content this import does not carry over (never carried over approximately)."""


def _aware(value: Any) -> tuple[dt.datetime, bool]:
    """(start as an aware datetime, is a date): floating times are read as UTC."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)), False
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC), True


def _zone_name(value: Any) -> str:
    key = getattr(getattr(value, "tzinfo", None), "key", None)
    return str(key) if key else "UTC"


def _zoned(when: dt.datetime, zone: str, all_day: bool) -> dict[str, str]:
    local = when.replace(tzinfo=None) if all_day else when.astimezone(zones.zone(zone))
    # Stored as Exchange stores it: the Windows id where there is one.
    return {
        "dateTime": res.graph_datetime(local.replace(tzinfo=None)),
        "timeZone": zones.to_windows(zone),
    }


def _recurrence(
    component: Any, start: dt.datetime, zone: str, delta: dt.timedelta
) -> dict[str, Any]:
    rule = component.get("RRULE")
    freq = str(rule.get("FREQ", [""])[0])
    interval = int(rule.get("INTERVAL", [1])[0])
    local = start.astimezone(zones.zone(zone))
    if freq == "DAILY":
        pattern: dict[str, Any] = {"type": "daily", "interval": interval}
    elif freq == "WEEKLY":
        days = [_DAYS[str(d)[-2:]] for d in rule.get("BYDAY", [])] or [local.strftime("%A").lower()]
        pattern = {"type": "weekly", "interval": interval, "daysOfWeek": days}
    else:
        raise UnsupportedCalendar(f"FREQ={freq}")
    span: dict[str, Any] = {"type": "noEnd", "startDate": local.date().isoformat()}
    if "COUNT" in rule:
        span.update(type="numbered", numberOfOccurrences=int(rule["COUNT"][0]))
    elif "UNTIL" in rule:
        until = _aware(rule["UNTIL"][0])[0].astimezone(local.tzinfo) + delta
        span.update(type="endDate", endDate=until.date().isoformat())
    return {"pattern": pattern, "range": span}


def _event(component: Any, delta: dt.timedelta, box: Mailbox) -> dict[str, Any]:
    raw_start = component.decoded("DTSTART")
    start, all_day = _aware(raw_start)
    end = _aware(component.decoded("DTEND"))[0] if "DTEND" in component else start
    zone = _zone_name(raw_start)
    # Moved in the zone's wall-clock time (aware arithmetic), so DST cannot shift the hour.
    start, end = start + delta, end + delta
    data: dict[str, Any] = {
        "subject": str(component.get("SUMMARY", "")),
        "body": {"contentType": "text", "content": str(component.get("DESCRIPTION", ""))},
        "isAllDay": all_day,
        "start": _zoned(start, zone, all_day),
        "end": _zoned(end, zone, all_day),
        "iCalUId": str(component.get("UID", new_id(""))),
        "sensitivity": "private" if str(component.get("CLASS", "")) == "PRIVATE" else "normal",
        "categories": ["Salesforce"],
        "attendees": [],
    }
    if component.get("LOCATION"):
        data["location"] = {"displayName": str(component["LOCATION"]), "locationType": "default"}
    organizer = component.get("ORGANIZER")
    address = str(organizer).split(":", 1)[-1] if organizer else box.address
    data["organizer"] = {"emailAddress": {"name": address, "address": address}}
    attendees = component.get("ATTENDEE") or []
    for attendee in attendees if isinstance(attendees, list) else [attendees]:
        who = str(attendee).split(":", 1)[-1]
        status = _RESPONSES.get(str(attendee.params.get("PARTSTAT", "")), "none")
        data["attendees"].append(
            {
                "type": "optional"
                if attendee.params.get("ROLE") == "OPT-PARTICIPANT"
                else "required",
                "emailAddress": {"name": str(attendee.params.get("CN", who)), "address": who},
                "status": {"response": status, "time": "0001-01-01T00:00:00Z"},
            }
        )
    if "RRULE" in component:
        data["recurrence"] = _recurrence(component, start, zone, delta)
    data["type"] = "seriesMaster" if "RRULE" in component else "singleInstance"
    return data


def import_calendar(store: Store, box: Mailbox, raw: bytes, now: dt.datetime) -> int:
    """Stores the file's events (series with their deleted and edited occurrences) and to-dos,
    moved by whole weeks (weekdays kept) so the first one is in the coming weeks."""
    calendar = icalendar.Calendar.from_ical(raw)
    components = [c for c in calendar.walk() if c.name in ("VEVENT", "VTODO")]
    starts = [_aware(c.decoded("DTSTART"))[0] for c in components if "DTSTART" in c]
    first = min(starts, default=now)
    delta = dt.timedelta(weeks=max(1, math.ceil((now - first) / dt.timedelta(weeks=1)) + 1))
    folder = box.well_known("calendar")
    tasks = box.well_known("defaultList")
    assert folder is not None
    assert tasks is not None
    masters: dict[str, Item] = {}
    count = 0
    for component in components:
        if component.name == "VTODO":
            data: dict[str, Any] = {
                "title": str(component.get("SUMMARY", "")),
                "status": "notStarted",
            }
            if "DUE" in component:
                due, _ = _aware(component.decoded("DUE"))
                data["dueDateTime"] = _zoned(due + delta, "UTC", True)
            store.insert(box, Item(new_id(), "todoTask", tasks.id, data))
        elif "RECURRENCE-ID" not in component:
            item = Item(new_id(), "event", folder.id, _event(component, delta, box))
            series_zone = _aware(component.decoded("DTSTART"))[0].tzinfo
            for exdates in _all(component.get("EXDATE")):
                for when in exdates.dts:
                    moved = _aware(when.dt)[0].astimezone(series_zone) + delta
                    item.cancelled.add(res.timestamp(moved))
            masters[str(component.get("UID", ""))] = store.insert(box, item)
        else:
            continue
        count += 1
    for component in components:
        if component.name != "VEVENT" or "RECURRENCE-ID" not in component:
            continue
        master = masters.get(str(component.get("UID", "")))
        if master is None:
            raise UnsupportedCalendar("an edited occurrence without its series")
        zone = _aware(component.decoded("DTSTART"))[0].tzinfo
        original = _aware(component.decoded("RECURRENCE-ID"))[0].astimezone(zone) + delta
        data = _event(component, delta, box)
        data.update(
            type="exception", seriesMasterId=master.id, originalStart=res.timestamp(original)
        )
        data.pop("recurrence", None)
        store.insert(box, Item(res.occurrence_id(master.id, original), "event", folder.id, data))
        count += 1
    return count


def _all(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
