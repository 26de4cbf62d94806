"""Push for Graph: change-notification subscriptions per mailbox and kind, and the webhook that
receives them (an HTTP endpoint of the mail-connector; its public URL is a setting).

The receiver answers Graph's validation handshake, takes a notification only with the
`clientState` its subscription was made with (anything else is refused and counted, never
turned into a hint), and hands lifecycle notifications to the mailbox's watch: `missed` is a
catch-up hint, `reauthorizationRequired` a renewal now, `subscriptionRemoved` a re-creation.
Each watch renews its subscriptions well before they expire and re-creates lost ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from concord_mail_connector.adapters.graph import GraphProvider
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import Backoff, PushMode, PushSink, WatchState

__all__ = ["GraphChangeFeed", "GraphWebhook"]

_log = logging.getLogger(__name__)

NOTIFY_PATH = "/graph/notifications"
LIFECYCLE_PATH = "/graph/lifecycle"
# The kinds a Graph mailbox is watched for, each with a subscription of its own.
WATCHED = (Kind.CALENDAR_ITEM, Kind.CONTACT, Kind.EMAIL, Kind.TASK)


class _KindQueue:
    """The watch's queue, seen from one subscription: notifications carry its kind."""

    def __init__(self, queue: asyncio.Queue[tuple[str, str]], kind: Kind) -> None:
        self.queue = queue
        self.kind = kind

    def put_nowait(self, item: tuple[str, str]) -> None:
        what, detail = item
        self.queue.put_nowait((what, self.kind.value if what == "changed" else detail))


@dataclass
class _Registered:
    mailbox: str
    kind: Kind
    client_state: str
    events: _KindQueue


@dataclass
class GraphWebhook:
    """The receiver: routes each notification to the watch whose subscription it names."""

    public_url: str
    refused: Counter[str] = field(default_factory=Counter)
    _subscriptions: dict[str, _Registered] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def notification_url(self) -> str:
        return self.public_url.rstrip("/") + NOTIFY_PATH

    @property
    def lifecycle_url(self) -> str:
        return self.public_url.rstrip("/") + LIFECYCLE_PATH

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(NOTIFY_PATH, self._notified, methods=["POST"]),
                Route(LIFECYCLE_PATH, self._lifecycle, methods=["POST"]),
            ]
        )

    async def start(self, host: str, port: int) -> None:
        config = uvicorn.Config(self.app(), host=host, port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="graph-webhook")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises why it could not serve
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def register(self, subscription: str, registered: _Registered) -> None:
        self._subscriptions[subscription] = registered

    def forget(self, subscription: str) -> None:
        self._subscriptions.pop(subscription, None)

    @staticmethod
    def _validation(request: Request) -> Response | None:
        token = request.query_params.get("validationToken")
        if token is None:
            return None
        # The handshake: the token back, as plain text, within 10 s.
        return PlainTextResponse(token)

    async def _notes(self, request: Request) -> list[dict[str, object]]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            self.refused["malformed"] += 1
            return []
        value = body.get("value") if isinstance(body, dict) else None
        return [n for n in value or [] if isinstance(n, dict)]

    def _match(self, note: dict[str, object]) -> _Registered | None:
        registered = self._subscriptions.get(str(note.get("subscriptionId") or ""))
        if registered is None:
            self.refused["unknown subscription"] += 1
            return None
        given = str(note.get("clientState") or "")
        if not secrets.compare_digest(given, registered.client_state):
            # Not from the Graph subscription we made (or tampered with): never a hint.
            self.refused["wrong clientState"] += 1
            _log.warning("graph push: a notification with a wrong clientState was refused")
            return None
        return registered

    async def _notified(self, request: Request) -> Response:
        validation = self._validation(request)
        if validation is not None:
            return validation
        for note in await self._notes(request):
            registered = self._match(note)
            if registered is not None:
                registered.events.put_nowait(("changed", str(note.get("changeType") or "")))
        # Accepted at once: Graph drops receivers that answer slowly; the work is queued.
        return Response(status_code=202)

    async def _lifecycle(self, request: Request) -> Response:
        validation = self._validation(request)
        if validation is not None:
            return validation
        for note in await self._notes(request):
            registered = self._match(note)
            if registered is not None:
                event = str(note.get("lifecycleEvent") or "")
                registered.events.put_nowait(("lifecycle", event))
        return Response(status_code=202)


class GraphChangeFeed:
    """`lifetime`: how long each subscription is made for (Outlook resources allow up to
    7 days); it is renewed when `renew_before` of it is left."""

    def __init__(
        self,
        provider: GraphProvider,
        webhook: GraphWebhook,
        *,
        lifetime: dt.timedelta = dt.timedelta(days=2),
        renew_before: dt.timedelta = dt.timedelta(hours=6),
        degrade_after: int = 3,
        max_back_off: float = 30.0,
    ) -> None:
        self.provider = provider
        self.webhook = webhook
        self.lifetime = lifetime
        self.renew_before = min(renew_before, lifetime / 2)
        self.degrade_after = degrade_after
        self.max_back_off = max_back_off

    async def watch(self, access: MailboxAccess, sink: PushSink) -> None:
        await _MailboxWatch(self, access, sink).run()


