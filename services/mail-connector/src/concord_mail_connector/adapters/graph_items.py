"""Graph's JSON resources <-> Concord's canonical items, field for field as the EWS provider
makes them (ews_items): the same keys for series and exceptions, all-day dates that never pass
through UTC, the same sensitivity and privacy rule, the same quarantine reasons."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from exchangelib.winzone import (  # type: ignore[import-untyped]
    IANA_TO_MS_TIMEZONE_MAP,
    MS_TIMEZONE_TO_IANA_MAP,
)
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.adapters.ews_items import (
    UnreadableItem,
    UnwritableContent,
    checked_mime,
)
from concord_mail_connector.domain.provider import LINK_ID_PATH

__all__ = [
    "LINKED_APPLICATION",
    "LINK_ID_PROPERTY",
    "SIZE_PROPERTY",
    "link_id_of",
    "linked_resource",
    "to_graph",
    "to_mail_item",
    "update_body",
]

# Concord's link id, a named single-value extended property in Concord's own property set
# (the same GUID the EWS provider's LinkId uses, so an item keeps its link id across providers).
LINK_ID_PROPERTY = "String {7d1b4a5e-1f7b-4c5e-9a51-6b3e1c2f0a11} Name concordLinkId"
# A To Do task's linked resource of this application carries its link id.
LINKED_APPLICATION = "Concord"
# PidTagMessageSize: Graph's message has no size property of its own.
SIZE_PROPERTY = "Integer 0x0E08"

_SENSITIVITY = {
    "normal": r.SENSITIVITY_NORMAL,
    "personal": r.SENSITIVITY_PERSONAL,
    "private": r.SENSITIVITY_PRIVATE,
    "confidential": r.SENSITIVITY_CONFIDENTIAL,
}
_SENSITIVITY_NAMES = {v: k for k, v in _SENSITIVITY.items()}
_RESPONSE = {
    "none": r.RESPONSE_STATUS_NEEDS_ACTION,
    "notResponded": r.RESPONSE_STATUS_NEEDS_ACTION,
    "organizer": r.RESPONSE_STATUS_ORGANIZER,
    "tentativelyAccepted": r.RESPONSE_STATUS_TENTATIVE,
    "accepted": r.RESPONSE_STATUS_ACCEPTED,
    "declined": r.RESPONSE_STATUS_DECLINED,
}
_ROLES = {
    "required": r.ATTENDEE_ROLE_REQUIRED,
    "optional": r.ATTENDEE_ROLE_OPTIONAL,
    "resource": r.ATTENDEE_ROLE_RESOURCE,
}
_SHOW_AS = {
    "free": r.SHOW_AS_FREE,
    "tentative": r.SHOW_AS_TENTATIVE,
    "busy": r.SHOW_AS_BUSY,
    "oof": r.SHOW_AS_OUT_OF_OFFICE,
    "workingElsewhere": r.SHOW_AS_WORKING_ELSEWHERE,
}
_SHOW_AS_NAMES = {v: k for k, v in _SHOW_AS.items()}
_TASK_STATUS = {
    "notStarted": r.TASK_STATUS_NOT_STARTED,
    "inProgress": r.TASK_STATUS_IN_PROGRESS,
    "completed": r.TASK_STATUS_COMPLETED,
    "waitingOnOthers": r.TASK_STATUS_WAITING,
    "deferred": r.TASK_STATUS_DEFERRED,
}
_TASK_STATUS_NAMES = {v: k for k, v in _TASK_STATUS.items()}
_PRIORITY = {
    "low": r.TASK_PRIORITY_LOW,
    "normal": r.TASK_PRIORITY_NORMAL,
    "high": r.TASK_PRIORITY_HIGH,
}
_PRIORITY_NAMES = {v: k for k, v in _PRIORITY.items()}
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}


def _ts(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def _text(value: Any) -> str:
    return str(value) if value else ""


def _local(value: str) -> dt.datetime:
    """Graph's dateTime (seven fraction digits, no offset) as a naive datetime."""
    text = value.strip().removesuffix("Z")
    head, _, frac = text.partition(".")
    return dt.datetime.fromisoformat(f"{head}.{frac[:6]}" if frac else head).replace(tzinfo=None)


