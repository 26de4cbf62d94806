"""exchangelib items <-> the canonical `concord.common.v1` messages; no I/O here."""

from __future__ import annotations

import datetime as dt
import email
import email.errors
import email.policy
import functools
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from exchangelib import (  # type: ignore[import-untyped]
    CalendarItem,
    Contact,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    ExtendedProperty,
    HTMLBody,
    Message,
    Task,
)
from exchangelib.errors import UnknownTimeZone  # type: ignore[import-untyped]
from exchangelib.fields import TimeZoneField  # type: ignore[import-untyped]
from exchangelib.indexed_properties import (  # type: ignore[import-untyped]
    EmailAddress,
    PhoneNumber,
    PhysicalAddress,
)
from exchangelib.properties import Attendee, Mailbox  # type: ignore[import-untyped]
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NumberedPattern,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.domain.provider import LINK_ID_PATH

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "LINK_ID_FIELD",
    "MIME_FIELD",
    "READS",
    "LinkId",
    "UnreadableItem",
    "UnwritableContent",
    "carries_category",
    "contained",
    "listed_fields",
    "message_size",
    "modified_occurrences",
    "register_link_id",
    "to_ews_fields",
    "to_mail_item",
]

# Not plain `link_id`: exchangelib registers fields on shared item classes, and a name of our own
# cannot collide with another registration in the same process (the emulator's tests add one).
LINK_ID_FIELD = "concord_link_id"
_LINK_ID_CLASSES = (CalendarItem, Task, Contact, Message)


class UnwritableContent(ValueError):
    """Content this provider cannot store; the message names fields, never their values."""