@dataclass
class _Subscription:
    id: str
    kind: Kind
    expires: dt.datetime


class _MailboxWatch:
    def __init__(self, feed: GraphChangeFeed, access: MailboxAccess, sink: PushSink) -> None:
        self.feed = feed
        self.access = access
        self.sink = sink
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.subscriptions: dict[Kind, _Subscription] = {}
        self.backoff = Backoff(maximum=feed.max_back_off)
        self.failures = 0
        self.created = dt.datetime.now(dt.UTC)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._keep()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._failed(exc)
        finally:
            await self._unsubscribe()

    async def _keep(self) -> None:
        """Subscribe what is missing, then wait for notifications and for renewal time."""
        if len(self.subscriptions) < len(WATCHED):
            for kind in WATCHED:
                if kind not in self.subscriptions:
                    await self._subscribe(kind)
            self.failures = 0
            self.backoff.reset()
            self._report()
            # What changed before the subscriptions were in place reached no one.
            self.sink.changed(frozenset(), "subscribed")
        due = min(s.expires for s in self.subscriptions.values()) - self.feed.renew_before
        wait = max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds())
        try:
            what, detail = await asyncio.wait_for(self.events.get(), timeout=wait)
        except TimeoutError:
            await self._renew_due()
            return
        if what == "changed":
            self.sink.changed(frozenset({self._kind_of(detail)}), "graph")
        elif what == "lifecycle":
            await self._on_lifecycle(detail)

    def _kind_of(self, detail: str) -> Kind:
        return Kind(detail) if detail in Kind._value2member_map_ else Kind.CALENDAR_ITEM

    async def _on_lifecycle(self, event: str) -> None:
        if event == "missed":
            # Graph could not deliver some notifications: the next session finds them.
            self.sink.changed(frozenset(), "missed")
        elif event == "reauthorizationRequired":
            await self._renew_due(force=True)
        elif event == "subscriptionRemoved":
            # Graph dropped a subscription: make them all again, then a catch-up hint.
            await self._unsubscribe()

    async def _subscribe(self, kind: Kind) -> None:
        # A secret per subscription: only Graph, which we told it, can send it back.
        client_state = secrets.token_urlsafe(24)
        expires = dt.datetime.now(dt.UTC) + self.feed.lifetime
        sub_id, granted = await self.feed.provider.subscribe(
            self.access,
            kind,
            self.feed.webhook.notification_url,
            self.feed.webhook.lifecycle_url,
            client_state,
            expires,
        )
        # A change in the instant between Graph's answer and this line is refused as unknown;
        # the catch-up hint sent once every kind is subscribed covers it.
        events = _KindQueue(self.events, kind)
        self.feed.webhook.register(
            sub_id, _Registered(self.access.account.mailbox, kind, client_state, events)
        )
        self.subscriptions[kind] = _Subscription(sub_id, kind, granted)

    async def _renew_due(self, force: bool = False) -> None:
        now = dt.datetime.now(dt.UTC)
        for kind, sub in list(self.subscriptions.items()):
            if not force and sub.expires - self.feed.renew_before > now:
                continue
            renewed = await self.feed.provider.renew_subscription(
                self.access, sub.id, now + self.feed.lifetime
            )
            if renewed is None:
                # Lost (expired, or removed without a lifecycle notification reaching us).
                self.feed.webhook.forget(sub.id)
                del self.subscriptions[kind]
            else:
                sub.expires = renewed
        self._report()

    async def _unsubscribe(self) -> None:
        for sub in list(self.subscriptions.values()):
            self.feed.webhook.forget(sub.id)
            with contextlib.suppress(Exception):
                await self.feed.provider.delete_subscription(self.access, sub.id)
        self.subscriptions.clear()

    async def _failed(self, exc: Exception) -> None:
        reason = getattr(exc, "reason", "") or getattr(exc, "code", "") or type(exc).__name__
        self.failures += 1
        if self.failures >= self.feed.degrade_after:
            self.sink.state(WatchState(PushMode.DEGRADED, reason=str(reason)))
        retry_after = getattr(exc, "retry_after", None)
        delay = float(retry_after) if retry_after else self.backoff.next()
        _log.info("graph push %s: %s; again in %.1fs", self.access.account.mailbox, reason, delay)
        await asyncio.sleep(delay)

    def _report(self) -> None:
        if not self.subscriptions:
            return
        self.sink.state(
            WatchState(
                PushMode.STREAMING,
                kinds=frozenset(self.subscriptions),
                create_time=self.created,
                expire_time=min(s.expires for s in self.subscriptions.values()),
            )
        )
