"""Google resources (Calendar events, People persons, Tasks tasks, Gmail messages) to and from
the canonical items, as the EWS provider makes them: same keys, same all-day rules, same
privacy flags. Pure functions over the JSON the Google APIs speak; no I/O here."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email
import email.policy
import email.utils
import hashlib
import json
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.adapters.ews_items import (
    UnreadableItem,
    UnwritableContent,
    checked_mime,
    contained,
)
from concord_mail_connector.domain.provider import LINK_ID_PATH

__all__ = [
    "CATEGORIES_PROPERTY",
    "LINK_ID_PROPERTY",
    "client_data",
    "event_body",
    "event_id_for",
    "event_item",
    "event_patch",
    "message_item",
    "person_body",
    "person_fields",
    "person_item",
    "task_body",
    "task_item",
]

# extendedProperties.private keys: only this client (the service account's project) sees them.
LINK_ID_PROPERTY = "concord_link_id"
CATEGORIES_PROPERTY = "concord_categories"
# The marker a task's notes end with: the Tasks API has no property of its own for a link id.
TASK_LINK_MARKER = "\n\n[concord:"


def _ts(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no offset")
    return value


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UnreadableItem(
            "UNKNOWN_TIME_ZONE", f"the item is in time zone {name!r}, which is not an IANA zone"
        ) from None


def event_id_for(link_id: str) -> str:
    """The event id Concord chooses for a link: base32hex (a-v, 0-9) as Calendar requires, the
    same for every retry of the create, so a second insert is refused (409) and never
    duplicates."""
    digest = hashlib.sha256(link_id.encode()).digest()
    return "cc" + base64.b32hexencode(digest).decode().lower().rstrip("=")


# ---- Calendar ------------------------------------------------------------------------------

_RESPONSES = {
    "needsAction": r.RESPONSE_STATUS_NEEDS_ACTION,
    "accepted": r.RESPONSE_STATUS_ACCEPTED,
    "tentative": r.RESPONSE_STATUS_TENTATIVE,
    "declined": r.RESPONSE_STATUS_DECLINED,
}
_RESPONSE_NAMES = {v: k for k, v in _RESPONSES.items()}
_VISIBILITY = {
    "private": r.SENSITIVITY_PRIVATE,
    "confidential": r.SENSITIVITY_CONFIDENTIAL,
    "public": r.SENSITIVITY_NORMAL,
    "default": r.SENSITIVITY_NORMAL,
}


def _private(event: Mapping[str, Any]) -> Mapping[str, str]:
    found: Mapping[str, str] = event.get("extendedProperties", {}).get("private", {})
    return found


def event_ref(event: Mapping[str, Any], collection: str) -> r.ItemRef:
    return r.ItemRef(
        kind=r.OBJECT_KIND_CALENDAR_ITEM,
        native_id=str(event.get("id", "")),
        version=str(event.get("etag", "")),
        link_id=_private(event).get(LINK_ID_PROPERTY, ""),
        collection=collection,
    )


def _when(value: Any, what: str) -> tuple[dt.datetime | None, str, str]:
    """(instant, date, zone) of an EventDateTime; UnreadableItem when it is neither."""
    if not isinstance(value, Mapping):
        raise UnreadableItem("CONVERSION_FAILED", f"the event has no readable {what}")
    zone_name = str(value.get("timeZone") or "")
    if zone_name:
        zone = _zone(zone_name)
    try:
        if value.get("date"):
            return None, dt.date.fromisoformat(str(value["date"])).isoformat(), zone_name
        text = str(value.get("dateTime") or "")
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnreadableItem("CONVERSION_FAILED", f"the event has no readable {what}") from None
    if parsed.tzinfo is None:
        if not zone_name:
            raise UnreadableItem("CONVERSION_FAILED", f"the event's {what} has no zone")
        parsed = parsed.replace(tzinfo=zone)
    return parsed, "", zone_name


@contained
def event_item(
    event: Mapping[str, Any], collection: str, excluded: Sequence[Mapping[str, Any]] = ()
) -> r.MailItem:
    """The canonical item of an event (master, single, or exception of a series); `excluded`
    are the series' cancelled instances, which become its excluded starts."""
    start, start_date, zone_name = _when(event.get("start"), "start")
    end, end_date, _ = _when(event.get("end"), "end")
    if (start is None) != (end is None):
        raise UnreadableItem("CONVERSION_FAILED", "the event mixes a date and a date-time")
    visibility = str(event.get("visibility", "default"))
    sensitivity = _VISIBILITY.get(visibility, r.SENSITIVITY_UNSPECIFIED)
    out = r.CalendarItem(
        subject=str(event.get("summary", "")),
        all_day=start is None,
        time_zone=zone_name,
        location=str(event.get("location", "")),
        body_text=str(event.get("description", "")),
        show_as=r.SHOW_AS_FREE if event.get("transparency") == "transparent" else r.SHOW_AS_BUSY,
        sensitivity=sensitivity,
        is_private=sensitivity in (r.SENSITIVITY_PRIVATE, r.SENSITIVITY_CONFIDENTIAL),
        ical_uid=str(event.get("iCalUID", "")),
        is_cancelled=event.get("status") == "cancelled",
    )
    categories = _private(event).get(CATEGORIES_PROPERTY)
    if categories:
        try:
            out.categories.extend(str(c) for c in json.loads(categories))
        except (ValueError, TypeError):
            raise UnreadableItem(
                "CONVERSION_FAILED", "the event's categories are unreadable"
            ) from None
    if start is None or end is None:
        # Dates as the calendar shows them; Google's end date is already exclusive, as ours.
        out.start_date, out.end_date = start_date, end_date
    else:
        out.start.CopyFrom(_ts(start))
        out.end.CopyFrom(_ts(end))
    reminders = event.get("reminders", {})
    overrides = reminders.get("overrides") or []
    if not reminders.get("useDefault") and overrides:
        out.reminder_minutes = min(int(o.get("minutes", 0)) for o in overrides)
    organizer = event.get("organizer") or {}
    if organizer.get("email"):
        out.organizer.CopyFrom(
            r.EmailAddress(
                address=str(organizer["email"]), display_name=str(organizer.get("displayName", ""))
            )
        )
    for attendee in event.get("attendees") or ():
        if not attendee.get("email"):
            continue
        role = r.ATTENDEE_ROLE_REQUIRED
        if attendee.get("resource"):
            role = r.ATTENDEE_ROLE_RESOURCE
        elif attendee.get("optional"):
            role = r.ATTENDEE_ROLE_OPTIONAL
        response = _RESPONSES.get(
            str(attendee.get("responseStatus")), r.RESPONSE_STATUS_UNSPECIFIED
        )
        if attendee.get("organizer"):
            response = r.RESPONSE_STATUS_ORGANIZER
        out.attendees.append(
            r.Attendee(
                email=str(attendee["email"]),
                display_name=str(attendee.get("displayName", "")),
                role=role,
                response_status=response,
            )
        )
    if event.get("recurrence"):
        out.recurrence.CopyFrom(_recurrence(event, excluded))
    if event.get("recurringEventId"):
        # Occurrences are keyed by series and original start, never by Google's instance id.
        out.series_id = str(event["recurringEventId"])
        original, original_date, _ = _when(event.get("originalStartTime"), "original start")
        if original is not None:
            out.original_start.CopyFrom(_ts(original))
        else:
            # An all-day series' occurrence: its day, at midnight UTC, as a key only.
            day = dt.date.fromisoformat(original_date)
            out.original_start.CopyFrom(_ts(dt.datetime.combine(day, dt.time(), dt.UTC)))
    item = r.MailItem(ref=event_ref(event, collection), calendar_item=out)
    if event.get("updated"):
        item.last_modified_time.CopyFrom(_ts(_parse_time(str(event["updated"]))))
    return item


