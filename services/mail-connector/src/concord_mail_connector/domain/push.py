"""Push: mail servers' change notifications turned into `MailChanged` hints, one watch per mailbox.

A notification is a hint, never the truth (the cursor is): a watch that loses its provider
subscription re-creates it and sends one catch-up hint, so whatever happened while it was down is
found by the next session. A hint carries which mailbox and which kinds changed, nothing of the
items themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from concord_mail_connector.domain.model import Kind, Provider
from concord_mail_connector.domain.own_writes import ItemEvent, OwnWrites
from concord_mail_connector.domain.provider import MailboxAccess

__all__ = [
    "AccountRef",
    "Backoff",
    "ChangeCoalescer",
    "ChangeFeed",
    "ChangePublisher",
    "MailChangedNote",
    "PushAccounts",
    "PushMode",
    "PushSink",
    "PushSupervisor",
    "WatchState",
]

_log = logging.getLogger(__name__)


class PushMode(StrEnum):
    STARTING = "starting"
    # A streaming subscription with an open connection: changes arrive as they are committed.
    STREAMING = "streaming"
    # A pull subscription asked every few seconds: streaming was refused or kept failing.
    PULLING = "pulling"
    # No provider subscription could be kept: the mailbox is polled (a hint every poll period).
    DEGRADED = "degraded"


@dataclass(frozen=True)
class WatchState:
    mode: PushMode
    # The kinds the current provider subscription covers (empty when there is none).
    kinds: frozenset[Kind] = frozenset()
    create_time: datetime | None = None
    # When the provider drops the subscription unless it is renewed (a connection or a poll).
    expire_time: datetime | None = None
    # Why the watch is not streaming: an error class or code, never server text.
    reason: str = ""


class PushSink(Protocol):
    """Where a feed reports; called on the event loop."""

    def changed(self, kinds: frozenset[Kind], hint: str, items: Sequence[ItemEvent] = ()) -> None:
        """`kinds` changed (none and no `items`: any kind); `items` are changes the
        notification names item by item, at a version: those Concord wrote are its echoes."""

    def state(self, state: WatchState) -> None: ...


class ChangeFeed(Protocol):
    """One mail system's notifications for one mailbox."""

    async def watch(self, access: MailboxAccess, sink: PushSink) -> None:
        """Runs until cancelled: subscribes, re-subscribes after loss, reports to `sink`.

        Once each provider subscription is in place — the first one included — the feed sends
        one catch-up hint (`sink.changed` with no kinds): what changed before it was held
        reached no one.
        """


@dataclass(frozen=True)
class AccountRef:
    mailbox: str
    provider: Provider
    # Changes when the account's settings or secret change: its watch restarts with them.
    etag: str


class PushAccounts(Protocol):
    async def list(self) -> list[AccountRef]: ...

    async def access(self, mailbox: str) -> MailboxAccess | None: ...


@dataclass(frozen=True)
class MailChangedNote:
    """One coalesced hint: `kinds` empty means any kind (a poll or a catch-up)."""

    mailbox: str
    kinds: frozenset[Kind]
    hint: str
    time: datetime
    # Same mailbox + same dedupe key = the same hint: a JetStream stream over the subject, or
    # two replicas watching one mailbox, collapse them through Nats-Msg-Id.
    dedupe_key: str


class ChangePublisher(Protocol):
    async def publish(self, note: MailChangedNote) -> None: ...


@dataclass
class Backoff:
    """Bounded exponential back-off with jitter, so a server restart is not met by every watch
    reconnecting in the same instant."""

    initial: float = 0.5
    maximum: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next(self) -> float:
        delay: float = min(self.maximum, self.initial * 2.0**self.attempts)
        self.attempts += 1
        return delay * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempts = 0


Emit = Callable[[MailChangedNote], Awaitable[None]]


@dataclass
class _Pending:
    quiet_until: float = 0.0
    kinds: set[Kind] = field(default_factory=set)
    hints: set[str] = field(default_factory=set)
    # Any-kind requested (a poll, a catch-up): overrides the kind list.
    any_kind: bool = False
    flush: asyncio.TimerHandle | None = None
    # Item changes not judged yet (Concord's echo or not): each with the writes in flight when
    # it came, and until when its judgement may wait for those writes' answers.
    unsure: list[tuple[ItemEvent, str, frozenset[int], float]] = field(default_factory=list)


