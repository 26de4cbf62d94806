"""Sessions and item errors as the reconciler holds them, and the session life cycle.

Enum values equal the proto enums' numbers (concord.common.v1), so the API converts by value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.counts import SessionCounts
from concord_reconciler.kernel.errors import TransitionError
from concord_reconciler.kernel.kinds import ErrorSide, Kind, Trigger
from concord_reconciler.kernel.names import mailbox_name, session_name
from concord_reconciler.mailboxes.domain.model import MailboxRecord


class SessionState(enum.IntEnum):
    QUEUED = 1
    RUNNING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def terminal(self) -> bool:
        return self in (SessionState.COMPLETED, SessionState.FAILED, SessionState.CANCELLED)


# RUNNING -> RUNNING: a replica died mid-session (or lost its lease) and the request was
# redelivered; the session starts over. Terminal states never change again, so a replayed
# request cannot resurrect a finished session.
_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.QUEUED: frozenset(
        {SessionState.RUNNING, SessionState.CANCELLED, SessionState.FAILED}
    ),
    SessionState.RUNNING: frozenset(
        {SessionState.RUNNING, SessionState.COMPLETED, SessionState.FAILED, SessionState.CANCELLED}
    ),
    SessionState.COMPLETED: frozenset(),
    SessionState.FAILED: frozenset(),
    SessionState.CANCELLED: frozenset(),
}


def can_transition(source: SessionState, target: SessionState) -> bool:
    return target in _TRANSITIONS[source]


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    mailbox_id: str
    trigger: Trigger  # concord.common.v1.SessionTrigger
    state: SessionState = SessionState.QUEUED
    request_id: str = ""
    failure_reason: str = ""
    failure_code: str = ""
    counts: SessionCounts = field(default_factory=SessionCounts)
    request_time: datetime = field(default_factory=utcnow)
    start_time: datetime | None = None
    end_time: datetime | None = None
    trace_id: str = ""
    # A peer that failed the session asked not to be called again before this.
    retry_not_before: datetime | None = None

    @property
    def name(self) -> str:
        return session_name(self.mailbox_id, self.session_id)

    @property
    def mailbox(self) -> str:
        return mailbox_name(self.mailbox_id)

    def to(self, target: SessionState, **changes: object) -> SessionRecord:
        """This session moved to `target`; TransitionError if the life cycle forbids it."""
        if not can_transition(self.state, target):
            raise TransitionError(f"session {self.session_id}: {self.state.name} -> {target.name}")
        return replace(self, state=target, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ItemErrorRecord:
    item_error_id: str
    mailbox_id: str
    kind: Kind  # concord.common.v1.ObjectKind
    native_id: str
    side: ErrorSide  # concord.common.v1.SyncSide
    reason: str
    message: str
    version: str = ""
    link_id: str = ""
    collection: str = ""
    crm_record_id: str = ""
    first_seen_time: datetime = field(default_factory=utcnow)
    last_seen_time: datetime = field(default_factory=utcnow)
    attempts: int = 1
    quarantined: bool = False


def coalesce(queued: SessionRecord | None) -> bool:
    """Whether a new request joins `queued`, the mailbox's QUEUED session, if any.

    A request while a session waits to run is already covered by it: that session reads every
    change made up to when it starts. A RUNNING session is not enough (it may have read its
    cursors already), so a request during one queues the next. The store enforces the same
    rule with a unique index on (mailbox) for QUEUED rows, so concurrent requests agree.
    """
    return queued is not None and queued.state is SessionState.QUEUED


@dataclass(frozen=True)
class MailboxContext:
    """A mailbox as a session starts on it: its record and the settings stored for it and for
    its org (None where none are stored: the defaults apply), read together."""

    mailbox: MailboxRecord
    org_settings: st.OrgSettings | None = None
    mailbox_settings: st.MailboxSettings | None = None
