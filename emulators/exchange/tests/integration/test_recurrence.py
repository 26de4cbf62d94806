"""Recurring series: CalendarView expands them in the series' zone; occurrences can be edited
(exceptions) and deleted, and both show up on the master and as master updates in sync."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone  # type: ignore[import-untyped]
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    Recurrence,
    WeeklyPattern,
)

pytestmark = pytest.mark.integration

BERLIN = EWSTimeZone("Europe/Berlin")
UTC = EWSTimeZone("UTC")


def _series(account: Any) -> Any:
    start = EWSDateTime(2030, 3, 18, 10, 0, tzinfo=BERLIN)
    master = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Weekly sync",
        start=start,
        end=start + dt.timedelta(minutes=30),
        recurrence=Recurrence(
            pattern=WeeklyPattern(interval=1, weekdays=[1]), start=start.date(), number=4
        ),
    )
    master.save(send_meeting_invitations="SendToNone")
    return master


def _view(account: Any) -> list[Any]:
    return list(
        account.calendar.view(
            start=EWSDateTime(2030, 3, 1, tzinfo=UTC), end=EWSDateTime(2030, 5, 1, tzinfo=UTC)
        )
    )


def test_calendar_view_expands_a_series_in_its_own_time_zone(account: Any) -> None:
    _series(account)
    occurrences = _view(account)
    assert [o.type for o in occurrences] == ["Occurrence"] * 4
    # 10:00 in Berlin every week, although daylight saving time starts on 31 March.
    assert [o.start.astimezone(BERLIN).hour for o in occurrences] == [10, 10, 10, 10]
    assert [o.start.astimezone(UTC).hour for o in occurrences] == [9, 9, 8, 8]
    assert len({o.id for o in occurrences}) == 4
    assert {o.subject for o in occurrences} == {"Weekly sync"}


def test_edit_and_delete_occurrences(account: Any) -> None:
    master = _series(account)
    list(account.calendar.sync_items())
    second = master.occurrence(index=2)
    second.refresh()
    assert second.type == "Occurrence"
    second.subject = "Weekly sync (moved)"
    second.start += dt.timedelta(hours=2)
    second.end += dt.timedelta(hours=2)
    second.save(update_fields=["subject", "start", "end"], conflict_resolution="NeverOverwrite")
    third = master.occurrence(index=3)
    third.refresh()
    third.delete()

    occurrences = _view(account)
    assert [o.subject for o in occurrences] == [
        "Weekly sync",
        "Weekly sync (moved)",
        "Weekly sync",
    ]
    assert [o.type for o in occurrences] == ["Occurrence", "Exception", "Occurrence"]
    assert occurrences[1].start.astimezone(BERLIN).hour == 12

    master = account.calendar.get(id=master.id)
    assert len(master.modified_occurrences) == 1
    assert len(master.deleted_occurrences) == 1
    found_master = occurrences[1].recurring_master()
    found_master.refresh()
    assert found_master.id == master.id
    # An occurrence edit reaches a sync as an update of the master, as Exchange reports it.
    changes = [(kind, item.id) for kind, item in account.calendar.sync_items()]
    assert changes == [("update", master.id)]


def test_a_moved_series_keeps_its_exceptions(account: Any) -> None:
    from exchangelib import Folder

    master = _series(account)
    second = master.occurrence(index=2)
    second.refresh()
    second.subject = "changed"
    second.save(update_fields=["subject"])
    target = Folder(parent=account.msg_folder_root, name="Old calendar")
    target.save()
    master.move(target)
    moved = target.get(id=master.id)
    assert len(moved.modified_occurrences) == 1
    again = moved.occurrence(index=2)
    again.refresh()
    assert again.subject == "changed"
