"""Graph's JSON for each item kind: what a write may set, checked; and what a read returns, in
the shapes of Graph's published metadata (tests/test_metadata.py checks them against it)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import hashlib
import re
import uuid
from email.message import Message
from typing import Any

from concord_graph_emulator import recurrence, zones
from concord_graph_emulator.store import Item

__all__ = [
    "BadInput",
    "Instance",
    "event_instances",
    "graph_datetime",
    "message_from_mime",
    "parse_local",
    "parse_utc",
    "render",
    "timestamp",
    "validate",
]

ODATA_TYPES = {
    "event": "#microsoft.graph.event",
    "contact": "#microsoft.graph.contact",
    "message": "#microsoft.graph.message",
    "todoTask": "#microsoft.graph.todoTask",
}

# What a client may write, per kind (other properties are read-only or not emulated: 400).
WRITABLE = {
    "event": {
        "subject", "body", "start", "end", "isAllDay", "sensitivity", "showAs", "location",
        "attendees", "categories", "recurrence", "reminderMinutesBeforeStart", "isReminderOn",
        "transactionId", "importance", "isOnlineMeeting", "responseRequested", "organizer",
        "locations", "iCalUId",
    },
    "contact": {
        "givenName", "middleName", "surname", "title", "generation", "displayName",
        "emailAddresses", "businessPhones", "homePhones", "mobilePhone", "businessAddress",
        "homeAddress", "otherAddress", "companyName", "jobTitle", "department", "personalNotes",
        "categories", "birthday", "fileAs", "nickName", "imAddresses",
    },
    "message": {
        "subject", "body", "categories", "toRecipients", "ccRecipients", "bccRecipients", "from",
        "isRead", "importance", "flag",
    },
    "todoTask": {
        "title", "body", "importance", "status", "dueDateTime", "startDateTime",
        "reminderDateTime", "isReminderOn", "completedDateTime", "categories", "linkedResources",
    },
}  # fmt: skip
_SENSITIVITY = {"normal", "personal", "private", "confidential"}
_SHOW_AS = {"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"}
_IMPORTANCE = {"low", "normal", "high"}
_TASK_STATUS = {"notStarted", "inProgress", "completed", "waitingOnOthers", "deferred"}


class BadInput(ValueError):
    """A write Graph refuses with 400; `code` is Graph's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_local(value: str) -> dt.datetime:
    """Graph's dateTime (`2031-06-02T08:00:00.0000000`, no offset) as a naive datetime."""
    text = value.strip().removesuffix("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    parsed = dt.datetime.fromisoformat(text)
    return parsed.replace(tzinfo=None)


def parse_utc(value: str) -> dt.datetime:
    """A query's or a timestamp's instant; without an offset it is UTC, as Graph reads it."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = re.match(r"\d*", rest)
        frac = digits.group(0) if digits else ""
        text = (
            f"{head}.{frac[:6].ljust(6, '0')}{rest[len(frac) :]}"
            if frac
            else head + rest[len(frac) :]
        )
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def graph_datetime(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%S}.0000000"


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _zoned(value: Any, what: str) -> tuple[dt.datetime, str]:
    if not isinstance(value, dict) or "dateTime" not in value:
        raise BadInput("ErrorInvalidRequest", f"{what} must be a dateTimeTimeZone")
    name = str(value.get("timeZone") or "UTC")
    try:
        zones.zone(name)
    except zones.UnknownZone:
        raise BadInput(
            "TimeZoneNotSupportedException", f"A valid TimeZone value must be specified ({what})"
        ) from None
    try:
        return parse_local(str(value["dateTime"])), name
    except ValueError:
        raise BadInput("ErrorInvalidRequest", f"{what}.dateTime is not a date and time") from None


def _one_of(data: dict[str, Any], name: str, allowed: set[str]) -> None:
    if name in data and data[name] not in allowed:
        raise BadInput("ErrorInvalidRequest", f"{name} has no value {data[name]!r}")


_LINKED_RESOURCE = {"id", "applicationName", "displayName", "externalId", "webUrl"}


def linked_resource(data: dict[str, Any], id: str = "") -> dict[str, Any]:
    """A To Do task's linked resource as stored: Graph's properties, and `id` or a new one
    (the server makes them; a client's is ignored)."""
    data = {k: v for k, v in data.items() if k not in ("@odata.type", "id")}
    unknown = set(data) - _LINKED_RESOURCE
    if unknown:
        raise BadInput(
            "RequestBodyRead",
            f"The property '{sorted(unknown)[0]}' does not exist on type "
            "'microsoft.graph.linkedResource'",
        )
    return {"id": id or str(uuid.uuid4()), **data}


def validate(kind: str, data: dict[str, Any], merged: dict[str, Any]) -> None:
    """Refuses a write the way Graph does; `data` is what is written, `merged` the result."""
    unknown = set(data) - WRITABLE[kind] - {"singleValueExtendedProperties", "@odata.type"}
    if unknown:
        raise BadInput(
            "RequestBodyRead",
            f"The property '{sorted(unknown)[0]}' does not exist on type 'microsoft.graph.{kind}'",
        )
    if kind == "event":
        if "start" not in merged or "end" not in merged:
            raise BadInput("ErrorInvalidRequest", "An event needs a start and an end")
        start, start_zone = _zoned(merged["start"], "start")
        end, end_zone = _zoned(merged["end"], "end")
        first = start.replace(tzinfo=zones.zone(start_zone))
        last = end.replace(tzinfo=zones.zone(end_zone))
        if last < first:
            raise BadInput(
                "ErrorInvalidRequest",
                "Your request can't be completed. The end is before the start.",
            )
        if merged.get("isAllDay") and (start.time() != dt.time() or end.time() != dt.time()):
            raise BadInput(
                "ErrorInvalidRequest",
                "An all-day event's start and end must be midnight",
            )
        _one_of(merged, "sensitivity", _SENSITIVITY)
        _one_of(merged, "showAs", _SHOW_AS)
        if merged.get("recurrence"):
            try:
                recurrence.local_starts(merged["recurrence"], start, start)
            except (recurrence.RecurrenceNotSupported, KeyError, ValueError) as exc:
                raise BadInput("ErrorInvalidRequest", f"recurrence: {exc}") from None
    if kind == "todoTask":
        if not str(merged.get("title") or "").strip() and "title" in data:
            raise BadInput("ErrorInvalidRequest", "A task needs a title")
        _one_of(merged, "status", _TASK_STATUS)
        _one_of(merged, "importance", _IMPORTANCE)
        for name in ("dueDateTime", "startDateTime", "reminderDateTime", "completedDateTime"):
            if merged.get(name) is not None:
                _zoned(merged[name], name)
    if kind == "message":
        _one_of(merged, "importance", _IMPORTANCE)


# -- events and their instances ---------------------------------------------------------------


class Instance:
    """One event of a calendar view: a single event, an occurrence or an exception."""

    def __init__(
        self,
        item: Item,
        id: str,
        start: dt.datetime,
        end: dt.datetime,
        kind: str,
        original_start: dt.datetime | None = None,
        source: Item | None = None,
    ) -> None:
        self.item = item  # the master for occurrences
        self.id = id
        self.start = start  # aware
        self.end = end
        self.kind = kind
        self.original_start = original_start
        # An exception's own item.
        self.source = source


def _bounds(data: dict[str, Any]) -> tuple[dt.datetime, dt.datetime, dt.tzinfo]:
    start, start_zone = _zoned(data["start"], "start")
    end, end_zone = _zoned(data["end"], "end")
    tz = zones.zone(start_zone)
    return start.replace(tzinfo=tz), end.replace(tzinfo=zones.zone(end_zone)), tz


def occurrence_id(master_id: str, original_start: dt.datetime) -> str:
    return f"{master_id}_{original_start.astimezone(dt.UTC):%Y%m%dT%H%M%S}"


def split_occurrence_id(value: str) -> tuple[str, dt.datetime] | None:
    match = re.fullmatch(r"(.+)_(\d{8}T\d{6})", value)
    if match is None:
        return None
    stamp = dt.datetime.strptime(match.group(2), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return match.group(1), stamp


def event_instances(
    master: Item,
    exceptions: list[Item],
    window: tuple[dt.datetime, dt.datetime] | None,
) -> list[Instance]:
    """The instances of an event in `window` (aware, UTC): itself for a single event, else the
    series' occurrences and exceptions. A raw (planted) event is always in the window."""
    if master.data.get("_raw"):
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return [Instance(master, master.id, epoch, epoch, "singleInstance")]
    start, end, tz = _bounds(master.data)
    duration = end - start
    if not master.data.get("recurrence"):
        single = Instance(master, master.id, start, end, "singleInstance")
        return [single] if window is None or _overlaps(single, window) else []
    horizon = window[1] if window else start + dt.timedelta(days=3650)
    local_until = horizon.astimezone(tz).replace(tzinfo=None)
    moved = {str(x.data.get("originalStart")): x for x in exceptions if x.data.get("originalStart")}
    out: list[Instance] = []
    for local in recurrence.local_starts(
        master.data["recurrence"], start.replace(tzinfo=None), local_until
    ):
        original = local.replace(tzinfo=tz)
        key = timestamp(original)
        if key in master.cancelled:
            continue
        exception = moved.get(key)
        if exception is not None:
            ex_start, ex_end, _ = _bounds(exception.data)
            instance = Instance(
                master, exception.id, ex_start, ex_end, "exception", original, exception
            )
        else:
            instance = Instance(
                master,
                occurrence_id(master.id, original),
                original,
                original + duration,
                "occurrence",
                original,
            )
        if window is None or _overlaps(instance, window):
            out.append(instance)
    return out


def _overlaps(instance: Instance, window: tuple[dt.datetime, dt.datetime]) -> bool:
    if instance.start == instance.end:
        return window[0] <= instance.start < window[1]
    return instance.start < window[1] and instance.end > window[0]


def _event(
    item: Item, instance: Instance | None, zone_name: str, select: set[str]
) -> dict[str, Any]:
    data = dict(item.data)
    if data.pop("_raw", False):
        return data
    out: dict[str, Any] = {
        "subject": "",
        "bodyPreview": "",
        "body": {"contentType": "text", "content": ""},
        "importance": "normal",
        "sensitivity": "normal",
        "showAs": "busy",
        "isAllDay": False,
        "isCancelled": False,
        "isOrganizer": True,
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 15,
        "responseRequested": True,
        "hasAttachments": False,
        "isOnlineMeeting": False,
        "onlineMeetingUrl": None,
        "seriesMasterId": None,
        "transactionId": None,
        "recurrence": None,
        "location": {"displayName": "", "locationType": "default"},
        "locations": [],
        "attendees": [],
        "categories": [],
        "organizer": None,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
    }
    out.update({k: v for k, v in data.items() if k not in ("start", "end")})
    out["type"] = data.get("type", "seriesMaster" if data.get("recurrence") else "singleInstance")
    start, end, _ = _bounds(data)
    if instance is not None and instance.kind == "occurrence":
        start, end = instance.start, instance.end
        out["type"] = "occurrence"
        out["id"] = instance.id
        out["seriesMasterId"] = item.id
        out["recurrence"] = None
    if instance is not None and instance.original_start is not None:
        out["originalStart"] = timestamp(instance.original_start)
    out["originalStartTimeZone"] = data["start"].get("timeZone") or "UTC"
    out["originalEndTimeZone"] = data["end"].get("timeZone") or "UTC"
    target = zones.zone(zone_name)
    if out.get("isAllDay"):
        # All-day events are floating: midnight in whatever zone the client asked for.
        out["start"] = {
            "dateTime": graph_datetime(start.replace(tzinfo=None)),
            "timeZone": zone_name,
        }
        out["end"] = {"dateTime": graph_datetime(end.replace(tzinfo=None)), "timeZone": zone_name}
    else:
        out["start"] = {
            "dateTime": graph_datetime(start.astimezone(target).replace(tzinfo=None)),
            "timeZone": zone_name,
        }
        out["end"] = {
            "dateTime": graph_datetime(end.astimezone(target).replace(tzinfo=None)),
            "timeZone": zone_name,
        }
    body = out.get("body") or {}
    out["bodyPreview"] = _preview(str(body.get("content") or ""))
    out.setdefault("iCalUId", "")
    if out["type"] == "seriesMaster" and "cancelledOccurrences" in select:
        # Returned only when selected, as on Graph: `OID.{master}.{local date}`.
        out["cancelledOccurrences"] = [
            f"OID.{item.id}.{res_date}"
            for res_date in sorted(
                parse_utc(s)
                .astimezone(zones.zone(data["start"].get("timeZone") or "UTC"))
                .date()
                .isoformat()
                for s in item.cancelled
            )
        ]
    return out


def _preview(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()[:255]


# -- messages ----------------------------------------------------------------------------------


def _recipient(value: str) -> dict[str, Any]:
    name, address = email.utils.parseaddr(value)
    return {"emailAddress": {"name": name or address, "address": address}}


def _recipients(message: Message, header: str) -> list[dict[str, Any]]:
    values = message.get_all(header) or []
    return [_recipient(v) for v in (str(x) for x in values) for v in v.split(",") if v.strip()]


def _text_part(message: Message) -> tuple[str, str]:
    """(contentType, content) of the first text part; ("text", "") when none is readable."""
    for part in message.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype in ("text/plain", "text/html"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    text = payload.decode(charset, errors="replace")
                except LookupError:
                    text = payload.decode("utf-8", errors="replace")
                return ("html" if ctype == "text/html" else "text"), text
    return "text", ""


def message_from_mime(raw: bytes, received: dt.datetime) -> dict[str, Any]:
    """The properties Exchange derives from a delivered message's MIME. Broken MIME is stored
    as it came (Exchange keeps what it was given), read leniently here."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    sent = received
    if parsed.get("Date"):
        try:
            sent = email.utils.parsedate_to_datetime(str(parsed["Date"])).astimezone(dt.UTC)
        except (TypeError, ValueError):
            sent = received
    message_id = str(parsed.get("Message-ID") or "").strip() or f"<{received.timestamp()}@emulator>"
    references = str(parsed.get("References") or "").split()
    root = references[0] if references else str(parsed.get("In-Reply-To") or "").strip()
    thread = root or message_id
    content_type, content = _text_part(parsed)
    from_header = str(parsed.get("From") or "")
    data: dict[str, Any] = {
        "subject": str(parsed.get("Subject") or ""),
        "internetMessageId": message_id,
        "conversationId": "AAQk" + hashlib.sha256(thread.encode()).hexdigest()[:40],
        "sentDateTime": timestamp(sent),
        "receivedDateTime": timestamp(received),
        "toRecipients": _recipients(parsed, "To"),
        "ccRecipients": _recipients(parsed, "Cc"),
        "bccRecipients": _recipients(parsed, "Bcc"),
        "body": {"contentType": content_type, "content": content},
        "hasAttachments": any(
            part.get_filename() is not None for part in parsed.walk() if not part.is_multipart()
        ),
        "isRead": False,
        "importance": "normal",
    }
    if from_header:
        data["from"] = _recipient(from_header)
        data["sender"] = _recipient(from_header)
    return data


def _message(item: Item, folder_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": "",
        "importance": "normal",
        "isRead": False,
        "isDraft": False,
        "hasAttachments": False,
        "categories": [],
        "toRecipients": [],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "body": {"contentType": "text", "content": ""},
        "flag": {"flagStatus": "notFlagged"},
    }
    out.update(item.data)
    out["parentFolderId"] = folder_id
    body = out.get("body") or {}
    out["bodyPreview"] = _preview(str(body.get("content") or ""))
    return out


def _contact(item: Item, folder_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "categories": [],
        "emailAddresses": [],
        "businessPhones": [],
        "homePhones": [],
        "imAddresses": [],
        "mobilePhone": None,
        "businessAddress": {},
        "homeAddress": {},
        "otherAddress": {},
    }
    out.update(item.data)
    out["parentFolderId"] = folder_id
    if not out.get("displayName"):
        out["displayName"] = " ".join(str(out[k]) for k in ("givenName", "surname") if out.get(k))
    return out


def _task(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {
        "title": "",
        "importance": "normal",
        "status": "notStarted",
        "isReminderOn": False,
        "categories": [],
        "body": {"contentType": "text", "content": ""},
    }
    out.update(item.data)
    out["linkedResources"] = list(item.data.get("linkedResources") or [])
    return out


def render(
    item: Item,
    *,
    zone_name: str = "UTC",
    instance: Instance | None = None,
    select: set[str] | None = None,
    expand_props: set[str] | None = None,
) -> dict[str, Any]:
    """The item as Graph returns it: `select` keeps those properties (plus id and etag);
    `expand_props` adds the named single-value extended properties that the item has."""
    if item.kind == "event":
        body = _event(item, instance, zone_name, select or set())
    elif item.kind == "message":
        body = _message(item, item.parent)
    elif item.kind == "contact":
        body = _contact(item, item.parent)
    else:
        body = _task(item)
    body.setdefault("id", item.id)
    if item.kind != "todoTask":
        body["changeKey"] = item.change_key
    body["createdDateTime"] = timestamp(item.created)
    body["lastModifiedDateTime"] = timestamp(item.modified)
    if select:
        body = {k: v for k, v in body.items() if k in select or k == "id"}
    out: dict[str, Any] = {"@odata.etag": f'W/"{item.change_key}"'}
    out.update(body)
    if expand_props is not None:
        out["singleValueExtendedProperties"] = [
            {"id": original, "value": value}
            for key, (original, value) in sorted(item.props.items())
            if key in expand_props
        ]
    return out
