"""Subscriptions: the validation handshake with the receiver, change notifications for each
change they cover, lifecycle notifications, expiry. Every one is a real HTTP POST."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import secrets
import uuid
from typing import Any

import httpx

from concord_graph_emulator import resources as res
from concord_graph_emulator.store import App, Item, Mailbox, Store, Subscription, utcnow

__all__ = ["Notifier", "SubscriptionRefused"]

VALIDATION_TIMEOUT = 10.0
_CHANGE_TYPES = {"created", "updated", "deleted"}
# resource path -> (item kind, folder reference or "" for the kind's whole mailbox).
_USER = r"^/?(?:users/(?P<u>[^/]+)|me)"
_IN_FOLDER = r"(?:\('|/)(?P<f>[^'/)]+)'?\)?"
_RESOURCES = (
    (re.compile(rf"{_USER}/events$", re.I), "event", ""),
    (re.compile(rf"{_USER}/messages$", re.I), "message", ""),
    (re.compile(rf"{_USER}/mailFolders{_IN_FOLDER}/messages$", re.I), "message", "folder"),
    (re.compile(rf"{_USER}/contacts$", re.I), "contact", ""),
    (re.compile(rf"{_USER}/contactFolders{_IN_FOLDER}/contacts$", re.I), "contact", "folder"),
    (re.compile(rf"{_USER}/todo/lists/(?P<f>[^/]+)/tasks$", re.I), "todoTask", "folder"),
)
_FOLDER_KINDS = {"message": "mailFolder", "contact": "contactFolder", "todoTask": "todoList"}
_ENTITY_SETS = {
    "event": "Events",
    "message": "Messages",
    "contact": "Contacts",
    "todoTask": "Tasks",
}


class SubscriptionRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Notifier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.sent: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        store.listeners.append(self.on_change)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Receivers in tests and the devstack serve a local CA's certificate or plain HTTP.
            self._client = httpx.AsyncClient(verify=False, timeout=VALIDATION_TIMEOUT)
        return self._client

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(self, app: App, body: dict[str, Any]) -> Subscription:
        change_types = {c.strip() for c in str(body.get("changeType") or "").split(",") if c}
        if not change_types or not change_types <= _CHANGE_TYPES:
            raise SubscriptionRefused(
                "InvalidRequest", "changeType must be created/updated/deleted"
            )
        url = str(body.get("notificationUrl") or "")
        if not url.startswith(("https://", "http://")):
            raise SubscriptionRefused("InvalidRequest", "notificationUrl must be an HTTPS URL")
        lifecycle = str(body.get("lifecycleNotificationUrl") or "")
        client_state = str(body.get("clientState") or "")
        if len(client_state) > 128:
            raise SubscriptionRefused("InvalidRequest", "clientState is longer than 128 characters")
        resource = str(body.get("resource") or "")
        kind, folder, box = self._resource(resource)
        expires = self._expiry(body.get("expirationDateTime"))
        if box.address in app.denied:
            raise SubscriptionRefused("ExtensionError", "Access is denied to the mailbox.")
        sub = Subscription(
            id=str(uuid.uuid4()),
            app=app.client_id,
            mailbox=box.id,
            resource=resource,
            kind=kind,
            folder=folder,
            change_types=change_types,
            notification_url=url,
            lifecycle_url=lifecycle,
            client_state=client_state,
            expires=expires,
        )
        for target in filter(None, (url, lifecycle)):
            await self._validate(target)
        self.store.subscriptions[sub.id] = sub
        return sub

    def _resource(self, resource: str) -> tuple[str, str, Mailbox]:
        for pattern, kind, scoped in _RESOURCES:
            match = pattern.match(resource.strip())
            if match is None:
                continue
            box = self.store.mailbox(match.group("u") or "")
            if box is None:
                raise SubscriptionRefused("ExtensionError", "The mailbox does not exist.")
            if not scoped:
                return kind, "", box
            folder = box.folder(match.group("f"), _FOLDER_KINDS[kind])
            if folder is None:
                raise SubscriptionRefused("ExtensionError", "The folder does not exist.")
            return kind, folder.id, box
        raise SubscriptionRefused("InvalidRequest", f"Unsupported resource '{resource}'")

    def _expiry(self, value: Any) -> dt.datetime:
        try:
            expires = res.parse_utc(str(value))
        except ValueError:
            raise SubscriptionRefused(
                "InvalidRequest", "expirationDateTime is not a date and time"
            ) from None
        now = utcnow()
        if expires <= now:
            raise SubscriptionRefused("InvalidRequest", "expirationDateTime is in the past")
        if expires > now + dt.timedelta(minutes=10080):
            raise SubscriptionRefused(
                "InvalidRequest", "expirationDateTime exceeds the maximum of 10080 minutes"
            )
        return expires

    def renew(self, sub: Subscription, value: Any) -> None:
        sub.expires = self._expiry(value)

    async def _validate(self, url: str) -> None:
        token = secrets.token_urlsafe(24)
        try:
            answer = await self.client().post(
                url,
                params={"validationToken": token},
                headers={"Content-Type": "text/plain; charset=utf-8"},
                content=b"",
                timeout=VALIDATION_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise SubscriptionRefused(
                "ValidationError",
                f"Subscription validation request failed ({type(exc).__name__}).",
            ) from None
        if answer.status_code != 200 or answer.text != token:
            raise SubscriptionRefused(
                "ValidationError",
                "Subscription validation request failed. Notification endpoint must respond "
                "with 200 OK to validation request.",
            )

    def to_json(self, sub: Subscription) -> dict[str, Any]:
        return {
            "id": sub.id,
            "resource": sub.resource,
            "applicationId": sub.app,
            "changeType": ",".join(sorted(sub.change_types)),
            "clientState": sub.client_state or None,
            "notificationUrl": sub.notification_url,
            "lifecycleNotificationUrl": sub.lifecycle_url or None,
            "expirationDateTime": res.timestamp(sub.expires),
            "creatorId": sub.app,
            "latestSupportedTlsVersion": "v1_2",
        }

    # -- notifying ---------------------------------------------------------------------------

    def on_change(self, box: Mailbox, item: Item, change_type: str) -> None:
        now = utcnow()
        for sub in list(self.store.subscriptions.values()):
            if sub.expires <= now:
                # An expired subscription is gone, as on Graph: nothing more is sent.
                self.store.subscriptions.pop(sub.id, None)
                continue
            if sub.mailbox != box.id or sub.kind != item.kind:
                continue
            if sub.folder and sub.folder != item.parent:
                continue
            if change_type not in sub.change_types:
                continue
            entity = _ENTITY_SETS[item.kind]
            note = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": res.timestamp(sub.expires),
                "changeType": change_type,
                "resource": f"Users/{box.id}/{entity}/{item.id}",
                "resourceData": {
                    "@odata.type": f"#Microsoft.Graph.{entity[:-1]}",
                    "@odata.id": f"Users/{box.id}/{entity}/{item.id}",
                    "@odata.etag": f'W/"{item.change_key}"',
                    "id": item.id,
                },
                "clientState": sub.client_state or None,
                "tenantId": self._tenant(sub),
            }
            self._post(sub.notification_url, note)

    def lifecycle(self, sub: Subscription, event: str) -> None:
        """Sends a lifecycle notification; `subscriptionRemoved` also ends the subscription."""
        if event == "subscriptionRemoved":
            self.store.subscriptions.pop(sub.id, None)
        note = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": res.timestamp(sub.expires),
            "tenantId": self._tenant(sub),
            "clientState": sub.client_state or None,
            "lifecycleEvent": event,
        }
        self._post(sub.lifecycle_url or sub.notification_url, note)

    def _tenant(self, sub: Subscription) -> str:
        app = self.store.apps.get(sub.app)
        return app.tenant_id if app is not None else ""

    def _post(self, url: str, note: dict[str, Any]) -> None:
        self.sent.append({"url": url, **note})
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._deliver(url, note))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, note: dict[str, Any]) -> None:
        # Graph retries a failing receiver with back-off; three tries are enough for a double.
        for attempt in range(3):
            with contextlib.suppress(httpx.HTTPError):
                answer = await self.client().post(url, json={"value": [note]})
                if answer.status_code < 300:
                    return
            await asyncio.sleep(0.2 * (attempt + 1))
