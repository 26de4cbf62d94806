from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from concord_mapping.adapters.packaged import read_table_file, table_data
from concord_mapping.domain import recurrence as rec
from concord_mapping.domain.errors import MappingFailure
from concord_mapping.domain.mapper import map_to_crm, map_to_mail
from concord_mapping.domain.model import Kind
from concord_mapping.domain.recurrence import EwsPattern, EwsPatternKind, EwsRangeKind
from concord_mapping.domain.table import parse_table
from concord_mapping.domain.timezones import iana_zone, windows_zone
from concord_mapping.domain.transforms import format_instant

pytestmark = pytest.mark.unit

DATA = table_data()
DST_ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata"]
AFTER = datetime(2000, 1, 1, tzinfo=UTC)
BEFORE = datetime(2040, 1, 1, tzinfo=UTC)


def starts(rule: rec.RRule, start: datetime, limit: int = 400) -> list[datetime]:
    found = []
    after, before = (
        (AFTER, BEFORE)
        if start.tzinfo
        else (AFTER.replace(tzinfo=None), BEFORE.replace(tzinfo=None))
    )
    for moment in rec.occurrences(rule, start, after=after, before=before):
        found.append(moment)
        if len(found) >= limit:
            break
    return found


def local(year: int, month: int, day: int, hour: int, zone: str) -> datetime:
    return datetime(year, month, day, hour, tzinfo=ZoneInfo(zone))


def test_windows_and_iana_names_map_both_ways() -> None:
    assert iana_zone("Pacific Standard Time") == "America/Los_Angeles"
    assert iana_zone("India Standard Time") == "Asia/Calcutta"
    assert iana_zone("Asia/Kolkata") == "Asia/Kolkata"
    assert windows_zone("Europe/London") == "GMT Standard Time"
    assert windows_zone("Australia/Sydney") == "AUS Eastern Standard Time"
    with pytest.raises(MappingFailure) as caught:
        iana_zone("Middle-earth Standard Time")
    assert caught.value.reason == "UNKNOWN_TIME_ZONE"


@pytest.mark.parametrize(
    ("text", "pattern", "range_kind"),
    [
        (
            "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
            EwsPattern(EwsPatternKind.WEEKLY, 1, ("Monday", "Wednesday")),
            EwsRangeKind.NUMBERED,
        ),
        ("FREQ=DAILY;INTERVAL=3", EwsPattern(EwsPatternKind.DAILY, 3), EwsRangeKind.NO_END),
        (
            "FREQ=MONTHLY;BYDAY=2TU;UNTIL=20270101T000000Z",
            EwsPattern(
                EwsPatternKind.RELATIVE_MONTHLY, 1, ("Tuesday",), day_of_week_index="Second"
            ),
            EwsRangeKind.END_DATE,
        ),
        (
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            EwsPattern(EwsPatternKind.RELATIVE_MONTHLY, 1, ("Weekday",), day_of_week_index="Last"),
            EwsRangeKind.NO_END,
        ),
        (
            "FREQ=MONTHLY;BYMONTHDAY=-1",
            EwsPattern(EwsPatternKind.RELATIVE_MONTHLY, 1, ("Day",), day_of_week_index="Last"),
            EwsRangeKind.NO_END,
        ),
        (
            "FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=5",
            EwsPattern(EwsPatternKind.ABSOLUTE_YEARLY, 1, day_of_month=5, month="March"),
            EwsRangeKind.NO_END,
        ),
        (
            "FREQ=YEARLY;BYMONTH=11;BYDAY=4TH",
            EwsPattern(
                EwsPatternKind.RELATIVE_YEARLY,
                1,
                ("Thursday",),
                day_of_week_index="Fourth",
                month="November",
            ),
            EwsRangeKind.NO_END,
        ),
        (
            "FREQ=YEARLY;INTERVAL=2",
            EwsPattern(EwsPatternKind.ABSOLUTE_MONTHLY, 24, day_of_month=5),
            EwsRangeKind.NO_END,
        ),
    ],
)
def test_rrule_to_ews_and_back_keeps_every_occurrence(
    text: str, pattern: EwsPattern, range_kind: EwsRangeKind
) -> None:
    start = local(2026, 3, 5, 9, "Europe/London")
    rule = rec.parse_rrule(text)
    got, span = rec.rrule_to_ews(rule, start)
    assert got == pattern
    assert span.kind is range_kind
    back = rec.ews_to_rrule(got, span, ZoneInfo("Europe/London"))
    assert starts(back, start) == starts(rule, start)


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=HOURLY;INTERVAL=4",
        "FREQ=WEEKLY;BYWEEKNO=20",
        "FREQ=MONTHLY;BYMONTHDAY=1,15",
        "FREQ=MONTHLY;BYDAY=5FR",
        "FREQ=YEARLY;BYMONTH=1,7",
        "FREQ=DAILY;BYHOUR=9,17",
        "FREQ=MONTHLY;BYMONTHDAY=31",
    ],
)
def test_what_ews_cannot_express_is_unsupported(text: str) -> None:
    with pytest.raises(MappingFailure) as caught:
        rec.rrule_to_ews(rec.parse_rrule(text), local(2026, 1, 2, 9, "UTC"))
    assert caught.value.reason == "UNSUPPORTED_RECURRENCE"


