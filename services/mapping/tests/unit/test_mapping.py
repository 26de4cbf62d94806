from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord_mapping.adapters.packaged import read_table_file, table_data
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.mapper import map_to_crm, map_to_mail
from concord_mapping.domain.model import Kind
from concord_mapping.domain.table import parse_table
from concord_mapping.domain.text import html_to_text
from concord_mapping.domain.transforms import LossKind, format_instant, parse_instant

pytestmark = pytest.mark.unit

DATA = table_data()
ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "UTC"]


def to_crm(kind: Kind, payload: dict[str, Any]) -> Any:
    table = DATA.defaults[kind]
    return map_to_crm(table, DATA.describes[table.target_sobject], kind.payload, payload)


def to_mail(kind: Kind, fields: dict[str, Any], zone: str = "UTC") -> Any:
    table = DATA.defaults[kind]
    return map_to_mail(table, DATA.describes[table.target_sobject], fields, zone)


def event(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subject": "Quarterly review",
        "start": "2026-03-08T14:00:00Z",
        "end": "2026-03-08T15:00:00Z",
        "all_day": False,
        "start_date": "",
        "end_date": "",
        "time_zone": "America/New_York",
        "location": "",
        "body_text": "",
        "body_html": "",
        "show_as": "SHOW_AS_BUSY",
        "is_private": False,
        "attendees": [],
    }
    return base | values


def test_over_long_subject_and_location_are_cut_to_the_describe_and_reported() -> None:
    mapped = to_crm(Kind.CALENDAR_ITEM, event(subject="Zq" * 150, location="l" * 256))
    assert len(mapped.fields["Subject"]) == 255
    assert len(mapped.fields["Location"]) == 255
    cut = [(loss.field, loss.kind) for loss in mapped.losses]
    assert cut == [("Subject", LossKind.TRUNCATED), ("Location", LossKind.TRUNCATED)]
    assert "Zq" not in mapped.losses[0].detail


def test_description_is_cut_at_32000() -> None:
    mapped = to_crm(Kind.CALENDAR_ITEM, event(body_text="d" * 40_000))
    assert len(mapped.fields["Description"]) == 32_000
    assert mapped.losses[0].field == "Description"


def test_html_body_becomes_readable_text() -> None:
    html = (
        "<html><body><p>Agenda for <b>Monday</b>:</p><ol><li>Budget</li><li>Hiring</li></ol>"
        '<p>Notes: <a href="https://example.com/notes">shared doc</a></p>'
        "<ul><li>bring laptops</li></ul><script>alert(1)</script></body></html>"
    )
    text = html_to_text(html)
    assert "Agenda for Monday:" in text
    assert " 1. Budget\n 2. Hiring" in text
    assert "[shared doc](https://example.com/notes)" in text
    assert "* bring laptops" in text
    assert "<" not in text
    assert "alert" not in text
    mapped = to_crm(Kind.CALENDAR_ITEM, event(body_html=html))
    assert mapped.fields["Description"] == text
    assert [loss.kind for loss in mapped.losses] == [LossKind.UNREPRESENTABLE]


def test_unrepresentable_picklist_values_are_reported_never_silent() -> None:
    mapped = to_crm(Kind.CALENDAR_ITEM, event(show_as="SHOW_AS_TENTATIVE"))
    assert mapped.fields["ShowAs"] == "Busy"
    assert mapped.losses[0].field == "ShowAs"
    assert mapped.losses[0].kind is LossKind.UNREPRESENTABLE
    back = to_mail(Kind.TASK, {"Status": "Blocked by legal", "Subject": "x"})
    assert "status" not in back.fields
    assert [(loss.field, loss.kind) for loss in back.losses] == [("task.status", LossKind.DROPPED)]


def test_private_and_sensitivity_labels_make_a_private_event() -> None:
    for sensitivity, private, lossy in [
        ("SENSITIVITY_NORMAL", False, False),
        ("SENSITIVITY_PRIVATE", True, False),
        ("SENSITIVITY_CONFIDENTIAL", True, True),
        ("SENSITIVITY_PERSONAL", False, True),
    ]:
        mapped = to_crm(Kind.CALENDAR_ITEM, event(sensitivity=sensitivity))
        assert mapped.fields["IsPrivate"] is private
        assert bool(mapped.losses) is lossy
    assert to_crm(Kind.CALENDAR_ITEM, event(is_private=True)).fields["IsPrivate"] is True


