"""Recurring tasks as Exchange 2016 keeps them (#15): completing the current occurrence, or moving
a non-regenerating task's dates, splits off a one-off task whose id UpdateItem answers, and the
recurring task moves on to its next occurrence; the last occurrence is completed in place."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from exchangelib import Task  # type: ignore[import-untyped]
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    DailyPattern,
    DailyRegeneration,
    TaskRecurrence,
    WeeklyPattern,
)

pytestmark = pytest.mark.integration

MONDAY = 1


def _recurring(account: Any, recurrence: Any, subject: str = "water the plants") -> Any:
    task = Task(account=account, folder=account.tasks, subject=subject, recurrence=recurrence)
    task.save()
    task.refresh()
    return task


def _fresh(account: Any, task_id: str) -> Any:
    return account.tasks.get(id=task_id)


def test_a_new_recurring_task_stands_for_its_first_occurrence(account: Any) -> None:
    # Weekly on Mondays from a Wednesday: the first occurrence is the Monday after.
    start = dt.date(2031, 1, 1)
    pattern = WeeklyPattern(interval=1, weekdays=[MONDAY])
    task = _recurring(account, TaskRecurrence(pattern=pattern, start=start, number=3))
    assert task.is_recurring is True
    assert task.change_count == 1
    assert task.due_date == dt.date(2031, 1, 6)
    assert task.start_date == dt.date(2031, 1, 6)
    assert task.is_complete is False
    one_off = Task(account=account, folder=account.tasks, subject="once").save()
    one_off.refresh()
    assert one_off.is_recurring is False


def test_completing_an_occurrence_splits_it_off_and_moves_the_task_on(account: Any) -> None:
    start = dt.date(2031, 1, 1)
    recurrence = TaskRecurrence(pattern=DailyPattern(interval=2), start=start, number=3)
    task = _recurring(account, recurrence)
    master_id = task.id
    task.status = Task.COMPLETED
    task.save()
    assert task.id != master_id  # UpdateItem answered the new one-off task
    done = _fresh(account, task.id)
    assert done.is_recurring is False
    assert done.status == Task.COMPLETED
    assert done.percent_complete == Decimal(100)
    assert done.is_complete is True
    assert done.complete_date is not None
    assert done.due_date == start
    master = _fresh(account, master_id)
    assert master.is_recurring is True
    assert master.status == Task.NOT_STARTED
    assert master.percent_complete == Decimal(0)
    assert master.complete_date is None
    assert master.due_date == dt.date(2031, 1, 3)
    assert master.recurrence.boundary.number == 2
    assert master.change_count == 2
    assert len(list(account.tasks.filter(subject="water the plants"))) == 2


def test_the_last_occurrence_is_completed_in_place(account: Any) -> None:
    recurrence = TaskRecurrence(
        pattern=DailyPattern(interval=1), start=dt.date(2031, 1, 1), number=1
    )
    task = _recurring(account, recurrence, subject="only once")
    master_id = task.id
    task.status = Task.COMPLETED
    task.save()
    assert task.id == master_id
    master = _fresh(account, master_id)
    assert master.status == Task.COMPLETED
    assert master.is_complete is True
    assert master.change_count == 1
    assert len(list(account.tasks.filter(subject="only once"))) == 1


def test_moving_a_non_regenerating_task_splits_the_occurrence_off(account: Any) -> None:
    start = dt.date(2031, 1, 1)
    recurrence = TaskRecurrence(pattern=DailyPattern(interval=1), start=start, number=4)
    task = _recurring(account, recurrence, subject="moved")
    master_id = task.id
    task.due_date = task.start_date = dt.date(2031, 1, 20)
    task.save()
    assert task.id != master_id
    moved = _fresh(account, task.id)
    assert moved.is_recurring is False
    assert moved.due_date == dt.date(2031, 1, 20)
    assert moved.status == Task.NOT_STARTED
    master = _fresh(account, master_id)
    assert master.due_date == dt.date(2031, 1, 2)
    assert master.recurrence.boundary.number == 3


def test_a_regenerating_task_comes_back_an_interval_after_its_completion(account: Any) -> None:
    start = dt.date(2031, 1, 1)
    recurrence = TaskRecurrence(pattern=DailyRegeneration(interval=3), start=start, number=4)
    task = _recurring(account, recurrence, subject="regenerating")
    master_id = task.id
    # Moving a regenerating task's dates is an update of the task itself.
    task.recurrence.boundary.start = dt.date(2031, 1, 2)
    task.save()
    assert task.id == master_id
    task.status = Task.COMPLETED
    task.save()
    assert task.id != master_id
    master = _fresh(account, master_id)
    completed_on = dt.datetime.now(dt.UTC).date()
    assert master.due_date == completed_on + dt.timedelta(days=3)
    assert master.recurrence.boundary.start == completed_on + dt.timedelta(days=3)
    assert master.recurrence.boundary.number == 3
    assert master.change_count == 2
    assert len(list(account.tasks.filter(subject="regenerating"))) == 2