def test_legacy_salesforce_fields() -> None:
    start = local(2026, 1, 6, 9, "America/New_York")
    fields = rec.rrule_to_sf_legacy(
        rec.parse_rrule("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=6"), start, "America/New_York"
    )
    assert fields == {
        "IsRecurrence": True,
        "RecurrenceType": "RecursWeekly",
        "RecurrenceInterval": 1,
        "RecurrenceDayOfWeekMask": 4 + 16,
        "RecurrenceEndDateOnly": "2026-01-22",
        "RecurrenceTimeZoneSidKey": "America/New_York",
    }
    nth = rec.rrule_to_sf_legacy(
        rec.parse_rrule("FREQ=MONTHLY;BYDAY=-1FR;UNTIL=20261231T235959Z"), start, "America/New_York"
    )
    assert (nth["RecurrenceType"], nth["RecurrenceInstance"], nth["RecurrenceDayOfWeekMask"]) == (
        "RecursMonthlyNth",
        "Last",
        32,
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=5", "BYSETPOS"),
        ("FREQ=WEEKLY;BYDAY=MO", "without an end"),
        ("FREQ=DAILY;COUNT=101", "more than 100"),
        ("FREQ=YEARLY;INTERVAL=2;COUNT=3", "yearly interval"),
    ],
)
def test_what_legacy_salesforce_cannot_express_is_unsupported(text: str, why: str) -> None:
    with pytest.raises(MappingFailure) as caught:
        rec.rrule_to_sf_legacy(rec.parse_rrule(text), local(2026, 1, 6, 9, "UTC"), "UTC")
    assert caught.value.reason == "UNSUPPORTED_RECURRENCE"
    assert why in caught.value.message


def test_legacy_table_round_trips_a_series_through_salesforce_fields() -> None:
    content = read_table_file("event.yaml")
    for rule in content["rules"]:
        if rule["crm_field"] == "Recurrence2PatternText":
            rule["to_crm"] = {"name": "recurrence_rrule", "params": {"format": "legacy"}}
    table = parse_table(content, DATA.schema)
    item: dict[str, Any] = {
        "subject": "Standup",
        "start": "2026-03-02T14:00:00Z",
        "end": "2026-03-02T14:15:00Z",
        "all_day": False,
        "time_zone": "America/New_York",
        "recurrence": {"rules": ["RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;COUNT=20"]},
    }
    fields = map_to_crm(table, DATA.describes["Event"], "calendar_item", item).fields
    assert fields["RecurrenceType"] == "RecursEveryWeekday"
    assert "Recurrence2PatternText" not in fields
    back = map_to_mail(table, DATA.describes["Event"], fields, "UTC").fields
    zone = ZoneInfo(back["recurrence"]["time_zone"])
    start = datetime(2026, 3, 2, 14, tzinfo=UTC).astimezone(zone)
    original = starts(rec.parse_rrule(item["recurrence"]["rules"][0]), start)
    assert starts(rec.parse_rrule(back["recurrence"]["rules"][0]), start) == original
    assert len(original) == 20


