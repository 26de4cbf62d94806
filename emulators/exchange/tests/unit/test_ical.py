"""Real iCalendar files into EWS items: moved by whole weeks in the series' own zone."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from concord_exchange_emulator import ical
from concord_exchange_emulator.xmlns import t

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC)

WEEKLY = b"""BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
UID:w1
SUMMARY:Standup
DTSTART;TZID=America/New_York:20190104T090000
DTEND;TZID=America/New_York:20190104T091500
RRULE:FREQ=WEEKLY;BYDAY=FR;UNTIL=20190301T140000Z
EXDATE;TZID=America/New_York:20190111T090000
END:VEVENT
END:VCALENDAR
"""


def _utc(text: str | None) -> dt.datetime:
    assert text is not None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _find(node: etree._Element, path: str) -> etree._Element:
    found = node.find(path)
    assert found is not None
    return found


def test_a_series_moves_by_whole_weeks_in_its_zone() -> None:
    [item] = ical.import_calendar(WEEKLY, NOW)
    node = item.element
    start = _utc(node.findtext(t("Start")))
    local = start.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert start > NOW
    assert (local.weekday(), local.hour) == (4, 9)  # still Friday, 09:00 in New York (EST)
    assert _find(node, t("StartTimeZone")).get("Id") == "Eastern Standard Time"
    weekly = _find(node, f"{t('Recurrence')}/{t('WeeklyRecurrence')}")
    assert weekly.findtext(t("DaysOfWeek")) == "Friday"
    end = _find(node, f"{t('Recurrence')}/{t('EndDateRecurrence')}")
    assert dt.date.fromisoformat(end.findtext(t("EndDate")) or "").weekday() == 4
    [deleted] = node.iterfind(f"{t('DeletedOccurrences')}/{t('DeletedOccurrence')}/{t('Start')}")
    assert _utc(deleted.text) - start == dt.timedelta(weeks=1)


def test_a_zone_outside_the_table_gets_a_windows_zone_with_the_same_offsets() -> None:
    from zoneinfo import ZoneInfo

    assert ical.windows_zone(ZoneInfo("Europe/Vienna"), NOW) in {
        "Central Europe Standard Time",
        "W. Europe Standard Time",
        "Romance Standard Time",
        "Central European Standard Time",
    }
    assert ical.windows_zone(ZoneInfo("America/New_York"), NOW) == "Eastern Standard Time"


def test_a_rule_the_importer_cannot_translate_is_refused() -> None:
    raw = WEEKLY.replace(b"FREQ=WEEKLY;BYDAY=FR", b"FREQ=YEARLY;BYSETPOS=-1")
    with pytest.raises(ical.UnsupportedCalendar, match="YEARLY"):
        ical.import_calendar(raw, NOW)