def _recurrence(event: Mapping[str, Any], excluded: Sequence[Mapping[str, Any]]) -> r.Recurrence:
    start = event.get("start", {})
    zone_name = str(start.get("timeZone") or "")
    zone = _zone(zone_name) if zone_name else dt.UTC
    out = r.Recurrence(time_zone=zone_name)
    all_day = bool(start.get("date"))
    for line in event.get("recurrence") or ():
        upper = str(line).upper()
        if upper.startswith("EXDATE"):
            head, _, values = str(line).partition(":")
            params = dict(p.split("=", 1) for p in head.split(";")[1:] if "=" in p)
            for value in values.split(","):
                _exclude(out, value.strip(), params.get("TZID"), zone, all_day)
        elif upper.startswith(("RRULE", "RDATE", "EXRULE")):
            out.rules.append(str(line))
    for instance in excluded:
        original, original_date, _ = _when(instance.get("originalStartTime"), "original start")
        if original is not None:
            out.excluded_starts.append(_ts(original))
        elif original_date:
            out.excluded_dates.append(original_date)
    return out


def _exclude(
    out: r.Recurrence, value: str, tzid: str | None, zone: dt.tzinfo, all_day: bool
) -> None:
    try:
        if len(value) == 8:
            day = dt.datetime.strptime(value, "%Y%m%d").date()
            if all_day:
                out.excluded_dates.append(day.isoformat())
            return
        if value.endswith("Z"):
            moment = dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        else:
            local = dt.datetime.strptime(value, "%Y%m%dT%H%M%S")
            moment = local.replace(tzinfo=_zone(tzid) if tzid else zone)
    except ValueError:
        raise UnreadableItem("CONVERSION_FAILED", "the series has an unreadable EXDATE") from None
    if all_day:
        out.excluded_dates.append(moment.date().isoformat())
    else:
        out.excluded_starts.append(_ts(moment))