def _instant(value: Any) -> dt.datetime:
    """A dateTimeTimeZone the provider asked for in UTC (Prefer: outlook.timezone)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise ValueError("no dateTime")
    local = _local(str(value["dateTime"]))
    zone = iana_zone(str(value.get("timeZone") or "UTC"))
    if zone is None:
        raise ValueError("unknown zone")
    return local.replace(tzinfo=ZoneInfo(zone) if zone != "UTC" else dt.UTC)


def _utc(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def iana_zone(name: str) -> str | None:
    """The IANA name of a Windows or IANA zone; None when neither table knows it."""
    if name in ("", "UTC", "Etc/UTC", "tzone://Microsoft/Utc"):
        return "UTC"
    mapped = MS_TIMEZONE_TO_IANA_MAP.get(name, name)
    try:
        ZoneInfo(mapped)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return str(mapped)


def windows_zone(name: str) -> str:
    """What Exchange stores for an IANA zone; raises UnwritableContent for unknown names."""
    if not name or name == "UTC":
        return "UTC"
    if name in MS_TIMEZONE_TO_IANA_MAP:
        return name
    found = IANA_TO_MS_TIMEZONE_MAP.get(name)
    if found is None:
        raise UnwritableContent(f"unknown time zone {name!r}")
    return str(found[0] if isinstance(found, tuple) else found)


def linked_resource(link_id: str) -> dict[str, str]:
    """The To Do linked resource that carries a task's link id (tasks have no extended
    properties)."""
    return {
        "applicationName": LINKED_APPLICATION,
        "externalId": link_id,
        "displayName": "Concord link",
    }


def link_id_of(resource: dict[str, Any]) -> str:
    for prop in resource.get("singleValueExtendedProperties") or ():
        if str(prop.get("id", "")).lower() == LINK_ID_PROPERTY.lower():
            return str(prop.get("value") or "")
    for linked in resource.get("linkedResources") or ():
        if linked.get("applicationName") == LINKED_APPLICATION:
            return str(linked.get("externalId") or "")
    return ""


def message_size(resource: dict[str, Any]) -> int:
    for prop in resource.get("singleValueExtendedProperties") or ():
        if str(prop.get("id", "")).lower() == SIZE_PROPERTY.lower():
            try:
                return int(prop.get("value") or 0)
            except ValueError:
                return 0
    return 0


def item_ref(resource: dict[str, Any], kind: r.ObjectKind.ValueType, collection: str) -> r.ItemRef:
    return r.ItemRef(
        kind=kind,
        native_id=_text(resource.get("id")),
        version=_text(resource.get("changeKey")) or _etag(resource),
        link_id=link_id_of(resource),
        collection=collection,
    )


def _etag(resource: dict[str, Any]) -> str:
    return _text(resource.get("@odata.etag")).removeprefix("W/").strip('"')


# -- reading ---------------------------------------------------------------------------------


def to_mail_item(
    resource: dict[str, Any],
    kind: r.ObjectKind.ValueType,
    collection: str,
    folder: str = "",
    mime: bytes | None = None,
) -> r.MailItem:
    """The canonical item; raises UnreadableItem for content that cannot be converted."""
    ref = item_ref(resource, kind, collection)
    if kind == r.OBJECT_KIND_CALENDAR_ITEM:
        out = r.MailItem(ref=ref, calendar_item=_calendar_item(resource))
    elif kind == r.OBJECT_KIND_CONTACT:
        out = r.MailItem(ref=ref, contact=_contact(resource))
    elif kind == r.OBJECT_KIND_EMAIL:
        out = r.MailItem(ref=ref, email=_email(resource, folder, mime))
    elif kind == r.OBJECT_KIND_TASK:
        out = r.MailItem(ref=ref, task=_task(resource))
    else:
        raise UnreadableItem("CONVERSION_FAILED", "an item of an unknown kind")
    modified = resource.get("lastModifiedDateTime")
    if modified:
        out.last_modified_time.CopyFrom(_ts(_utc(str(modified))))
    return out


def _body(resource: dict[str, Any]) -> tuple[str, str]:
    body = resource.get("body") or {}
    content = _text(body.get("content"))
    if str(body.get("contentType") or "text").lower() == "html":
        return "", content
    return content, ""


def _calendar_item(e: dict[str, Any]) -> r.CalendarItem:
    zone_name = _text(e.get("originalStartTimeZone")) or _text(
        (e.get("start") or {}).get("timeZone")
    )
    iana = iana_zone(zone_name)
    all_day = bool(e.get("isAllDay"))
    kind = _text(e.get("type")) or "singleInstance"
    # As EWS: a timed single item is exact in UTC whatever its zone, so an unknown zone only
    # travels as a name; all-day dates and a series' pattern mean nothing without their zone.
    if iana is None and (all_day or kind == "seriesMaster"):
        what = "an all-day item" if all_day else "a recurring series"
        raise UnreadableItem(
            "UNKNOWN_TIME_ZONE", f"{what} in time zone {zone_name!r}, which has no IANA mapping"
        )
    sensitivity = _SENSITIVITY.get(_text(e.get("sensitivity")), r.SENSITIVITY_UNSPECIFIED)
    text, html = _body(e)
    out = r.CalendarItem(
        subject=_text(e.get("subject")),
        all_day=all_day,
        # IANA where the Windows id maps; else the raw name, so the mapping service decides.
        time_zone=iana if iana is not None else zone_name,
        location=_text((e.get("location") or {}).get("displayName")),
        body_text=text,
        body_html=html,
        show_as=_SHOW_AS.get(_text(e.get("showAs")), r.SHOW_AS_UNSPECIFIED),
        sensitivity=sensitivity,
        is_private=sensitivity in (r.SENSITIVITY_PRIVATE, r.SENSITIVITY_CONFIDENTIAL),
        categories=list(e.get("categories") or ()),
        ical_uid=_text(e.get("iCalUId")),
        is_cancelled=bool(e.get("isCancelled")),
        online_meeting_url=_text(e.get("onlineMeetingUrl")),
    )
    if e.get("isReminderOn") and e.get("reminderMinutesBeforeStart") is not None:
        out.reminder_minutes = int(e["reminderMinutesBeforeStart"])
    try:
        if all_day:
            # Floating dates, as the mailbox shows them: never through UTC.
            out.start_date = _local(str(e["start"]["dateTime"])).date().isoformat()
            out.end_date = _local(str(e["end"]["dateTime"])).date().isoformat()
        else:
            out.start.CopyFrom(_ts(_instant(e.get("start"))))
            out.end.CopyFrom(_ts(_instant(e.get("end"))))
    except (KeyError, TypeError, ValueError):
        raise UnreadableItem(
            "CONVERSION_FAILED", "the calendar item has no readable start or end"
        ) from None
    organizer = (e.get("organizer") or {}).get("emailAddress") or {}
    if organizer.get("address"):
        out.organizer.CopyFrom(
            r.EmailAddress(address=organizer["address"], display_name=_text(organizer.get("name")))
        )
    for attendee in e.get("attendees") or ():
        who = attendee.get("emailAddress") or {}
        if not who.get("address"):
            continue
        out.attendees.append(
            r.Attendee(
                email=who["address"],
                display_name=_text(who.get("name")),
                role=_ROLES.get(_text(attendee.get("type")), r.ATTENDEE_ROLE_REQUIRED),
                response_status=_RESPONSE.get(
                    _text((attendee.get("status") or {}).get("response")),
                    r.RESPONSE_STATUS_UNSPECIFIED,
                ),
            )
        )
    if kind == "seriesMaster" and e.get("recurrence"):
        out.recurrence.CopyFrom(_recurrence(e, iana or "UTC", all_day))
    elif kind in ("occurrence", "exception") and e.get("originalStart"):
        out.original_start.CopyFrom(_ts(_utc(str(e["originalStart"]))))
        out.series_id = _text(e.get("seriesMasterId"))
    return out


def _recurrence(e: dict[str, Any], zone: str, all_day: bool) -> r.Recurrence:
    out = r.Recurrence(time_zone=zone)
    rule = _rrule(e["recurrence"], zone, all_day)
    if rule:
        out.rules.append(rule)
    tz = ZoneInfo(zone) if zone != "UTC" else dt.UTC
    # A cancelled occurrence is named by its series and local date (`OID.{master}.{date}`);
    # its original start is that day at the series' start time, in the series' zone.
    first = _local(str((e.get("start") or {}).get("dateTime") or "1970-01-01T00:00:00"))
    if not all_day:
        first = _instant(e.get("start")).astimezone(tz).replace(tzinfo=None)
    for occurrence in e.get("cancelledOccurrences") or ():
        try:
            day = dt.date.fromisoformat(str(occurrence).rsplit(".", 1)[1][:10])
        except (IndexError, ValueError):
            continue
        if all_day:
            out.excluded_dates.append(day.isoformat())
        else:
            start = dt.datetime.combine(day, first.time(), tzinfo=tz)
            out.excluded_starts.append(_ts(start))
    return out


def _rrule(recurrence: dict[str, Any], zone: str, all_day: bool) -> str:
    """RRULE for the patterns every target understands; no rule (not an approximation) for
    others, which the mapping service reports as a loss."""
    pattern, span = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    interval = int(pattern.get("interval") or 1)
    kind = pattern.get("type")
    days = [_RRULE_DAYS[_DAYS.index(d.lower())] for d in pattern.get("daysOfWeek") or ()]
    index = _INDEX.get(_text(pattern.get("index")) or "first", 1)
    if kind == "daily":
        parts = ["FREQ=DAILY", f"INTERVAL={interval}"]
    elif kind == "weekly" and days:
        first = _text(pattern.get("firstDayOfWeek")) or "sunday"
        parts = ["FREQ=WEEKLY", f"INTERVAL={interval}", f"BYDAY={','.join(days)}"]
        parts.append(f"WKST={_RRULE_DAYS[_DAYS.index(first.lower())]}")
    elif kind == "absoluteMonthly":
        parts = ["FREQ=MONTHLY", f"INTERVAL={interval}", f"BYMONTHDAY={pattern.get('dayOfMonth')}"]
    elif kind == "relativeMonthly" and len(days) == 1:
        parts = ["FREQ=MONTHLY", f"INTERVAL={interval}", f"BYDAY={index}{days[0]}"]
    elif kind == "absoluteYearly":
        parts = ["FREQ=YEARLY", f"BYMONTH={pattern.get('month')}"]
        parts.append(f"BYMONTHDAY={pattern.get('dayOfMonth')}")
    elif kind == "relativeYearly" and len(days) == 1:
        parts = ["FREQ=YEARLY", f"BYMONTH={pattern.get('month')}", f"BYDAY={index}{days[0]}"]
    else:
        return ""
    if span.get("type") == "numbered":
        parts.append(f"COUNT={span.get('numberOfOccurrences')}")
    elif span.get("type") == "endDate" and span.get("endDate"):
        end = dt.date.fromisoformat(str(span["endDate"]))
        if all_day:
            parts.append(f"UNTIL={end:%Y%m%d}")
        else:
            # UNTIL is UTC for timed series (RFC 5545); the series ends with its last local day.
            tz = ZoneInfo(zone) if zone != "UTC" else dt.UTC
            last = dt.datetime.combine(end, dt.time(23, 59, 59), tzinfo=tz)
            parts.append(f"UNTIL={last.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}")
    return "RRULE:" + ";".join(parts)


def _address(value: Any) -> r.EmailAddress | None:
    who = (value or {}).get("emailAddress") or {}
    if not who.get("address"):
        return None
    return r.EmailAddress(address=who["address"], display_name=_text(who.get("name")))


def _addresses(values: Any) -> list[r.EmailAddress]:
    return [a for v in values or () if (a := _address(v)) is not None]


def _email(m: dict[str, Any], folder: str, mime: bytes | None) -> r.EmailItem:
    text, html = _body(m)
    out = r.EmailItem(
        internet_message_id=_text(m.get("internetMessageId")),
        conversation_id=_text(m.get("conversationId")),
        subject=_text(m.get("subject")),
        to=_addresses(m.get("toRecipients")),
        cc=_addresses(m.get("ccRecipients")),
        bcc=_addresses(m.get("bccRecipients")),
        body_text=text,
        body_html=html,
        categories=list(m.get("categories") or ()),
        folder=folder,
        has_attachments=bool(m.get("hasAttachments")),
    )
    sender = _address(m.get("from")) or _address(m.get("sender"))
    if sender is not None:
        out.from_address.CopyFrom(sender)
    if m.get("sentDateTime"):
        out.sent_time.CopyFrom(_ts(_utc(str(m["sentDateTime"]))))
    if m.get("receivedDateTime"):
        out.received_time.CopyFrom(_ts(_utc(str(m["receivedDateTime"]))))
    if mime:
        # Checked so a message whose parts cannot be told apart is quarantined, not shared
        # half-read; the threading headers Graph's JSON lacks come from it.
        out.mime_content = checked_mime(mime)
        _threading(out, mime)
    return out


def _threading(out: r.EmailItem, mime: bytes) -> None:
    head = mime.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
    unfolded = re.sub(r"\r?\n[ \t]+", " ", head)
    for line in unfolded.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "in-reply-to":
            out.in_reply_to = value.strip()
        elif name.strip().lower() == "references":
            out.references[:] = value.split()


def _phone_entries(c: dict[str, Any]) -> list[r.PhoneNumber]:
    out = [r.PhoneNumber(number=n, type=r.PHONE_TYPE_WORK) for n in c.get("businessPhones") or ()]
    out += [r.PhoneNumber(number=n, type=r.PHONE_TYPE_HOME) for n in c.get("homePhones") or ()]
    if c.get("mobilePhone"):
        out.append(r.PhoneNumber(number=c["mobilePhone"], type=r.PHONE_TYPE_MOBILE))
    return [p for p in out if p.number]


_ADDRESS_KEYS = (
    ("businessAddress", r.POSTAL_ADDRESS_TYPE_WORK),
    ("homeAddress", r.POSTAL_ADDRESS_TYPE_HOME),
    ("otherAddress", r.POSTAL_ADDRESS_TYPE_OTHER),
)


def _contact(c: dict[str, Any]) -> r.ContactItem:
    places = []
    for key, kind in _ADDRESS_KEYS:
        place = c.get(key) or {}
        if any(place.get(k) for k in ("street", "city", "state", "postalCode", "countryOrRegion")):
            places.append(
                r.PostalAddress(
                    type=kind,
                    street=_text(place.get("street")),
                    city=_text(place.get("city")),
                    region=_text(place.get("state")),
                    postal_code=_text(place.get("postalCode")),
                    country=_text(place.get("countryOrRegion")),
                )
            )
    birthday = _text(c.get("birthday"))
    return r.ContactItem(
        given_name=_text(c.get("givenName")),
        middle_name=_text(c.get("middleName")),
        family_name=_text(c.get("surname")),
        name_suffix=_text(c.get("generation")),
        display_name=_text(c.get("displayName")),
        email_addresses=[
            r.ContactEmailAddress(
                address=e["address"], type=r.EMAIL_ADDRESS_TYPE_WORK, primary=n == 0
            )
            for n, e in enumerate(e for e in c.get("emailAddresses") or () if e.get("address"))
        ],
        phone_numbers=_phone_entries(c),
        postal_addresses=places,
        company=_text(c.get("companyName")),
        job_title=_text(c.get("jobTitle")),
        department=_text(c.get("department")),
        notes=_text(c.get("personalNotes")),
        categories=list(c.get("categories") or ()),
        birthday=birthday[:10] if birthday else "",
    )


def _day(value: Any) -> str:
    if not isinstance(value, dict) or not value.get("dateTime"):
        return ""
    return _local(str(value["dateTime"])).date().isoformat()


def _task(t: dict[str, Any]) -> r.TaskItem:
    out = r.TaskItem(
        subject=_text(t.get("title")),
        due_date=_day(t.get("dueDateTime")),
        start_date=_day(t.get("startDateTime")),
        status=_TASK_STATUS.get(_text(t.get("status")), r.TASK_STATUS_UNSPECIFIED),
        priority=_PRIORITY.get(_text(t.get("importance")), r.TASK_PRIORITY_UNSPECIFIED),
        body_text=_body(t)[0] or _body(t)[1],
        categories=list(t.get("categories") or ()),
        percent_complete=100 if t.get("status") == "completed" else 0,
    )
    if t.get("isReminderOn") and t.get("reminderDateTime"):
        out.reminder_time.CopyFrom(_ts(_instant(t["reminderDateTime"])))
    if t.get("completedDateTime"):
        out.completed_time.CopyFrom(_ts(_instant(t["completedDateTime"])))
    return out


# -- writing ---------------------------------------------------------------------------------

# Payload paths an update may name, and the Graph properties each writes. Attendees are not
# written: Graph sends invitations for every attendee change, and Concord never invites on
# its own (EWS writes them with SendToNone, which Graph has no equivalent for).
_CALENDAR_FIELDS: dict[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "start": ("start", "end", "isAllDay"),
    "end": ("start", "end", "isAllDay"),
    "all_day": ("start", "end", "isAllDay"),
    "start_date": ("start", "end", "isAllDay"),
    "end_date": ("start", "end", "isAllDay"),
    "location": ("location",),
    "body_text": ("body",),
    "body_html": ("body",),
    "show_as": ("showAs",),
    "sensitivity": ("sensitivity",),
    "is_private": ("sensitivity",),
    "reminder_minutes": ("isReminderOn", "reminderMinutesBeforeStart"),
    "categories": ("categories",),
    "attendees": (),
}
_CONTACT_FIELDS: dict[str, tuple[str, ...]] = {
    "given_name": ("givenName",),
    "middle_name": ("middleName",),
    "family_name": ("surname",),
    "name_suffix": ("generation",),
    "display_name": ("displayName",),
    "email_addresses": ("emailAddresses",),
    "phone_numbers": ("businessPhones", "homePhones", "mobilePhone"),
    "postal_addresses": ("businessAddress", "homeAddress", "otherAddress"),
    "company": ("companyName",),
    "job_title": ("jobTitle",),
    "department": ("department",),
    "notes": ("personalNotes",),
    "categories": ("categories",),
    "birthday": ("birthday",),
}
_TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "subject": ("title",),
    "due_date": ("dueDateTime",),
    "start_date": ("startDateTime",),
    "status": ("status", "completedDateTime"),
    "priority": ("importance",),
    "percent_complete": (),
    "body_text": ("body",),
    "categories": ("categories",),
    "sensitivity": (),
}
_EMAIL_FIELDS: dict[str, tuple[str, ...]] = {"categories": ("categories",)}
_FIELD_TABLES = {
    "calendar_item": _CALENDAR_FIELDS,
    "task": _TASK_FIELDS,
    "contact": _CONTACT_FIELDS,
    "email": _EMAIL_FIELDS,
}


def to_graph(item: r.MailItem) -> dict[str, Any]:
    """Every mapped Graph property of a create; raises UnwritableContent on bad content."""
    payload = item.WhichOneof("payload")
    if payload == "calendar_item":
        return _event_body(item.calendar_item)
    if payload == "contact":
        return _contact_body(item.contact)
    if payload == "task":
        return _task_body(item.task)
    if payload == "email":
        return {"categories": list(item.email.categories)}
    raise UnwritableContent(
        f"writing {payload or 'an empty item'} is not supported by this provider"
    )


def update_body(item: r.MailItem, mask: Sequence[str], link_id: str = "") -> dict[str, Any]:
    """The PATCH body of an update: the properties `mask` maps to (empty: every one, a mask
    of LINK_ID_PATH alone none) and, but for a To Do task, `link_id` in LINK_ID_PROPERTY.

    Every update stores its link id over the one the item carries, as the EWS provider's do:
    a PATCH's extended properties are set one by one, the item's others kept. A To Do task
    keeps its link id in a linked resource, which no task PATCH writes (see GraphProvider)."""
    payload = item.WhichOneof("payload") or ""
    table = _FIELD_TABLES.get(payload)
    if table is None:
        raise UnwritableContent("an update needs an item payload")
    paths = [p for p in mask if p != LINK_ID_PATH]
    if mask and not paths:
        body: dict[str, Any] = {}
    else:
        paths = paths or list(table)
        unknown = [p for p in paths if p not in table]
        if unknown:
            raise UnwritableContent(f"unsupported update_mask paths: {', '.join(unknown)}")
        full = to_graph(item)
        wanted = {f for p in paths for f in table[p]}
        body = {k: v for k, v in full.items() if k in wanted}
    if link_id and payload != "task":
        body["singleValueExtendedProperties"] = [{"id": LINK_ID_PROPERTY, "value": link_id}]
    return body


def _graph_dt(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%S}.0000000"


def _event_body(c: r.CalendarItem) -> dict[str, Any]:
    zone = windows_zone(c.time_zone)
    iana = iana_zone(zone) or "UTC"
    tz = ZoneInfo(iana) if iana != "UTC" else dt.UTC
    body: dict[str, Any] = {"subject": c.subject, "isAllDay": c.all_day}
    if c.all_day:
        if not c.start_date or not c.end_date:
            raise UnwritableContent("all-day items need start_date and end_date")
        start = dt.datetime.fromisoformat(c.start_date)
        end = dt.datetime.fromisoformat(c.end_date)
    else:
        if not c.HasField("start") or not c.HasField("end"):
            raise UnwritableContent("timed items need start and end")
        start = c.start.ToDatetime(dt.UTC).astimezone(tz).replace(tzinfo=None)
        end = c.end.ToDatetime(dt.UTC).astimezone(tz).replace(tzinfo=None)
        if c.end.ToDatetime() < c.start.ToDatetime():
            raise UnwritableContent("the item ends before it starts")
    if end < start:
        raise UnwritableContent("the item ends before it starts")
    body["start"] = {"dateTime": _graph_dt(start), "timeZone": zone}
    body["end"] = {"dateTime": _graph_dt(end), "timeZone": zone}
    body["location"] = {"displayName": c.location}
    if c.body_html:
        body["body"] = {"contentType": "html", "content": c.body_html}
    else:
        body["body"] = {"contentType": "text", "content": c.body_text}
    body["showAs"] = _SHOW_AS_NAMES.get(c.show_as, "busy")
    sensitivity = _SENSITIVITY_NAMES.get(c.sensitivity, "normal")
    if c.is_private and sensitivity == "normal":
        sensitivity = "private"
    body["sensitivity"] = sensitivity
    body["isReminderOn"] = c.HasField("reminder_minutes")
    body["reminderMinutesBeforeStart"] = c.reminder_minutes if c.HasField("reminder_minutes") else 0
    body["categories"] = list(c.categories)
    # A series is not written from the canonical item, as the EWS provider does not either: the
    # mapping has no round trip for every RRULE, and Salesforce refuses pattern updates.
    return body


def _contact_body(c: r.ContactItem) -> dict[str, Any]:
    emails = sorted(c.email_addresses, key=lambda e: not e.primary)
    if len(emails) > 3:
        raise UnwritableContent("a contact holds at most 3 email addresses in Exchange")
    business = [p.number for p in c.phone_numbers if p.type == r.PHONE_TYPE_WORK]
    home = [p.number for p in c.phone_numbers if p.type == r.PHONE_TYPE_HOME]
    mobile = [p.number for p in c.phone_numbers if p.type == r.PHONE_TYPE_MOBILE]
    if len(mobile) > 1:
        raise UnwritableContent("a contact holds one mobile number in Exchange")
    other = [
        p
        for p in c.phone_numbers
        if p.type not in (r.PHONE_TYPE_WORK, r.PHONE_TYPE_HOME, r.PHONE_TYPE_MOBILE)
    ]
    if other:
        raise UnwritableContent("Graph's contact holds work, home and mobile numbers only")
    places: dict[str, dict[str, str]] = {}
    for place in c.postal_addresses:
        key = {
            r.POSTAL_ADDRESS_TYPE_WORK: "businessAddress",
            r.POSTAL_ADDRESS_TYPE_HOME: "homeAddress",
        }.get(place.type, "otherAddress")
        if key in places:
            raise UnwritableContent("a contact holds one postal address per type in Exchange")
        places[key] = {
            "street": place.street,
            "city": place.city,
            "state": place.region,
            "postalCode": place.postal_code,
            "countryOrRegion": place.country,
        }
    display = c.display_name or " ".join(n for n in (c.given_name, c.family_name) if n)
    body: dict[str, Any] = {
        "givenName": c.given_name or None,
        "middleName": c.middle_name or None,
        "surname": c.family_name or None,
        "generation": c.name_suffix or None,
        "displayName": display or None,
        "emailAddresses": [{"address": e.address, "name": e.address} for e in emails],
        "businessPhones": business,
        "homePhones": home,
        "mobilePhone": mobile[0] if mobile else None,
        "companyName": c.company or None,
        "jobTitle": c.job_title or None,
        "department": c.department or None,
        "personalNotes": c.notes or None,
        "categories": list(c.categories),
        "birthday": f"{c.birthday}T00:00:00Z" if c.birthday else None,
    }
    for key, _ in _ADDRESS_KEYS:
        body[key] = places.get(key, {})
    return body


def _task_body(t: r.TaskItem) -> dict[str, Any]:
    def day(value: str) -> dict[str, str] | None:
        return {"dateTime": f"{value}T00:00:00.0000000", "timeZone": "UTC"} if value else None

    body: dict[str, Any] = {
        "title": t.subject,
        "dueDateTime": day(t.due_date),
        "startDateTime": day(t.start_date),
        "status": _TASK_STATUS_NAMES.get(t.status, "notStarted"),
        "importance": _PRIORITY_NAMES.get(t.priority, "normal"),
        "body": {"contentType": "text", "content": t.body_text},
        "categories": list(t.categories),
    }
    if t.HasField("completed_time"):
        body["completedDateTime"] = {
            "dateTime": _graph_dt(t.completed_time.ToDatetime()),
            "timeZone": "UTC",
        }
    return body
