"""exchangelib items <-> canonical messages, in memory."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    CalendarItem,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
)
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NoEndPattern,
    NumberedPattern,
    Recurrence,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.adapters import ews_items
from concord_mail_connector.adapters.ews_items import (
    UnwritableContent,
    to_ews_fields,
    to_mail_item,
    update_fields,
)

pytestmark = pytest.mark.unit

NEW_YORK = EWSTimeZone("America/New_York")
START = EWSDate(2030, 1, 6)


@pytest.mark.parametrize(
    ("pattern", "rule"),
    [
        (DailyPattern(interval=2), "FREQ=DAILY;INTERVAL=2"),
        (
            WeeklyPattern(interval=1, weekdays=[1, 3], first_day_of_week=7),
            "FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,WE;WKST=SU",
        ),
        (
            AbsoluteMonthlyPattern(interval=3, day_of_month=15),
            "FREQ=MONTHLY;INTERVAL=3;BYMONTHDAY=15",
        ),
        (
            RelativeMonthlyPattern(interval=1, weekday=2, week_number=5),
            "FREQ=MONTHLY;INTERVAL=1;BYDAY=-1TU",
        ),
        (AbsoluteYearlyPattern(day_of_month=29, month=2), "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"),
        (
            RelativeYearlyPattern(weekday=4, week_number=2, month=11),
            "FREQ=YEARLY;BYMONTH=11;BYDAY=2TH",
        ),
    ],
)
def test_patterns_become_rrules(pattern: Any, rule: str) -> None:
    recurrence = Recurrence(pattern=pattern, boundary=NoEndPattern(start=START))
    assert ews_items._rrule(recurrence, NEW_YORK, False) == f"RRULE:{rule}"


def test_a_pattern_targets_cannot_express_yields_no_rule() -> None:
    # "every weekday of the last week" has no faithful RRULE in every target: no approximation.
    pattern = RelativeMonthlyPattern(interval=1, weekday=9, week_number=5)
    recurrence = Recurrence(pattern=pattern, boundary=NoEndPattern(start=START))
    assert ews_items._rrule(recurrence, NEW_YORK, False) == ""


def test_boundaries() -> None:
    daily = DailyPattern(interval=1)
    numbered = Recurrence(pattern=daily, boundary=NumberedPattern(start=START, number=5))
    assert ews_items._rrule(numbered, NEW_YORK, False).endswith(";COUNT=5")
    until = Recurrence(
        pattern=daily, boundary=EndDatePattern(start=START, end=EWSDate(2030, 1, 31))
    )
    # The last local day of a timed series, in UTC (New York is UTC-5 in January).
    assert ews_items._rrule(until, NEW_YORK, False).endswith(";UNTIL=20300201T045959Z")
    assert ews_items._rrule(until, NEW_YORK, True).endswith(";UNTIL=20300131")


def _stamp(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def test_a_timed_item_keeps_its_instants_and_zone() -> None:
    start = EWSDateTime(2030, 1, 7, 9, 0, tzinfo=NEW_YORK)
    item = CalendarItem(
        subject="s",
        start=start,
        end=start + dt.timedelta(hours=1),
        _start_timezone=NEW_YORK,
        sensitivity="Confidential",
        categories=["Salesforce"],
    )
    event = to_mail_item(item, "calendar-item")
    assert event is not None
    got = event.calendar_item
    assert got.start.ToDatetime(dt.UTC) == dt.datetime(2030, 1, 7, 14, 0, tzinfo=dt.UTC)
    assert got.time_zone == "America/New_York"
    assert got.is_private
    assert got.sensitivity == r.SENSITIVITY_CONFIDENTIAL
    assert event.ref.collection == "calendar-item"


def test_writing_a_timed_item_uses_its_zone() -> None:
    item = r.MailItem(
        calendar_item=r.CalendarItem(
            subject="s",
            start=_stamp(dt.datetime(2030, 1, 7, 14, tzinfo=dt.UTC)),
            end=_stamp(dt.datetime(2030, 1, 7, 15, tzinfo=dt.UTC)),
            time_zone="America/New_York",
            is_private=True,
        )
    )
    fields = to_ews_fields(item)
    assert fields["start"].hour == 9
    assert fields["start"].tzinfo.key == "America/New_York"
    assert fields["sensitivity"] == "Private"
    assert fields["reminder_is_set"] is False


def test_a_windows_zone_name_is_accepted_when_writing() -> None:
    item = r.MailItem(
        calendar_item=r.CalendarItem(
            start=_stamp(dt.datetime(2030, 1, 7, 14, tzinfo=dt.UTC)),
            end=_stamp(dt.datetime(2030, 1, 7, 15, tzinfo=dt.UTC)),
            time_zone="Eastern Standard Time",
        )
    )
    assert to_ews_fields(item)["start"].hour == 9


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (r.MailItem(calendar_item=r.CalendarItem(all_day=True)), "start_date and end_date"),
        (r.MailItem(calendar_item=r.CalendarItem()), "start and end"),
        (r.MailItem(), "not supported"),
        (
            r.MailItem(
                contact=r.ContactItem(
                    email_addresses=[
                        r.ContactEmailAddress(address=f"{n}@x.example") for n in "abcd"
                    ]
                )
            ),
            "at most 3 email addresses",
        ),
        (
            r.MailItem(
                contact=r.ContactItem(
                    phone_numbers=[
                        r.PhoneNumber(number="1", type=r.PHONE_TYPE_MOBILE),
                        r.PhoneNumber(number="2", type=r.PHONE_TYPE_MOBILE),
                    ]
                )
            ),
            "one phone number per type",
        ),
    ],
)
def test_unwritable_content_names_the_problem(item: r.MailItem, message: str) -> None:
    with pytest.raises(UnwritableContent, match=message):
        to_ews_fields(item)


def test_update_masks_map_to_exchange_fields() -> None:
    event = r.MailItem(calendar_item=r.CalendarItem())
    assert update_fields(event, ["subject", "start"]) == ["subject", "start", "end", "is_all_day"]
    assert "required_attendees" in update_fields(event, [])
    with pytest.raises(UnwritableContent, match="organizer"):
        update_fields(event, ["organizer"])


def test_a_contact_maps_to_exchange_fields_primary_email_first() -> None:
    fields = to_ews_fields(
        r.MailItem(
            contact=r.ContactItem(
                given_name="Ada",
                family_name="Lovelace",
                email_addresses=[
                    r.ContactEmailAddress(address="home@ada.example"),
                    r.ContactEmailAddress(address="ada@acme.example", primary=True),
                ],
                phone_numbers=[r.PhoneNumber(number="+44 20", type=r.PHONE_TYPE_MOBILE)],
                birthday="1815-12-10",
            )
        )
    )
    assert [(e.label, e.email) for e in fields["email_addresses"]] == [
        ("EmailAddress1", "ada@acme.example"),
        ("EmailAddress2", "home@ada.example"),
    ]
    assert [(p.label, p.phone_number) for p in fields["phone_numbers"]] == [
        ("MobilePhone", "+44 20")
    ]
    assert fields["display_name"] == "Ada Lovelace"
    assert fields["birthday"] == EWSDate(1815, 12, 10)


def test_an_email_update_writes_only_its_categories() -> None:
    email = r.MailItem(email=r.EmailItem(subject="ignored", categories=["Team"]))
    assert update_fields(email, ["categories"]) == ["categories"]
    assert to_ews_fields(email) == {"categories": ["Team"]}
    with pytest.raises(UnwritableContent, match="subject"):
        update_fields(email, ["subject"])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not a message at all, no header line\n",
        b"From: a@b.example\nContent-Type: multipart/mixed\n\nno boundary anywhere\n",
        b'From: a@b.example\nContent-Type: multipart/mixed; boundary="xx"\n\nno start\n',
    ],
)
def test_broken_mime_is_unreadable_with_a_reason(raw: bytes) -> None:
    with pytest.raises(ews_items.UnreadableItem) as caught:
        ews_items.checked_mime(raw)
    assert caught.value.reason == "MALFORMED_MIME"


def test_ordinary_mime_with_header_defects_is_kept() -> None:
    raw = b"From: a@b.example\nSubject: =?broken?=\nX-Odd header\n\nbody\n"
    assert ews_items.checked_mime(raw) == raw


def _unmapped_item(**fields: Any) -> Any:
    zone = ews_items._unmapped("Olympus Mons Standard Time")
    item = CalendarItem(
        id="i",
        changekey="k",
        subject="Secret merger",
        start=EWSDateTime(2030, 3, 18, 10, tzinfo=EWSTimeZone("UTC")),
        end=EWSDateTime(2030, 3, 18, 11, tzinfo=EWSTimeZone("UTC")),
        **fields,
    )
    item._start_timezone = zone
    item._end_timezone = zone
    return item


def test_an_unknown_zone_makes_a_series_or_an_all_day_item_unreadable() -> None:
    series = _unmapped_item(
        recurrence=Recurrence(pattern=DailyPattern(interval=1), start=EWSDate(2030, 3, 18)),
    )
    series.type = "RecurringMaster"
    with pytest.raises(ews_items.UnreadableItem) as caught:
        to_mail_item(series, "calendar-item")
    assert caught.value.reason == "UNKNOWN_TIME_ZONE"
    assert "Olympus Mons Standard Time" in caught.value.message
    assert "merger" not in caught.value.message
    single = _unmapped_item()
    single.type = "Single"
    converted = to_mail_item(single, "calendar-item")
    assert converted is not None
    assert converted.calendar_item.time_zone == "Olympus Mons Standard Time"


def test_a_timed_item_without_a_readable_start_is_unreadable() -> None:
    item = CalendarItem(
        id="i",
        changekey="k",
        subject="s",
        end=EWSDateTime(2030, 3, 18, 11, tzinfo=EWSTimeZone("UTC")),
    )
    with pytest.raises(ews_items.UnreadableItem, match="no readable start") as caught:
        to_mail_item(item, "calendar-item")
    assert caught.value.reason == "CONVERSION_FAILED"


def test_an_email_cursor_spans_folders_and_reads_an_older_single_folder_one() -> None:
    from concord_mail_connector.adapters.exchange import (
        Source,
        _decode_states,
        _encode_states,
    )

    sources = [
        Source("", None, None, "Salesforce Emails"),
        Source("inbox", None, "Salesforce", "Inbox"),
        Source("sentitems", None, "Salesforce", "Sent Items"),
    ]
    token = _encode_states({"": "s1", "inbox": "s2"}, sources)
    assert _decode_states(token, sources) == {"": "s1", "inbox": "s2", "sentitems": ""}
    # A cursor from before emails spanned folders is the dedicated folder's SyncState.
    assert _decode_states("plain-state", sources) == {"": "plain-state"}
    assert _decode_states("", sources) == {}
    # Anything else was not written here: a full resync, never a guess.
    assert _decode_states("concord-multi:bm90IGpzb24=", sources) is None
    assert _decode_states(_encode_states({}, sources[:2] + sources[:1]), sources) is None
    # One folder: the plain SyncState, as every other collection's cursor.
    assert _encode_states({"": "s1"}, sources[:1]) == "s1"


def test_whatever_a_conversion_raises_stays_with_its_item() -> None:
    from concord_mail_connector.adapters.exchange import _convert

    item = CalendarItem(
        id="i",
        changekey="k",
        subject="Secret",
        start=EWSDateTime(2030, 3, 18, 10, tzinfo=NEW_YORK),
        end=EWSDateTime(2030, 3, 18, 11, tzinfo=NEW_YORK),
        # Week 9 of a month exists nowhere: the RRULE conversion cannot map it.
        recurrence=Recurrence(
            pattern=RelativeMonthlyPattern(interval=1, weekday=1, week_number=9),
            start=EWSDate(2030, 3, 18),
        ),
    )
    item.type = "RecurringMaster"
    problem = _convert(item, r.OBJECT_KIND_CALENDAR_ITEM, "calendar-item")
    assert isinstance(problem, r.ItemProblem)
    assert problem.reason == "CONVERSION_FAILED"
    assert problem.message == "the item could not be converted (KeyError)"