class ChangeCoalescer:
    """At most one hint per mailbox per `window`: the first change after a quiet window goes out
    at once (lowest latency), the changes that follow within the window go out together at its
    end (none lost), so a burst of N changes becomes about burst-length / window hints.

    Item changes at a version Concord's own write left (`own_writes`) are its echoes: a hint made
    only of those is not sent. An item change noted while writes to its mailbox are in flight
    waits for their answers (at most `max_wait`), since the server may report a write first."""

    def __init__(
        self,
        emit: Emit,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        own_writes: OwnWrites | None = None,
        max_wait: float = 2.0,
        recheck: float = 0.05,
    ) -> None:
        self._emit = emit
        self._window = window
        self._clock = clock
        self._own_writes = own_writes or OwnWrites()
        self._max_wait = max_wait
        self._recheck = recheck
        self._pending: dict[str, _Pending] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def note(
        self,
        mailbox: str,
        kinds: frozenset[Kind],
        hint: str,
        items: Sequence[ItemEvent] = (),
    ) -> None:
        slot = self._pending.setdefault(mailbox, _Pending())
        slot.kinds |= kinds
        slot.any_kind |= not kinds and not items
        if kinds or not items:
            slot.hints.add(hint)
        if items:
            flying = self._own_writes.in_flight(mailbox)
            by = self._clock() + self._max_wait
            slot.unsure.extend((item, hint, flying, by) for item in items)
        if slot.flush is not None:
            return
        wait = slot.quiet_until - self._clock()
        if wait <= 0:
            self._send(mailbox)
        else:
            slot.flush = asyncio.get_running_loop().call_later(wait, self._send, mailbox)

    def forget(self, mailbox: str) -> None:
        slot = self._pending.pop(mailbox, None)
        if slot is not None and slot.flush is not None:
            slot.flush.cancel()

    async def close(self) -> None:
        for mailbox in list(self._pending):
            self.forget(mailbox)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _send(self, mailbox: str) -> None:
        slot = self._pending.get(mailbox)
        if slot is None:
            return
        now = self._clock()
        if slot.unsure:
            waiting = []
            for item, hint, awaited, by in slot.unsure:
                if not self._own_writes.answered(mailbox, awaited) and now < by:
                    waiting.append((item, hint, awaited, by))
                elif not self._own_writes.is_own(mailbox, item):
                    slot.kinds.add(item.kind)
                    slot.hints.add(hint)
            slot.unsure = waiting
            if not slot.kinds and not slot.any_kind:
                # Nothing but Concord's own writes so far: no hint, and the window stays open.
                slot.flush = None
                if waiting:
                    slot.flush = asyncio.get_running_loop().call_later(
                        self._recheck, self._send, mailbox
                    )
                return
        wall = datetime.now(UTC)
        note = MailChangedNote(
            mailbox=mailbox,
            kinds=frozenset() if slot.any_kind else frozenset(slot.kinds),
            hint=",".join(sorted(slot.hints)),
            time=wall,
            # Wall-clock windows, so another replica's hint for the same change gets the same key.
            dedupe_key=f"{int(wall.timestamp() // self._window)}",
        )
        slot.quiet_until = now + self._window
        slot.kinds.clear()
        slot.hints.clear()
        slot.any_kind = False
        slot.flush = None
        if slot.unsure:
            # Still waiting for writes' answers: judged at the end of this window at the earliest.
            slot.flush = asyncio.get_running_loop().call_later(self._window, self._send, mailbox)
        task = asyncio.create_task(self._emit_quietly(note))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _emit_quietly(self, note: MailChangedNote) -> None:
        try:
            await self._emit(note)
        except Exception as exc:
            # A lost hint costs latency only: the schedule still syncs the mailbox.
            _log.warning("push hint not published: %s", type(exc).__name__)