def test_legacy_all_day_series_stays_on_its_dates() -> None:
    content = read_table_file("event.yaml")
    for rule in content["rules"]:
        if rule["crm_field"] == "Recurrence2PatternText":
            rule["to_crm"] = {"name": "recurrence_rrule", "params": {"format": "legacy"}}
    table = parse_table(content, DATA.schema)
    item: dict[str, Any] = {
        "subject": "Pay day",
        "all_day": True,
        "start_date": "2026-01-30",
        "end_date": "2026-01-31",
        "time_zone": "Australia/Sydney",
        "recurrence": {"rules": ["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=12"]},
    }
    fields = map_to_crm(table, DATA.describes["Event"], "calendar_item", item).fields
    assert fields["RecurrenceStartDateTime"] == "2026-01-30T00:00:00Z"
    assert fields["RecurrenceEndDateOnly"] == "2026-12-25"
    back = map_to_mail(table, DATA.describes["Event"], fields, "America/New_York").fields
    assert (back["start_date"], back["end_date"]) == ("2026-01-30", "2026-01-31")
    first = datetime(2026, 1, 30)
    rule = rec.parse_rrule(back["recurrence"]["rules"][0])
    assert starts(rule, first) == starts(rec.parse_rrule(item["recurrence"]["rules"][0]), first)


# --- property tests ------------------------------------------------------------------------

weekday_sets = st.sets(st.sampled_from(rec.WEEKDAYS), min_size=1, max_size=7)


@st.composite
def expressible_rules(draw: st.DrawFn) -> str:
    """Rules of the shapes EWS patterns express, with every kind of end."""
    shape = draw(
        st.sampled_from(["daily", "weekly", "monthday", "nth", "setpos", "yearly", "ynth"])
    )
    interval = draw(st.integers(1, 4))
    if shape == "daily":
        body = f"FREQ=DAILY;INTERVAL={interval}"
    elif shape == "weekly":
        days = ",".join(sorted(draw(weekday_sets), key=rec.WEEKDAYS.index))
        body = f"FREQ=WEEKLY;INTERVAL={interval};BYDAY={days}"
    elif shape == "monthday":
        body = f"FREQ=MONTHLY;INTERVAL={interval};BYMONTHDAY={draw(st.integers(1, 28))}"
    elif shape == "nth":
        nth = draw(st.sampled_from([1, 2, 3, 4, -1]))
        body = f"FREQ=MONTHLY;INTERVAL={interval};BYDAY={nth}{draw(st.sampled_from(rec.WEEKDAYS))}"
    elif shape == "setpos":
        days = draw(st.sampled_from(["MO,TU,WE,TH,FR", "SA,SU", "MO,TU,WE,TH,FR,SA,SU"]))
        body = f"FREQ=MONTHLY;BYDAY={days};BYSETPOS={draw(st.sampled_from([1, 2, -1]))}"
    elif shape == "yearly":
        body = (
            f"FREQ=YEARLY;BYMONTH={draw(st.integers(1, 12))};BYMONTHDAY={draw(st.integers(1, 28))}"
        )
    else:
        nth = draw(st.sampled_from([1, 2, 3, 4, -1]))
        day = draw(st.sampled_from(rec.WEEKDAYS))
        body = f"FREQ=YEARLY;BYMONTH={draw(st.integers(1, 12))};BYDAY={nth}{day}"
    end = draw(st.sampled_from(["", "count", "until"]))
    if end == "count":
        body += f";COUNT={draw(st.integers(1, 60))}"
    elif end == "until":
        until = draw(st.datetimes(datetime(2026, 6, 1), datetime(2030, 1, 1)))
        body += f";UNTIL={until:%Y%m%dT%H%M%S}Z"
    return body


