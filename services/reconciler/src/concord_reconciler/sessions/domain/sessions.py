"""The life of a session: requested (coalesced per mailbox), run once, recorded, announced.

Every outcome is recorded in the store before it is announced, so a session is never lost:
a crash before the record leaves the request to be redelivered; a crash after it leaves a
terminal row that a redelivery acknowledges and ignores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.errors import (
    MailboxNotFound,
    MailboxSuspended,
    QueueUnavailable,
    SessionFailure,
)
from concord_reconciler.kernel.kinds import Trigger
from concord_reconciler.kernel.names import mailbox_name, new_session_id
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
    synced_kinds,
)
from concord_reconciler.mirror.domain.hints import PushHints
from concord_reconciler.sessions.domain.model import MailboxContext, SessionRecord, SessionState
from concord_reconciler.sessions.domain.ports import SessionEvents, SessionQueue, SessionStore
from concord_reconciler.sessions.domain.runner import (
    SessionScope,
    SyncEngine,
    categories_of,
    policies_for,
    run_session,
)

__all__ = ["abandon_session", "cancel_session", "execute_session", "request_session"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


async def request_session(
    mailbox_id: str,
    trigger: Trigger,
    request_id: str,
    *,
    store: SessionStore,
    queue: SessionQueue,
    now: Clock = utcnow,
    republish: str = "",
    mailbox: MailboxRecord | None = None,
) -> tuple[SessionRecord, bool]:
    """The session that will run for this request, and whether it coalesced with a queued one.

    The queued session is (re)published every time: JetStream drops the repeat by its
    Nats-Msg-Id (the session id), and a publish that failed before is made good by the retry.
    `republish` names an attempt that must not be dropped so: the scheduler's re-queue of a
    session whose message was lost after it was published. `mailbox`: as the caller has just
    read it (not read again).
    """
    if mailbox is None:
        mailbox = await store.get_mailbox(mailbox_id)
    if mailbox is None:
        raise MailboxNotFound(mailbox_name(mailbox_id))
    if not mailbox.state.accepts_sessions:
        raise MailboxSuspended(mailbox.name, mailbox.suspended_reason)
    candidate = SessionRecord(
        session_id=new_session_id(),
        mailbox_id=mailbox_id,
        trigger=trigger,
        request_id=request_id,
        request_time=now(),
    )
    session, created = await store.enqueue_session(candidate)
    try:
        await queue.enqueue(session, mailbox.org, republish=republish)
    except Exception as error:
        log.warning("could not queue session %s: %s", session.session_id, error)
        raise QueueUnavailable(
            f"{session.name} is recorded but could not be queued; retry the request",
            metadata={"session": session.name},
        ) from error
    return session, not created


async def execute_session(
    session_id: str,
    *,
    store: SessionStore,
    events: SessionEvents,
    engine: SyncEngine,
    deadline_seconds: float,
    trace_id: str = "",
    now: Clock = utcnow,
    hints: PushHints | None = None,
    session: SessionRecord | None = None,
    context: MailboxContext | None = None,
) -> SessionRecord | None:
    """Run a requested session to its end and record it; None if there was nothing to run.

    The caller holds the mailbox's lease. A session already terminal (a replayed request) or
    gone (its mailbox was deleted) is left alone. Cancellation (shutdown, lost lease) leaves
    the row RUNNING for the redelivered request to start over. `session` and `context`, when
    the caller has just read them, are not read again (issue #18: a quiet session's cost is
    mostly its SQL); the session's start is a compare-and-set on the state it was read in.
    """
    if session is None:
        session = await store.get_session(session_id)
    if session is None or session.state.terminal:
        return None
    if context is None:
        context = await store.mailbox_context(session.mailbox_id)
    if context is None:
        return None
    mailbox = context.mailbox
    if not mailbox.state.accepts_sessions:
        return await cancel_session(
            session,
            mailbox,
            reason=f"{mailbox.name} is suspended" + _colon(mailbox.suspended_reason),
            code="MAILBOX_SUSPENDED",
            store=store,
            events=events,
            now=now,
        )
    running = await _start(session, store, trace_id=trace_id, now=now)
    if running is None:
        return None
    await events.started(running, mailbox.org)
    try:
        scope = _scope(running, context)
        async with asyncio.timeout(deadline_seconds):
            counts = await run_session(scope, engine, now=now(), hints=hints)
    except SessionFailure as failure:
        return await _fail(running, mailbox, failure, store=store, events=events, now=now)
    except TimeoutError:
        timeout = SessionFailure(
            f"the session exceeded its deadline of {deadline_seconds:g}s",
            "SESSION_DEADLINE_EXCEEDED",
            retryable=True,
        )
        return await _fail(running, mailbox, timeout, store=store, events=events, now=now)
    except Exception as error:
        # The message is shown to users: the exception's text may carry item content.
        log.exception("session %s failed unexpectedly", session_id)
        internal = SessionFailure(
            f"internal error ({type(error).__name__})", "INTERNAL", retryable=True
        )
        return await _fail(running, mailbox, internal, store=store, events=events, now=now)
    completed = running.to(SessionState.COMPLETED, counts=counts, end_time=now())
    # A completed session ends a back-off at once (in the transaction that records it), before
    # anyone learns of it: a mailbox left BACKING_OFF until the scheduler's next tick would
    # drop the push hints of that gap (their changes then waited for the next interval), and
    # show a sync that works as failing.
    saved, back_off_ended = await store.complete_session(completed)
    if not saved:
        return None
    if back_off_ended:
        log.info(
            "mailbox %s: BACKING_OFF -> ACTIVE (session %s completed)",
            mailbox.mailbox_id,
            session_id,
        )
    await events.completed(completed, mailbox.org)
    return completed


async def abandon_session(
    session_id: str,
    failure: SessionFailure,
    *,
    store: SessionStore,
    events: SessionEvents,
    now: Clock = utcnow,
) -> SessionRecord | None:
    """Record a session that could not run to its end (e.g. its lease was lost) as FAILED."""
    session = await store.get_session(session_id)
    if session is None or session.state.terminal:
        return None
    mailbox = await store.get_mailbox(session.mailbox_id)
    if mailbox is None:
        return None
    return await _fail(session, mailbox, failure, store=store, events=events, now=now)


async def cancel_session(
    session: SessionRecord,
    mailbox: MailboxRecord,
    *,
    reason: str,
    code: str,
    store: SessionStore,
    events: SessionEvents,
    now: Clock = utcnow,
) -> SessionRecord | None:
    """CANCELLED: the session will not run (its mailbox was suspended)."""
    cancelled = session.to(
        SessionState.CANCELLED, failure_reason=reason, failure_code=code, end_time=now()
    )
    if not await store.save_session(cancelled, expected=session.state):
        return None
    # Watchers learn of it on the `failed` subject: whatever ended without completing.
    await events.failed(cancelled, mailbox.org, reason, code, False)
    return cancelled


async def _fail(
    session: SessionRecord,
    mailbox: MailboxRecord,
    failure: SessionFailure,
    *,
    store: SessionStore,
    events: SessionEvents,
    now: Clock,
) -> SessionRecord | None:
    ended = now()
    failed = session.to(
        SessionState.FAILED,
        failure_reason=failure.reason,
        failure_code=failure.code,
        end_time=ended,
        retry_not_before=(
            ended + timedelta(seconds=failure.retry_after)
            if failure.retry_after is not None
            else None
        ),
    )
    if not await store.save_session(failed, expected=session.state):
        return None
    log.warning("session %s failed: %s", session.session_id, failure.code)
    await events.failed(failed, mailbox.org, failure.reason, failure.code, failure.retryable)
    return failed


async def _start(
    session: SessionRecord, store: SessionStore, *, trace_id: str, now: Clock
) -> SessionRecord | None:
    """The session recorded RUNNING, or None if it is no longer the caller's to run.

    A compare-and-set on the state the session was read in: a session read before its lease
    was taken may have moved since (another replica started it, then died); it is read again
    and, if it is still not over, started from the state it is in.
    """
    for _ in range(2):
        running = session.to(
            SessionState.RUNNING,
            start_time=now(),
            end_time=None,
            trace_id=trace_id,
            failure_reason="",
            failure_code="",
        )
        if await store.save_session(running, expected=session.state):
            return running
        fresh = await store.get_session(session.session_id)
        if fresh is None or fresh.state.terminal or fresh.state is session.state:
            return None
        session = fresh
    return None


def _scope(session: SessionRecord, context: MailboxContext) -> SessionScope:
    mailbox = context.mailbox
    org = context.org_settings or default_org_settings(mailbox.org_id)
    settings = effective_mailbox_settings(
        mailbox.mailbox_id, context.mailbox_settings, org, mailbox.owner_user_id
    )
    return SessionScope(
        session_id=session.session_id,
        mailbox=mailbox.name,
        org=mailbox.org,
        crm_user_id=mailbox.crm_user_id,
        kinds=synced_kinds(settings),
        policies=policies_for(synced_kinds(settings), org, settings),
        categories=categories_of(settings),
        resolution=linker.ResolutionPolicy(
            auto_resolve=org.auto_resolve,
            # The user's list already holds the org's where the org locked it.
            blacklist=sorted({*org.blacklist, *settings.blacklist}),
        ),
        mailbox_record=mailbox,
        org_settings=org,
        mailbox_settings=settings,
    )


def _colon(text: str) -> str:
    return f": {text}" if text else ""