@dataclass
class _Watch:
    etag: str
    task: asyncio.Task[None]
    state: WatchState = field(default_factory=lambda: WatchState(PushMode.STARTING))
    poll: asyncio.Task[None] | None = None


class PushSupervisor:
    """One watch per mailbox account whose provider has a feed; the account list is re-read every
    `rescan_seconds`, so added, changed and removed accounts are followed without a restart."""

    def __init__(
        self,
        accounts: PushAccounts,
        feeds: Mapping[Provider, ChangeFeed],
        publisher: ChangePublisher,
        *,
        window: float = 0.2,
        rescan_seconds: float = 10.0,
        poll_seconds: float = 300.0,
        own_writes: OwnWrites | None = None,
    ) -> None:
        self._accounts = accounts
        self._feeds = feeds
        self._rescan_seconds = rescan_seconds
        self._poll_seconds = poll_seconds
        self._coalescer = ChangeCoalescer(publisher.publish, window, own_writes=own_writes)
        self._watches: dict[str, _Watch] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._rescan_lock = asyncio.Lock()

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._rescan_forever())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        for mailbox in list(self._watches):
            await self._drop(mailbox)
        await self._coalescer.close()

    def state(self, mailbox: str) -> WatchState | None:
        watch = self._watches.get(mailbox)
        return None if watch is None else watch.state

    async def rescan(self) -> None:
        async with self._rescan_lock:
            listed = {
                a.mailbox: a for a in await self._accounts.list() if a.provider in self._feeds
            }
            for mailbox in [m for m in self._watches if m not in listed]:
                await self._drop(mailbox)
            for mailbox, ref in listed.items():
                current = self._watches.get(mailbox)
                if current is not None and current.etag == ref.etag and not current.task.done():
                    continue
                if current is not None:
                    await self._drop(mailbox)
                access = await self._accounts.access(mailbox)
                if access is None:
                    continue
                feed = self._feeds[ref.provider]
                sink = _MailboxSink(self, mailbox)
                task = asyncio.create_task(feed.watch(access, sink), name=f"push-{mailbox}")
                self._watches[mailbox] = _Watch(ref.etag, task)

    async def _rescan_forever(self) -> None:
        while True:
            try:
                await self.rescan()
            except Exception as exc:
                # The store may be briefly unreachable; the watches already running go on.
                _log.warning("push: account rescan failed: %s", type(exc).__name__)
            await asyncio.sleep(self._rescan_seconds)

    async def _drop(self, mailbox: str) -> None:
        watch = self._watches.pop(mailbox, None)
        self._coalescer.forget(mailbox)
        if watch is None:
            return
        for task in (watch.task, watch.poll):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _changed(
        self, mailbox: str, kinds: frozenset[Kind], hint: str, items: Sequence[ItemEvent] = ()
    ) -> None:
        if mailbox in self._watches:
            self._coalescer.note(mailbox, kinds, hint, items)

    def _set_state(self, mailbox: str, state: WatchState) -> None:
        watch = self._watches.get(mailbox)
        if watch is None:
            return
        if state.mode != watch.state.mode:
            _log.info("push %s: %s -> %s %s", mailbox, watch.state.mode, state.mode, state.reason)
        watch.state = state
        if state.mode == PushMode.DEGRADED and watch.poll is None:
            watch.poll = asyncio.create_task(self._poll(mailbox))
        elif state.mode != PushMode.DEGRADED and watch.poll is not None:
            watch.poll.cancel()
            watch.poll = None

    async def _poll(self, mailbox: str) -> None:
        # While push is down the mailbox is still synced well inside the schedule: each hint
        # starts a session, whose cursors make an unchanged mailbox one call per collection.
        while True:
            self._changed(mailbox, frozenset(), "poll")
            await asyncio.sleep(self._poll_seconds)


@dataclass
class _MailboxSink:
    supervisor: PushSupervisor
    mailbox: str

    def changed(self, kinds: frozenset[Kind], hint: str, items: Sequence[ItemEvent] = ()) -> None:
        self.supervisor._changed(self.mailbox, kinds, hint, items)

    def state(self, state: WatchState) -> None:
        self.supervisor._set_state(self.mailbox, state)