def test_attendees_become_event_relations_and_one_without_address_is_itemised() -> None:
    attendees = [
        {"email": "ann@example.com", "response_status": "RESPONSE_STATUS_ACCEPTED"},
        {"email": "", "display_name": "Room 4"},
        {"email": "bob@example.com", "response_status": "RESPONSE_STATUS_DECLINED"},
    ]
    mapped = to_crm(Kind.CALENDAR_ITEM, event(attendees=attendees))
    rows = mapped.fields["concord.EventRelations"]
    assert [(r["Email"], r["Status"]) for r in rows] == [
        ("ann@example.com", "Accepted"),
        ("bob@example.com", "Declined"),
    ]
    assert [(loss.kind, loss.detail) for loss in mapped.losses] == [
        (LossKind.DROPPED, "attendee 2 has no address")
    ]
    assert "attendees" not in to_mail(Kind.CALENDAR_ITEM, mapped.fields).fields


def test_unknown_time_zone_is_an_item_failure() -> None:
    with pytest.raises(MappingFailure) as caught:
        to_crm(
            Kind.CALENDAR_ITEM,
            event(time_zone="Mars/Olympus_Mons", recurrence={"rules": ["RRULE:FREQ=DAILY"]}),
        )
    assert caught.value.reason == "UNKNOWN_TIME_ZONE"
    assert caught.value.field == "calendar_item.time_zone"


def test_windows_zone_names_are_accepted_and_stored_as_iana() -> None:
    mapped = to_crm(
        Kind.CALENDAR_ITEM,
        event(time_zone="W. Europe Standard Time", recurrence={"rules": ["RRULE:FREQ=DAILY"]}),
    )
    assert mapped.fields["RecurrenceTimeZoneSidKey"] == "Europe/Berlin"


def test_zones_are_written_as_salesforce_lists_them_or_refused() -> None:
    for given_zone, written in [
        ("India Standard Time", "Asia/Kolkata"),
        ("Asia/Calcutta", "Asia/Kolkata"),
        ("UTC", "GMT"),
        ("Europe/London", "Europe/London"),
    ]:
        series = event(time_zone=given_zone, recurrence={"rules": ["RRULE:FREQ=DAILY"]})
        mapped = to_crm(Kind.CALENDAR_ITEM, series)
        assert mapped.fields["RecurrenceTimeZoneSidKey"] == written
    with pytest.raises(MappingFailure) as caught:
        to_crm(
            Kind.CALENDAR_ITEM,
            event(time_zone="America/Havana", recurrence={"rules": ["RRULE:FREQ=DAILY"]}),
        )
    assert caught.value.reason == "UNSUPPORTED_TIME_ZONE"


def test_malformed_rrule_and_bad_times_are_item_failures() -> None:
    for bad, reason in [
        (event(recurrence={"rules": ["RRULE:FREQ=SOMETIMES"]}), "MALFORMED_RECURRENCE"),
        (event(recurrence={"rules": ["RRULE:FREQ=DAILY;COUNT=x"]}), "MALFORMED_RECURRENCE"),
        (
            event(recurrence={"rules": ["RRULE:FREQ=DAILY", "RDATE:20260101"]}),
            "UNSUPPORTED_RECURRENCE",
        ),
        (event(end="2026-03-08T13:00:00Z"), "INVALID_VALUE"),
        (event(start=""), "MISSING_REQUIRED_FIELD"),
    ]:
        with pytest.raises(MappingFailure) as caught:
            to_crm(Kind.CALENDAR_ITEM, bad)
        assert caught.value.reason == reason


def test_zero_length_and_midnight_spanning_events_keep_their_instants() -> None:
    for start, end in [
        ("2026-03-08T06:00:00Z", "2026-03-08T06:00:00Z"),
        # 23:30 to 03:30 in New York across the March 2026 DST change.
        ("2026-03-08T04:30:00Z", "2026-03-08T07:30:00Z"),
    ]:
        mapped = to_crm(Kind.CALENDAR_ITEM, event(start=start, end=end))
        back = to_mail(Kind.CALENDAR_ITEM, mapped.fields)
        assert (back.fields["start"], back.fields["end"]) == (start, end)


def test_all_day_events_are_dates_with_salesforce_inclusive_end() -> None:
    item = event(all_day=True, start="", end="", start_date="2026-03-29", end_date="2026-03-31")
    mapped = to_crm(Kind.CALENDAR_ITEM, item | {"time_zone": "Australia/Sydney"})
    assert mapped.fields["IsAllDayEvent"] is True
    assert mapped.fields["ActivityDate"] == "2026-03-29"
    assert mapped.fields["StartDateTime"] == "2026-03-29T00:00:00Z"
    assert mapped.fields["EndDateTime"] == "2026-03-30T00:00:00Z"
    back = to_mail(Kind.CALENDAR_ITEM, mapped.fields, "Pacific/Kiritimati")
    assert (back.fields["start_date"], back.fields["end_date"]) == ("2026-03-29", "2026-03-31")
    assert "start" not in back.fields


