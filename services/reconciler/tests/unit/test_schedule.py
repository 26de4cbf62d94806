"""The schedule: intervals, back-off, suspension on credential failures, re-queuing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as hs
from pydantic import ValidationError

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.app import schedule_policy
from concord_reconciler.mailboxes.domain.model import MailboxState
from concord_reconciler.sessions.domain.model import SessionState
from concord_reconciler.sessions.domain.schedule import (
    CREDENTIAL_FAILURES,
    ORG_WIDE_FAILURES,
    SchedulePolicy,
    ScheduleRow,
    back_off_delay,
    may_push,
    next_due,
    org_holds,
    plan_tick,
)
from concord_reconciler.settings import ReconcilerSettings

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY_AGO = NOW - timedelta(days=1)
POLICY = SchedulePolicy()


def row(**changes: object) -> ScheduleRow:
    base = ScheduleRow(
        mailbox_id="m1",
        org_id="acme",
        state=MailboxState.ACTIVE,
        state_since=DAY_AGO,
        interval=timedelta(minutes=30),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def failed(count: int, code: str = "PROVIDER_UNAVAILABLE", **changes: object) -> ScheduleRow:
    return row(
        failures_in_row=count,
        last_outcome=SessionState.FAILED,
        last_failure_code=code,
        last_failure_reason="the mail server did not answer",
        last_request=NOW - timedelta(minutes=5),
        last_end=NOW - timedelta(minutes=5),
        **changes,
    )


def test_a_mailbox_that_never_synced_is_due_at_once() -> None:
    plan = plan_tick([row()], NOW)
    assert [(s.mailbox_id, s.trigger) for s in plan.sessions] == [
        ("m1", res.SESSION_TRIGGER_SCHEDULE)
    ]


def test_an_active_mailbox_is_due_one_interval_after_its_last_request() -> None:
    last = NOW - timedelta(minutes=29)
    plan = plan_tick([row(last_request=last)], NOW)
    assert plan.sessions == []
    assert plan.next_wake == last + timedelta(minutes=30)
    assert plan_tick([row(last_request=last)], last + timedelta(minutes=30)).sessions


def test_a_mailbox_with_a_pending_session_is_not_asked_again() -> None:
    assert plan_tick([row(pending=True)], NOW).sessions == []


@pytest.mark.parametrize("state", [MailboxState.SUSPENDED, MailboxState.DELETING])
def test_suspended_and_deleting_mailboxes_are_never_scheduled(state: MailboxState) -> None:
    plan = plan_tick([row(state=state), failed(9, state=state)], NOW)
    assert plan.sessions == []
    assert plan.changes == []


@pytest.mark.parametrize("code", sorted(CREDENTIAL_FAILURES))
def test_a_credential_failure_suspends_at_once_and_says_so(code: str) -> None:
    plan = plan_tick([failed(1, code)], NOW)
    [change] = plan.changes
    assert change.state is MailboxState.SUSPENDED
    assert change.expected is MailboxState.ACTIVE
    assert code in change.reason
    assert "resume" in change.reason
    assert plan.sessions == []


def test_a_run_of_failures_enters_back_off_with_the_reason() -> None:
    assert plan_tick([failed(POLICY.failures_before_back_off - 1)], NOW).changes == []
    plan = plan_tick([failed(POLICY.failures_before_back_off)], NOW)
    [change] = plan.changes
    assert change.state is MailboxState.BACKING_OFF
    assert "PROVIDER_UNAVAILABLE" in change.reason
    assert "3 sessions failed" in change.reason
    # The first retry waits one base delay from now, not the 30-minute interval.
    assert plan.sessions == []
    assert plan.next_wake == NOW + POLICY.base_delay


def test_a_failed_session_is_tried_again_soon_not_at_the_next_interval() -> None:
    once = failed(1)
    assert once.last_end is not None
    assert next_due(once, POLICY) == once.last_end + POLICY.base_delay
    assert [s.trigger for s in plan_tick([once], NOW).sessions] == [res.SESSION_TRIGGER_RETRY]
    twice = replace(failed(2), last_end=NOW - timedelta(minutes=1))
    assert twice.last_end is not None
    assert next_due(twice, POLICY) == twice.last_end + 2 * POLICY.base_delay
    # Never later than the interval would have it.
    short = failed(1, interval=timedelta(seconds=30))
    assert short.last_request is not None
    assert next_due(short, POLICY) == short.last_request + timedelta(seconds=30)
    # A completed session after them: back to the interval.
    fine = row(
        last_outcome=SessionState.COMPLETED,
        last_request=NOW - timedelta(minutes=5),
        last_end=NOW - timedelta(minutes=5),
    )
    assert next_due(fine, POLICY) == NOW + timedelta(minutes=25)


def test_back_off_retries_are_spaced_exponentially_and_marked_retry() -> None:
    entered = NOW - timedelta(hours=1)
    backing = failed(2, state=MailboxState.BACKING_OFF, state_since=entered)
    due = next_due(backing, POLICY)
    assert backing.last_end is not None
    assert due == backing.last_end + 4 * POLICY.base_delay
    plan = plan_tick([backing], due)
    assert [s.trigger for s in plan.sessions] == [res.SESSION_TRIGGER_RETRY]


def test_a_completed_session_ends_the_back_off() -> None:
    recovered = row(
        state=MailboxState.BACKING_OFF,
        last_outcome=SessionState.COMPLETED,
        last_request=NOW - timedelta(minutes=1),
        last_end=NOW - timedelta(minutes=1),
    )
    plan = plan_tick([recovered], NOW)
    [change] = plan.changes
    assert change.state is MailboxState.ACTIVE
    assert change.reason == ""


def test_a_session_queued_too_long_is_requeued() -> None:
    fresh = row(pending=True, queued_since=NOW - timedelta(seconds=30))
    stale = row(mailbox_id="m2", pending=True, queued_since=NOW - POLICY.requeue_after)
    assert plan_tick([fresh, stale], NOW).requeued == ["m2"]


def test_a_session_queued_behind_a_long_running_one_is_not_requeued() -> None:
    """It waits for the mailbox's lease (a first sync runs for minutes), not for a message."""
    behind = row(pending=True, running=True, queued_since=NOW - 3 * POLICY.requeue_after)
    assert plan_tick([behind], NOW).requeued == []