class UnreadableItem(Exception):
    """An item the server holds that Concord cannot read or convert. The reconciler quarantines
    it with `reason`; the message names fields and zone ids, never item content."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def problem(self) -> r.ItemProblem:
        return r.ItemProblem(reason=self.reason, message=self.message)


def contained(read: Callable[P, T]) -> Callable[P, T]:
    """`read` (one item's reader), whose every failure is that item's: an exception it does
    not foresee becomes UnreadableItem CONVERSION_FAILED, so the listing that called it
    quarantines the one item and goes on (issue #17, case 2: one item must never fail its
    page). The reason names the exception's class, never the item's content."""

    @functools.wraps(read)
    def reading(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return read(*args, **kwargs)
        except UnreadableItem:
            raise
        except Exception as exc:
            raise UnreadableItem(
                "CONVERSION_FAILED", f"the item could not be converted ({type(exc).__name__})"
            ) from exc

    return reading


class LinkId(ExtendedProperty):  # type: ignore[misc]
    """Concord's link id, stored on the item so a replayed create finds the first one.

    The GUID is Concord's own property set: fixed forever, or items written before a change
    would no longer be found.
    """

    property_set_id = "c11ff724-aa03-4555-9952-8fa248a11c3e"
    property_name = "concord_link_id"
    property_type = "String"


def register_link_id() -> None:
    """exchangelib registers extended properties on item classes, process-wide; idempotent."""
    for cls in _LINK_ID_CLASSES:
        if LINK_ID_FIELD not in {f.name for f in cls.FIELDS}:
            cls.register(LINK_ID_FIELD, LinkId)
    for name in ("_start_timezone", "_end_timezone", "_meeting_timezone"):
        field = CalendarItem.get_field_by_fieldname(name)
        if type(field) is TimeZoneField:
            field.__class__ = _TolerantTimeZoneField


class UnmappedZone(EWSTimeZone):  # type: ignore[misc]
    """A Windows zone CLDR does not know: kept by its raw Windows id (the mapping service
    decides what it means); dates are read in UTC meanwhile."""


def _unmapped(ms_id: str) -> EWSTimeZone:
    # no_cache: ZoneInfo caches instances per key, and this one carries its own ms_id.
    zone = UnmappedZone.no_cache("UTC")
    zone.ms_id = ms_id
    zone.ms_name = ""
    return zone


class _TolerantTimeZoneField(TimeZoneField):  # type: ignore[misc]
    """exchangelib answers an unknown Windows zone with a warning and None, losing its name."""

    def from_xml(self, elem: Any, account: Any) -> Any:
        field_elem = elem.find(self.response_tag())
        if field_elem is None:
            return self.default
        ms_id = field_elem.get("Id") or field_elem.get("Name")
        try:
            return self.value_cls.from_ms_id(ms_id)
        except UnknownTimeZone:
            return _unmapped(ms_id)


_SENSITIVITY = {
    "Normal": r.SENSITIVITY_NORMAL,
    "Personal": r.SENSITIVITY_PERSONAL,
    "Private": r.SENSITIVITY_PRIVATE,
    "Confidential": r.SENSITIVITY_CONFIDENTIAL,
}
_SENSITIVITY_NAMES = {v: k for k, v in _SENSITIVITY.items()}
_RESPONSE = {
    "Unknown": r.RESPONSE_STATUS_NEEDS_ACTION,
    "NoResponseReceived": r.RESPONSE_STATUS_NEEDS_ACTION,
    "Organizer": r.RESPONSE_STATUS_ORGANIZER,
    "Tentative": r.RESPONSE_STATUS_TENTATIVE,
    "Accept": r.RESPONSE_STATUS_ACCEPTED,
    "Decline": r.RESPONSE_STATUS_DECLINED,
}
_SHOW_AS = {
    "Free": r.SHOW_AS_FREE,
    "Tentative": r.SHOW_AS_TENTATIVE,
    "Busy": r.SHOW_AS_BUSY,
    "OOF": r.SHOW_AS_OUT_OF_OFFICE,
    "WorkingElsewhere": r.SHOW_AS_WORKING_ELSEWHERE,
}
_SHOW_AS_NAMES = {v: k for k, v in _SHOW_AS.items()}
_TASK_STATUS = {
    "NotStarted": r.TASK_STATUS_NOT_STARTED,
    "InProgress": r.TASK_STATUS_IN_PROGRESS,
    "Completed": r.TASK_STATUS_COMPLETED,
    "WaitingOnOthers": r.TASK_STATUS_WAITING,
    "Deferred": r.TASK_STATUS_DEFERRED,
}
_TASK_STATUS_NAMES = {v: k for k, v in _TASK_STATUS.items()}
_PRIORITY = {
    "Low": r.TASK_PRIORITY_LOW,
    "Normal": r.TASK_PRIORITY_NORMAL,
    "High": r.TASK_PRIORITY_HIGH,
}
_PRIORITY_NAMES = {v: k for k, v in _PRIORITY.items()}
_RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_WEEK_NUMBERS = {1: 1, 2: 2, 3: 3, 4: 4, 5: -1}


def _ts(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    # Through the epoch: EWSDateTime refuses conversion to a non-EWSTimeZone.
    stamp.FromDatetime(dt.datetime.fromtimestamp(value.timestamp(), dt.UTC))
    return stamp


def _zone_name(zone: Any) -> str:
    """IANA when exchangelib could map the Windows id; else the raw Windows name, so the mapping
    service decides instead of us guessing."""
    if zone is None:
        return ""
    if isinstance(zone, UnmappedZone):
        return str(zone.ms_id)
    key = getattr(zone, "key", None)
    if key:
        return str(key)
    return str(getattr(zone, "ms_id", "") or "")


def _text(value: Any) -> str:
    return str(value) if value else ""


def _ref(item: Any, kind: r.ObjectKind.ValueType, collection: str) -> r.ItemRef:
    return r.ItemRef(
        kind=kind,
        native_id=item.id or "",
        version=item.changekey or "",
        link_id=getattr(item, LINK_ID_FIELD, None) or "",
        collection=collection,
    )


# What the conversion reads of each item class, by exchangelib field name: `to_mail_item`
# and the listing's own reads of a listed item below (its category, size and edited
# occurrences). A listing asks the server for these fields and no other (`listed_fields`), so
# a field read here must be named here; a unit test converts items that log every read and
# fails on one not named. Some are read by exchangelib itself while it parses an item: an
# all-day item's start and end are dates in its start and end zones, so those zones are named
# beside the fields converted. Ids and ChangeKeys come with every item; a message's MIME is
# read apart (`MIME_FIELD`): once per page, within a budget, and only when content is asked for.
_EVERY_ITEM = ("last_modified_time", LINK_ID_FIELD, "body", "categories")
MIME_FIELD = "mime_content"
READS: dict[type, frozenset[str]] = {
    CalendarItem: frozenset(
        {
            *_EVERY_ITEM,
            "subject",
            "_start_timezone",
            "_end_timezone",
            "start",
            "end",
            "is_all_day",
            "location",
            "legacy_free_busy_status",
            "sensitivity",
            "uid",
            "is_cancelled",
            "reminder_is_set",
            "reminder_minutes_before_start",
            "organizer",
            "required_attendees",
            "optional_attendees",
            "resources",
            "type",
            "recurrence",
            "original_start",
            "deleted_occurrences",
            "modified_occurrences",
        }
    ),
    Task: frozenset(
        {
            *_EVERY_ITEM,
            "subject",
            "due_date",
            "start_date",
            "status",
            "importance",
            "percent_complete",
            "sensitivity",
            "reminder_is_set",
            "reminder_due_by",
            "complete_date",
        }
    ),
    Contact: frozenset(
        {
            *_EVERY_ITEM,
            "given_name",
            "middle_name",
            "surname",
            "generation",
            "display_name",
            "email_addresses",
            "phone_numbers",
            "physical_addresses",
            "company_name",
            "job_title",
            "department",
            "birthday",
        }
    ),
    Message: frozenset(
        {
            *_EVERY_ITEM,
            "subject",
            "message_id",
            "conversation_id",
            "to_recipients",
            "cc_recipients",
            "bcc_recipients",
            "in_reply_to",
            "references",
            "has_attachments",
            "author",
            "sender",
            "datetime_sent",
            "datetime_received",
            "size",
        }
    ),
}


def listed_fields(models: Iterable[Any], version: Any, *, mime: bool = False) -> list[Any]:
    """The exchangelib fields to ask for items of `models` (a folder's item classes): what the
    conversion reads of those it converts, in fields `version` supports; with `mime`, messages'
    MIME too. Items of other classes (a meeting request among messages) are listed by id and
    class only, and not converted."""
    found: dict[tuple[str, str | None], Any] = {}
    for model in models:
        names = next((n for cls, n in READS.items() if issubclass(model, cls)), frozenset())
        if mime and names and issubclass(model, Message):
            names |= {MIME_FIELD}
        for field in model.supported_fields(version=version):
            if field.name in names:
                found.setdefault((field.name, getattr(field, "field_uri", None)), field)
    return [found[key] for key in sorted(found, key=lambda k: (k[0], k[1] or ""))]


def carries_category(item: Any, category: str) -> bool:
    """Whether a listed message is selected by `category` (the share category in Inbox)."""
    return category in (item.categories or ())


def message_size(item: Any) -> int:
    """The size the server gives a listed message: what reading its MIME will cost."""
    return int(item.size or 0)


def modified_occurrences(item: Any) -> list[tuple[str, str]]:
    """The edited occurrences of a listed series, as (id, ChangeKey): Exchange lists them only
    as an update of their master, so they are read after it."""
    if not isinstance(item, CalendarItem) or item.type != "RecurringMaster":
        return []
    return [(o.id, o.changekey) for o in item.modified_occurrences or () if o.id]


def to_mail_item(item: Any, collection: str, folder: str = "") -> r.MailItem | None:
    """The canonical item, or None for item types Concord does not mirror (e.g. a meeting
    request in the calendar folder); `folder` is the display path emails carry. Raises
    UnreadableItem for content that cannot be converted."""
    if isinstance(item, CalendarItem):
        out = r.MailItem(
            ref=_ref(item, r.OBJECT_KIND_CALENDAR_ITEM, collection),
            calendar_item=_calendar_item(item),
        )
    elif isinstance(item, Task):
        out = r.MailItem(ref=_ref(item, r.OBJECT_KIND_TASK, collection), task=_task(item))
    elif isinstance(item, Contact):
        out = r.MailItem(ref=_ref(item, r.OBJECT_KIND_CONTACT, collection), contact=_contact(item))
    elif isinstance(item, Message):
        out = r.MailItem(
            ref=_ref(item, r.OBJECT_KIND_EMAIL, collection), email=_email(item, folder)
        )
    else:
        return None
    if item.last_modified_time is not None:
        out.last_modified_time.CopyFrom(_ts(item.last_modified_time))
    return out


def item_ref(item: Any, kind: r.ObjectKind.ValueType, collection: str) -> r.ItemRef:
    """The reference of an item that may not convert: enough to quarantine it by."""
    return _ref(item, kind, collection)


# Structural damage after which the parts of a message cannot be told apart, so what would be
# shared (body, attachments) is not what the sender wrote. Header-level defects are common in
# real mail and harmless here, so they are left alone.
_BROKEN_MIME = (
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
)


def checked_mime(raw: bytes) -> bytes:
    """The MIME as the server holds it, or UnreadableItem when it is not a readable message."""
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
        defects = [d for part in parsed.walk() for d in part.defects]
    except (ValueError, TypeError, IndexError, LookupError, email.errors.MessageError):
        raise UnreadableItem("MALFORMED_MIME", "the message's MIME cannot be parsed") from None
    if not parsed.keys():
        raise UnreadableItem("MALFORMED_MIME", "the message's MIME has no headers")
    broken = sorted({type(d).__name__ for d in defects if isinstance(d, _BROKEN_MIME)})
    if broken:
        raise UnreadableItem(
            "MALFORMED_MIME", f"the message's MIME structure is broken ({', '.join(broken)})"
        )
    return raw


def _address(mailbox: Any) -> r.EmailAddress | None:
    if mailbox is None or not mailbox.email_address:
        return None
    return r.EmailAddress(address=mailbox.email_address, display_name=_text(mailbox.name))


def _addresses(mailboxes: Any) -> list[r.EmailAddress]:
    return [a for m in mailboxes or () if (a := _address(m)) is not None]


def _email(item: Any, folder: str) -> r.EmailItem:
    text, html = _body(item)
    out = r.EmailItem(
        internet_message_id=_text(item.message_id),
        conversation_id=_text(getattr(item.conversation_id, "id", None)),
        subject=_text(item.subject),
        to=_addresses(item.to_recipients),
        cc=_addresses(item.cc_recipients),
        bcc=_addresses(item.bcc_recipients),
        body_text=text,
        body_html=html,
        in_reply_to=_text(item.in_reply_to),
        references=(item.references or "").split(),
        categories=list(item.categories or ()),
        folder=folder,
        has_attachments=bool(item.has_attachments),
    )
    # Only present when asked for (it costs a GetItem per page); checked so a message whose
    # parts cannot be told apart is quarantined rather than shared half-read.
    mime = getattr(item, MIME_FIELD, None)
    if mime:
        out.mime_content = checked_mime(mime if isinstance(mime, bytes) else str(mime).encode())
    sender = _address(item.author) or _address(item.sender)
    if sender is not None:
        out.from_address.CopyFrom(sender)
    if item.datetime_sent is not None:
        out.sent_time.CopyFrom(_ts(item.datetime_sent))
    if item.datetime_received is not None:
        out.received_time.CopyFrom(_ts(item.datetime_received))
    return out


def _body(item: Any) -> tuple[str, str]:
    body = item.body
    if body is None:
        return "", ""
    if isinstance(body, HTMLBody):
        return "", str(body)
    return str(body), ""


def _unmapped_zone(item: Any) -> str:
    for zone in (item._start_timezone, item._end_timezone):
        if isinstance(zone, UnmappedZone):
            return str(zone.ms_id)
    return ""


def _calendar_item(item: Any) -> r.CalendarItem:
    unmapped = _unmapped_zone(item)
    # A timed single item is exact in UTC whatever its zone, so an unknown zone only travels as
    # a name; all-day dates and a series' pattern mean nothing without their zone.
    if unmapped and (item.is_all_day or item.type == "RecurringMaster"):
        what = "an all-day item" if item.is_all_day else "a recurring series"
        raise UnreadableItem(
            "UNKNOWN_TIME_ZONE", f"{what} in time zone {unmapped!r}, which has no IANA mapping"
        )
    if item.start is None or item.end is None:
        raise UnreadableItem("CONVERSION_FAILED", "the calendar item has no readable start or end")
    text, html = _body(item)
    sensitivity = _SENSITIVITY.get(item.sensitivity or "", r.SENSITIVITY_UNSPECIFIED)
    out = r.CalendarItem(
        subject=_text(item.subject),
        all_day=bool(item.is_all_day),
        time_zone=_zone_name(item._start_timezone),
        location=_text(item.location),
        body_text=text,
        body_html=html,
        show_as=_SHOW_AS.get(item.legacy_free_busy_status or "", r.SHOW_AS_UNSPECIFIED),
        sensitivity=sensitivity,
        is_private=sensitivity in (r.SENSITIVITY_PRIVATE, r.SENSITIVITY_CONFIDENTIAL),
        categories=list(item.categories or ()),
        ical_uid=_text(item.uid),
        is_cancelled=bool(item.is_cancelled),
    )
    if item.reminder_is_set and item.reminder_minutes_before_start is not None:
        out.reminder_minutes = int(item.reminder_minutes_before_start)
    if item.is_all_day:
        # Dates as the mailbox shows them: all-day dates never pass through UTC.
        out.start_date = _local_date(item.start, item._start_timezone).isoformat()
        # exchangelib hands the last day (inclusive); the canonical end is the day after it.
        last = _local_date(item.end, item._end_timezone or item._start_timezone)
        out.end_date = (last + dt.timedelta(days=1)).isoformat()
    else:
        if item.start is not None:
            out.start.CopyFrom(_ts(item.start))
        if item.end is not None:
            out.end.CopyFrom(_ts(item.end))
    if item.organizer is not None and item.organizer.email_address:
        out.organizer.CopyFrom(
            r.EmailAddress(
                address=item.organizer.email_address, display_name=_text(item.organizer.name)
            )
        )
    for role, attendees in (
        (r.ATTENDEE_ROLE_REQUIRED, item.required_attendees),
        (r.ATTENDEE_ROLE_OPTIONAL, item.optional_attendees),
        (r.ATTENDEE_ROLE_RESOURCE, item.resources),
    ):
        for attendee in attendees or ():
            if attendee.mailbox is None or not attendee.mailbox.email_address:
                continue
            out.attendees.append(
                r.Attendee(
                    email=attendee.mailbox.email_address,
                    display_name=_text(attendee.mailbox.name),
                    role=role,
                    response_status=_RESPONSE.get(
                        attendee.response_type or "", r.RESPONSE_STATUS_UNSPECIFIED
                    ),
                )
            )
    if item.type == "RecurringMaster" and item.recurrence is not None:
        out.recurrence.CopyFrom(_recurrence(item))
    elif item.type in ("Occurrence", "Exception") and item.original_start is not None:
        out.original_start.CopyFrom(_ts(item.original_start))
    return out


def _local_date(value: Any, zone: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        if zone is not None and value.tzinfo is not None:
            return value.astimezone(zone).date()
        return value.date()
    return value  # type: ignore[no-any-return]


def _recurrence(item: Any) -> r.Recurrence:
    """RRULE for the patterns every target understands; an unsupported pattern yields no rule
    (not an approximation), which the mapping service reports as a loss."""
    zone = item._start_timezone
    out = r.Recurrence(time_zone=_zone_name(zone))
    rule = _rrule(item.recurrence, zone, bool(item.is_all_day))
    if rule:
        out.rules.append(rule)
    for deleted in item.deleted_occurrences or ():
        if deleted.start is None:
            continue
        if item.is_all_day:
            out.excluded_dates.append(_local_date(deleted.start, zone).isoformat())
        else:
            out.excluded_starts.append(_ts(deleted.start))
    return out


def _rrule(recurrence: Any, zone: Any, all_day: bool) -> str:
    pattern, boundary = recurrence.pattern, recurrence.boundary
    parts: list[str]
    if isinstance(pattern, DailyPattern):
        parts = ["FREQ=DAILY", f"INTERVAL={pattern.interval}"]
    elif isinstance(pattern, WeeklyPattern):
        days = ",".join(_RRULE_DAYS[d - 1] for d in pattern.weekdays)
        parts = ["FREQ=WEEKLY", f"INTERVAL={pattern.interval}", f"BYDAY={days}"]
        parts.append(f"WKST={_RRULE_DAYS[(pattern.first_day_of_week or 1) - 1]}")
    elif isinstance(pattern, AbsoluteMonthlyPattern):
        parts = [
            "FREQ=MONTHLY",
            f"INTERVAL={pattern.interval}",
            f"BYMONTHDAY={pattern.day_of_month}",
        ]
    elif isinstance(pattern, RelativeMonthlyPattern) and pattern.weekday <= 7:
        day = f"{_WEEK_NUMBERS[pattern.week_number]}{_RRULE_DAYS[pattern.weekday - 1]}"
        parts = ["FREQ=MONTHLY", f"INTERVAL={pattern.interval}", f"BYDAY={day}"]
    elif isinstance(pattern, AbsoluteYearlyPattern):
        parts = ["FREQ=YEARLY", f"BYMONTH={pattern.month}", f"BYMONTHDAY={pattern.day_of_month}"]
    elif isinstance(pattern, RelativeYearlyPattern) and pattern.weekday <= 7:
        day = f"{_WEEK_NUMBERS[pattern.week_number]}{_RRULE_DAYS[pattern.weekday - 1]}"
        parts = ["FREQ=YEARLY", f"BYMONTH={pattern.month}", f"BYDAY={day}"]
    else:
        return ""
    if isinstance(boundary, NumberedPattern):
        parts.append(f"COUNT={boundary.number}")
    elif isinstance(boundary, EndDatePattern):
        end = boundary.end
        end_date = end.date() if isinstance(end, dt.datetime) else end
        if all_day:
            parts.append(f"UNTIL={end_date:%Y%m%d}")
        else:
            # UNTIL is UTC for timed series (RFC 5545); the series ends with its last local day.
            tz = zone if zone is not None else dt.UTC
            last = dt.datetime.combine(end_date, dt.time(23, 59, 59), tzinfo=tz)
            parts.append(f"UNTIL={last.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}")
    return "RRULE:" + ";".join(parts)


def _date(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    return str(value.isoformat())


def _task(item: Any) -> r.TaskItem:
    text, html = _body(item)
    out = r.TaskItem(
        subject=_text(item.subject),
        due_date=_date(item.due_date),
        start_date=_date(item.start_date),
        status=_TASK_STATUS.get(item.status or "", r.TASK_STATUS_UNSPECIFIED),
        priority=_PRIORITY.get(item.importance or "", r.TASK_PRIORITY_UNSPECIFIED),
        percent_complete=int(item.percent_complete or 0),
        body_text=text or html,
        categories=list(item.categories or ()),
        sensitivity=_SENSITIVITY.get(item.sensitivity or "", r.SENSITIVITY_UNSPECIFIED),
    )
    if item.reminder_is_set and item.reminder_due_by is not None:
        out.reminder_time.CopyFrom(_ts(item.reminder_due_by))
    if item.complete_date is not None:
        out.completed_time.CopyFrom(_ts(item.complete_date))
    return out


_EMAIL_LABELS = {"EmailAddress1": 0, "EmailAddress2": 1, "EmailAddress3": 2}
_PHONES = {
    "BusinessPhone": r.PHONE_TYPE_WORK,
    "HomePhone": r.PHONE_TYPE_HOME,
    "MobilePhone": r.PHONE_TYPE_MOBILE,
    "BusinessFax": r.PHONE_TYPE_WORK_FAX,
    "HomeFax": r.PHONE_TYPE_HOME_FAX,
    "Pager": r.PHONE_TYPE_PAGER,
    "AssistantPhone": r.PHONE_TYPE_ASSISTANT,
}
_ADDRESSES = {
    "Business": r.POSTAL_ADDRESS_TYPE_WORK,
    "Home": r.POSTAL_ADDRESS_TYPE_HOME,
    "Other": r.POSTAL_ADDRESS_TYPE_OTHER,
}


def _contact(item: Any) -> r.ContactItem:
    emails = sorted(
        (e for e in item.email_addresses or () if e.email),
        key=lambda e: _EMAIL_LABELS.get(e.label, 9),
    )
    return r.ContactItem(
        given_name=_text(item.given_name),
        middle_name=_text(item.middle_name),
        family_name=_text(item.surname),
        name_suffix=_text(item.generation),
        display_name=_text(item.display_name),
        email_addresses=[
            r.ContactEmailAddress(
                address=e.email, type=r.EMAIL_ADDRESS_TYPE_WORK, primary=index == 0
            )
            for index, e in enumerate(emails)
        ],
        phone_numbers=[
            r.PhoneNumber(number=p.phone_number, type=_PHONES.get(p.label, r.PHONE_TYPE_OTHER))
            for p in item.phone_numbers or ()
            if p.phone_number
        ],
        postal_addresses=[
            r.PostalAddress(
                type=_ADDRESSES.get(a.label, r.POSTAL_ADDRESS_TYPE_OTHER),
                street=_text(a.street),
                city=_text(a.city),
                region=_text(a.state),
                postal_code=_text(a.zipcode),
                country=_text(a.country),
            )
            for a in item.physical_addresses or ()
        ],
        company=_text(item.company_name),
        job_title=_text(item.job_title),
        department=_text(item.department),
        notes=_body(item)[0] or _body(item)[1],
        categories=list(item.categories or ()),
        birthday=_date(item.birthday),
    )


# The payload fields ApplyItems maps, as (payload path, exchangelib fields) per kind.
_CALENDAR_FIELDS: dict[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "start": ("start", "end", "is_all_day"),
    "end": ("start", "end", "is_all_day"),
    "all_day": ("start", "end", "is_all_day"),
    "start_date": ("start", "end", "is_all_day"),
    "end_date": ("start", "end", "is_all_day"),
    "location": ("location",),
    "body_text": ("body",),
    "body_html": ("body",),
    "show_as": ("legacy_free_busy_status",),
    "sensitivity": ("sensitivity",),
    "is_private": ("sensitivity",),
    "reminder_minutes": ("reminder_is_set", "reminder_minutes_before_start"),
    "categories": ("categories",),
    "attendees": ("required_attendees", "optional_attendees", "resources"),
}
_TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "subject": ("subject",),
    "due_date": ("due_date",),
    "start_date": ("start_date",),
    "status": ("status",),
    "priority": ("importance",),
    "percent_complete": ("percent_complete",),
    "body_text": ("body",),
    "categories": ("categories",),
    "sensitivity": ("sensitivity",),
}


_CONTACT_FIELDS: dict[str, tuple[str, ...]] = {
    "given_name": ("given_name",),
    "middle_name": ("middle_name",),
    "family_name": ("surname",),
    "name_suffix": ("generation",),
    "display_name": ("display_name",),
    "email_addresses": ("email_addresses",),
    "phone_numbers": ("phone_numbers",),
    "postal_addresses": ("physical_addresses",),
    "company": ("company_name",),
    "job_title": ("job_title",),
    "department": ("department",),
    "notes": ("body",),
    "categories": ("categories",),
    "birthday": ("birthday",),
}
# Emails are shared one way; the only thing written back is the selection (the reconciler
# unshares an email by taking the `Salesforce` category off).
_EMAIL_FIELDS: dict[str, tuple[str, ...]] = {"categories": ("categories",)}
_FIELD_TABLES = {
    "calendar_item": _CALENDAR_FIELDS,
    "task": _TASK_FIELDS,
    "contact": _CONTACT_FIELDS,
    "email": _EMAIL_FIELDS,
}


def update_fields(item: r.MailItem, mask: Sequence[str]) -> list[str]:
    """exchangelib field names an update writes besides the link id (every update stores that);
    an empty mask writes every mapped field, a mask of LINK_ID_PATH alone none."""
    table = _FIELD_TABLES.get(item.WhichOneof("payload") or "")
    if table is None:
        raise UnwritableContent("an update needs an item payload")
    paths = [p for p in mask if p != LINK_ID_PATH]
    if mask and not paths:
        return []
    paths = paths or list(table)
    unknown = [p for p in paths if p not in table]
    if unknown:
        raise UnwritableContent(f"unsupported update_mask paths: {', '.join(unknown)}")
    return list(dict.fromkeys(f for p in paths for f in table[p]))


def to_ews_fields(item: r.MailItem) -> dict[str, Any]:
    """exchangelib keyword arguments for a create or update; raises ValueError on bad content."""
    payload = item.WhichOneof("payload")
    if payload == "calendar_item":
        return _calendar_fields(item.calendar_item)
    if payload == "task":
        return _task_fields(item.task)
    if payload == "contact":
        return _contact_fields(item.contact)
    if payload == "email":
        return {"categories": list(item.email.categories) or None}
    raise UnwritableContent(
        f"writing {payload or 'an empty item'} is not supported by this provider"
    )


def _zone(name: str) -> Any:
    try:
        return EWSTimeZone(name) if name else EWSTimeZone("UTC")
    except Exception:
        try:
            return EWSTimeZone.from_ms_id(name)
        except Exception as exc:
            raise UnwritableContent(f"unknown time zone {name!r}") from exc


def _calendar_fields(c: r.CalendarItem) -> dict[str, Any]:
    fields: dict[str, Any] = {"subject": c.subject, "is_all_day": c.all_day}
    zone = _zone(c.time_zone)
    if c.all_day:
        if not c.start_date or not c.end_date:
            raise UnwritableContent("all-day items need start_date and end_date")
        fields["start"] = EWSDate.fromisoformat(c.start_date)
        # exchangelib takes the last day (inclusive) and adds the day back itself.
        fields["end"] = EWSDate.fromisoformat(c.end_date) - dt.timedelta(days=1)
    else:
        if not c.HasField("start") or not c.HasField("end"):
            raise UnwritableContent("timed items need start and end")
        fields["start"] = EWSDateTime.from_datetime(c.start.ToDatetime(dt.UTC)).astimezone(zone)
        fields["end"] = EWSDateTime.from_datetime(c.end.ToDatetime(dt.UTC)).astimezone(zone)
    if fields["end"] < fields["start"]:
        raise UnwritableContent("the item ends before it starts")
    fields["location"] = c.location or None
    fields["body"] = HTMLBody(c.body_html) if c.body_html else (c.body_text or None)
    fields["legacy_free_busy_status"] = _SHOW_AS_NAMES.get(c.show_as, "Busy")
    sensitivity = _SENSITIVITY_NAMES.get(c.sensitivity, "Normal")
    if c.is_private and sensitivity == "Normal":
        sensitivity = "Private"
    fields["sensitivity"] = sensitivity
    fields["reminder_is_set"] = c.HasField("reminder_minutes")
    fields["reminder_minutes_before_start"] = (
        c.reminder_minutes if c.HasField("reminder_minutes") else 0
    )
    fields["categories"] = list(c.categories) or None
    by_role: dict[int, list[Attendee]] = {}
    for a in c.attendees:
        by_role.setdefault(a.role, []).append(
            Attendee(mailbox=Mailbox(email_address=a.email, name=a.display_name or None))
        )
    fields["required_attendees"] = (
        by_role.get(r.ATTENDEE_ROLE_REQUIRED, []) + by_role.get(r.ATTENDEE_ROLE_UNSPECIFIED, [])
        or None
    )
    fields["optional_attendees"] = by_role.get(r.ATTENDEE_ROLE_OPTIONAL) or None
    fields["resources"] = by_role.get(r.ATTENDEE_ROLE_RESOURCE) or None
    return fields


def _task_fields(t: r.TaskItem) -> dict[str, Any]:
    return {
        "subject": t.subject,
        "due_date": EWSDate.fromisoformat(t.due_date) if t.due_date else None,
        "start_date": EWSDate.fromisoformat(t.start_date) if t.start_date else None,
        "status": _TASK_STATUS_NAMES.get(t.status, "NotStarted"),
        "importance": _PRIORITY_NAMES.get(t.priority, "Normal"),
        "percent_complete": Decimal(t.percent_complete),
        "body": t.body_text or None,
        "categories": list(t.categories) or None,
        "sensitivity": _SENSITIVITY_NAMES.get(t.sensitivity, "Normal"),
    }


_PHONE_LABELS = {v: k for k, v in reversed(_PHONES.items())}
_ADDRESS_LABELS = {v: k for k, v in _ADDRESSES.items()}


def _contact_fields(c: r.ContactItem) -> dict[str, Any]:
    """EWS keeps three email slots and one phone number/postal address per label: more than
    that is refused per item (INVALID) rather than silently dropped."""
    emails = sorted(c.email_addresses, key=lambda e: not e.primary)
    if len(emails) > len(_EMAIL_LABELS):
        raise UnwritableContent("a contact holds at most 3 email addresses in Exchange")
    phones: dict[str, PhoneNumber] = {}
    for phone in c.phone_numbers:
        label = _PHONE_LABELS.get(phone.type, "OtherTelephone")
        if label in phones:
            raise UnwritableContent("a contact holds one phone number per type in Exchange")
        phones[label] = PhoneNumber(label=label, phone_number=phone.number)
    places: dict[str, PhysicalAddress] = {}
    for place in c.postal_addresses:
        label = _ADDRESS_LABELS.get(place.type, "Other")
        if label in places:
            raise UnwritableContent("a contact holds one postal address per type in Exchange")
        places[label] = PhysicalAddress(
            label=label,
            street=place.street or None,
            city=place.city or None,
            state=place.region or None,
            zipcode=place.postal_code or None,
            country=place.country or None,
        )
    display = c.display_name or " ".join(n for n in (c.given_name, c.family_name) if n)
    return {
        "given_name": c.given_name or None,
        "middle_name": c.middle_name or None,
        "surname": c.family_name or None,
        "generation": c.name_suffix or None,
        "display_name": display or None,
        "email_addresses": [
            EmailAddress(label=label, email=e.address)
            for label, e in zip(_EMAIL_LABELS, emails, strict=False)
        ]
        or None,
        "phone_numbers": list(phones.values()) or None,
        "physical_addresses": list(places.values()) or None,
        "company_name": c.company or None,
        "job_title": c.job_title or None,
        "department": c.department or None,
        "body": c.notes or None,
        "categories": list(c.categories) or None,
        "birthday": EWSDate.fromisoformat(c.birthday) if c.birthday else None,
    }


def kind_of(item: r.MailItem) -> r.ObjectKind.ValueType:
    return {
        "calendar_item": r.OBJECT_KIND_CALENDAR_ITEM,
        "task": r.OBJECT_KIND_TASK,
        "contact": r.OBJECT_KIND_CONTACT,
        "email": r.OBJECT_KIND_EMAIL,
    }.get(item.WhichOneof("payload") or "", r.OBJECT_KIND_UNSPECIFIED)


def ews_class(kind: r.ObjectKind.ValueType) -> Any:
    return {
        r.OBJECT_KIND_CALENDAR_ITEM: CalendarItem,
        r.OBJECT_KIND_TASK: Task,
        r.OBJECT_KIND_CONTACT: Contact,
        r.OBJECT_KIND_EMAIL: Message,
    }.get(kind)


def first(values: Iterable[Any]) -> Any:
    return next(iter(values), None)
