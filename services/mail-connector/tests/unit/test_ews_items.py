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
        (r.MailItem(contact=r.ContactItem()), "not supported"),
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