def test_the_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SchedulePolicy(failures_before_back_off=0)
    with pytest.raises(ValueError, match="base_delay"):
        SchedulePolicy(base_delay=timedelta(minutes=5), max_delay=timedelta(minutes=1))


@given(hs.integers(min_value=0, max_value=10_000))
def test_back_off_grows_and_is_capped(failures: int) -> None:
    delay = back_off_delay(failures, POLICY)
    assert POLICY.base_delay <= delay <= POLICY.max_delay
    assert back_off_delay(failures + 1, POLICY) >= delay


_rows = hs.builds(
    ScheduleRow,
    mailbox_id=hs.text("abcdef", min_size=1, max_size=4),
    org_id=hs.just("acme"),
    state=hs.sampled_from(MailboxState),
    state_since=hs.just(DAY_AGO),
    interval=hs.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(hours=2)),
    last_request=hs.none()
    | hs.datetimes(min_value=datetime(2026, 11, 26), max_value=datetime(2026, 11, 28)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    last_end=hs.none() | hs.just(NOW - timedelta(minutes=3)),
    failures_in_row=hs.integers(min_value=0, max_value=30),
    last_outcome=hs.none() | hs.sampled_from([SessionState.FAILED, SessionState.COMPLETED]),
    last_failure_code=hs.sampled_from(["", "PROVIDER_UNAVAILABLE", *CREDENTIAL_FAILURES]),
    pending=hs.booleans(),
)


@given(hs.lists(_rows, max_size=20, unique_by=lambda r: r.mailbox_id))
def test_a_tick_never_schedules_what_it_must_not(rows: list[ScheduleRow]) -> None:
    plan = plan_tick(rows, NOW)
    suspended = {c.mailbox_id for c in plan.changes if c.state is MailboxState.SUSPENDED}
    for session in plan.sessions:
        source = next(r for r in rows if r.mailbox_id == session.mailbox_id)
        assert not source.pending
        assert source.state in (MailboxState.ACTIVE, MailboxState.BACKING_OFF)
        assert session.mailbox_id not in suspended
    if plan.next_wake is not None:
        assert plan.next_wake > NOW


