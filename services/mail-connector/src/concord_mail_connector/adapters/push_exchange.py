"""EWS notifications for one mailbox: a streaming subscription on the folders Concord syncs, a
pull subscription when streaming is refused or keeps failing, re-created after any loss.

exchangelib blocks, and a streaming connection blocks its thread for the whole connection (up to
30 minutes), so each open stream runs in its own daemon thread: the provider's bounded pool stays
free for syncs, and a stream that cannot be interrupted never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    Account,
    Configuration,
    Credentials,
    FailFast,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorExpiredSubscription,
    ErrorInvalidOperation,
    ErrorInvalidRequest,
    ErrorInvalidSubscription,
    ErrorInvalidSubscriptionRequest,
    ErrorInvalidWatermark,
    ErrorMissedNotificationEvents,
    ErrorSchemaValidation,
    ErrorServerBusy,
    ErrorSubscriptionNotFound,
    ErrorTimeoutExpired,
)
from exchangelib.folders import FolderCollection  # type: ignore[import-untyped]
from exchangelib.properties import (  # type: ignore[import-untyped]
    CreatedEvent,
    DeletedEvent,
    ModifiedEvent,
)
from exchangelib.services import GetEvents, GetStreamingEvents  # type: ignore[import-untyped]

from concord_mail_connector.adapters.ews_folders import find_child, open_folders
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.own_writes import ItemEvent
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import Backoff, PushMode, PushSink, WatchState

__all__ = ["ExchangeChangeFeed"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

_AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM}
# The folders whose items Concord syncs, by kind: calendar items and tasks from the default
# folders; contacts and shared emails from the dedicated folders; emails also from the inbox and
# sent items, where the "Salesforce" category selects them.
_DISTINGUISHED = (
    ("calendar", Kind.CALENDAR_ITEM),
    ("tasks", Kind.TASK),
    ("inbox", Kind.EMAIL),
    ("sent", Kind.EMAIL),
)
_DEDICATED = (("Salesforce Contacts", Kind.CONTACT), ("Salesforce Emails", Kind.EMAIL))
_EVENT_TYPES = ("CopiedEvent", "CreatedEvent", "DeletedEvent", "ModifiedEvent", "MovedEvent")
# The subscription is gone at the server (expired, removed, server restarted or failed over).
_SUBSCRIPTION_LOST = (
    ErrorSubscriptionNotFound,
    ErrorExpiredSubscription,
    ErrorInvalidSubscription,
    ErrorInvalidWatermark,
    ErrorMissedNotificationEvents,
)
# What exchangelib raises when the server cannot be reached (connection refused or reset, no
# answer in time) or answers 503 / ErrorServerBusy.
_UNREACHABLE = (ErrorTimeoutExpired, ErrorServerBusy)
# What a server without streaming notifications (Exchange 2007) answers a streaming Subscribe.
_STREAMING_REFUSED = (
    ErrorInvalidOperation,
    ErrorInvalidRequest,
    ErrorInvalidSubscriptionRequest,
    ErrorSchemaValidation,
)


class _Stopped(Exception):
    pass


@dataclass
class _Stream:
    """The open GetStreamingEvents call, so another thread can cut it."""

    stop: threading.Event = field(default_factory=threading.Event)
    service: Any = None

    def cut(self) -> None:
        self.stop.set()
        response = getattr(self.service, "_streaming_response", None)
        connection = getattr(getattr(response, "raw", None), "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            # Closing the response does not wake a thread blocked reading it; shutting the socket
            # down does, at once.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class _Folders:
    kinds: dict[str, Kind]
    objects: list[Any]
    # A dedicated folder does not exist yet: looked for while the subscription lasts.
    missing: bool


class ExchangeChangeFeed:
    """`stream_minutes`: how long one streaming connection lasts before it is renewed (EWS allows
    1 to 30). `pull_seconds`: how often a pull subscription is asked. After
    `stream_failures_before_pull` streams that die young, the watch pulls for
    `pull_fallback_seconds`, then tries streaming again. `degrade_after` failures in a row mark the
    watch degraded (no subscription; the supervisor polls). A dedicated folder missing when the
    watch subscribed is looked for every `folder_recheck_seconds`."""

    def __init__(
        self,
        *,
        stream_minutes: int = 30,
        pull_seconds: float = 2.0,
        pull_timeout_minutes: int = 10,
        stream_failures_before_pull: int = 3,
        pull_fallback_seconds: float = 300.0,
        degrade_after: int = 3,
        max_back_off: float = 30.0,
        healthy_stream_seconds: float = 5.0,
        folder_recheck_seconds: float = 60.0,
        sessions: int,
    ) -> None:
        self._stream_minutes = stream_minutes
        self._pull_seconds = pull_seconds
        self._pull_timeout_minutes = pull_timeout_minutes
        self._stream_failures_before_pull = stream_failures_before_pull
        self._pull_fallback_seconds = pull_fallback_seconds
        self._degrade_after = degrade_after
        self._max_back_off = max_back_off
        self._healthy_stream_seconds = healthy_stream_seconds
        self._folder_recheck_seconds = folder_recheck_seconds
        # The provider's sessions per credential (`ExchangeProvider.sessions_per_credential`,
        # required so no caller forgets it): exchangelib's pool for a credential is shared with
        # the provider and sized by whichever opens it first, so both open it alike.
        self._sessions = sessions
        self._pool_lock = threading.Lock()
        # Per mailbox address: the watches waiting for a dedicated folder, told when one is made.
        self._folder_news: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._news_lock = threading.Lock()

    async def watch(self, access: MailboxAccess, sink: PushSink) -> None:
        watch = _MailboxWatch(self, access, sink)
        heard = (asyncio.get_running_loop(), watch.folder_news)
        key = access.account.address.lower()
        with self._news_lock:
            self._folder_news.setdefault(key, set()).add(heard)
        try:
            await watch.run()
        finally:
            with self._news_lock:
                self._folder_news.get(key, set()).discard(heard)
                if not self._folder_news.get(key):
                    self._folder_news.pop(key, None)

    def folder_created(self, address: str) -> None:
        """A dedicated folder was made in `address`'s mailbox (by this process's provider, from
        any thread): a watch that subscribed without it looks again at once instead of at its
        next `folder_recheck_seconds`, so its subscription covers the folder from the mailbox's
        first sync on (`ExchangeProvider.on_folder_created`)."""
        with self._news_lock:
            heard = list(self._folder_news.get(address.lower(), ()))
        for loop, news in heard:
            with contextlib.suppress(RuntimeError):  # the loop closed: exiting
                loop.call_soon_threadsafe(news.set)

    def _open_account(self, access: MailboxAccess) -> Account:
        settings = access.account.settings
        username = str(settings["username"])
        address = access.account.address
        wanted = str(settings.get("access_type") or "").lower()
        if wanted in ("delegate", "impersonation"):
            access_type = DELEGATE if wanted == "delegate" else IMPERSONATION
        else:
            # As the Exchange provider decides: the service account opening another mailbox
            # impersonates; a user opening its own mailbox has plain access.
            access_type = DELEGATE if username.lower() == address.lower() else IMPERSONATION
        config = Configuration(
            service_endpoint=str(settings["service_url"]),
            credentials=Credentials(username, (access.secret or b"").decode()),
            auth_type=_AUTH_TYPES.get(str(settings.get("auth_type") or "ntlm").lower(), NTLM),
            # Back-off is ours (bounded, with jitter), not exchangelib's blocking retries.
            retry_policy=FailFast(),
            max_connections=self._sessions,
        )
        return open_folders(
            Account(
                primary_smtp_address=address,
                config=config,
                autodiscover=False,
                access_type=access_type,
            )
        )

    def _grow_pool(self, account: Account, by: int) -> None:
        # exchangelib shares one session pool per endpoint and credentials across the process
        # (the Exchange provider's too), of `sessions`. An open stream holds a session for its
        # whole connection, so each stream brings its own, and syncs never wait on it.
        with self._pool_lock:
            account.protocol.max_connections = max(1, account.protocol.max_connections + by)


class _MailboxWatch:
    def __init__(self, feed: ExchangeChangeFeed, access: MailboxAccess, sink: PushSink) -> None:
        self.feed = feed
        self.access = access
        self.sink = sink
        self.backoff = Backoff(maximum=feed._max_back_off)
        self.account: Account | None = None
        self.folders: _Folders | None = None
        self.failures = 0
        self.stream_failures = 0
        self.pull_until = 0.0
        self.subscribed_once = False
        # A stream broke under a subscription that lives on: once a new connection to it holds,
        # one catch-up hint (see `_streaming`).
        self.reconnect_hint_due = False
        self.created = datetime.now(UTC)
        self.state = WatchState(PushMode.STARTING)
        # Set when the provider made a dedicated folder since the watch last read its folders.
        self.folder_news = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                if time.monotonic() >= self.pull_until:
                    await self._streaming()
                else:
                    await self._pulling()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A new Account next time: a broken session or a changed server version must not
                # outlive the failure.
                self.account = None
                await self._failed(exc)

    async def _failed(self, exc: Exception) -> None:
        """Count the failure (degraded after `degrade_after` in a row) and wait the back-off."""
        reason = type(exc).__name__
        self.failures += 1
        if self.failures >= self.feed._degrade_after:
            self._report(WatchState(PushMode.DEGRADED, reason=reason))
        delay = retry_delay(exc, self.backoff)
        _log.info("push %s: %s; again in %.1fs", self.access.account.mailbox, reason, delay)
        await asyncio.sleep(delay)

    # -- modes ------------------------------------------------------------------------------

    async def _streaming(self) -> None:
        self.folder_news.clear()  # what it says is read with the folders now
        try:
            subscription = await _in_thread(self._subscribe_streaming)
        except _STREAMING_REFUSED as exc:
            _log.info(
                "push %s: streaming refused (%s); pulling",
                self.access.account.mailbox,
                type(exc).__name__,
            )
            self.pull_until = time.monotonic() + self.feed._pull_fallback_seconds
            return
        self._subscribed(PushMode.STREAMING, subscription)
        try:
            while True:
                ends = datetime.now(UTC) + timedelta(minutes=self.feed._stream_minutes)
                if self.state.mode != PushMode.DEGRADED:
                    # The connection about to open is what renews the subscription.
                    kinds = self.state.kinds
                    self._report(WatchState(PushMode.STREAMING, kinds, self.created, ends))
                started = time.monotonic()
                try:
                    if await self._stream_until_folders_appear(subscription, ends):
                        return  # a dedicated folder appeared: subscribe anew to cover it
                except _SUBSCRIPTION_LOST:
                    raise  # subscribe anew, with a catch-up hint
                except Exception as exc:
                    young = time.monotonic() - started < self.feed._healthy_stream_seconds
                    # A server that is down or busy would fail a pull subscription too: only a
                    # server that answers but cannot keep a stream up sends the watch to pull.
                    if young and not isinstance(exc, _UNREACHABLE):
                        self.stream_failures += 1
                        if self.stream_failures >= self.feed._stream_failures_before_pull:
                            self.stream_failures = 0
                            self.pull_until = time.monotonic() + self.feed._pull_fallback_seconds
                            raise
                    # A subscription outlives its connection (Exchange keeps it, and queues its
                    # events, for 30 minutes): reconnect to it. What the server had already
                    # written to the broken connection is gone with it (a stream has no
                    # acknowledgement: the server's watermark moved when it sent them), so the
                    # reconnection that holds sends one catch-up hint; a failed attempt while the
                    # server is away sends none, so an outage is not a hint storm.
                    self.reconnect_hint_due = True
                    await self._failed(exc)
        finally:
            self._forget(subscription)

    async def _pulling(self) -> None:
        loop = asyncio.get_running_loop()
        self.folder_news.clear()  # what it says is read with the folders now
        subscription, watermark = await _in_thread(self._subscribe_pull)
        self._subscribed(PushMode.PULLING, subscription)
        try:
            while time.monotonic() < self.pull_until:
                watermark = await _in_thread(
                    partial(self._get_events, loop, subscription, watermark)
                )
                ends = datetime.now(UTC) + timedelta(minutes=self.feed._pull_timeout_minutes)
                self._healthy(PushMode.PULLING, ends)
                await asyncio.sleep(self.feed._pull_seconds)
        finally:
            self._forget(subscription)

    def _subscribed(self, mode: PushMode, subscription: str) -> None:
        assert self.folders is not None
        self.created = datetime.now(UTC)
        if self.state.mode != PushMode.DEGRADED:
            # A degraded watch stays degraded (and polled) until the new subscription has
            # proved itself: a stream that dies at once must not flap the state.
            self._report(WatchState(mode, frozenset(self.folders.kinds.values()), self.created))
        # Changes made while no subscription was held reached no one — before the first one too
        # (between the mailbox's last session and now): one catch-up hint.
        self.sink.changed(frozenset(), "resubscribed" if self.subscribed_once else "subscribed")
        self.subscribed_once = True
        self.reconnect_hint_due = False  # this hint covers a broken stream of the old one too

    def _healthy(self, mode: PushMode, expire_time: datetime) -> None:
        """The subscription works (a stream stayed up, a pull answered): failures are forgotten."""
        assert self.folders is not None
        if self.reconnect_hint_due and mode == PushMode.STREAMING:
            self.reconnect_hint_due = False
            self.sink.changed(frozenset(), "reconnected")
        self.failures = 0
        self.stream_failures = 0
        self.backoff.reset()
        kinds = frozenset(self.folders.kinds.values())
        self._report(WatchState(mode, kinds, self.created, expire_time))

    def _report(self, state: WatchState) -> None:
        self.state = state
        self.sink.state(state)

    # -- blocking EWS calls (threads) ---------------------------------------------------------

    def _open(self) -> Account:
        if self.account is None:
            self.account = self.feed._open_account(self.access)
        account = self.account
        kinds: dict[str, Kind] = {}
        objects: list[Any] = []
        for attribute, kind in _DISTINGUISHED:
            folder = getattr(account, attribute)
            kinds[folder.id] = kind
            objects.append(folder)
        missing = False
        for name, kind in _DEDICATED:
            folder = find_child(account, account.msg_folder_root, name)
            if folder is None:
                # Created by the first sync of its kind.
                missing = True
                continue
            kinds[folder.id] = kind
            objects.append(folder)
        self.folders = _Folders(kinds, objects, missing)
        return account

    def _subscribe_streaming(self) -> str:
        account = self._open()
        assert self.folders is not None
        collection = FolderCollection(account=account, folders=self.folders.objects)
        return str(collection.subscribe_to_streaming(event_types=_EVENT_TYPES))

    def _subscribe_pull(self) -> tuple[str, str]:
        account = self._open()
        assert self.folders is not None
        collection = FolderCollection(account=account, folders=self.folders.objects)
        subscription, watermark = collection.subscribe_to_pull(
            event_types=_EVENT_TYPES, timeout=self.feed._pull_timeout_minutes
        )
        return str(subscription), str(watermark)

    def _get_events(
        self, loop: asyncio.AbstractEventLoop, subscription: str, watermark: str
    ) -> str:
        """Every event since `watermark` (GetEvents pages at 512); the next watermark."""
        assert self.account is not None
        assert self.folders is not None
        service = GetEvents(account=self.account)
        mark = watermark
        while True:
            notification = service.get(subscription_id=subscription, watermark=mark)
            changed, items = _changes_of(notification, self.folders.kinds)
            if changed or items:
                loop.call_soon_threadsafe(self.sink.changed, changed, "ews-pull", items)
            events = notification.events or []
            if events and events[-1].watermark:
                mark = events[-1].watermark
            if not notification.more_events:
                return str(mark)

    async def _stream_until_folders_appear(self, subscription: str, ends: datetime) -> bool:
        """One streaming connection; True when it was cut short because a dedicated folder the
        subscription lacks has been created (by the first sync of its kind) meanwhile."""
        assert self.folders is not None
        streaming = asyncio.create_task(self._stream_once(subscription, ends))
        if not self.folders.missing:
            await streaming
            return False
        looking = asyncio.create_task(self._until_folders_appear())
        try:
            await asyncio.wait({streaming, looking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, looking):
                if not task.done():
                    task.cancel()
        if streaming.done() and not streaming.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                await looking
            streaming.result()  # the stream's own failure, if it failed
            return False
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        return True

    async def _until_folders_appear(self) -> None:
        while True:
            # Told by the provider that made one, or found by looking now and then (a person
            # may make the folder too).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.folder_news.wait(), self.feed._folder_recheck_seconds)
            self.folder_news.clear()
            with contextlib.suppress(Exception):  # a failed look is tried again later
                if await _in_thread(self._dedicated_present):
                    return

    def _dedicated_present(self) -> bool:
        account = self.account
        assert account is not None
        assert self.folders is not None
        for name, _ in _DEDICATED:
            folder = find_child(account, account.msg_folder_root, name)
            if folder is not None and folder.id not in self.folders.kinds:
                return True
        return False

    async def _stream_once(self, subscription: str, ends: datetime) -> None:
        """One streaming connection, until the server closes it (its timeout) or it fails; once
        it has stayed up `healthy_stream_seconds`, the watch counts as streaming."""
        stream = _Stream()
        loop = asyncio.get_running_loop()
        account = self.account
        assert account is not None
        assert self.folders is not None
        kinds = self.folders.kinds
        done: asyncio.Future[None] = loop.create_future()

        def read() -> None:
            self.feed._grow_pool(account, 1)
            try:
                stream.service = GetStreamingEvents(account=account)
                for notification in stream.service.call(
                    subscription_ids=[subscription],
                    connection_timeout=self.feed._stream_minutes,
                ):
                    if stream.stop.is_set():
                        raise _Stopped
                    changed, items = _changes_of(notification, kinds)
                    if changed or items:
                        with contextlib.suppress(RuntimeError):  # the loop closed: exiting
                            loop.call_soon_threadsafe(
                                self.sink.changed, changed, "ews-streaming", items
                            )
            except BaseException as exc:
                if not stream.stop.is_set():
                    _hand_back(loop, done, exc)
            else:
                _hand_back(loop, done, None)
            finally:
                self.feed._grow_pool(account, -1)

        thread = threading.Thread(target=read, daemon=True, name="ews-stream")
        thread.start()
        try:
            try:
                await asyncio.wait_for(asyncio.shield(done), self.feed._healthy_stream_seconds)
            except TimeoutError:
                self._healthy(PushMode.STREAMING, ends)
                await done
        except asyncio.CancelledError:
            stream.cut()
            # The response may not have existed yet when cut() looked: look again shortly.
            loop.call_later(0.5, stream.cut)
            raise

    def _forget(self, subscription: str) -> None:
        """Unsubscribe in the background, best effort: the server expires it anyway."""
        account = self.account
        if account is None:
            return

        def unsubscribe() -> None:
            with contextlib.suppress(Exception):
                account.inbox.unsubscribe(subscription)

        threading.Thread(target=unsubscribe, daemon=True, name="ews-unsubscribe").start()


def retry_delay(exc: BaseException, backoff: Backoff) -> float:
    """The next back-off, but not shorter than what a busy server asked for (BackOffMilliseconds),
    within the same bound."""
    delay = backoff.next()
    if isinstance(exc, ErrorServerBusy) and exc.back_off:
        delay = max(delay, min(float(exc.back_off), backoff.maximum))
    return delay


# The events that name one item at the version the change left (a move or copy names two).
_ITEM_EVENTS = (CreatedEvent, ModifiedEvent, DeletedEvent)


def _changes_of(
    notification: Any, kinds: dict[str, Kind]
) -> tuple[frozenset[Kind], tuple[ItemEvent, ...]]:
    """The kinds a notification's events changed, and apart from them the item creates,
    edits and deletes it names at a version (each may be Concord's own write's echo)."""
    found: set[Kind] = set()
    items: list[ItemEvent] = []
    for event in notification.events or ():
        for attribute in ("parent_folder_id", "old_parent_folder_id"):
            folder = getattr(event, attribute, None)
            kind = kinds.get(getattr(folder, "id", None) or "")
            if kind is None:
                continue
            item = getattr(event, "item_id", None)
            if isinstance(event, _ITEM_EVENTS) and item is not None and item.id:
                deleted = isinstance(event, DeletedEvent)
                items.append(ItemEvent(kind, item.id, item.changekey or "", deleted))
            else:
                found.add(kind)
    return frozenset(found), tuple(items)


def _hand_back(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], exc: BaseException | None
) -> None:
    # The loop may be gone already (process exit): the stream's end then matters to no one.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, exc)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


async def _in_thread(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)
