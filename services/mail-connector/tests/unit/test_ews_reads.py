"""An EWS listing asks for the fields the conversion reads, and no other (issue #18).

Items are converted as instances of a subclass that logs every field read of them: the
conversion and the listing's own reads of a listed item (its category, size and edited
occurrences) must read nothing the listing does not ask for, and every field asked for must be
read by some item.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    CalendarItem,
    Contact,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    HTMLBody,
    Message,
    Task,
)
from exchangelib.indexed_properties import (  # type: ignore[import-untyped]
    EmailAddress,
    PhoneNumber,
    PhysicalAddress,
)
from exchangelib.properties import (  # type: ignore[import-untyped]
    Attendee,
    ConversationId,
    Mailbox,
)
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    DeletedOccurrence,
    EndDatePattern,
    NumberedPattern,
    Occurrence,
    Recurrence,
    WeeklyPattern,
)
from exchangelib.version import EXCHANGE_2013, Version  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concord_mail_connector.adapters import ews_items
from concord_mail_connector.adapters.ews_items import (
    LINK_ID_FIELD,
    MIME_FIELD,
    READS,
    carries_category,
    listed_fields,
    message_size,
    modified_occurrences,
    to_mail_item,
)

pytestmark = pytest.mark.unit

VERSION = Version(build=EXCHANGE_2013)
# The ItemId (id and ChangeKey): every item carries it, whatever the shape asked for.
ALWAYS = frozenset({"_id"})
ZONES = [EWSTimeZone("Europe/Berlin"), EWSTimeZone("America/New_York"), EWSTimeZone("UTC")]
BASE = dt.datetime(2030, 5, 6, 9, 30)


def recording(cls: Any) -> tuple[Any, set[str]]:
    """A subclass of `cls` whose instances log the name of every field read of them."""
    reads: set[str] = set()
    names = frozenset(f.name for f in cls.FIELDS)

    class Recording(cls):  # type: ignore[misc]
        def __getattribute__(self, name: str) -> Any:
            if name in names:
                reads.add(name)
            return super().__getattribute__(name)

    return Recording, reads


def read_by_the_listing(cls: Any, fields: dict[str, Any]) -> set[str]:
    """The fields a listing reads of an item of `cls` holding `fields`: its conversion, and
    what the listing itself looks at (the share category, the size, edited occurrences)."""
    ews_items.register_link_id()
    recorder, reads = recording(cls)
    item = recorder(id="AAMkA", changekey="CQAAA", **fields)
    reads.clear()
    # What fails is quarantined by the listing, having read only what it read.
    with contextlib.suppress(Exception):
        to_mail_item(item, "calendar-item/default", "Inbox")
    modified_occurrences(item)
    if isinstance(item, Message):
        carries_category(item, "Salesforce")
        message_size(item)
    return set(reads)


def asked_for(cls: Any) -> set[str]:
    """What the listing asks the server for, for items of `cls`, and what it gets anyway."""
    names = {f.name for f in listed_fields([cls], VERSION)} | ALWAYS
    if cls is Message:
        # Read apart, with its own GetItem per page, when content was asked for.
        names |= {f.name for f in listed_fields([cls], VERSION, mime=True)}
    return names


def _at(zone: Any, minutes: int = 0) -> Any:
    return EWSDateTime.from_datetime(BASE + dt.timedelta(minutes=minutes)).replace(tzinfo=zone)


def _mailbox(n: int) -> Mailbox:
    return Mailbox(email_address=f"p{n}@acme.example", name=f"Person {n}")


def _calendar(
    *,
    kind: str = "Single",
    all_day: bool = False,
    zone: Any = ZONES[0],
    reminder: bool = True,
    html: bool = False,
) -> dict[str, Any]:
    start: Any = EWSDate(2030, 5, 6) if all_day else _at(zone)
    end: Any = EWSDate(2030, 5, 7) if all_day else _at(zone, 45)
    fields: dict[str, Any] = {
        "subject": "Review",
        "body": HTMLBody("<p>agenda</p>") if html else "agenda",
        "sensitivity": "Private",
        "categories": ["Salesforce"],
        "uid": "uid-1",
        "start": start,
        "end": end,
        "is_all_day": all_day,
        "_start_timezone": zone,
        "_end_timezone": zone,
        "location": "Room 1",
        "legacy_free_busy_status": "Tentative",
        "is_cancelled": False,
        "reminder_is_set": reminder,
        "reminder_minutes_before_start": 15,
        "organizer": _mailbox(0),
        "required_attendees": [Attendee(mailbox=_mailbox(1), response_type="Accept")],
        "optional_attendees": [Attendee(mailbox=_mailbox(2), response_type="Tentative")],
        "resources": [Attendee(mailbox=_mailbox(3), response_type="Unknown")],
        "type": kind,
        "last_modified_time": _at(ZONES[2]),
        LINK_ID_FIELD: "link-1",
    }
    if kind == "RecurringMaster":
        boundary = (
            EndDatePattern(start=EWSDate(2030, 5, 6), end=EWSDate(2030, 9, 1))
            if all_day
            else NumberedPattern(start=EWSDate(2030, 5, 6), number=10)
        )
        fields["recurrence"] = Recurrence(
            pattern=WeeklyPattern(interval=1, weekdays=[1], first_day_of_week=1),
            boundary=boundary,
        )
        fields["deleted_occurrences"] = [DeletedOccurrence(start=_at(zone, 7 * 24 * 60))]
        fields["modified_occurrences"] = [
            Occurrence(id="AAMkO", changekey="CQO", start=_at(zone, 14 * 24 * 60))
        ]
    if kind in ("Occurrence", "Exception"):
        fields["original_start"] = _at(zone, -60)
    return fields


def _task(*, reminder: bool = True, html: bool = False) -> dict[str, Any]:
    return {
        "subject": "Call back",
        "body": HTMLBody("<p>notes</p>") if html else "notes",
        "due_date": EWSDate(2030, 5, 9),
        "start_date": EWSDate(2030, 5, 6),
        "status": "Completed",
        "importance": "High",
        "percent_complete": 100,
        "categories": ["Salesforce"],
        "sensitivity": "Normal",
        "reminder_is_set": reminder,
        "reminder_due_by": _at(ZONES[2]),
        "complete_date": _at(ZONES[2], 60),
        "last_modified_time": _at(ZONES[2]),
        LINK_ID_FIELD: "link-2",
    }


def _contact(*, html: bool = False) -> dict[str, Any]:
    return {
        "given_name": "Ada",
        "middle_name": "King",
        "surname": "Lovelace",
        "generation": "II",
        "display_name": "Ada Lovelace",
        "email_addresses": [EmailAddress(label="EmailAddress1", email="ada@acme.example")],
        "phone_numbers": [PhoneNumber(label="MobilePhone", phone_number="+49 30 1")],
        "physical_addresses": [
            PhysicalAddress(label="Business", street="1 Main St", city="Berlin", zipcode="10115")
        ],
        "company_name": "Acme",
        "job_title": "CTO",
        "department": "R&D",
        "body": HTMLBody("<p>met</p>") if html else "met",
        "categories": ["Salesforce"],
        "birthday": EWSDate(1990, 12, 10),
        "last_modified_time": _at(ZONES[2]),
        LINK_ID_FIELD: "link-3",
    }


def _message(*, html: bool = False, author: bool = True) -> dict[str, Any]:
    return {
        "message_id": "<m1@acme.example>",
        "conversation_id": ConversationId(id="conv-1"),
        "subject": "Offer",
        "to_recipients": [_mailbox(1)],
        "cc_recipients": [_mailbox(2)],
        "bcc_recipients": [_mailbox(3)],
        "body": HTMLBody("<p>hi</p>") if html else "hi",
        "in_reply_to": "<m0@acme.example>",
        "references": "<m0@acme.example>",
        "categories": ["Salesforce"],
        "has_attachments": True,
        "author": _mailbox(4) if author else None,
        "sender": _mailbox(5),
        "datetime_sent": _at(ZONES[2]),
        "datetime_received": _at(ZONES[2], 1),
        "size": 420,
        MIME_FIELD: b"Subject: Offer\r\nMessage-ID: <m1@acme.example>\r\n\r\nhi\r\n",
        "last_modified_time": _at(ZONES[2]),
        LINK_ID_FIELD: "link-4",
    }


# Between them, every branch of each conversion: all-day and timed, series, occurrences and
# exceptions, a reminder set and not, text and HTML bodies, a message with and without author.
FULL_ITEMS: list[tuple[Any, dict[str, Any]]] = [
    (CalendarItem, _calendar()),
    (CalendarItem, _calendar(kind="RecurringMaster", all_day=True, html=True)),
    (CalendarItem, _calendar(kind="RecurringMaster", zone=ZONES[1])),
    (CalendarItem, _calendar(kind="Exception", reminder=False)),
    (CalendarItem, _calendar(kind="Occurrence", all_day=True)),
    (CalendarItem, _calendar(zone=ews_items._unmapped("Mid-Atlantic Standard Time"))),
    (CalendarItem, _calendar(kind="RecurringMaster", all_day=True, zone=ews_items._unmapped("X"))),
    (Task, _task()),
    (Task, _task(reminder=False, html=True)),
    (Contact, _contact()),
    (Contact, _contact(html=True)),
    (Message, _message()),
    (Message, _message(html=True, author=False)),
]


@pytest.mark.parametrize(("cls", "fields"), FULL_ITEMS)
def test_a_full_item_reads_only_what_its_listing_asks_for(cls: Any, fields: dict[str, Any]) -> None:
    read = read_by_the_listing(cls, fields)
    assert read - asked_for(cls) == set()


@pytest.mark.parametrize("cls", [CalendarItem, Task, Contact, Message])
def test_every_field_a_listing_asks_for_is_read_by_some_item(cls: Any) -> None:
    read: set[str] = set()
    for kind, fields in FULL_ITEMS:
        if kind is cls:
            read |= read_by_the_listing(cls, fields)
    assert read - ALWAYS == set(READS[cls]) | ({MIME_FIELD} if cls is Message else set())
    # And each is a field of that class the server is asked for by name.
    assert {f.name for f in listed_fields([cls], VERSION)} == set(READS[cls])


def _some(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([None, *values])


def _sparse(full: Callable[..., dict[str, Any]], **options: st.SearchStrategy[Any]) -> Any:
    """A full item of one kind with any of its fields left out or set otherwise."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        fields = full(**{k: draw(v) for k, v in options.items()})
        for name in sorted(fields):
            if draw(st.booleans()):
                fields[name] = draw(_some([fields[name]]))
        return fields

    return build()