def test_a_throttled_mailbox_waits_for_the_peers_retry_after_not_for_its_interval() -> None:
    # A spent Salesforce allocation answered "retry after 300 s": no session before then, by
    # schedule or by push, although the mailbox is due and active.
    throttled = replace(
        failed(1, "API_LIMIT_EXCEEDED", retry_not_before=NOW + timedelta(seconds=300)),
        last_request=NOW - timedelta(hours=1),
    )
    assert next_due(throttled, POLICY) == NOW + timedelta(seconds=300)
    assert plan_tick([throttled], NOW).sessions == []
    assert not may_push(throttled, NOW)
    later = NOW + timedelta(seconds=301)
    assert [s.mailbox_id for s in plan_tick([throttled], later).sessions] == ["m1"]
    assert may_push(throttled, later)
    # A retry-after already past is an overdue retry: due at once, not at the next interval.
    past = replace(throttled, retry_not_before=NOW - timedelta(hours=2))
    assert next_due(past, POLICY) == NOW - timedelta(hours=2)
    assert [s.mailbox_id for s in plan_tick([past], NOW).sessions] == ["m1"]


def test_a_throttled_session_is_retried_at_the_retry_after_not_at_the_next_interval() -> None:
    """Issue #17 case 3: the mailbox is backed off *by* the retry-after: a 60 s throttle a
    minute into a 30-minute interval retries after 60 s, not 29 minutes later."""
    throttled = replace(
        failed(1, "PROVIDER_THROTTLED", retry_not_before=NOW + timedelta(seconds=60)),
        last_request=NOW - timedelta(minutes=1),
    )
    assert next_due(throttled, POLICY) == NOW + timedelta(seconds=60)
    later = NOW + timedelta(seconds=60)
    assert [(s.mailbox_id, s.trigger) for s in plan_tick([throttled], later).sessions] == [
        ("m1", res.SESSION_TRIGGER_RETRY)
    ]
    # Any other failure is tried again one base delay after it ended.
    plain = replace(throttled, retry_not_before=None)
    assert plain.last_end is not None
    assert next_due(plain, POLICY) == plain.last_end + POLICY.base_delay


def test_an_org_wide_limit_holds_every_mailbox_of_the_org_until_its_retry_after() -> None:
    """Issue #17: Salesforce's allocation is the org's; one mailbox meeting it holds them all."""
    assert "SALESFORCE_API_LIMIT" in ORG_WIDE_FAILURES
    until = NOW + timedelta(seconds=300)
    holds = org_holds([("acme", NOW - timedelta(seconds=5), until)], {})
    assert holds == {"acme": until}
    # Another mailbox of the org, due and never synced: neither the schedule nor a push runs it.
    other = row(mailbox_id="m2", org_held_until=holds.get("acme"))
    assert next_due(other, POLICY) == until
    assert plan_tick([other], NOW).sessions == []
    assert plan_tick([other], NOW).next_wake == until
    assert not may_push(other, NOW)
    later = NOW + timedelta(seconds=301)
    assert [s.mailbox_id for s in plan_tick([other], later).sessions] == ["m2"]
    assert may_push(other, later)
    # Its own longer hold still counts.
    own = replace(other, retry_not_before=NOW + timedelta(hours=1))
    assert next_due(own, POLICY) == NOW + timedelta(hours=1)


def test_the_newest_org_wide_failure_holds_unless_a_session_completed_after_it() -> None:
    early, late = NOW - timedelta(minutes=10), NOW - timedelta(minutes=1)
    failures = [
        ("acme", early, NOW + timedelta(hours=1)),
        ("acme", late, NOW + timedelta(minutes=5)),
        ("globex", early, NOW + timedelta(minutes=5)),
    ]
    assert org_holds(failures, {}) == {
        "acme": NOW + timedelta(minutes=5),
        "globex": NOW + timedelta(minutes=5),
    }
    # A session of globex completed after its failure: the allocation is back.
    completed = {"globex": early + timedelta(seconds=1), "acme": early}
    assert org_holds(failures, completed) == {"acme": NOW + timedelta(minutes=5)}


def test_the_retentions_of_stored_answers_and_finished_sessions_are_settings() -> None:
    assert schedule_policy(ReconcilerSettings()).answer_retention == timedelta(days=1)
    hour = ReconcilerSettings(request_answer_retention_seconds=3600)
    assert schedule_policy(hour).answer_retention == timedelta(hours=1)
    assert schedule_policy(ReconcilerSettings()).session_retention == timedelta(days=7)
    day = ReconcilerSettings(session_retention_seconds=86400)
    assert schedule_policy(day).session_retention == timedelta(days=1)
    # Health counts the failures of the last 24 h: a shorter retention would lose some.
    with pytest.raises(ValidationError):
        ReconcilerSettings(session_retention_seconds=3600)
