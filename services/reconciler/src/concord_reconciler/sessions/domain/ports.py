"""What the session flow needs from the outside world: its store, the queue, the outcome events,
the stored answers of requests, and the schedule's view."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.sessions.domain.model import (
    ItemErrorRecord,
    MailboxContext,
    SessionRecord,
    SessionState,
)
from concord_reconciler.sessions.domain.schedule import ScheduleRow


class SessionStore(Protocol):
    """The part of the reconciler's store the session flow uses."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def get_mailbox(self, mailbox_id: str) -> MailboxRecord | None: ...

    async def mailbox_context(self, mailbox_id: str) -> MailboxContext | None:
        """The mailbox with its own and its org's stored settings, in one read."""
        ...

    async def enqueue_session(self, session: SessionRecord) -> tuple[SessionRecord, bool]:
        """Insert `session` (QUEUED), or return the mailbox's QUEUED session instead.

        Atomic across replicas; the bool says whether `session` was inserted.
        """
        ...

    async def save_session(self, session: SessionRecord, expected: SessionState) -> bool:
        """Write `session` if the stored row is still in state `expected` (compare-and-set)."""
        ...

    async def complete_session(self, session: SessionRecord) -> tuple[bool, bool]:
        """Write `session` (COMPLETED) if the stored row is still RUNNING and, in the same
        transaction move its mailbox from BACKING_OFF to ACTIVE, clearing its reason, if it is
        still backing off (compare-and-set: a suspend in between wins); whether each happened."""
        ...


class SessionEvents(Protocol):
    """Outcomes published for watchers (WaitSession, the gateway, the dashboard)."""

    async def started(self, session: SessionRecord, org: str) -> None: ...

    async def completed(self, session: SessionRecord, org: str) -> None: ...

    async def failed(
        self, session: SessionRecord, org: str, reason: str, code: str, retryable: bool
    ) -> None: ...


class SessionQueue(Protocol):
    """Where requested sessions wait for a reconciler (SESSIONS); re-queuing is harmless.

    Repeats of one session's request collapse (the session id is the message id) unless
    `republish` names a new attempt: a request whose message was lost must get through.
    """

    async def enqueue(self, session: SessionRecord, org: str, *, republish: str = "") -> None: ...


@dataclass(frozen=True)
class SessionKey:
    """Where a page of sessions (newest first) continues: strictly older than this."""

    request_time_us: int
    session_id: str


class SessionRecords(Protocol):
    """Sessions and item errors as the API reads and releases them."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def queued_session(self, mailbox_id: str) -> SessionRecord | None: ...

    async def list_sessions(
        self, mailbox_id: str, *, after: SessionKey | None, limit: int
    ) -> list[SessionRecord]: ...

    async def get_item_error(
        self, mailbox_id: str, item_error_id: str
    ) -> ItemErrorRecord | None: ...

    async def release_item_error(self, mailbox_id: str, item_error_id: str) -> None: ...

    async def list_item_errors(
        self,
        mailbox_id: str,
        *,
        quarantined_only: bool,
        after: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[ItemErrorRecord], int]: ...


class Answers(Protocol):
    """Stored answers of mutating requests, by (method, request id) (AIP-155)."""

    async def get_response(self, method: str, request_id: str) -> bytes | None: ...

    async def save_response(self, method: str, request_id: str, response: bytes) -> None: ...


class Wakeups(Protocol):
    """Outcome events of one session, as they come."""

    async def next(self) -> object: ...


class SessionMessaging(Protocol):
    """The queue, the outcome events and watches; QueueUnavailable until messaging is up."""

    def queue(self) -> SessionQueue: ...

    def events(self) -> SessionEvents: ...

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Wakeups]: ...


class ScheduleView(Protocol):
    """The scheduler's rows, for the next sync time a mailbox read shows."""

    async def rows(self, only: str | None = None) -> list[ScheduleRow]: ...
