"""The emulator's state: apps, tokens, mailboxes with their folders and items, and each
mailbox's change log, from which every delta query is answered.

Everything lives in memory behind one lock: the emulator is a test and demo double, restarted
with its seed, and a delta token is only good against the log that issued it (as on Graph,
where a token outlives no store reset either).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "App",
    "Change",
    "Folder",
    "Item",
    "Mailbox",
    "Store",
    "Subscription",
    "new_id",
    "utcnow",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_id(prefix: str = "AAMkA") -> str:
    """An opaque, URL-safe id shaped like Exchange's (immutable ids never change on a move)."""
    return prefix + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def new_change_key() -> str:
    return base64.b64encode(secrets.token_bytes(12)).decode()


@dataclass
class App:
    """An app registration: the client credentials a tenant grants."""

    tenant_id: str
    client_id: str
    client_secret: str
    # Mailboxes an application access policy keeps this app out of.
    denied: set[str] = field(default_factory=set)


@dataclass
class Folder:
    id: str
    # "calendar", "mailFolder", "contactFolder" or "todoList".
    kind: str
    display_name: str
    well_known: str = ""
    parent_id: str = ""


@dataclass
class Item:
    id: str
    # "event", "contact", "message" or "todoTask".
    kind: str
    parent: str
    data: dict[str, Any]
    change_key: str = field(default_factory=new_change_key)
    created: dt.datetime = field(default_factory=utcnow)
    modified: dt.datetime = field(default_factory=utcnow)
    # Single-value extended properties by their id, lower-cased (Graph compares ids so).
    props: dict[str, tuple[str, str]] = field(default_factory=dict)
    mime: bytes | None = None
    # Series masters: original starts (UTC, ISO) of deleted occurrences.
    cancelled: set[str] = field(default_factory=set)

    def touch(self) -> None:
        self.change_key = new_change_key()
        self.modified = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Change:
    seq: int
    item_id: str
    parent: str
    removed: bool
    # A deleted series: the ids its instances had, each reported removed by calendarView.
    instance_ids: tuple[str, ...] = ()


@dataclass
class Mailbox:
    id: str
    address: str
    display_name: str
    folders: dict[str, Folder] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    log: list[Change] = field(default_factory=list)
    # Delta tokens older than this are gone (410 syncStateNotFound).
    min_seq: int = 0
    categories: list[dict[str, str]] = field(default_factory=list)

    def well_known(self, name: str) -> Folder | None:
        name = name.lower()
        return next((f for f in self.folders.values() if f.well_known.lower() == name), None)

    def folder(self, ref: str, kind: str) -> Folder | None:
        found = self.folders.get(ref) or self.well_known(ref)
        return found if found is not None and found.kind == kind else None


@dataclass
class Subscription:
    id: str
    app: str
    mailbox: str
    resource: str
    # The item kind and folder the resource covers ("" for every folder of the kind).
    kind: str
    folder: str
    change_types: set[str]
    notification_url: str
    lifecycle_url: str
    client_state: str
    expires: dt.datetime


_WELL_KNOWN = (
    ("calendar", "calendar", "Calendar"),
    ("mailFolder", "inbox", "Inbox"),
    ("mailFolder", "sentitems", "Sent Items"),
    ("mailFolder", "drafts", "Drafts"),
    ("mailFolder", "deleteditems", "Deleted Items"),
    ("contactFolder", "contacts", "Contacts"),
    ("todoList", "defaultList", "Tasks"),
)


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.apps: dict[str, App] = {}
        # Bearer token -> (client id, expiry).
        self.tokens: dict[str, tuple[str, dt.datetime]] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._seq = 0
        # Called with (mailbox, item, change type) after each change; the app sends the
        # notifications subscriptions ask for.
        self.listeners: list[Callable[[Mailbox, Item, str], None]] = []

    # -- apps and tokens ---------------------------------------------------------------------

    def add_app(self, tenant_id: str, client_id: str, client_secret: str) -> App:
        with self.lock:
            app = App(tenant_id, client_id, client_secret)
            self.apps[client_id] = app
            return app

    def issue_token(self, client_id: str, lifetime: dt.timedelta) -> tuple[str, int]:
        with self.lock:
            token = secrets.token_urlsafe(32)
            self.tokens[token] = (client_id, utcnow() + lifetime)
            return token, int(lifetime.total_seconds())

    def app_of(self, token: str) -> App | None:
        with self.lock:
            found = self.tokens.get(token)
            if found is None or found[1] <= utcnow():
                return None
            return self.apps.get(found[0])

    # -- mailboxes ---------------------------------------------------------------------------

    def add_mailbox(self, address: str, display_name: str = "") -> Mailbox:
        with self.lock:
            existing = self.mailbox(address)
            if existing is not None:
                return existing
            box = Mailbox(str(uuid.uuid4()), address.lower(), display_name or address)
            for kind, well_known, name in _WELL_KNOWN:
                folder = Folder(new_id("AAMkF"), kind, name, well_known)
                box.folders[folder.id] = folder
            self.mailboxes[box.id] = box
            return box

    def mailbox(self, ref: str) -> Mailbox | None:
        """By id or by address (userPrincipalName), as `/users/{id | userPrincipalName}`."""
        with self.lock:
            found = self.mailboxes.get(ref)
            if found is not None:
                return found
            ref = ref.lower()
            return next((b for b in self.mailboxes.values() if b.address == ref), None)

    def add_folder(self, box: Mailbox, kind: str, name: str, parent_id: str = "") -> Folder:
        with self.lock:
            folder = Folder(new_id("AAMkF"), kind, name, "", parent_id)
            box.folders[folder.id] = folder
            return folder

    # -- items and the change log ------------------------------------------------------------

    def next_seq(self) -> int:
        with self.lock:
            self._seq += 1
            return self._seq

    @property
    def seq(self) -> int:
        return self._seq

    def record(self, box: Mailbox, item: Item, change_type: str, ids: Iterable[str] = ()) -> None:
        """Logs a change (`created`, `updated`, `deleted`) and tells the listeners."""
        with self.lock:
            removed = change_type == "deleted"
            box.log.append(Change(self.next_seq(), item.id, item.parent, removed, tuple(ids)))
        for listener in list(self.listeners):
            listener(box, item, change_type)

    def insert(self, box: Mailbox, item: Item) -> Item:
        with self.lock:
            box.items[item.id] = item
        self.record(box, item, "created")
        return item

    def updated(self, box: Mailbox, item: Item) -> None:
        with self.lock:
            item.touch()
        self.record(box, item, "updated")

    def remove(self, box: Mailbox, item: Item, instance_ids: Iterable[str] = ()) -> None:
        with self.lock:
            box.items.pop(item.id, None)
        self.record(box, item, "deleted", instance_ids)

    def changes_since(self, box: Mailbox, parents: set[str], after: int, upto: int) -> list[Change]:
        """The last change of each item of `parents` in (after, upto], in log order."""
        with self.lock:
            latest: dict[str, Change] = {}
            for change in box.log:
                if after < change.seq <= upto and change.parent in parents:
                    latest.pop(change.item_id, None)
                    latest[change.item_id] = change
            return list(latest.values())