# Canonical calendar fields -> the event fields they are written to.
_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "subject": ("summary",),
    "start": ("start", "end"),
    "end": ("start", "end"),
    "all_day": ("start", "end"),
    "start_date": ("start", "end"),
    "end_date": ("start", "end"),
    "time_zone": ("start", "end"),
    "location": ("location",),
    "body_text": ("description",),
    "show_as": ("transparency",),
    "sensitivity": ("visibility",),
    "is_private": ("visibility",),
    "reminder_minutes": ("reminders",),
    "categories": ("extendedProperties",),
    "attendees": ("attendees",),
    "recurrence": ("recurrence",),
}


def event_body(item: r.MailItem, link_id: str = "") -> dict[str, Any]:
    """Every mapped event field of a canonical item; UnwritableContent for what Calendar
    would refuse (no times, an end before the start, an unknown zone)."""
    c = item.calendar_item
    body: dict[str, Any] = {
        "summary": c.subject,
        "location": c.location,
        "description": c.body_text,
        "transparency": "transparent" if c.show_as == r.SHOW_AS_FREE else "opaque",
        "visibility": "private"
        if c.is_private or c.sensitivity in (r.SENSITIVITY_PRIVATE, r.SENSITIVITY_CONFIDENTIAL)
        else "default",
    }
    zone_name = c.time_zone or (c.recurrence.time_zone if c.HasField("recurrence") else "")
    if zone_name:
        try:
            zoneinfo.ZoneInfo(zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise UnwritableContent(f"time zone {zone_name!r} is not an IANA zone") from None
    if c.all_day:
        try:
            first = dt.date.fromisoformat(c.start_date)
            after = dt.date.fromisoformat(c.end_date)
        except ValueError:
            raise UnwritableContent("an all-day item needs start and end dates") from None
        if after <= first:
            raise UnwritableContent("the item ends before it starts")
        body["start"], body["end"] = {"date": c.start_date}, {"date": c.end_date}
    else:
        if not c.HasField("start") or not c.HasField("end"):
            raise UnwritableContent("a timed item needs a start and an end")
        start, end = c.start.ToDatetime(dt.UTC), c.end.ToDatetime(dt.UTC)
        if end < start:
            raise UnwritableContent("the item ends before it starts")
        zone = zoneinfo.ZoneInfo(zone_name) if zone_name else dt.UTC
        body["start"] = {
            "dateTime": start.astimezone(zone).isoformat(),
            "timeZone": zone_name or "UTC",
        }
        body["end"] = {"dateTime": end.astimezone(zone).isoformat(), "timeZone": zone_name or "UTC"}
    if c.HasField("reminder_minutes"):
        body["reminders"] = {
            "useDefault": False,
            "overrides": [{"method": "popup", "minutes": c.reminder_minutes}],
        }
    else:
        body["reminders"] = {"useDefault": False, "overrides": []}
    body["attendees"] = [
        {
            "email": a.email,
            **({"displayName": a.display_name} if a.display_name else {}),
            **({"optional": True} if a.role == r.ATTENDEE_ROLE_OPTIONAL else {}),
            **({"resource": True} if a.role == r.ATTENDEE_ROLE_RESOURCE else {}),
            "responseStatus": _RESPONSE_NAMES.get(a.response_status, "needsAction"),
        }
        for a in c.attendees
    ]
    private: dict[str, str] = {CATEGORIES_PROPERTY: json.dumps(list(c.categories))}
    if link_id:
        private[LINK_ID_PROPERTY] = link_id
    body["extendedProperties"] = {"private": private}
    if c.HasField("recurrence") and c.recurrence.rules:
        body["recurrence"] = list(c.recurrence.rules) + _exdates(c, zone_name)
    return body


def _exdates(c: r.CalendarItem, zone_name: str) -> list[str]:
    if c.all_day:
        days = [dt.date.fromisoformat(d).strftime("%Y%m%d") for d in c.recurrence.excluded_dates]
        return [f"EXDATE;VALUE=DATE:{','.join(days)}"] if days else []
    zone = zoneinfo.ZoneInfo(zone_name) if zone_name else dt.UTC
    stamps = [
        s.ToDatetime(dt.UTC).astimezone(zone).strftime("%Y%m%dT%H%M%S")
        for s in c.recurrence.excluded_starts
    ]
    if not stamps:
        return []
    return [f"EXDATE;TZID={zone_name or 'UTC'}:{','.join(stamps)}"]


def event_patch(item: r.MailItem, mask: Sequence[str], link_id: str = "") -> dict[str, Any]:
    """The fields an update changes: those under `mask` (every mapped one when empty, none
    when it is LINK_ID_PATH alone), and `link_id` in the private extended properties.

    Every update stores its link id over the one the event carries, as the EWS provider's
    do: events.patch merges `extendedProperties.private` key by key, so the event's other
    keys (its categories) stay."""
    paths = [p for p in mask if p != LINK_ID_PATH]
    body: dict[str, Any] = {}
    if paths or not mask:
        body = event_body(item)
    if paths:
        wanted: set[str] = set()
        for path in paths:
            name = path.split(".")[0]
            if name not in _EVENT_FIELDS:
                raise UnwritableContent(f"the field {name!r} cannot be written to Google Calendar")
            wanted.update(_EVENT_FIELDS[name])
        body = {k: v for k, v in body.items() if k in wanted}
    if link_id:
        private = body.setdefault("extendedProperties", {}).setdefault("private", {})
        private[LINK_ID_PROPERTY] = link_id
    return body


# ---- People --------------------------------------------------------------------------------

PERSON_FIELDS = (
    "names,emailAddresses,phoneNumbers,addresses,organizations,biographies,birthdays,"
    "memberships,clientData,metadata"
)
_PHONE_TYPES = {
    "work": r.PHONE_TYPE_WORK,
    "home": r.PHONE_TYPE_HOME,
    "mobile": r.PHONE_TYPE_MOBILE,
    "workFax": r.PHONE_TYPE_WORK_FAX,
    "homeFax": r.PHONE_TYPE_HOME_FAX,
    "pager": r.PHONE_TYPE_PAGER,
    "assistant": r.PHONE_TYPE_ASSISTANT,
}
_PHONE_NAMES = {v: k for k, v in _PHONE_TYPES.items()}
_EMAIL_TYPES = {
    "work": r.EMAIL_ADDRESS_TYPE_WORK,
    "home": r.EMAIL_ADDRESS_TYPE_HOME,
    "other": r.EMAIL_ADDRESS_TYPE_OTHER,
}
_EMAIL_NAMES = {v: k for k, v in _EMAIL_TYPES.items()}
_ADDRESS_TYPES = {
    "work": r.POSTAL_ADDRESS_TYPE_WORK,
    "home": r.POSTAL_ADDRESS_TYPE_HOME,
    "other": r.POSTAL_ADDRESS_TYPE_OTHER,
}
_ADDRESS_NAMES = {v: k for k, v in _ADDRESS_TYPES.items()}
# Canonical contact fields -> the Person fields (updatePersonFields) they live in.
_PERSON_FIELD_OF = {
    "given_name": "names",
    "middle_name": "names",
    "family_name": "names",
    "name_prefix": "names",
    "name_suffix": "names",
    "display_name": "names",
    "email_addresses": "emailAddresses",
    "phone_numbers": "phoneNumbers",
    "postal_addresses": "addresses",
    "company": "organizations",
    "job_title": "organizations",
    "department": "organizations",
    "notes": "biographies",
    "birthday": "birthdays",
}


def person_link_id(person: Mapping[str, Any]) -> str:
    for entry in person.get("clientData") or ():
        if entry.get("key") == LINK_ID_PROPERTY:
            return str(entry.get("value", ""))
    return ""


def person_ref(person: Mapping[str, Any], collection: str) -> r.ItemRef:
    return r.ItemRef(
        kind=r.OBJECT_KIND_CONTACT,
        native_id=str(person.get("resourceName", "")),
        version=str(person.get("etag", "")),
        link_id=person_link_id(person),
        collection=collection,
    )


@contained
def person_item(
    person: Mapping[str, Any], collection: str, group_names: Mapping[str, str]
) -> r.MailItem:
    names = (person.get("names") or [{}])[0]
    organization = (person.get("organizations") or [{}])[0]
    emails = sorted(
        (e for e in person.get("emailAddresses") or () if e.get("value")),
        key=lambda e: not e.get("metadata", {}).get("primary", False),
    )
    birthday = ""
    for entry in person.get("birthdays") or ():
        date = entry.get("date") or {}
        if date.get("year") and date.get("month") and date.get("day"):
            birthday = f"{date['year']:04d}-{date['month']:02d}-{date['day']:02d}"
    contact = r.ContactItem(
        given_name=str(names.get("givenName", "")),
        middle_name=str(names.get("middleName", "")),
        family_name=str(names.get("familyName", "")),
        name_prefix=str(names.get("honorificPrefix", "")),
        name_suffix=str(names.get("honorificSuffix", "")),
        display_name=str(names.get("unstructuredName", names.get("displayName", ""))),
        email_addresses=[
            r.ContactEmailAddress(
                address=str(e["value"]),
                type=_EMAIL_TYPES.get(str(e.get("type", "")), r.EMAIL_ADDRESS_TYPE_UNSPECIFIED),
                primary=n == 0,
            )
            for n, e in enumerate(emails)
        ],
        phone_numbers=[
            r.PhoneNumber(
                number=str(p["value"]),
                type=_PHONE_TYPES.get(str(p.get("type", "")), r.PHONE_TYPE_OTHER),
            )
            for p in person.get("phoneNumbers") or ()
            if p.get("value")
        ],
        postal_addresses=[
            r.PostalAddress(
                type=_ADDRESS_TYPES.get(str(a.get("type", "")), r.POSTAL_ADDRESS_TYPE_OTHER),
                street=str(a.get("streetAddress", "")),
                city=str(a.get("city", "")),
                region=str(a.get("region", "")),
                postal_code=str(a.get("postalCode", "")),
                country=str(a.get("country", "")),
            )
            for a in person.get("addresses") or ()
        ],
        company=str(organization.get("name", "")),
        job_title=str(organization.get("title", "")),
        department=str(organization.get("department", "")),
        notes=str((person.get("biographies") or [{}])[0].get("value", "")),
        birthday=birthday,
        categories=[
            group_names[g]
            for m in person.get("memberships") or ()
            if (g := m.get("contactGroupMembership", {}).get("contactGroupResourceName", ""))
            in group_names
        ],
    )
    item = r.MailItem(ref=person_ref(person, collection), contact=contact)
    for source in person.get("metadata", {}).get("sources") or ():
        if source.get("updateTime"):
            item.last_modified_time.CopyFrom(_ts(_parse_time(str(source["updateTime"]))))
    return item


def person_body(item: r.MailItem) -> dict[str, Any]:
    c = item.contact
    body: dict[str, Any] = {
        "names": [
            {
                k: v
                for k, v in {
                    "givenName": c.given_name,
                    "middleName": c.middle_name,
                    "familyName": c.family_name,
                    "honorificPrefix": c.name_prefix,
                    "honorificSuffix": c.name_suffix,
                    "unstructuredName": c.display_name,
                }.items()
                if v
            }
        ],
        "emailAddresses": [
            {
                "value": e.address,
                **({"type": _EMAIL_NAMES[e.type]} if e.type in _EMAIL_NAMES else {}),
                **({"metadata": {"primary": True}} if e.primary else {}),
            }
            for e in c.email_addresses
        ],
        "phoneNumbers": [
            {"value": p.number, "type": _PHONE_NAMES.get(p.type, "other")} for p in c.phone_numbers
        ],
        "addresses": [
            {
                "type": _ADDRESS_NAMES.get(a.type, "other"),
                "streetAddress": a.street,
                "city": a.city,
                "region": a.region,
                "postalCode": a.postal_code,
                "country": a.country,
            }
            for a in c.postal_addresses
        ],
        "organizations": [{"name": c.company, "title": c.job_title, "department": c.department}]
        if c.company or c.job_title or c.department
        else [],
        "biographies": [{"value": c.notes, "contentType": "TEXT_PLAIN"}] if c.notes else [],
        "birthdays": [],
    }
    if c.birthday:
        try:
            day = dt.date.fromisoformat(c.birthday)
        except ValueError:
            raise UnwritableContent("the birthday is not a date") from None
        body["birthdays"] = [{"date": {"year": day.year, "month": day.month, "day": day.day}}]
    return body


def person_fields(mask: Sequence[str]) -> list[str]:
    """The Person fields an update of `mask` rewrites (all mapped ones when empty), and
    `clientData`: every update stores its link id there (`client_data`)."""
    if not mask:
        return sorted({*_PERSON_FIELD_OF.values(), "clientData"})
    found: set[str] = {"clientData"}
    for path in mask:
        name = path.split(".")[0]
        if name in ("categories", LINK_ID_PATH):
            continue  # group memberships are the selection; see the README
        if name not in _PERSON_FIELD_OF:
            raise UnwritableContent(f"the field {name!r} cannot be written to Google Contacts")
        found.add(_PERSON_FIELD_OF[name])
    return sorted(found)


def client_data(person: Mapping[str, Any], link_id: str) -> list[dict[str, Any]]:
    """The person's clientData with `link_id` as its link id, over the one it carries (an
    update replaces the whole field, so the other entries are written back as they are)."""
    entries = [dict(e) for e in person.get("clientData") or ()]
    if not link_id:
        return entries
    kept = [e for e in entries if e.get("key") != LINK_ID_PROPERTY]
    return [*kept, {"key": LINK_ID_PROPERTY, "value": link_id}]


# ---- Tasks ---------------------------------------------------------------------------------


def split_notes(notes: str) -> tuple[str, str]:
    """(the user's notes, the link id Concord appended), since Tasks has no private property."""
    head, marker, tail = notes.rpartition(TASK_LINK_MARKER)
    if marker and tail.endswith("]"):
        return head, tail[:-1]
    return notes, ""


@contained
def task_item(task: Mapping[str, Any], collection: str) -> r.MailItem:
    notes, link_id = split_notes(str(task.get("notes", "")))
    out = r.TaskItem(
        subject=str(task.get("title", "")),
        body_text=notes,
        status=r.TASK_STATUS_COMPLETED
        if task.get("status") == "completed"
        else r.TASK_STATUS_NOT_STARTED,
        percent_complete=100 if task.get("status") == "completed" else 0,
        # Google Tasks has no priority; Salesforce requires one, and EWS's default is Normal.
        priority=r.TASK_PRIORITY_NORMAL,
    )
    if task.get("due"):
        try:
            # Tasks keeps only the day of `due`; its time part is always midnight UTC.
            out.due_date = _parse_time(str(task["due"])).date().isoformat()
        except ValueError:
            raise UnreadableItem("CONVERSION_FAILED", "the task's due date is unreadable") from None
    if task.get("completed"):
        out.completed_time.CopyFrom(_ts(_parse_time(str(task["completed"]))))
    ref = r.ItemRef(
        kind=r.OBJECT_KIND_TASK,
        native_id=str(task.get("id", "")),
        version=str(task.get("etag", "")),
        link_id=link_id,
        collection=collection,
    )
    item = r.MailItem(ref=ref, task=out)
    if task.get("updated"):
        item.last_modified_time.CopyFrom(_ts(_parse_time(str(task["updated"]))))
    return item


def task_body(item: r.MailItem, link_id: str) -> dict[str, Any]:
    t = item.task
    notes = t.body_text + (f"{TASK_LINK_MARKER}{link_id}]" if link_id else "")
    body: dict[str, Any] = {
        "title": t.subject,
        "notes": notes,
        "status": "completed" if t.status == r.TASK_STATUS_COMPLETED else "needsAction",
    }
    if t.due_date:
        try:
            day = dt.date.fromisoformat(t.due_date)
        except ValueError:
            raise UnwritableContent("the due date is not a date") from None
        body["due"] = f"{day.isoformat()}T00:00:00.000Z"
    return body


# ---- Gmail ---------------------------------------------------------------------------------


def _addresses(value: str | None) -> list[r.EmailAddress]:
    return [
        r.EmailAddress(address=address, display_name=name)
        for name, address in email.utils.getaddresses([value] if value else [])
        if address
    ]


def _body_text(parsed: email.message.Message) -> tuple[str, str]:
    text = html = ""
    for part in parsed.walk():
        if part.is_multipart() or part.get_filename():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        decoded = payload.decode(part.get_content_charset() or "utf-8", "replace")
        if part.get_content_type() == "text/plain" and not text:
            text = decoded
        elif part.get_content_type() == "text/html" and not html:
            html = decoded
    return text, html


@contained
def message_item(
    message: Mapping[str, Any],
    collection: str,
    label_names: Mapping[str, str],
    folder_label: str,
    with_mime: bool,
) -> r.MailItem:
    """A Gmail message read with format=raw; UnreadableItem when its MIME is broken."""
    try:
        raw = base64.urlsafe_b64decode(str(message.get("raw", "")) + "==")
    except ValueError:
        raise UnreadableItem("MALFORMED_MIME", "the message's raw form is not base64url") from None
    checked_mime(raw)
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    labels = list(message.get("labelIds") or ())
    text, html = _body_text(parsed)
    if "SENT" in labels:
        folder = "Sent Items"
    elif "INBOX" in labels:
        folder = "Inbox"
    else:
        folder = label_names.get(folder_label, "")
    out = r.EmailItem(
        internet_message_id=str(parsed.get("Message-ID", "")).strip(),
        conversation_id=str(message.get("threadId", "")),
        subject=str(parsed.get("Subject", "")),
        to=_addresses(parsed.get("To")),
        cc=_addresses(parsed.get("Cc")),
        bcc=_addresses(parsed.get("Bcc")),
        body_text=text,
        body_html=html,
        in_reply_to=str(parsed.get("In-Reply-To", "")).strip(),
        references=str(parsed.get("References", "")).split(),
        # User labels read as categories, except the one that plays the shared folder's part.
        categories=[label_names[x] for x in labels if x in label_names and x != folder_label],
        folder=folder,
        has_attachments=any(p.get_filename() for p in parsed.walk()),
    )
    if with_mime:
        out.mime_content = raw
    senders = _addresses(parsed.get("From"))
    if senders:
        out.from_address.CopyFrom(senders[0])
    # An unreadable Date header leaves sent_time unset, as EWS would.
    with contextlib.suppress(ValueError, TypeError):
        if parsed.get("Date"):
            out.sent_time.CopyFrom(_ts(email.utils.parsedate_to_datetime(str(parsed["Date"]))))
    ref = r.ItemRef(
        kind=r.OBJECT_KIND_EMAIL,
        native_id=str(message.get("id", "")),
        version=str(message.get("historyId", "")),
        collection=collection,
    )
    item = r.MailItem(ref=ref, email=out)
    if message.get("internalDate"):
        received = dt.datetime.fromtimestamp(int(message["internalDate"]) / 1000, dt.UTC)
        item.email.received_time.CopyFrom(_ts(received))
        item.last_modified_time.CopyFrom(_ts(received))
    return item
