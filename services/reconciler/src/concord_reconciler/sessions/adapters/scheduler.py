"""The scheduler: sessions on each mailbox's interval, on push hints, and back-off/suspension.

One replica at a time plans the schedule: the one holding the `scheduler` lease (a replica
killed while holding it frees it by expiry). Every replica turns push hints into session
requests through a queue-group subscription, so each hint reaches one replica. Requests
coalesce in the store (at most one QUEUED session per mailbox), so a burst of hints, or two
replicas racing, give at most the running session and one queued behind it.

The module is long because the schedule's reads and writes (open sessions, back-off, holds,
retention) are SQL against one sessions table, kept beside the loop that runs them so the
indexes they rely on (r0007) are read with the queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.events.v1 import events_pb2
from concord_events import EventBus, LeaseLost
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.errors import MailboxNotFound, MailboxSuspended, QueueUnavailable
from concord_reconciler.kernel.kinds import Trigger
from concord_reconciler.kernel.schema import links, mailboxes, org_settings, requests, sessions
from concord_reconciler.kernel.sql import from_us, to_us
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState
from concord_reconciler.sessions.domain.model import SessionState
from concord_reconciler.sessions.domain.ports import SessionQueue, SessionStore
from concord_reconciler.sessions.domain.schedule import (
    ORG_WIDE_FAILURES,
    SchedulePolicy,
    ScheduleRow,
    StateChange,
    TickPlan,
    may_push,
    org_holds,
    plan_tick,
)
from concord_reconciler.sessions.domain.sessions import request_session
from concord_telemetry.propagation import extract

__all__ = [
    "CRM_CHANGED_ALL",
    "LEADER_KEY",
    "MAIL_CHANGED_ALL",
    "PUSH_QUEUE_GROUP",
    "ScheduleReader",
    "Scheduler",
    "held_sessions",
    "open_sessions",
]

log = logging.getLogger(__name__)

LEADER_KEY = "scheduler"
MAIL_CHANGED_ALL = "concord.mail.changed.*"
CRM_CHANGED_ALL = "concord.crm.changed.*"
PUSH_QUEUE_GROUP = "reconciler-push"
# Finished sessions read per mailbox: enough to count a run of failures into deep back-off.
_HISTORY = 25

_FINISHED = (int(SessionState.COMPLETED), int(SessionState.FAILED))
_PENDING = (int(SessionState.QUEUED), int(SessionState.RUNNING))
_DONE = (*_FINISHED, int(SessionState.CANCELLED))


# How old an org's hold, as read, a push hint's check may take (see `held_until`).
ORG_HOLD_MAX_AGE_SECONDS = 1.0

# Stored request answers and finished sessions are pruned by the leading replica this often...
PRUNE_EVERY = timedelta(minutes=10)
# ...at most this many sessions per tick (a first prune of a long history goes on at the next
# tick rather than stalling this one).
PRUNE_BATCH = 5000


class ScheduleReader:
    """The schedule's view of the store: four queries for every mailbox, whatever their number."""

    def __init__(
        self,
        engine: AsyncEngine,
        default_interval: timedelta,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.default_interval = default_interval
        self._monotonic = monotonic
        # Per org: until when (monotonic) its hold as last read stands for a hint's check.
        self._org_hold_seen: dict[str, tuple[float, datetime | None]] = {}

    async def held_until(
        self, mailbox_id: str, org_hold_max_age: float = 0.0, org_id: str | None = None
    ) -> datetime | None:
        """When a throttled peer allows the mailbox's next session, if its newest finished
        session says so or its org is held (they run for every push hint).

        The org's hold is read through ix_sessions_held (a few ms at 5,000 mailboxes,
        benchmarks/test_bench_fleet.py; tens of ms when it scanned the org's history), and a
        hint's check may still take it as read up to `org_hold_max_age` seconds ago: a hold set
        since lets one session start, which crm-connector refuses at once, without a call to
        Salesforce; a hold lifted since refuses a hint, as during the hold, and the schedule
        syncs the mailbox. `org_id`: the mailbox's, when the caller has read it.
        """
        async with self.engine.connect() as conn:
            newest = (
                await conn.execute(
                    select(sessions.c.state, sessions.c.retry_not_before_us)
                    .where(
                        sessions.c.mailbox_id == mailbox_id,
                        sessions.c.state.in_(_FINISHED),
                    )
                    .order_by(sessions.c.end_time_us.desc())
                    .limit(1)
                )
            ).first()
            if org_id is None:
                org_id = await conn.scalar(
                    select(mailboxes.c.org_id).where(mailboxes.c.mailbox_id == mailbox_id)
                )
            org_hold = (
                await self._org_hold(conn, org_id, org_hold_max_age) if org_id is not None else None
            )
        own = (
            from_us(newest[1])
            if newest is not None and newest[0] == SessionState.FAILED and newest[1] is not None
            else None
        )
        holds = [t for t in (own, org_hold) if t is not None]
        return max(holds) if holds else None

    async def _org_hold(
        self, conn: AsyncConnection, org_id: str, max_age: float
    ) -> datetime | None:
        now = self._monotonic()
        seen = self._org_hold_seen.get(org_id)
        if max_age > 0 and seen is not None and seen[0] > now:
            return seen[1]
        hold = (await self._org_holds(conn, org_id)).get(org_id)
        if max_age > 0:
            self._org_hold_seen[org_id] = (now + max_age, hold)
        return hold

    async def _org_holds(self, conn: AsyncConnection, org_id: str | None) -> dict[str, datetime]:
        """Orgs (all, or `org_id`) held by a session failed by an org-wide limit whose
        retry-after is still ahead (see `org_holds`)."""
        failures = [
            (org, from_us(end_us), from_us(until_us))
            for org, end_us, until_us in await conn.execute(held_sessions(org_id, utcnow()))
        ]
        if not failures:
            return {}
        held = sorted({org for org, _, _ in failures})
        completions = {
            org: from_us(end_us)
            for org, end_us in await conn.execute(
                select(mailboxes.c.org_id, func.max(sessions.c.end_time_us))
                .join(mailboxes, mailboxes.c.mailbox_id == sessions.c.mailbox_id)
                .where(
                    sessions.c.state == int(SessionState.COMPLETED),
                    mailboxes.c.org_id.in_(held),
                )
                .group_by(mailboxes.c.org_id)
            )
        }
        return org_holds(failures, completions)

    async def hinted_mailboxes(
        self, org_id: str, owner_ids: Sequence[str], crm_ids: Sequence[str]
    ) -> set[str]:
        """The org's mailboxes a Salesforce change concerns: those of the records' owners, and
        those mirroring one of the records (which may have been given away or deleted)."""
        found: set[str] = set()
        async with self.engine.connect() as conn:
            if owner_ids:
                found.update(
                    (
                        await conn.execute(
                            select(mailboxes.c.mailbox_id).where(
                                mailboxes.c.org_id == org_id,
                                mailboxes.c.crm_user_id.in_(list(owner_ids)),
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            for start in range(0, len(crm_ids), 500):
                found.update(
                    (
                        await conn.execute(
                            select(links.c.mailbox_id)
                            .join(mailboxes, mailboxes.c.mailbox_id == links.c.mailbox_id)
                            .where(
                                mailboxes.c.org_id == org_id,
                                links.c.crm_id.in_(list(crm_ids[start : start + 500])),
                            )
                            .distinct()
                        )
                    )
                    .scalars()
                    .all()
                )
        return found

    async def forget_answers(self, before: datetime) -> int:
        """Drop the stored answers of mutations made before `before`; how many went."""
        async with self.engine.begin() as conn:
            gone = await conn.execute(
                delete(requests).where(requests.c.create_time_us < to_us(before))
            )
        return int(gone.rowcount or 0)

    async def forget_sessions(self, before: datetime, now: datetime, keep: int = _HISTORY) -> int:
        """Drop up to `PRUNE_BATCH` finished sessions that ended before `before`, but never a
        mailbox's newest `keep` (the schedule's back-off counts them, and users see them) nor
        one whose throttled peer's retry-after is still ahead; how many went."""
        ended = func.coalesce(sessions.c.end_time_us, sessions.c.request_time_us)
        ranked = (
            select(
                sessions.c.session_id,
                ended.label("ended_us"),
                sessions.c.retry_not_before_us,
                func.row_number()
                .over(
                    partition_by=sessions.c.mailbox_id,
                    order_by=(ended.desc(), sessions.c.session_id.desc()),
                )
                .label("rank"),
            )
            .where(sessions.c.state.in_(_DONE))
            .subquery()
        )
        expired = (
            select(ranked.c.session_id)
            .where(
                ranked.c.rank > keep,
                ranked.c.ended_us < to_us(before),
                or_(
                    ranked.c.retry_not_before_us.is_(None),
                    ranked.c.retry_not_before_us <= to_us(now),
                ),
            )
            .limit(PRUNE_BATCH)
        )
        async with self.engine.begin() as conn:
            ids = list((await conn.execute(expired)).scalars())
            if ids:
                for start in range(0, len(ids), 500):
                    await conn.execute(
                        delete(sessions).where(sessions.c.session_id.in_(ids[start : start + 500]))
                    )
        return len(ids)

    async def rows(self, only: str | None = None) -> list[ScheduleRow]:
        """Every mailbox's row, or only mailbox `only`'s (for its dashboard)."""
        of_mailbox = [sessions.c.mailbox_id == only] if only is not None else []
        newest = (
            func.row_number()
            .over(partition_by=sessions.c.mailbox_id, order_by=sessions.c.end_time_us.desc())
            .label("rank")
        )
        # Each mailbox's newest completed session: the history the schedule needs is it and
        # the failures since (the run the back-off counts), not every finished session.
        # One seek per mailbox down ix_sessions_mailbox_state_end; so is the range that follows.
        done = sessions.alias("done")
        completed = (
            select(func.max(done.c.end_time_us))
            .where(
                done.c.mailbox_id == mailboxes.c.mailbox_id,
                done.c.state == int(SessionState.COMPLETED),
            )
            .scalar_subquery()
        )
        history = (
            select(
                sessions.c.mailbox_id,
                sessions.c.state,
                sessions.c.end_time_us,
                sessions.c.failure_code,
                sessions.c.failure_reason,
                sessions.c.retry_not_before_us,
                newest,
            )
            .join(mailboxes, mailboxes.c.mailbox_id == sessions.c.mailbox_id)
            .where(
                sessions.c.state.in_(_FINISHED),
                sessions.c.end_time_us > mailboxes.c.update_time_us,
                sessions.c.end_time_us >= func.coalesce(completed, 0),
                *of_mailbox,
            )
            .subquery()
        )
        # The newest request of each mailbox: one seek per mailbox down its index (a grouped
        # max over the sessions read every mailbox's whole history).
        last_request = (
            select(func.max(sessions.c.request_time_us))
            .where(sessions.c.mailbox_id == mailboxes.c.mailbox_id)
            .scalar_subquery()
            .label("last_request_us")
        )
        chosen = select(mailboxes, last_request)
        if only is not None:
            chosen = chosen.where(mailboxes.c.mailbox_id == only)
        async with self.engine.connect() as conn:
            boxes = (await conn.execute(chosen)).mappings().all()
            held = await self._org_holds(conn, boxes[0].org_id if only and boxes else None)
            org_rows = await conn.execute(select(org_settings.c.org_id, org_settings.c.settings))
            intervals = {org_id: _interval(blob) for org_id, blob in org_rows}
            # Mailbox -> when its QUEUED session was requested (None: only a RUNNING one).
            pending: dict[str, int | None] = {}
            running: set[str] = set()
            for box_id, state, request_us in await conn.execute(open_sessions(only)):
                if state == SessionState.RUNNING:
                    running.add(box_id)
                if state == SessionState.QUEUED or box_id not in pending:
                    pending[box_id] = request_us if state == SessionState.QUEUED else None
            recent: dict[str, list[tuple[int, int, str, str, int | None]]] = {}
            for box_id, state, end_us, code, reason, not_before_us, _rank in await conn.execute(
                select(history)
                .where(history.c.rank <= _HISTORY)
                .order_by(history.c.mailbox_id, history.c.rank)
            ):
                recent.setdefault(box_id, []).append((state, end_us, code, reason, not_before_us))
        rows = []
        for box in boxes:
            interval = (
                timedelta(seconds=box.sync_interval_seconds)
                if box.sync_interval_seconds
                else intervals.get(box.org_id) or self.default_interval
            )
            rows.append(
                _row(
                    box.mailbox_id,
                    box.org_id,
                    MailboxState(box.state),
                    from_us(box.update_time_us),
                    interval,
                    box.last_request_us,
                    box.mailbox_id in pending,
                    pending.get(box.mailbox_id),
                    recent.get(box.mailbox_id, []),
                    held.get(box.org_id),
                    running=box.mailbox_id in running,
                )
            )
        return rows

    async def change_state(self, change: StateChange) -> bool:
        """Apply `change` if the mailbox is still in its expected state (a user's suspend or
        resume in between wins)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(mailboxes)
                .where(
                    mailboxes.c.mailbox_id == change.mailbox_id,
                    mailboxes.c.state == int(change.expected),
                )
                .values(
                    state=int(change.state),
                    suspended_reason=change.reason,
                    update_time_us=to_us(utcnow()),
                    version=mailboxes.c.version + 1,
                )
            )
        return bool(result.rowcount)


def held_sessions(org_id: str | None, now: datetime) -> Select[str, int, int]:
    """The sessions failed by an org-wide limit whose retry-after is still ahead, with their
    org (all orgs', or `org_id`'s): a range over ix_sessions_held, which every session without
    a retry-after (almost all) stays out of."""
    of_org = [mailboxes.c.org_id == org_id] if org_id is not None else []
    return (
        select(mailboxes.c.org_id, sessions.c.end_time_us, sessions.c.retry_not_before_us)
        .join(mailboxes, mailboxes.c.mailbox_id == sessions.c.mailbox_id)
        .where(
            sessions.c.retry_not_before_us > to_us(now),
            sessions.c.state == int(SessionState.FAILED),
            sessions.c.failure_code.in_(sorted(ORG_WIDE_FAILURES)),
            *of_org,
        )
    )


def open_sessions(only: str | None = None) -> Select[str, int, int]:
    """The QUEUED and RUNNING sessions (all mailboxes', or `only`'s): ix_sessions_state_end
    leads to them, not through the finished history."""
    of_mailbox = [sessions.c.mailbox_id == only] if only is not None else []
    return select(sessions.c.mailbox_id, sessions.c.state, sessions.c.request_time_us).where(
        sessions.c.state.in_(_PENDING), *of_mailbox
    )


def _interval(blob: bytes) -> timedelta | None:
    settings = st.OrgSettings.FromString(blob)
    if not settings.HasField("sync_interval"):
        return None
    value: timedelta = settings.sync_interval.ToTimedelta()
    return value if value > timedelta(0) else None


def _row(
    mailbox_id: str,
    org_id: str,
    state: MailboxState,
    state_since: datetime,
    interval: timedelta,
    last_request_us: int | None,
    pending: bool,
    queued_us: int | None,
    recent: list[tuple[int, int, str, str, int | None]],
    org_held_until: datetime | None = None,
    *,
    running: bool = False,
) -> ScheduleRow:
    failures = 0
    for outcome, *_ in recent:
        if outcome != SessionState.FAILED:
            break
        failures += 1
    newest = recent[0] if recent else None
    return ScheduleRow(
        mailbox_id=mailbox_id,
        org_id=org_id,
        state=state,
        state_since=state_since,
        interval=interval,
        last_request=from_us(last_request_us) if last_request_us is not None else None,
        last_end=from_us(newest[1]) if newest else None,
        failures_in_row=failures,
        last_outcome=SessionState(newest[0]) if newest else None,
        last_failure_code=newest[2] if newest and failures else "",
        last_failure_reason=newest[3] if newest and failures else "",
        pending=pending,
        queued_since=from_us(queued_us) if queued_us is not None else None,
        retry_not_before=(
            from_us(newest[4]) if newest and failures and newest[4] is not None else None
        ),
        org_held_until=org_held_until,
        running=running,
    )


class Scheduler:
    """Runs the schedule while this replica leads, and turns push hints into sessions."""

    def __init__(
        self,
        bus: EventBus,
        store: SessionStore,
        queue: SessionQueue,
        reader: ScheduleReader,
        *,
        owner: str,
        tick_seconds: float,
        policy: SchedulePolicy | None = None,
        tracer_provider: TracerProvider | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.store = store
        self.queue = queue
        self.reader = reader
        self.owner = owner
        self.tick_seconds = tick_seconds
        self.policy = policy or SchedulePolicy()
        self.clock = clock
        self.tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Subscription] = []
        self.leading = False
        self._next_prune: datetime | None = None

    async def start(self) -> None:
        for subject, handler in (
            (MAIL_CHANGED_ALL, self._on_mail_changed),
            (CRM_CHANGED_ALL, self._on_crm_changed),
        ):
            self._subscriptions.append(
                await self.bus.client.subscribe(subject, queue=PUSH_QUEUE_GROUP, cb=handler)
            )
        await self.bus.client.flush()
        self._tasks.append(asyncio.create_task(self._lead(), name="scheduler"))

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def tick(self) -> TickPlan:
        """Apply due state changes and request due sessions; what was done, for tests."""
        now = self.clock()
        plan = plan_tick(await self.reader.rows(), now, self.policy)
        for change in plan.changes:
            if await self.reader.change_state(change):
                log.info(
                    "mailbox %s: %s -> %s",
                    change.mailbox_id,
                    change.expected.name,
                    change.state.name,
                )
        for due in plan.sessions:
            await self._request(due.mailbox_id, due.trigger)
        # One more message per requeue period at most: the same id within a period collapses.
        period = int(now.timestamp() // self.policy.requeue_after.total_seconds())
        for mailbox_id in plan.requeued:
            log.warning("mailbox %s: its queued session waited too long; re-queuing", mailbox_id)
            await self._request(
                mailbox_id, res.SESSION_TRIGGER_RETRY, republish=f"requeue-{period}"
            )
        if self._next_prune is None or now >= self._next_prune:
            forgotten = await self.reader.forget_answers(now - self.policy.answer_retention)
            if forgotten:
                log.info("forgot %d stored request answers past their retention", forgotten)
            pruned = await self.reader.forget_sessions(now - self.policy.session_retention, now)
            if pruned:
                log.info("forgot %d finished sessions past their retention", pruned)
            # A full batch: more are due (a first prune of a long history); the next tick goes on.
            self._next_prune = now if pruned >= PRUNE_BATCH else now + PRUNE_EVERY
        return plan

    async def _lead(self) -> None:
        leases = await self.bus.leases()
        while True:
            try:
                lease = await leases.acquire(LEADER_KEY, self.owner)
                if lease is None:
                    await asyncio.sleep(self.tick_seconds)
                    continue
                async with lease:
                    self.leading = True
                    while True:
                        plan = await self.tick()
                        await asyncio.sleep(self._pause(plan))
            except LeaseLost:
                log.warning("lost the scheduler lease; another replica schedules now")
            except asyncio.CancelledError:
                raise
            except Exception:
                # NATS or the database hiccuped: the schedule resumes at the next tick.
                log.exception("scheduler tick failed")
                await asyncio.sleep(self.tick_seconds)
            finally:
                self.leading = False

    def _pause(self, plan: TickPlan) -> float:
        # Sleep until the next due moment, but re-read at least every tick: new mailboxes,
        # resumes and finished sessions change the plan.
        if plan.next_wake is None:
            return self.tick_seconds
        until = (plan.next_wake - self.clock()).total_seconds()
        return min(self.tick_seconds, max(0.05, until))

    async def _request(
        self,
        mailbox_id: str,
        trigger: Trigger,
        *,
        republish: str = "",
        mailbox: MailboxRecord | None = None,
    ) -> None:
        try:
            await request_session(
                mailbox_id,
                trigger,
                "",
                store=self.store,
                queue=self.queue,
                now=self.clock,
                republish=republish,
                mailbox=mailbox,
            )
        except (MailboxNotFound, MailboxSuspended):
            pass  # deleted or suspended since the plan was read
        except QueueUnavailable:
            log.warning("could not queue the session of mailbox %s; next tick retries", mailbox_id)

    async def _on_mail_changed(self, msg: Msg) -> None:
        mailbox_id = msg.subject.rsplit(".", 1)[-1]
        with self.tracer.start_as_current_span(
            "schedule.push", context=extract(msg.headers), kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("concord.mailbox", f"mailboxes/{mailbox_id}")
            await self._push(mailbox_id)

    async def _push(self, mailbox_id: str) -> None:
        """A push session for one mailbox, unless it must wait (indexed reads of that mailbox
        only: they run for every hint)."""
        mailbox = await self.store.get_mailbox(mailbox_id)
        # A mailbox in back-off, or one a throttled peer asked to leave alone for a while,
        # waits for its retry: pushes must not defeat either.
        if mailbox is None or mailbox.state is not MailboxState.ACTIVE:
            return
        # The mailbox just read is not read again (issue #18: a hint's SQL runs for every push).
        held = await self.reader.held_until(mailbox_id, ORG_HOLD_MAX_AGE_SECONDS, mailbox.org_id)
        if held is None or held <= self.clock():
            await self._request(mailbox_id, res.SESSION_TRIGGER_PUSH, mailbox=mailbox)

    async def _on_crm_changed(self, msg: Msg) -> None:
        """A Salesforce change (issue #19): sessions for the mailboxes it concerns — the
        records' owners' and those mirroring the records — or the whole org's when the hint
        says the stream cannot tell (a gap) or carries no detail."""
        org_id = msg.subject.rsplit(".", 1)[-1]
        with self.tracer.start_as_current_span(
            "schedule.push", context=extract(msg.headers), kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("concord.org", f"orgs/{org_id}")
            hint = events_pb2.CrmChanged()
            with contextlib.suppress(DecodeError):
                hint.ParseFromString(msg.data)
            wanted: set[str] | None = None
            if not hint.everyone and (hint.owner_ids or hint.ids):
                wanted = await self.reader.hinted_mailboxes(
                    org_id, list(hint.owner_ids), list(hint.ids)
                )
            elif hint.reason:
                log.info("orgs/%s: every mailbox syncs (%s)", org_id, hint.reason)
            if wanted is not None:
                # Only the mailboxes the change concerns, read one by one: the whole schedule's
                # read grows with the mailboxes and their session history (0.2 s of CPU for
                # 5,000 mailboxes of 25 sessions, benchmarks/test_bench_fleet.py), and a hint comes
                # with every Salesforce change of the org — Concord's own writes' echoes too.
                for mailbox_id in sorted(wanted):
                    await self._push(mailbox_id)
                return
            now = self.clock()
            for row in await self.reader.rows():
                if row.org_id == org_id and may_push(row, now):
                    await self._request(row.mailbox_id, res.SESSION_TRIGGER_PUSH)
