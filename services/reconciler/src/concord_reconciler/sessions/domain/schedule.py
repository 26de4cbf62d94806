"""When each mailbox's next session is due, and what a run of failed sessions does to it.

Pure: the scheduler adapter reads one `ScheduleRow` per mailbox from the store (its state,
interval and recent session history), asks `plan_tick` what to do now, and carries it out.
Everything is derived from the session records, so any reconciler replica can take over the
schedule after another one dies, with no schedule state of its own to lose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.kinds import Trigger
from concord_reconciler.mailboxes.domain.model import MailboxState
from concord_reconciler.sessions.domain.model import SessionState

__all__ = [
    "CREDENTIAL_FAILURES",
    "ORG_WIDE_FAILURES",
    "SchedulePolicy",
    "ScheduleRow",
    "ScheduledSession",
    "StateChange",
    "TickPlan",
    "back_off_delay",
    "may_push",
    "next_due",
    "org_holds",
    "plan_tick",
]

# Failure codes that no retry can fix: the stored credentials or the rights behind them are
# refused. The mailbox is suspended at once, saying so, until someone fixes them and resumes.
CREDENTIAL_FAILURES = frozenset(
    {"MAILBOX_CREDENTIALS_REJECTED", "MAILBOX_ACCESS_DENIED", "SALESFORCE_LOGIN_FAILED"}
)

# Failure codes whose retry-after holds every mailbox of the org, not only the one whose session
# met it: Salesforce's API allocation is the org's (a rolling 24 h), so another mailbox's session
# would only spend a call, and the caller's time, to be told the same.
ORG_WIDE_FAILURES = frozenset({"SALESFORCE_API_LIMIT"})


@dataclass(frozen=True)
class SchedulePolicy:
    # This many failed sessions in a row put the mailbox in back-off...
    failures_before_back_off: int = 3
    # ...retried after base, 2 x base, 4 x base ... capped at `max_delay`.
    base_delay: timedelta = timedelta(minutes=1)
    max_delay: timedelta = timedelta(hours=6)
    # A session QUEUED this long was probably never delivered (its NATS message was lost):
    # request it again, which re-publishes the same session (no duplicate can run).
    requeue_after: timedelta = timedelta(minutes=2)
    # How long the answer to a mutation is kept for a retry carrying the same request id.
    # Clients retry within seconds to minutes; a day covers a caller that was down a while,
    # and the table no longer grows for ever (a 20 MiB answer once stayed there).
    answer_retention: timedelta = timedelta(days=1)
    # How long finished sessions are kept (each mailbox's newest few stay whatever their age):
    # the schedule's reads grow with the history, which nothing pruned before (issue #18).
    session_retention: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if self.failures_before_back_off < 1:
            raise ValueError("failures_before_back_off must be at least 1")
        if self.base_delay <= timedelta(0) or self.max_delay < self.base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")


@dataclass(frozen=True)
class ScheduleRow:
    """What the scheduler knows of one mailbox, read from the store in one query."""

    mailbox_id: str
    org_id: str
    state: MailboxState
    # When the mailbox last changed (its state above included): only sessions that ended
    # after it count, so a resumed mailbox starts with a clean slate.
    state_since: datetime
    # The mailbox's own interval, else its org's, else the default: the caller resolves it.
    interval: timedelta
    # The latest session request of any trigger (a forced or pushed one resets the clock).
    last_request: datetime | None = None
    # When the latest finished session ended.
    last_end: datetime | None = None
    # Since `state_since`, newest first: failed sessions in a row, and the newest outcome
    # (FAILED or COMPLETED; cancelled sessions are ignored: they never ran).
    failures_in_row: int = 0
    last_outcome: SessionState | None = None
    # The newest failure's code and reason (for the suspension's explanation).
    last_failure_code: str = ""
    last_failure_reason: str = ""
    # A session is QUEUED or RUNNING: asking again would only coalesce with it.
    pending: bool = False
    # When the mailbox's QUEUED session was requested, if it has one.
    queued_since: datetime | None = None
    # A session of the mailbox is RUNNING: its QUEUED one waits for the lease, not for a
    # lost message (a first sync runs for minutes).
    running: bool = False
    # The newest session failed by a throttled peer, which asked not to be called before this.
    retry_not_before: datetime | None = None
    # A session of another mailbox of the org met an org-wide limit (ORG_WIDE_FAILURES): no
    # session of this org before this either (see `org_holds`).
    org_held_until: datetime | None = None

    @property
    def held_until(self) -> datetime | None:
        """The later of the mailbox's own and its org's hold."""
        holds = [t for t in (self.retry_not_before, self.org_held_until) if t is not None]
        return max(holds) if holds else None


@dataclass(frozen=True)
class ScheduledSession:
    mailbox_id: str
    trigger: Trigger  # SessionTrigger


@dataclass(frozen=True)
class StateChange:
    """A mailbox to move from `expected` to `state`, saying why (shown to users)."""

    mailbox_id: str
    expected: MailboxState
    state: MailboxState
    reason: str


@dataclass
class TickPlan:
    changes: list[StateChange] = field(default_factory=list)
    sessions: list[ScheduledSession] = field(default_factory=list)
    # Mailboxes whose queued session is re-published (see SchedulePolicy.requeue_after).
    requeued: list[str] = field(default_factory=list)
    # The earliest future moment something becomes due, so the loop can sleep until then.
    next_wake: datetime | None = None


# Due since forever: a mailbox that never had a session runs at the first tick.
_NEVER = datetime.min.replace(tzinfo=UTC)


def back_off_delay(failures_in_back_off: int, policy: SchedulePolicy) -> timedelta:
    """Delay before the next retry of a mailbox in back-off that failed this often since."""
    steps = max(0, failures_in_back_off)
    # Doubling past 2**20 x base is beyond any sensible cap; stop the exponent there.
    delay: timedelta = policy.base_delay * (2 ** min(steps, 20))
    return min(delay, policy.max_delay)


def next_due(row: ScheduleRow, policy: SchedulePolicy) -> datetime | None:
    """When the mailbox's next session is due; None while nothing may be scheduled. Never
    before the moment a throttled peer asked for (its RetryInfo) — and for an active mailbox
    whose session a throttled peer failed, at that moment: the mailbox is backed off by the
    retry-after, not left until its next interval with its changes waiting."""
    due = _due(row, policy)
    if due is not None and row.state is MailboxState.ACTIVE and row.retry_not_before is not None:
        due = row.retry_not_before
    held = row.held_until
    if due is not None and held is not None:
        return max(due, held)
    return due


def _due(row: ScheduleRow, policy: SchedulePolicy) -> datetime | None:
    if row.pending:
        return None
    if row.state is MailboxState.ACTIVE:
        if row.last_request is None:
            return _NEVER
        due = row.last_request + row.interval
        if _retrying(row) and row.last_end is not None:
            # Tried again after the back-off's first delays (1, then 2 minutes), not at the next
            # interval: a new mailbox whose first sync met a peer's deadline on a busy replica
            # waited 30 minutes for its second try.
            due = min(due, row.last_end + back_off_delay(row.failures_in_row - 1, policy))
        return due
    if row.state is MailboxState.BACKING_OFF:
        # Spaced from the latest attempt (or from entering back-off), longer after each failure.
        since = max(t for t in (row.last_end, row.state_since) if t is not None)
        return since + back_off_delay(row.failures_in_row, policy)
    return None  # suspended or being deleted: only a resume brings it back


def _retrying(row: ScheduleRow) -> bool:
    """Whether an active mailbox's latest session failed (fewer times in a row than back-off
    needs)."""
    return row.last_outcome is SessionState.FAILED and row.failures_in_row > 0


def may_push(row: ScheduleRow, now: datetime) -> bool:
    """Whether a push hint may start a session now: an active mailbox that no throttled peer
    asked to leave alone until later, itself or its org (a back-off is not defeated by pushes
    either)."""
    if row.state is not MailboxState.ACTIVE:
        return False
    held = row.held_until
    return held is None or held <= now


def org_holds(
    failures: Iterable[tuple[str, datetime, datetime]], completions: Mapping[str, datetime]
) -> dict[str, datetime]:
    """Per org, until when no session of it may start.

    `failures`: (org, when the session ended, its retry-after) of sessions failed by an
    org-wide limit; `completions`: per org, when its newest completed session ended. The newest
    such failure holds the org until its retry-after, unless a session of the org completed
    after it (the allocation is back: a forced sync showed it).
    """
    newest: dict[str, tuple[datetime, datetime]] = {}
    for org, ended, until in failures:
        if org not in newest or ended > newest[org][0]:
            newest[org] = (ended, until)
    return {
        org: until
        for org, (ended, until) in newest.items()
        if org not in completions or completions[org] <= ended
    }


def plan_tick(
    rows: Iterable[ScheduleRow], now: datetime, policy: SchedulePolicy = SchedulePolicy()
) -> TickPlan:
    """The state changes and sessions due at `now`.

    State follows the session history: credential failures suspend at once; a run of
    failures enters back-off (retries spaced out exponentially, the reason shown); the first
    completed session after it ends the back-off. A mailbox whose state changes in this tick
    is scheduled by its new state.
    """
    plan = TickPlan()
    for row in rows:
        if (
            row.queued_since is not None
            and not row.running
            and row.queued_since + policy.requeue_after <= now
        ):
            plan.requeued.append(row.mailbox_id)
        change = _state_change(row, policy)
        if change is not None:
            plan.changes.append(change)
            # The new state starts now: the history behind it no longer counts.
            row = replace(
                row, state=change.state, state_since=now, failures_in_row=0, last_outcome=None
            )
        due = next_due(row, policy)
        if due is None:
            continue
        if due <= now:
            trigger = (
                res.SESSION_TRIGGER_RETRY
                if row.state is MailboxState.BACKING_OFF
                or row.retry_not_before is not None
                or _retrying(row)
                else res.SESSION_TRIGGER_SCHEDULE
            )
            plan.sessions.append(ScheduledSession(row.mailbox_id, trigger))
        elif plan.next_wake is None or due < plan.next_wake:
            plan.next_wake = due
    return plan


def _state_change(row: ScheduleRow, policy: SchedulePolicy) -> StateChange | None:
    if row.state not in (MailboxState.ACTIVE, MailboxState.BACKING_OFF):
        return None
    failed_last = row.last_outcome is SessionState.FAILED
    if failed_last and row.last_failure_code in CREDENTIAL_FAILURES:
        return StateChange(
            row.mailbox_id,
            row.state,
            MailboxState.SUSPENDED,
            f"Credentials refused ({row.last_failure_code}): {row.last_failure_reason}. "
            "Fix the account, then resume the mailbox.",
        )
    if row.state is MailboxState.ACTIVE and row.failures_in_row >= policy.failures_before_back_off:
        return StateChange(
            row.mailbox_id,
            row.state,
            MailboxState.BACKING_OFF,
            f"{row.failures_in_row} sessions failed in a row, the last with "
            f"{row.last_failure_code}: {row.last_failure_reason}. Retrying with back-off.",
        )
    if row.state is MailboxState.BACKING_OFF and row.last_outcome is SessionState.COMPLETED:
        return StateChange(row.mailbox_id, row.state, MailboxState.ACTIVE, "")
    return None
