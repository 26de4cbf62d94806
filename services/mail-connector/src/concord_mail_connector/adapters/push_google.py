"""Google notifications for one mailbox: a Calendar watch channel POSTing to this process's HTTPS
receiver (re-created before it expires: Google never renews a channel), and Gmail history
polling (a hint when the mailbox's history id moves; Pub/Sub push needs a Google Cloud topic,
which a deployment without one does not have).

A notification is a hint: it says "calendar changed" and nothing else; the session that follows
lists from the cursor. A channel's token is a per-channel secret the receiver checks, so a POST
from anyone else is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from concord_devcerts import ensure_tls, server_context
from concord_mail_connector.adapters.google import GoogleProvider
from concord_mail_connector.domain.errors import MailboxAccessDenied
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import Backoff, PushMode, PushSink, WatchState
from concord_rpc import DomainError

__all__ = ["GoogleChangeFeed", "NotificationReceiver"]

_log = logging.getLogger(__name__)
PATH = "/google/calendar/notifications"
PUBSUB_PATH = "/google/gmail/pubsub"


@dataclass
class _Channel:
    token: str
    on_change: Callable[[], None]


class NotificationReceiver:
    """The HTTPS endpoint watch channels POST to; one per process, shared by every watch."""

    def __init__(
        self,
        host: str,
        port: int,
        tls_dir: Path,
        public_url: str | None = None,
        pubsub_token: str | None = None,
    ) -> None:
        self._host = host
        # The secret the Pub/Sub push subscription's endpoint URL carries (`?token=`).
        self._pubsub_token = pubsub_token
        self._mailboxes: dict[str, Callable[[], None]] = {}
        self._port = port
        self._tls = ensure_tls(tls_dir, "Concord mail-connector push receiver")
        self._public_url = public_url
        self._channels: dict[str, _Channel] = {}
        self._runner: web.AppRunner | None = None
        self.received = 0

    @property
    def ca_file(self) -> Path:
        return self._tls.ca_cert

    @property
    def address(self) -> str:
        return self._base() + PATH

    @property
    def pubsub_address(self) -> str:
        """Where the Pub/Sub push subscription of the Gmail topic must POST."""
        return f"{self._base()}{PUBSUB_PATH}?token={self._pubsub_token or ''}"

    def _base(self) -> str:
        if self._public_url:
            return self._public_url.rstrip("/")
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(PATH, self._notified)
        app.router.add_post(PUBSUB_PATH, self._published)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context: ssl.SSLContext = server_context(self._tls)
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=context)
        await site.start()
        if self._port == 0:
            server = site._server
            assert server is not None
            self._port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def register(self, channel_id: str, token: str, on_change: Callable[[], None]) -> None:
        self._channels[channel_id] = _Channel(token, on_change)

    def forget(self, channel_id: str) -> None:
        self._channels.pop(channel_id, None)

    def register_mailbox(self, address: str, on_change: Callable[[], None]) -> None:
        self._mailboxes[address.lower()] = on_change

    def forget_mailbox(self, address: str) -> None:
        self._mailboxes.pop(address.lower(), None)

    async def _published(self, request: web.Request) -> web.Response:
        """A Pub/Sub push: `message.data` is base64 JSON {emailAddress, historyId}."""
        given = request.query.get("token", "")
        if not self._pubsub_token or not secrets.compare_digest(given, self._pubsub_token):
            return web.Response(status=403)
        try:
            envelope = await request.json()
            data = json.loads(base64.b64decode(envelope["message"]["data"]))
            address = str(data["emailAddress"]).lower()
        except (ValueError, KeyError, TypeError):
            # Acknowledged all the same: a message Pub/Sub would redeliver forever helps no one.
            _log.warning("google pubsub: a push message that is not Gmail's")
            return web.Response(status=204)
        on_change = self._mailboxes.get(address)
        if on_change is not None:
            self.received += 1
            on_change()
        return web.Response(status=204)

    async def _notified(self, request: web.Request) -> web.Response:
        channel = self._channels.get(request.headers.get("X-Goog-Channel-ID", ""))
        if channel is None:
            # Not ours (any more): Google stops retrying on a 2xx, and there is nothing to do.
            return web.Response(status=200)
        given = request.headers.get("X-Goog-Channel-Token", "")
        if not secrets.compare_digest(given, channel.token):
            return web.Response(status=403)
        self.received += 1
        # "sync" only says the channel exists; "exists" / "not_exists" say something changed.
        if request.headers.get("X-Goog-Resource-State") != "sync":
            channel.on_change()
        return web.Response(status=200)


class GoogleChangeFeed:
    """`channel_seconds` is how long a watch channel is asked to live; it is replaced
    `renew_margin` seconds before it expires, the old one stopped once the new one holds."""

    def __init__(
        self,
        provider: GoogleProvider,
        receiver: NotificationReceiver,
        *,
        channel_seconds: float = 24 * 3600,
        renew_margin: float = 600,
        gmail_poll_seconds: float = 30.0,
        gmail_topic: str | None = None,
        max_back_off: float = 30.0,
    ) -> None:
        # With a topic, Gmail pushes through users.watch and Pub/Sub; without one it is polled.
        self._gmail_topic = gmail_topic
        self._provider = provider
        self._receiver = receiver
        self._channel_seconds = channel_seconds
        self._renew_margin = min(renew_margin, channel_seconds / 2)
        self._gmail_poll_seconds = gmail_poll_seconds
        self._max_back_off = max_back_off

    async def watch(self, access: MailboxAccess, sink: PushSink) -> None:
        backoff = Backoff(maximum=self._max_back_off)
        first = True
        history: str | None = None
        channel: tuple[str, str] | None = None
        try:
            while True:
                try:
                    channel_id = f"concord-{uuid.uuid4().hex}"
                    token = secrets.token_urlsafe(24)
                    self._receiver.register(
                        channel_id,
                        token,
                        lambda: sink.changed(frozenset({Kind.CALENDAR_ITEM}), "calendar-watch"),
                    )
                    resource_id, expires = await self._provider.watch_calendar(
                        access, channel_id, self._receiver.address, token, self._channel_seconds
                    )
                    if channel is not None:
                        await self._stop(access, channel)
                    channel = (channel_id, resource_id)
                    if self._gmail_topic:
                        self._receiver.register_mailbox(
                            access.account.address,
                            lambda: sink.changed(frozenset({Kind.EMAIL}), "gmail-watch"),
                        )
                        # Renewed with every channel (a day by default; Gmail wants ≤ 7).
                        gmail_expires = await self._provider.watch_gmail(access, self._gmail_topic)
                        expires = min(expires, gmail_expires)
                    created = datetime.now(UTC)
                    kinds = frozenset({Kind.CALENDAR_ITEM, Kind.EMAIL})
                    expire_time = datetime.fromtimestamp(expires, UTC)
                    sink.state(WatchState(PushMode.STREAMING, kinds, created, expire_time))
                    sink.changed(frozenset(), "subscribed" if first else "resubscribed")
                    first = False
                    backoff.reset()
                    renew_at = expires - self._renew_margin
                    if self._gmail_topic:
                        await asyncio.sleep(max(0.0, renew_at - time.time()))
                    # Until the channel is due for replacement: Gmail's history, polled.
                    while time.time() < renew_at:
                        latest = await self._provider.history_id(access)
                        if history is not None and latest != history:
                            sink.changed(frozenset({Kind.EMAIL}), "gmail-history")
                        history = latest
                        await asyncio.sleep(
                            min(self._gmail_poll_seconds, max(0.0, renew_at - time.time()))
                        )
                except asyncio.CancelledError:
                    raise
                except (DomainError, OSError) as exc:
                    if channel is None or channel[0] != channel_id:
                        self._receiver.forget(channel_id)
                    reason = exc.reason if isinstance(exc, DomainError) else type(exc).__name__
                    _log.warning("google push for %s: %s", access.account.mailbox, reason)
                    sink.state(WatchState(PushMode.DEGRADED, reason=reason))
                    if isinstance(exc, MailboxAccessDenied):
                        # Retrying soon cannot help a refused key; the poll covers the mailbox.
                        await asyncio.sleep(self._max_back_off)
                    else:
                        await asyncio.sleep(backoff.next())
        finally:
            self._receiver.forget_mailbox(access.account.address)
            if channel is not None:
                self._receiver.forget(channel[0])
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop(access, channel))

    async def _stop(self, access: MailboxAccess, channel: tuple[str, str]) -> None:
        self._receiver.forget(channel[0])
        try:
            await self._provider.stop_channel(access, *channel)
        except DomainError as exc:
            # It expires on its own; its notifications are ignored once forgotten.
            _log.info("stopping a google channel of %s: %s", access.account.mailbox, exc.reason)