def test_email_maps_one_way_to_email_message() -> None:
    email = {
        "subject": "Re: pricing",
        "from_address": {"address": "ann@example.com", "display_name": "Ann"},
        "to": [{"address": "bob@example.com"}, {"address": ""}],
        "cc": [{"address": "cy@example.com"}],
        "body_text": "Hello",
        "body_html": "<p>Hello</p>",
        "sent_time": "2026-01-05T10:00:00Z",
        "conversation_id": "AAQk=",
        "internet_message_id": "<m1@example.com>",
    }
    mapped = map_to_crm(DATA.defaults[Kind.EMAIL], DATA.describes["EmailMessage"], "email", email)
    assert mapped.fields == {
        "Subject": "Re: pricing",
        "FromAddress": "ann@example.com",
        "FromName": "Ann",
        "ToAddress": "bob@example.com",
        "CcAddress": "cy@example.com",
        "TextBody": "Hello",
        "HtmlBody": "<p>Hello</p>",
        "MessageDate": "2026-01-05T10:00:00Z",
        "ThreadIdentifier": "AAQk=",
        "MessageIdentifier": "<m1@example.com>",
        "Status": "3",
    }
    assert [loss.field for loss in mapped.losses] == ["ToAddress"]
    with pytest.raises(MappingFailure) as caught:
        map_to_mail(DATA.defaults[Kind.EMAIL], None, mapped.fields, "UTC")
    assert caught.value.reason == "ONE_WAY"
    as_task = parse_table(read_table_file("email-as-task.yaml"), DATA.schema)
    task = map_to_crm(as_task, DATA.describes["Task"], "email", email).fields
    assert (task["Subject"], task["TaskSubtype"], task["ActivityDate"]) == (
        "Email: Re: pricing",
        "Email",
        "2026-01-05",
    )


def test_contact_keeps_what_salesforce_has_fields_for_and_reports_the_rest() -> None:
    contact = {
        "given_name": "Ann",
        "family_name": "Lee",
        "name_prefix": "Dr.",
        "email_addresses": [
            {"address": "ann@home.example", "type": "EMAIL_ADDRESS_TYPE_HOME"},
            {"address": "ann@corp.example", "type": "EMAIL_ADDRESS_TYPE_WORK", "primary": True},
        ],
        "phone_numbers": [
            {"number": "+1 555 0100", "type": "PHONE_TYPE_WORK"},
            {"number": "+1 555 0101", "type": "PHONE_TYPE_MOBILE"},
            {"number": "+1 555 0102", "type": "PHONE_TYPE_PAGER"},
        ],
        "postal_addresses": [
            {
                "type": "POSTAL_ADDRESS_TYPE_WORK",
                "street": "1 Main St\nSuite 2",
                "city": "Springfield",
            }
        ],
        "company": "Acme",
        "job_title": "CTO",
    }
    mapped = to_crm(Kind.CONTACT, contact)
    fields = mapped.fields
    assert (fields["Email"], fields["Phone"], fields["MobilePhone"]) == (
        "ann@corp.example",
        "+1 555 0100",
        "+1 555 0101",
    )
    assert (fields["MailingStreet"], fields["MailingCity"], fields["concord.AccountName"]) == (
        "1 Main St\nSuite 2",
        "Springfield",
        "Acme",
    )
    assert sorted(loss.detail for loss in mapped.losses) == [
        "1 more address(es) have no field",
        "a PHONE_TYPE_PAGER number has no free field",
    ]
    with pytest.raises(MappingFailure) as caught:
        to_crm(Kind.CONTACT, contact | {"family_name": ""})
    assert caught.value.reason == "MISSING_REQUIRED_FIELD"


# --- property tests: mapping then reverse-mapping is the identity on the mapped fields ------

instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
text = st.text(st.characters(codec="utf-8"), max_size=255).filter(
    lambda s: s == s.strip() and s != ""
)


@settings(max_examples=150, deadline=None)
@given(
    start=instants,
    minutes=st.integers(0, 60 * 24 * 3),
    subject=text,
    location=st.one_of(st.just(""), text),
    show_as=st.sampled_from(["SHOW_AS_FREE", "SHOW_AS_BUSY", "SHOW_AS_OUT_OF_OFFICE"]),
    private=st.booleans(),
    reminder=st.one_of(st.none(), st.integers(0, 20_000)),
    zone=st.sampled_from(ZONES),
)
def test_timed_event_round_trip_is_identity(
    start: datetime,
    minutes: int,
    subject: str,
    location: str,
    show_as: str,
    private: bool,
    reminder: int | None,
    zone: str,
) -> None:
    item = event(
        subject=subject,
        start=format_instant(start),
        end=format_instant(start + timedelta(minutes=minutes)),
        location=location,
        show_as=show_as,
        is_private=private,
        time_zone=zone,
    )
    if reminder is not None:
        item["reminder_minutes"] = reminder
    mapped = to_crm(Kind.CALENDAR_ITEM, item)
    assert mapped.losses == []
    back = to_mail(Kind.CALENDAR_ITEM, mapped.fields, zone).fields
    for key in ("subject", "start", "end", "show_as", "is_private", "time_zone"):
        assert back[key] == item[key]
    assert (back["location"] or "") == location
    assert back.get("reminder_minutes") == reminder


