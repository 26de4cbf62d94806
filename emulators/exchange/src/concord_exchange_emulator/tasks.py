"""Tasks as Exchange keeps them: the fields it sets itself, and recurring tasks' occurrences.

A recurring task is one item that stands for its current occurrence (its StartDate/DueDate).
When that occurrence is completed — or, for a task that does not regenerate, moved to other
dates — Exchange splits it off as a one-off task (a new item, whose id UpdateItem answers) and
moves the recurring task on to its next occurrence: the next date of its pattern, or for a
regenerating task the completion day plus its interval; a numbered range counts one fewer
occurrence, and the task's ChangeCount goes up by one. The last occurrence has no next one: the
update applies to the task itself, whose id is answered (EWS "UpdateItem operation (task)";
MS-OXOTASK, PidLidTaskDeadOccurrence).
"""

from __future__ import annotations

import copy
import datetime as dt

from dateutil.relativedelta import relativedelta
from lxml import etree

from concord_exchange_emulator import recurrence as rec
from concord_exchange_emulator.xmlns import local, sub, t

COMPLETED = "Completed"
# A regenerating task's next occurrence is this far after the day the current one is completed.
_REGENERATION = {
    "DailyRegeneration": lambda n: relativedelta(days=n),
    "WeeklyRegeneration": lambda n: relativedelta(weeks=n),
    "MonthlyRegeneration": lambda n: relativedelta(months=n),
    "YearlyRegeneration": lambda n: relativedelta(years=n),
}


def _set(item: etree._Element, name: str, value: str) -> None:
    node = item.find(t(name))
    if node is None:
        node = sub(item, t(name))
    node.text = value


def _drop(item: etree._Element, name: str) -> None:
    for node in item.findall(t(name)):
        item.remove(node)


def _day(item: etree._Element, name: str) -> dt.date | None:
    text = item.findtext(t(name))
    if not text or len(text) < 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _day_text(day: dt.date) -> str:
    # Task dates are whole days: Exchange answers them as that day's midnight, UTC.
    return f"{day.isoformat()}T00:00:00Z"


def _range(recurrence: etree._Element) -> etree._Element:
    return recurrence[1]


def _regeneration(recurrence: etree._Element) -> relativedelta | None:
    pattern = recurrence[0]
    step = _REGENERATION.get(local(pattern.tag))
    if step is None:
        return None
    return step(int(pattern.findtext(t("Interval")) or "1"))


def _first_occurrence(recurrence: etree._Element) -> dt.date | None:
    start = _day(_range(recurrence), "StartDate")
    if start is None or _regeneration(recurrence) is not None:
        return start
    try:
        first = next(iter(rec.pattern_rule(recurrence)), None)
    except (rec.RecurrenceNotSupported, ValueError, KeyError):
        return start
    return first.date() if first is not None else start


def stamp(item: etree._Element, *, created: bool) -> None:
    """The fields Exchange sets on a task whenever it is saved."""
    recurrence = item.find(t("Recurrence"))
    if created:
        _set(item, "ChangeCount", "1")
        if item.find(t("Status")) is None:
            _set(item, "Status", "NotStarted")
        if item.find(t("PercentComplete")) is None:
            _set(item, "PercentComplete", "0")
        if recurrence is not None and item.find(t("DueDate")) is None:
            # A recurring task stands for its first occurrence until that one is done.
            first = _first_occurrence(recurrence)
            if first is not None:
                _set(item, "DueDate", _day_text(first))
                if item.find(t("StartDate")) is None:
                    _set(item, "StartDate", _day_text(first))
    completed = item.findtext(t("Status")) == COMPLETED
    _set(item, "IsComplete", "true" if completed else "false")
    _set(item, "IsRecurring", "true" if recurrence is not None else "false")
    if completed:
        _set(item, "PercentComplete", "100")
        if item.find(t("CompleteDate")) is None:
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            _set(item, "CompleteDate", now.isoformat().replace("+00:00", "Z"))
    else:
        _drop(item, "CompleteDate")


def _dates(item: etree._Element) -> tuple[dt.date | None, ...]:
    recurrence = item.find(t("Recurrence"))
    range_start = _day(_range(recurrence), "StartDate") if recurrence is not None else None
    return _day(item, "StartDate"), _day(item, "DueDate"), range_start


def _next_occurrence(before: etree._Element, today: dt.date) -> dt.date | None:
    """The date the recurring task moves on to, or None when its current occurrence is its last."""
    recurrence = before.find(t("Recurrence"))
    assert recurrence is not None
    range_ = _range(recurrence)
    numbered = local(range_.tag) == "NumberedRecurrence"
    if numbered and int(range_.findtext(t("NumberOfOccurrences")) or "1") <= 1:
        return None
    step = _regeneration(recurrence)
    if step is not None:
        following: dt.date | None = today + step
    else:
        current = _day(before, "DueDate") or _day(before, "StartDate") or _day(range_, "StartDate")
        following = None
        if current is not None:
            try:
                rule = rec.pattern_rule(recurrence, bounded=False)
            except (rec.RecurrenceNotSupported, ValueError, KeyError):
                return None
            after = rule.after(dt.datetime.combine(current, dt.time()))
            following = after.date() if after is not None else None
    end = _day(range_, "EndDate") if local(range_.tag) == "EndDateRecurrence" else None
    if following is None or (end is not None and following > end):
        return None
    return following


def split_occurrence(
    before: etree._Element, after: etree._Element, *, today: dt.date | None = None
) -> etree._Element | None:
    """For a recurring task updated from `before` to `after` (both as stored): the one-off task
    Exchange splits off, with `after` moved on to its next occurrence in place; None when the
    update is to the task itself (not recurring, no split-worthy change, or its last occurrence)."""
    recurrence = after.find(t("Recurrence"))
    if recurrence is None or before.find(t("Recurrence")) is None:
        return None
    completing = (
        after.findtext(t("Status")) == COMPLETED and before.findtext(t("Status")) != COMPLETED
    )
    regenerating = _regeneration(recurrence) is not None
    moved = not regenerating and _dates(before) != _dates(after)
    if not (completing or moved):
        return None
    today = today or dt.datetime.now(dt.UTC).date()
    following = _next_occurrence(before, today)
    if following is None:
        return None
    one_off = copy.deepcopy(after)
    _drop(one_off, "Recurrence")
    stamp(one_off, created=False)
    # The recurring task now stands for its next occurrence, not yet started.
    start, due = _day(after, "StartDate"), _day(after, "DueDate")
    span = (due - start) if start is not None and due is not None else dt.timedelta()
    _set(after, "DueDate", _day_text(following))
    if start is not None:
        _set(after, "StartDate", _day_text(following - span))
    if completing:
        _set(after, "Status", "NotStarted")
        _set(after, "PercentComplete", "0")
    range_ = _range(recurrence)
    if regenerating:
        start_node = range_.find(t("StartDate"))
        if start_node is not None:
            start_node.text = (following - span).isoformat() + "Z"
    count = range_.find(t("NumberOfOccurrences"))
    if count is not None:
        count.text = str(int(count.text or "1") - 1)
    _set(after, "ChangeCount", str(int(after.findtext(t("ChangeCount")) or "1") + 1))
    stamp(after, created=False)
    return one_off