series_starts = st.builds(
    lambda day, hour, minute: (day, time(hour, minute)),
    st.dates(date(2025, 1, 1), date(2027, 12, 31)),
    st.integers(0, 23),
    st.sampled_from([0, 15, 30, 45]),
)


@settings(max_examples=300, deadline=None)
@given(text=expressible_rules(), when=series_starts, zone=st.sampled_from([*DST_ZONES, ""]))
def test_rrule_ews_rrule_round_trip_keeps_occurrences(
    text: str, when: tuple[date, time], zone: str
) -> None:
    """Timed series in DST zones, and all-day series (no zone: dates on a floating clock)."""
    tz = ZoneInfo(zone) if zone else None
    start = datetime.combine(when[0], when[1] if tz else time(0), tzinfo=tz)
    rule = rec.parse_rrule(text)
    if not starts(rule, start):
        # A series that ends before it starts has no EWS form.
        with pytest.raises(MappingFailure, match="ends before it starts"):
            rec.rrule_to_ews(rule, start)
        return
    pattern, span = rec.rrule_to_ews(rule, start)
    back = rec.ews_to_rrule(pattern, span, tz)
    assert starts(back, start) == starts(rule, start)


@settings(max_examples=300, deadline=None)
@given(text=expressible_rules(), when=series_starts, zone=st.sampled_from(DST_ZONES))
def test_rrule_legacy_rrule_round_trip_keeps_occurrences_or_says_why_not(
    text: str, when: tuple[date, time], zone: str
) -> None:
    start = datetime.combine(*when, tzinfo=ZoneInfo(zone))
    rule = rec.parse_rrule(text)
    try:
        fields = rec.rrule_to_sf_legacy(rule, start, zone)
    except MappingFailure as refused:
        # Hypothesis picks which rules are refused; a malformed one is only an empty series.
        reason, empty = refused.reason, not starts(rule, start)
        assert reason == "UNSUPPORTED_RECURRENCE" or empty
        return
    back = rec.sf_legacy_to_rrule(fields)
    assert starts(back, start) == starts(rule, start)


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(DST_ZONES),
    day=st.dates(date(2024, 1, 1), date(2030, 12, 31)),
    hour=st.integers(0, 23),
    interval=st.integers(1, 3),
)
def test_dst_transitions_never_shift_a_meeting(
    zone: str, day: date, hour: int, interval: int
) -> None:
    """A weekly meeting keeps its wall-clock time through every DST change, after the round
    trip through Salesforce, wherever the mailbox reading it back is."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(hour, 30), tzinfo=tz)
    # Skip wall times that do not exist (spring forward): no meeting can start there.
    assume(start.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == start.replace(tzinfo=None))
    item = {
        "subject": "1:1",
        "start": format_instant(start),
        "end": format_instant(start + timedelta(minutes=45)),
        "all_day": False,
        "time_zone": zone,
        "recurrence": {"rules": [f"RRULE:FREQ=WEEKLY;INTERVAL={interval};COUNT=60"]},
    }
    table = DATA.defaults[Kind.CALENDAR_ITEM]
    fields = map_to_crm(table, DATA.describes["Event"], "calendar_item", item).fields
    back = map_to_mail(table, DATA.describes["Event"], fields, "Pacific/Auckland").fields
    assert back["recurrence"]["time_zone"] == zone
    assert back["start"] == item["start"]
    rule = rec.parse_rrule(back["recurrence"]["rules"][0])
    moments = starts(rule, datetime.fromisoformat(back["start"]).astimezone(ZoneInfo(zone)))
    assert len(moments) == 60
    for moment in moments:
        # The wall time in the series' zone, read as RFC 5545 does: a time skipped by a
        # spring-forward takes the offset before the gap (02:30 -> 03:30), as Outlook shows it.
        wall = datetime.combine(moment.astimezone(tz).date(), time(hour, 30), tzinfo=tz)
        assert moment == wall.astimezone(UTC)