@settings(max_examples=150, deadline=None)
@given(
    first=st.dates(min_value=date(1950, 1, 1), max_value=date(2100, 1, 1)),
    days=st.integers(1, 40),
    zone=st.sampled_from(ZONES),
    mailbox_zone=st.sampled_from(ZONES),
)
def test_all_day_round_trip_never_shifts_a_day(
    first: date, days: int, zone: str, mailbox_zone: str
) -> None:
    item = event(
        all_day=True,
        start="",
        end="",
        start_date=first.isoformat(),
        end_date=(first + timedelta(days=days)).isoformat(),
        time_zone=zone,
    )
    mapped = to_crm(Kind.CALENDAR_ITEM, item)
    assert mapped.fields["ActivityDate"] == first.isoformat()
    assert parse_instant(mapped.fields["StartDateTime"]).date() == first
    back = to_mail(Kind.CALENDAR_ITEM, mapped.fields, mailbox_zone).fields
    assert (back["start_date"], back["end_date"]) == (item["start_date"], item["end_date"])


@settings(max_examples=150, deadline=None)
@given(
    subject=text,
    due=st.one_of(st.just(""), st.dates().map(date.isoformat)),
    status=st.sampled_from(
        [
            "TASK_STATUS_NOT_STARTED",
            "TASK_STATUS_IN_PROGRESS",
            "TASK_STATUS_COMPLETED",
            "TASK_STATUS_WAITING",
            "TASK_STATUS_DEFERRED",
        ]
    ),
    priority=st.sampled_from(["TASK_PRIORITY_LOW", "TASK_PRIORITY_NORMAL", "TASK_PRIORITY_HIGH"]),
    body=st.text(max_size=2000),
    reminder=st.one_of(st.none(), instants),
)
def test_task_round_trip_is_identity(
    subject: str, due: str, status: str, priority: str, body: str, reminder: datetime | None
) -> None:
    item: dict[str, Any] = {
        "subject": subject,
        "due_date": due,
        "status": status,
        "priority": priority,
        "body_text": body,
    }
    if reminder is not None:
        item["reminder_time"] = format_instant(reminder)
    mapped = to_crm(Kind.TASK, item)
    assert mapped.losses == []
    back = to_mail(Kind.TASK, mapped.fields).fields
    assert {k: v or "" for k, v in back.items()} == item


@settings(max_examples=100, deadline=None)
@given(
    given_name=st.one_of(st.just(""), text.map(lambda s: s[:40])),
    family_name=text.map(lambda s: s[:80]),
    email=st.one_of(st.none(), st.emails().filter(lambda e: len(e) <= 80)),
    phones=st.dictionaries(
        st.sampled_from(
            ["PHONE_TYPE_WORK", "PHONE_TYPE_MOBILE", "PHONE_TYPE_HOME", "PHONE_TYPE_OTHER"]
        ),
        st.from_regex(r"\+?[0-9 ()-]{3,20}", fullmatch=True),
    ),
    city=st.one_of(st.just(""), text.map(lambda s: s[:40])),
)
def test_contact_round_trip_is_identity(
    given_name: str, family_name: str, email: str | None, phones: dict[str, str], city: str
) -> None:
    item: dict[str, Any] = {
        "given_name": given_name.strip(),
        "family_name": family_name.strip() or "X",
        "email_addresses": (
            [{"address": email, "type": "EMAIL_ADDRESS_TYPE_WORK", "primary": True}]
            if email
            else []
        ),
        "phone_numbers": [{"number": n, "type": t} for t, n in phones.items()],
        "postal_addresses": (
            [
                {
                    "type": "POSTAL_ADDRESS_TYPE_WORK",
                    "street": "",
                    "city": city.strip(),
                    "region": "",
                    "postal_code": "",
                    "country": "",
                }
            ]
            if city.strip()
            else []
        ),
    }
    mapped = to_crm(Kind.CONTACT, item)
    assert mapped.losses == []
    back = to_mail(Kind.CONTACT, mapped.fields).fields
    assert (back["given_name"] or "") == item["given_name"]
    assert back["family_name"] == item["family_name"]
    assert back["email_addresses"] == item["email_addresses"]
    key = lambda p: p["type"]  # noqa: E731
    assert sorted(back["phone_numbers"], key=key) == sorted(item["phone_numbers"], key=key)
    assert back["postal_addresses"] == item["postal_addresses"]