ANY_ITEM = st.one_of(
    st.tuples(
        st.just(CalendarItem),
        _sparse(
            _calendar,
            kind=st.sampled_from(["Single", "Occurrence", "Exception", "RecurringMaster"]),
            all_day=st.booleans(),
            zone=st.sampled_from([*ZONES, ews_items._unmapped("Unknown Standard Time")]),
            reminder=st.booleans(),
            html=st.booleans(),
        ),
    ),
    st.tuples(st.just(Task), _sparse(_task, reminder=st.booleans(), html=st.booleans())),
    st.tuples(st.just(Contact), _sparse(_contact, html=st.booleans())),
    st.tuples(st.just(Message), _sparse(_message, html=st.booleans(), author=st.booleans())),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_ITEM)
def test_any_item_reads_only_what_its_listing_asks_for(item: tuple[Any, dict[str, Any]]) -> None:
    cls, fields = item
    assert read_by_the_listing(cls, fields) - asked_for(cls) == set()


def test_a_folders_listing_asks_for_its_item_classes_fields_only() -> None:
    from exchangelib.folders import Calendar, Contacts, Inbox, Tasks  # type: ignore[import-untyped]

    def names(folder: Any) -> set[str]:
        return {f.name for f in listed_fields(folder.supported_item_models, VERSION)}

    assert names(Calendar) == set(READS[CalendarItem])
    assert names(Tasks) == set(READS[Task])
    # Distribution lists and meeting messages are listed by id and class, never converted.
    assert names(Contacts) == set(READS[Contact])
    assert names(Inbox) == set(READS[Message])
