"""The Microsoft Graph provider (Exchange Online): app-only tokens from msal, REST over one
pooled httpx client per trust setting, delta queries as cursors, `$batch` for what would
otherwise be one request per item, and Graph's throttling honoured per mailbox."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import msal  # type: ignore[import-untyped]
import requests

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.adapters import graph_items as gi
from concord_mail_connector.adapters.ews_items import UnreadableItem, UnwritableContent
from concord_mail_connector.domain.errors import (
    CollectionNotFound,
    MailboxAccessDenied,
    MailboxCredentialsRejected,
    ProviderThrottled,
    ProviderUnavailable,
)
from concord_mail_connector.domain.model import Cursor, Kind, default_collection
from concord_mail_connector.domain.provider import (
    LINK_ID_PATH,
    Collection,
    FoundItems,
    ItemFailure,
    MailboxAccess,
    ProviderChangePage,
    Write,
    WriteOperation,
    WriteResult,
)

__all__ = ["GraphProvider", "SubscriptionRefused"]

log = logging.getLogger(__name__)

GRAPH_URL = "https://graph.microsoft.com/v1.0"
AUTHORITY_HOST = "https://login.microsoftonline.com"
SCOPES = ["https://graph.microsoft.com/.default"]
# Graph's own limits: 20 requests a batch; 4 requests in flight per app and mailbox.
MAX_BATCH = 20
MAILBOX_CONCURRENCY = 4
# Graph pages a delta query by `Prefer: odata.maxpagesize`; 1,000 is the most it honours.
MAX_PAGE = 1000
DEFAULT_PAGE = 100
# MIME carried by one listed page at most (as the EWS provider: gRPC answers are 4 MiB).
MIME_PAGE_BYTES = 3 * 1024 * 1024
SHARE_CATEGORY = "Salesforce"
_DEDICATED = {Kind.CONTACT: "Salesforce Contacts", Kind.EMAIL: "Salesforce Emails"}
_KIND_ENUMS = {
    Kind.CALENDAR_ITEM: r.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: r.OBJECT_KIND_TASK,
    Kind.CONTACT: r.OBJECT_KIND_CONTACT,
    Kind.EMAIL: r.OBJECT_KIND_EMAIL,
}
_KINDS = {v: k for k, v in _KIND_ENUMS.items()}
_CURSOR = "graph1:"
_DONE = "_done"
# Ids that survive moves between folders; every time in UTC, so instants are exact.
_PREFER = 'IdType="ImmutableId", outlook.timezone="UTC"'
_EVENT_SELECT = ",".join(
    [
        "id", "changeKey", "subject", "body", "start", "end", "isAllDay", "sensitivity",
        "showAs", "location", "attendees", "organizer", "categories", "recurrence",
        "reminderMinutesBeforeStart", "isReminderOn", "iCalUId", "isCancelled", "type",
        "seriesMasterId", "originalStart", "originalStartTimeZone", "originalEndTimeZone",
        "onlineMeetingUrl", "lastModifiedDateTime", "cancelledOccurrences",
    ]
)  # fmt: skip
_WELL_KNOWN_MAIL = {"Inbox", "Sent Items", "Drafts", "Deleted Items", "Outbox", "Junk Email",
                    "Archive", "Conversation History", "Clutter"}  # fmt: skip


def _expand(*props: str) -> str:
    ids = " or ".join(f"id eq '{p}'" for p in props)
    return f"singleValueExtendedProperties($filter={ids})"


def _quote(value: str) -> str:
    return value.replace("'", "''")


@dataclass(frozen=True)
class _Source:
    """One delta query of a collection: its key in the cursor, and the category that selects
    its items (None: every item)."""

    key: str
    url: str
    category: str | None
    folder: str


@dataclass
class _Mailbox:
    """What the provider keeps per mailbox: its throttling state and resolved folder ids."""

    gate: asyncio.Semaphore
    busy_until: float = 0.0
    folders: dict[str, str] = field(default_factory=dict)
    throttled: int = 0
    token_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Answer:
    """One answer, from a request of its own or from a `$batch`."""

    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    @property
    def code(self) -> str:
        if isinstance(self.body, dict):
            return str((self.body.get("error") or {}).get("code") or "")
        return ""

    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


class SubscriptionRefused(Exception):
    """Graph would not subscribe (most often: the receiver failed the validation handshake)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Lost(Exception):
    """A write's answer never came back (a 5xx other than 503, or a dropped connection)."""


class GraphProvider:
    """`max_back_off` caps how long one call waits out 429/503 before answering
    RESOURCE_EXHAUSTED; `window_days` is the calendar sync window around now (calendarView
    delta needs one)."""

    def __init__(
        self,
        *,
        max_back_off: float = 30.0,
        default_back_off: float = 1.0,
        request_timeout: float = 30.0,
        window_days: tuple[int, int] = (365, 1826),
        ca_bundle: str | None = None,
    ) -> None:
        # A CA file to trust instead of the system's (an emulator's own CA); None: the system's.
        self._ca_bundle = ca_bundle
        self._max_back_off = max_back_off
        self._default_back_off = default_back_off
        self._timeout = request_timeout
        self._window_days = window_days
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._apps: dict[tuple[str, ...], Any] = {}
        self._sessions: list[requests.Session] = []
        self._mailboxes: dict[str, _Mailbox] = {}
        # Graph calls made, by kind (bench and the mailbox dashboard read these).
        self.calls: dict[str, int] = {"requests": 0, "batched": 0, "throttled": 0}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        for session in self._sessions:
            session.close()
        self._sessions.clear()
        self._apps.clear()

    # -- the port ---------------------------------------------------------------------------

    async def list_changes(
        self,
        mailbox: MailboxAccess,
        kind: Kind,
        cursor: Cursor,
        page_size: int,
        deadline: float | None = None,
        include_content: bool = False,
        # Listed with items all the same (see MailProvider).
        refs_only: bool = False,
        known: Mapping[str, str] | None = None,
    ) -> ProviderChangePage:
        ends = _ends(deadline)
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        sources = await self._sources(mailbox, kind, cursor.collection, ends)
        states = _decode_states(cursor.token, {s.key for s in sources})
        if states is None:
            return _resync(cursor)
        listed: list[tuple[dict[str, Any], _Source]] = []
        has_more = False
        # Sources that reached their deltaLink earlier in this round (a page before ran out of
        # budget after them): not asked again until the round is over.
        done = set(json.loads(states.pop(_DONE, "[]")))
        for source in sources:
            if source.key in done:
                continue
            budget = size - len(listed)
            if budget <= 0:
                has_more = True
                break
            answer = await self._get(
                mailbox, states.get(source.key) or source.url, ends, page=budget
            )
            if answer.status == 410:
                # The deltaLink expired or the server lost its state: list from scratch.
                return _resync(cursor)
            if answer.status == 404 and cursor.collection == default_collection(kind):
                # The user deleted a dedicated folder: forget it (the next listing makes it
                # again) and list from scratch; its items went with it.
                self._state(mailbox).folders.pop(kind.value, None)
                return _resync(cursor)
            self._raise_for(mailbox, answer, cursor.collection)
            body = answer.json()
            listed += [(v, source) for v in body.get("value") or ()]
            if body.get("@odata.nextLink"):
                states[source.key] = str(body["@odata.nextLink"])
                has_more = True
                break
            states[source.key] = str(body.get("@odata.deltaLink") or "")
            done.add(source.key)
        if has_more and done:
            states[_DONE] = json.dumps(sorted(done))
        changes = await self._changes(
            mailbox, kind, cursor.collection, listed, include_content, ends
        )
        return ProviderChangePage(
            changes=changes,
            next_cursor=Cursor(cursor.collection, _encode_states(states)),
            has_more=has_more,
        )

    async def get_items(
        self,
        mailbox: MailboxAccess,
        refs: Sequence[r.ItemRef],
        deadline: float | None = None,
        link_ids: Sequence[str] = (),
        kind: Kind | None = None,
    ) -> FoundItems:
        ends = _ends(deadline)
        found: list[r.MailItem] = []
        missing: list[r.ItemRef] = []
        failures: list[ItemFailure] = []
        resources: list[tuple[r.ItemRef, dict[str, Any]]] = []
        if refs:
            requests_ = [await self._item_request(mailbox, ref, ends) for ref in refs]
            answers = await self._batch(mailbox, requests_, ends)
            for ref, answer in zip(refs, answers, strict=True):
                if answer.status in (400, 404):
                    missing.append(ref)
                    continue
                self._raise_for(mailbox, answer, ref.collection)
                resources.append((ref, answer.json()))
        if link_ids and kind is not None:
            hits = await self._find_by_link_ids(mailbox, kind, list(link_ids), ends)
            collection = default_collection(kind)
            resources += [
                (r.ItemRef(kind=_KIND_ENUMS[kind], collection=collection), hit)
                for hit in hits.values()
            ]
        mimes = await self._mime(
            mailbox,
            [res for ref, res in resources if ref.kind == r.OBJECT_KIND_EMAIL],
            ends,
            budget=None,
        )
        for ref, resource in resources:
            converted = _convert(
                resource, ref.kind, ref.collection, "", mimes.get(resource.get("id", ""))
            )
            if isinstance(converted, r.ItemProblem):
                failures.append(
                    ItemFailure(gi.item_ref(resource, ref.kind, ref.collection), converted)
                )
            else:
                found.append(converted)
        return FoundItems(found, missing, failures)

    async def apply_items(
        self, mailbox: MailboxAccess, writes: Sequence[Write], deadline: float | None = None
    ) -> list[WriteResult]:
        """Consecutive writes of one operation go out as `$batch`es of up to 20 (creates after
        one batch of link-id lookups), so runs keep the input order."""
        ends = _ends(deadline)
        results: list[WriteResult] = []
        runs: list[list[Write]] = []
        for write in writes:
            if runs and runs[-1][0].operation == write.operation:
                runs[-1].append(write)
            else:
                runs.append([write])
        for index, run in enumerate(runs):
            try:
                if run[0].operation == WriteOperation.CREATE:
                    results += await self._create(mailbox, run, ends)
                else:
                    results += await self._change(mailbox, run, ends)
            except (ProviderThrottled, ProviderUnavailable, _Lost) as exc:
                # Safe to resend with the same link ids: creates find their item first (and
                # carry a transactionId), updates carry the version they were made against.
                reason = getattr(exc, "reason", "PROVIDER_UNAVAILABLE")
                message = getattr(exc, "message", "the server's answer was lost; send again")
                done = {id(w) for w in writes[: len(results)]}
                for rest in (w for later in runs[index:] for w in later):
                    if id(rest) in done:
                        continue
                    results.append(
                        WriteResult(
                            rest.link_id,
                            r.WRITE_STATUS_RETRYABLE,
                            error_code=reason,
                            error_message=message,
                        )
                    )
                break
        return results

    async def list_collections(
        self, mailbox: MailboxAccess, kind: Kind | None, deadline: float | None = None
    ) -> list[Collection]:
        ends = _ends(deadline)
        user = self._user(mailbox)
        found = [
            Collection(default_collection(Kind.CALENDAR_ITEM), "Calendar", Kind.CALENDAR_ITEM, True)
        ]
        lists = await self._all(mailbox, f"{user}/todo/lists", ends)
        for entry in lists:
            default = entry.get("wellknownListName") == "defaultList"
            key = default_collection(Kind.TASK) if default else str(entry["id"])
            found.append(Collection(key, str(entry.get("displayName") or ""), Kind.TASK, default))
        for path, folder_kind in (("contactFolders", Kind.CONTACT), ("mailFolders", Kind.EMAIL)):
            for entry in await self._all(mailbox, f"{user}/{path}", ends):
                name = str(entry.get("displayName") or "")
                if folder_kind == Kind.EMAIL and name in _WELL_KNOWN_MAIL:
                    continue
                default = name == _DEDICATED[folder_kind]
                key = default_collection(folder_kind) if default else str(entry["id"])
                found.append(Collection(key, name, folder_kind, default))
        return [c for c in found if kind is None or c.kind == kind]

    # -- change notifications (push_graph's primitives) --------------------------------------

    async def subscribe(
        self,
        mailbox: MailboxAccess,
        kind: Kind,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires: dt.datetime,
    ) -> tuple[str, dt.datetime]:
        """A change-notification subscription on the collection Concord syncs for `kind`; Graph
        validates the receiver (a POST with a validation token) before it answers."""
        user = self._user(mailbox)
        if kind == Kind.CALENDAR_ITEM:
            resource = f"{user}/events"
        elif kind == Kind.EMAIL:
            # Mailbox-wide: the dedicated folder, Inbox and Sent Items are all shared from.
            resource = f"{user}/messages"
        else:
            resource = await self._collection_url(mailbox, kind, default_collection(kind), None)
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": resource,
            "expirationDateTime": expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "clientState": client_state,
        }
        answer = await self._send(mailbox, "POST", "subscriptions", None, body)
        if answer.status == 400:
            raise SubscriptionRefused(answer.code or "400")
        self._raise_for(mailbox, answer, "")
        made = answer.json()
        return str(made["id"]), _parse_utc(str(made["expirationDateTime"]))

    async def renew_subscription(
        self, mailbox: MailboxAccess, subscription: str, expires: dt.datetime
    ) -> dt.datetime | None:
        """The new expiry; None when Graph no longer has the subscription (re-create it)."""
        body = {"expirationDateTime": expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        answer = await self._send(mailbox, "PATCH", f"subscriptions/{subscription}", None, body)
        if answer.status == 404:
            return None
        self._raise_for(mailbox, answer, "")
        return _parse_utc(str(answer.json()["expirationDateTime"]))

    async def delete_subscription(self, mailbox: MailboxAccess, subscription: str) -> None:
        answer = await self._send(mailbox, "DELETE", f"subscriptions/{subscription}", None)
        if answer.status != 404:
            self._raise_for(mailbox, answer, "")

    def throttle_budget(self, mailbox: str) -> dict[str, float]:
        """For the mailbox dashboard: requests free now, and the seconds still to wait."""
        state = self._mailboxes.get(mailbox)
        if state is None:
            return {"free": MAILBOX_CONCURRENCY, "retry_after": 0.0, "throttled": 0}
        wait = max(0.0, state.busy_until - time.monotonic())
        return {
            "free": state.gate._value,
            "retry_after": round(wait, 3),
            "throttled": state.throttled,
        }

    # -- reading ----------------------------------------------------------------------------

    async def _changes(
        self,
        mailbox: MailboxAccess,
        kind: Kind,
        collection: str,
        listed: list[tuple[dict[str, Any], _Source]],
        include_content: bool,
        ends: float | None,
    ) -> list[r.MailChange]:
        kind_enum = _KIND_ENUMS[kind]
        out: dict[str, r.MailChange] = {}
        live = [(v, s) for v, s in listed if "@removed" not in v]
        if kind == Kind.EMAIL:
            live = [
                (v, s)
                for v, s in live
                if s.category is None or s.category in (v.get("categories") or ())
            ]
        kept = {id(v) for v, _ in live}
        mimes: dict[str, bytes] = {}
        if include_content and kind == Kind.EMAIL:
            mimes = await self._mime(mailbox, [v for v, _ in live], ends, budget=MIME_PAGE_BYTES)
        masters: dict[str, dict[str, Any]] = {}
        if kind == Kind.CALENDAR_ITEM:
            masters = await self._masters(mailbox, [v for v, _ in live], ends)
        for value, source in listed:
            native = str(value.get("id") or "")
            if "@removed" in value:
                if source.category is not None:
                    # Which deleted message carried the category is unknowable now, and a shared
                    # email stays in Salesforce anyway: listing every Inbox delete is noise.
                    continue
                ref = r.ItemRef(kind=kind_enum, native_id=native, collection=collection)
                out[native] = r.MailChange(type=r.CHANGE_TYPE_DELETE, ref=ref)
                continue
            if id(value) not in kept:
                continue
            if kind == Kind.CALENDAR_ITEM and value.get("type") == "occurrence":
                # An unchanged occurrence is its series: the master (read below) stands for it.
                master = masters.get(str(value.get("seriesMasterId")))
                if master is not None:
                    out[str(master["id"])] = _upsert(master, kind_enum, collection, "")
                continue
            if kind == Kind.CALENDAR_ITEM and value.get("type") == "exception":
                master = masters.get(str(value.get("seriesMasterId")))
                if master is not None:
                    out[str(master["id"])] = _upsert(master, kind_enum, collection, "")
            out.pop(native, None)
            out[native] = _upsert(value, kind_enum, collection, source.folder, mimes.get(native))
        return list(out.values())

    async def _masters(
        self, mailbox: MailboxAccess, values: list[dict[str, Any]], ends: float | None
    ) -> dict[str, dict[str, Any]]:
        """calendarView lists a series as its instances; the master (its pattern, cancelled
        occurrences, link id) is read once per page for each series, in `$batch`es."""
        ids = list(
            dict.fromkeys(str(v["seriesMasterId"]) for v in values if v.get("seriesMasterId"))
        )
        if not ids:
            return {}
        user = self._user(mailbox)
        query = urlencode({"$select": _EVENT_SELECT, "$expand": _expand(gi.LINK_ID_PROPERTY)})
        answers = await self._batch(
            mailbox, [{"method": "GET", "url": f"{user}/events/{i}?{query}"} for i in ids], ends
        )
        found: dict[str, dict[str, Any]] = {}
        for master_id, answer in zip(ids, answers, strict=True):
            if answer.status == 404:
                continue  # deleted since the page was listed: the next page says so
            self._raise_for(mailbox, answer, "")
            found[master_id] = answer.json()
        return found

    async def _mime(
        self,
        mailbox: MailboxAccess,
        messages: list[dict[str, Any]],
        ends: float | None,
        budget: int | None,
    ) -> dict[str, bytes]:
        """`$value` of messages in `$batch`es, as far as `budget` (by PidTagMessageSize) allows;
        messages past it are listed without MIME, which get_items reads."""
        wanted: list[str] = []
        left = budget
        for message in messages:
            if left is not None:
                size = gi.message_size(message)
                if size > left:
                    continue
                left -= size
            wanted.append(str(message["id"]))
        if not wanted:
            return {}
        user = self._user(mailbox)
        answers = await self._batch(
            mailbox, [{"method": "GET", "url": f"{user}/messages/{i}/$value"} for i in wanted], ends
        )
        out: dict[str, bytes] = {}
        for message_id, answer in zip(wanted, answers, strict=True):
            if answer.status == 404:
                continue
            self._raise_for(mailbox, answer, "")
            if isinstance(answer.body, bytes):
                out[message_id] = answer.body
        return out

    async def _item_request(
        self, mailbox: MailboxAccess, ref: r.ItemRef, ends: float | None
    ) -> dict[str, Any]:
        base = await self._item_url(mailbox, ref, ends)
        if ref.kind == r.OBJECT_KIND_CALENDAR_ITEM:
            query = {"$select": _EVENT_SELECT, "$expand": _expand(gi.LINK_ID_PROPERTY)}
        elif ref.kind == r.OBJECT_KIND_EMAIL:
            query = {"$expand": _expand(gi.LINK_ID_PROPERTY, gi.SIZE_PROPERTY)}
        elif ref.kind == r.OBJECT_KIND_TASK:
            query = {}
        else:
            query = {"$expand": _expand(gi.LINK_ID_PROPERTY)}
        return {"method": "GET", "url": f"{base}?{urlencode(query)}" if query else base}

    async def _item_url(self, mailbox: MailboxAccess, ref: r.ItemRef, ends: float | None) -> str:
        user = self._user(mailbox)
        native = quote(ref.native_id, safe="")
        if ref.kind == r.OBJECT_KIND_CALENDAR_ITEM:
            return f"{user}/events/{native}"
        if ref.kind == r.OBJECT_KIND_CONTACT:
            return f"{user}/contacts/{native}"
        if ref.kind == r.OBJECT_KIND_EMAIL:
            return f"{user}/messages/{native}"
        task_list = await self._task_list(
            mailbox, ref.collection or default_collection(Kind.TASK), ends
        )
        return f"{user}/todo/lists/{task_list}/tasks/{native}"

    async def _find_by_link_ids(
        self, mailbox: MailboxAccess, kind: Kind, link_ids: list[str], ends: float | None
    ) -> dict[str, dict[str, Any]]:
        """Items of the kind's default collection by link id: one filtered query per link id,
        in `$batch`es (To Do tasks, which have no extended properties, by one listing)."""
        link_ids = list(dict.fromkeys(link_ids))
        base = await self._collection_url(mailbox, kind, default_collection(kind), ends)
        if kind == Kind.TASK:
            tasks = await self._all(mailbox, base, ends)
            return {lid: t for t in tasks if (lid := gi.link_id_of(t)) in link_ids}
        expand = _expand(gi.LINK_ID_PROPERTY)
        select = {"$select": _EVENT_SELECT} if kind == Kind.CALENDAR_ITEM else {}
        requests_ = []
        for link_id in link_ids:
            flt = (
                f"singleValueExtendedProperties/any(ep: ep/id eq '{gi.LINK_ID_PROPERTY}'"
                f" and ep/value eq '{_quote(link_id)}')"
            )
            query = urlencode({"$filter": flt, "$expand": expand, **select})
            requests_.append({"method": "GET", "url": f"{base}?{query}"})
        answers = await self._batch(mailbox, requests_, ends)
        found: dict[str, dict[str, Any]] = {}
        for link_id, answer in zip(link_ids, answers, strict=True):
            self._raise_for(mailbox, answer, "")
            hits = answer.json().get("value") or []
            if hits:
                # Two items with one link id would be a bug elsewhere; the first one wins.
                found[link_id] = hits[0]
        return found

    # -- writing ----------------------------------------------------------------------------

    async def _create(
        self, mailbox: MailboxAccess, run: list[Write], ends: float | None
    ) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        by_kind: dict[Kind, list[int]] = {}
        for n, write in enumerate(run):
            kind = _KINDS.get(write.item.ref.kind or _payload_kind(write.item))
            if kind is None or kind == Kind.EMAIL:
                results[n] = _invalid(write, "emails are shared one way; they are never created")
                continue
            by_kind.setdefault(kind, []).append(n)
        for kind, indexes in by_kind.items():
            # A create the caller proved new has no item to find: on a first sync that saves
            # one lookup per item (a `$batch` per 20).
            unproved = [run[n].link_id for n in indexes if not run[n].known_new]
            existing = (
                await self._find_by_link_ids(mailbox, kind, unproved, ends) if unproved else {}
            )
            collection = default_collection(kind)
            pending: list[tuple[int, dict[str, Any]]] = []
            first_of: dict[str, int] = {}
            for n in indexes:
                write = run[n]
                if write.link_id in existing:
                    ref = gi.item_ref(existing[write.link_id], _KIND_ENUMS[kind], collection)
                    results[n] = WriteResult(
                        write.link_id, r.WRITE_STATUS_OK, ref, already_applied=True
                    )
                    continue
                if write.link_id in first_of:
                    continue  # the same create twice in one call: answered by the first
                try:
                    body = gi.to_graph(write.item)
                except (UnwritableContent, ValueError) as exc:
                    results[n] = _invalid(
                        write, str(exc) if isinstance(exc, UnwritableContent) else ""
                    )
                    continue
                if kind == Kind.TASK:
                    body["linkedResources"] = [gi.linked_resource(write.link_id)]
                else:
                    body["singleValueExtendedProperties"] = [
                        {"id": gi.LINK_ID_PROPERTY, "value": write.link_id}
                    ]
                if kind == Kind.CALENDAR_ITEM:
                    # Graph answers a repeated POST with the same transactionId with the first
                    # event: a second guard beside the link-id lookup.
                    body["transactionId"] = str(
                        uuid.uuid5(
                            uuid.NAMESPACE_URL, f"concord:{mailbox.account.mailbox}:{write.link_id}"
                        )
                    )
                first_of[write.link_id] = n
                url = await self._collection_url(
                    mailbox, kind, write.collection or collection, ends
                )
                pending.append((n, {"method": "POST", "url": url, "body": body}))
            answers = await self._batch(mailbox, [req for _, req in pending], ends, writes=True)
            for (n, _), answer in zip(pending, answers, strict=True):
                results[n] = self._written(mailbox, run[n], answer, _KIND_ENUMS[kind], collection)
            for n in indexes:
                if n not in results:
                    first = results[first_of[run[n].link_id]]
                    results[n] = WriteResult(
                        run[n].link_id,
                        first.status,
                        first.ref,
                        first.error_code,
                        first.error_message,
                        already_applied=first.status == r.WRITE_STATUS_OK,
                    )
        return [results[n] for n in range(len(run))]

    async def _change(
        self, mailbox: MailboxAccess, run: list[Write], ends: float | None
    ) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        pending: list[tuple[int, dict[str, Any]]] = []
        # To Do tasks whose update names LINK_ID_PATH, by the task's URL: their link id goes
        # in a linked resource once the task's PATCH (if any) is done (`_relink_task`).
        relinks: dict[int, str] = {}
        for n, write in enumerate(run):
            url = await self._item_url(mailbox, write.ref, ends)
            if write.operation == WriteOperation.DELETE:
                pending.append((n, {"method": "DELETE", "url": url}))
                continue
            try:
                body = gi.update_body(write.item, write.update_mask, write.link_id)
            except (UnwritableContent, ValueError) as exc:
                results[n] = _invalid(write, str(exc) if isinstance(exc, UnwritableContent) else "")
                continue
            if write.ref.kind == r.OBJECT_KIND_TASK and LINK_ID_PATH in write.update_mask:
                relinks[n] = url
                if not body:
                    continue
            headers = {"If-Match": f'W/"{write.ref.version}"'} if write.ref.version else {}
            pending.append((n, {"method": "PATCH", "url": url, "body": body, "headers": headers}))
        answers = await self._batch(mailbox, [req for _, req in pending], ends, writes=True)
        for (n, _), answer in zip(pending, answers, strict=True):
            write = run[n]
            results[n] = self._written(mailbox, write, answer, write.ref.kind, write.ref.collection)
        for n, url in relinks.items():
            patched = results.get(n)
            if patched is None or patched.status == r.WRITE_STATUS_OK:
                results[n] = await self._relink_task(mailbox, run[n], url, patched is None, ends)
        return [results[n] for n in range(len(run))]

    async def _relink_task(
        self, mailbox: MailboxAccess, write: Write, url: str, check: bool, ends: float | None
    ) -> WriteResult:
        """Stores a To Do task's link id in its Concord linked resource, made if it has none:
        To Do tasks have no extended properties, and a task's PATCH writes no linked resource.
        Two requests more than the task's own (three with `check`: no PATCH carried the
        write's version, so the task is read to compare it), which is why only an update that
        names LINK_ID_PATH stores a task's link id."""
        kind, collection = write.ref.kind, write.ref.collection
        if check:
            task = await self._get(mailbox, url, ends)
            self._raise_for(mailbox, task, "")
            if task.status >= 300:
                return self._written(mailbox, write, task, kind, collection)
            if write.ref.version and gi.item_ref(task.json(), kind, "").version != (
                write.ref.version
            ):
                return WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_CONFLICT,
                    error_code="ErrorIrresolvableConflict",
                    error_message="the item changed since the given version",
                )
        listed = await self._get(mailbox, f"{url}/linkedResources", ends)
        self._raise_for(mailbox, listed, "")
        if listed.status >= 300:
            return self._written(mailbox, write, listed, kind, collection)
        ours = [
            x
            for x in listed.json().get("value") or ()
            if x.get("applicationName") == gi.LINKED_APPLICATION
        ]
        if ours:
            lid = quote(str(ours[0].get("id") or ""), safe="")
            request = {
                "method": "PATCH",
                "url": f"{url}/linkedResources/{lid}",
                "body": {"externalId": write.link_id},
            }
        else:
            request = {
                "method": "POST",
                "url": f"{url}/linkedResources",
                "body": gi.linked_resource(write.link_id),
            }
        [stored] = await self._batch(mailbox, [request], ends, writes=True)
        if stored.status >= 300:
            return self._written(mailbox, write, stored, kind, collection)
        # The task as it now is: the answer's version is what a later listing names.
        return self._written(mailbox, write, await self._get(mailbox, url, ends), kind, collection)

    def _written(
        self,
        mailbox: MailboxAccess,
        write: Write,
        answer: _Answer,
        kind: r.ObjectKind.ValueType,
        collection: str,
    ) -> WriteResult:
        status = answer.status
        if status < 300:
            ref = None
            if isinstance(answer.body, dict) and answer.body.get("id"):
                ref = gi.item_ref(answer.body, kind, collection)
                ref.link_id = write.link_id
            elif write.operation == WriteOperation.DELETE:
                ref = r.ItemRef(kind=kind, native_id=write.ref.native_id, collection=collection)
            return WriteResult(write.link_id, r.WRITE_STATUS_OK, ref)
        if status in (401, 403):
            self._raise_for(mailbox, answer, collection)
        table = {
            412: (r.WRITE_STATUS_CONFLICT, "the item changed since the given version"),
            409: (r.WRITE_STATUS_CONFLICT, "the item changed since the given version"),
            404: (r.WRITE_STATUS_NOT_FOUND, "the item no longer exists"),
            400: (r.WRITE_STATUS_INVALID, "the server refused the content"),
            422: (r.WRITE_STATUS_INVALID, "the server refused the content"),
        }
        found = table.get(status)
        if found is None:
            found = (
                (r.WRITE_STATUS_RETRYABLE, "the server did not apply this write; send it again")
                if status >= 500 or status == 429
                else (r.WRITE_STATUS_FAILED, "the server refused the write")
            )
        return WriteResult(
            write.link_id, found[0], error_code=answer.code or str(status), error_message=found[1]
        )

    # -- collections ------------------------------------------------------------------------

    async def _sources(
        self, mailbox: MailboxAccess, kind: Kind, collection: str, ends: float | None
    ) -> list[_Source]:
        user = self._user(mailbox)
        if kind == Kind.CALENDAR_ITEM:
            now = time.time()
            start = time.strftime(
                "%Y-%m-%dT00:00:00Z", time.gmtime(now - self._window_days[0] * 86400)
            )
            end = time.strftime(
                "%Y-%m-%dT00:00:00Z", time.gmtime(now + self._window_days[1] * 86400)
            )
            query = urlencode(
                {
                    "startDateTime": start,
                    "endDateTime": end,
                    "$expand": _expand(gi.LINK_ID_PROPERTY),
                }
            )
            return [_Source("", f"{user}/calendarView/delta?{query}", None, "Calendar")]
        base = await self._collection_url(mailbox, kind, collection, ends)
        if kind == Kind.TASK:
            return [_Source("", f"{base}/delta", None, "")]
        props = (
            (gi.LINK_ID_PROPERTY, gi.SIZE_PROPERTY)
            if kind == Kind.EMAIL
            else (gi.LINK_ID_PROPERTY,)
        )
        query = urlencode({"$expand": _expand(*props)})
        folder = _DEDICATED.get(kind, "") if collection == default_collection(kind) else ""
        sources = [_Source("", f"{base}/delta?{query}", None, folder)]
        if kind == Kind.EMAIL and collection == default_collection(kind):
            # Shared emails: the dedicated folder, plus Inbox and Sent Items messages that carry
            # the share category (filtered here: a delta query takes no category filter).
            for key, name in (("inbox", "Inbox"), ("sentitems", "Sent Items")):
                url = f"{user}/mailFolders/{key}/messages/delta?{query}"
                sources.append(_Source(key, url, SHARE_CATEGORY, name))
        return sources

    async def _collection_url(
        self, mailbox: MailboxAccess, kind: Kind, collection: str, ends: float | None
    ) -> str:
        user = self._user(mailbox)
        if kind == Kind.CALENDAR_ITEM:
            return f"{user}/events"
        if kind == Kind.TASK:
            return f"{user}/todo/lists/{await self._task_list(mailbox, collection, ends)}/tasks"
        path = {
            Kind.CONTACT: ("contactFolders", "contacts"),
            Kind.EMAIL: ("mailFolders", "messages"),
        }[kind]
        if collection != default_collection(kind):
            return f"{user}/{path[0]}/{quote(collection, safe='')}/{path[1]}"
        folder = await self._dedicated(mailbox, kind, path[0], ends)
        return f"{user}/{path[0]}/{folder}/{path[1]}"

    async def _dedicated(
        self, mailbox: MailboxAccess, kind: Kind, path: str, ends: float | None
    ) -> str:
        """The folder the product files mirrored contacts and shared emails in; made on first
        use, since a new mailbox has neither."""
        state = self._state(mailbox)
        known = state.folders.get(kind.value)
        if known:
            return known
        user = self._user(mailbox)
        name = _DEDICATED[kind]
        query = urlencode({"$filter": f"displayName eq '{_quote(name)}'"})
        answer = await self._get(mailbox, f"{user}/{path}?{query}", ends)
        self._raise_for(mailbox, answer, "")
        hits = answer.json().get("value") or []
        if hits:
            folder_id = str(hits[0]["id"])
        else:
            made = await self._send(mailbox, "POST", f"{user}/{path}", ends, {"displayName": name})
            if made.status == 409:
                # Made by a concurrent call since the lookup: look again.
                state.folders.pop(kind.value, None)
                return await self._dedicated(mailbox, kind, path, ends)
            self._raise_for(mailbox, made, "")
            folder_id = str(made.json()["id"])
        state.folders[kind.value] = folder_id
        return folder_id

    async def _task_list(self, mailbox: MailboxAccess, collection: str, ends: float | None) -> str:
        if collection and collection != default_collection(Kind.TASK):
            return quote(collection, safe="")
        state = self._state(mailbox)
        known = state.folders.get(Kind.TASK.value)
        if known:
            return known
        lists = await self._all(mailbox, f"{self._user(mailbox)}/todo/lists", ends)
        found = next((x for x in lists if x.get("wellknownListName") == "defaultList"), None)
        if found is None:
            raise CollectionNotFound(mailbox.account.mailbox, collection)
        state.folders[Kind.TASK.value] = str(found["id"])
        return str(found["id"])

    async def _all(
        self, mailbox: MailboxAccess, url: str, ends: float | None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            answer = await self._get(mailbox, next_url, ends)
            self._raise_for(mailbox, answer, "")
            body = answer.json()
            out += body.get("value") or []
            next_url = body.get("@odata.nextLink")
        return out

    # -- HTTP -------------------------------------------------------------------------------

    def _user(self, mailbox: MailboxAccess) -> str:
        return f"users/{quote(mailbox.account.address, safe='@')}"

    def _state(self, mailbox: MailboxAccess) -> _Mailbox:
        name = mailbox.account.mailbox
        state = self._mailboxes.get(name)
        if state is None:
            state = self._mailboxes[name] = _Mailbox(asyncio.Semaphore(MAILBOX_CONCURRENCY))
        return state

    def _graph_url(self, mailbox: MailboxAccess) -> str:
        return str(mailbox.account.settings.get("graph_url") or GRAPH_URL).rstrip("/")

    def _client(self) -> httpx.AsyncClient:
        client = self._clients.get("")
        if client is None:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self._ca_bundle) if self._ca_bundle else True
            )
            client = httpx.AsyncClient(
                verify=verify,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            self._clients[""] = client
        return client

    def _msal(self, mailbox: MailboxAccess) -> Any:
        settings = mailbox.account.settings
        tenant = str(settings.get("tenant_id") or "")
        client_id = str(settings.get("client_id") or "")
        if not tenant or not client_id or not mailbox.secret:
            raise MailboxCredentialsRejected(mailbox.account.mailbox)
        host = str(settings.get("authority_url") or AUTHORITY_HOST).rstrip("/")
        authority = f"{host}/{tenant}"
        thumbprint = str(settings.get("certificate_thumbprint") or "")
        secret = mailbox.secret.decode()
        key = (authority, client_id, thumbprint, hashlib.sha256(mailbox.secret).hexdigest())
        app = self._apps.get(key)
        if app is None:
            session = requests.Session()
            self._sessions.append(session)
            if self._ca_bundle:
                # requests lets REQUESTS_CA_BUNDLE override a session's own CA file unless the
                # environment is ignored; the configured CA is what this authority needs.
                session.trust_env = False
                session.verify = self._ca_bundle
            credential: Any = (
                {"private_key": secret, "thumbprint": thumbprint} if thumbprint else secret
            )
            app = msal.ConfidentialClientApplication(
                client_id,
                client_credential=credential,
                authority=authority,
                http_client=session,
                # Not login.microsoftonline.com's instance discovery: the authority is given.
                instance_discovery=False,
                timeout=self._timeout,
            )
            self._apps[key] = app
        return app

    async def _token(self, mailbox: MailboxAccess, fresh: bool = False) -> str:
        """An app-only token; msal serves it from its cache until it nears expiry."""

        def acquire() -> dict[str, Any]:
            app = self._msal(mailbox)
            if fresh:
                app.remove_tokens_for_client()
            result: dict[str, Any] = app.acquire_token_for_client(scopes=SCOPES)
            return result

        # One acquisition at a time per mailbox: the first fills msal's cache, the ones waiting
        # behind it are served from there instead of each asking the token endpoint.
        try:
            async with self._state(mailbox).token_lock:
                result = await asyncio.to_thread(acquire)
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(mailbox.account.mailbox, type(exc).__name__) from None
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error") or "")
        if error in ("invalid_client", "unauthorized_client", "invalid_request"):
            raise MailboxCredentialsRejected(mailbox.account.mailbox)
        raise ProviderUnavailable(mailbox.account.mailbox, f"token: {error or 'no token'}")

    async def _get(
        self, mailbox: MailboxAccess, url: str, ends: float | None, page: int | None = None
    ) -> _Answer:
        headers = {"Prefer": f"{_PREFER}, odata.maxpagesize={page}"} if page else None
        return await self._send(mailbox, "GET", url, ends, headers=headers)

    async def _send(
        self,
        mailbox: MailboxAccess,
        method: str,
        url: str,
        ends: float | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> _Answer:
        """One request, waiting out 429/503 (per mailbox, as Graph throttles) within the
        deadline, with at most MAILBOX_CONCURRENCY in flight per mailbox."""
        state = self._state(mailbox)
        full = (
            url
            if url.startswith("https://") or url.startswith("http://")
            else f"{self._graph_url(mailbox)}/{url}"
        )
        refreshed = False
        while True:
            waiting = state.busy_until - time.monotonic()
            if waiting > 0:
                await self._wait(mailbox, waiting, ends)
                continue
            async with state.gate:
                token = await self._token(mailbox, fresh=refreshed)
                sent = {"Authorization": f"Bearer {token}", "Prefer": _PREFER, **(headers or {})}
                self.calls["requests"] += 1
                try:
                    response = await self._client().request(
                        method, full, json=body, headers=sent, timeout=_timeout(ends, self._timeout)
                    )
                except httpx.HTTPError as exc:
                    if method != "GET":
                        raise _Lost() from None
                    raise ProviderUnavailable(mailbox.account.mailbox, type(exc).__name__) from None
            if response.status_code in (429, 503):
                self._back_off(state, response.headers)
                continue
            if response.status_code == 401 and not refreshed:
                refreshed = True
                continue
            content_type = response.headers.get("content-type", "")
            payload: Any = None
            if response.content:
                payload = response.json() if "json" in content_type else response.content
            return _Answer(response.status_code, payload, dict(response.headers))

    def _back_off(self, state: _Mailbox, headers: Any) -> None:
        self.calls["throttled"] += 1
        state.throttled += 1
        try:
            seconds = float(headers.get("retry-after") or headers.get("Retry-After") or 0)
        except ValueError:
            seconds = 0.0
        seconds = seconds if seconds > 0 else self._default_back_off
        state.busy_until = max(state.busy_until, time.monotonic() + seconds)

    async def _wait(self, mailbox: MailboxAccess, back_off: float, ends: float | None) -> None:
        left = None if ends is None else ends - time.monotonic()
        if back_off > self._max_back_off or (left is not None and back_off >= left):
            raise ProviderThrottled(mailbox.account.mailbox, round(back_off, 3))
        await asyncio.sleep(back_off)

    async def _batch(
        self,
        mailbox: MailboxAccess,
        requests_: list[dict[str, Any]],
        ends: float | None,
        writes: bool = False,
    ) -> list[_Answer]:
        """Each request's answer, in order: one request goes alone, more go as `$batch`es of
        20. Sub-requests Graph throttled are sent again after their Retry-After."""
        if not requests_:
            return []
        if len(requests_) == 1:
            only = requests_[0]
            answer = await self._send(
                mailbox, only["method"], only["url"], ends, only.get("body"), only.get("headers")
            )
            if writes and answer.status >= 500:
                raise _Lost()
            return [answer]
        answers: dict[int, _Answer] = {}
        for start in range(0, len(requests_), MAX_BATCH):
            pending = dict(enumerate(requests_[start : start + MAX_BATCH], start))
            while pending:
                envelope = {
                    "requests": [
                        {
                            "id": str(n),
                            "method": req["method"],
                            "url": "/" + req["url"],
                            "headers": {
                                "Prefer": _PREFER,
                                **({"Content-Type": "application/json"} if "body" in req else {}),
                                **(req.get("headers") or {}),
                            },
                            **({"body": req["body"]} if "body" in req else {}),
                        }
                        for n, req in pending.items()
                    ]
                }
                self.calls["batched"] += len(pending)
                outer = await self._send(mailbox, "POST", "$batch", ends, envelope)
                if outer.status >= 500:
                    if writes:
                        raise _Lost()
                    raise ProviderUnavailable(mailbox.account.mailbox, f"$batch {outer.status}")
                self._raise_for(mailbox, outer, "")
                retry: dict[int, dict[str, Any]] = {}
                for entry in outer.json().get("responses") or []:
                    n = int(entry["id"])
                    headers = {
                        str(k).lower(): str(v) for k, v in (entry.get("headers") or {}).items()
                    }
                    status = int(entry.get("status") or 0)
                    if status in (429, 503):
                        self._back_off(self._state(mailbox), headers)
                        retry[n] = pending[n]
                        continue
                    body = entry.get("body")
                    if isinstance(body, str) and "json" not in headers.get("content-type", "json"):
                        body = base64.b64decode(body)
                    answers[n] = _Answer(status, body, headers)
                pending = retry
                if pending:
                    await self._wait(
                        mailbox, max(0.0, self._state(mailbox).busy_until - time.monotonic()), ends
                    )
        return [answers[n] for n in range(len(requests_))]

    def _raise_for(self, mailbox: MailboxAccess, answer: _Answer, collection: str) -> None:
        """Errors about the whole call or the mailbox, as the port's errors."""
        name = mailbox.account.mailbox
        status = answer.status
        if status < 400:
            return
        if status == 401:
            raise MailboxCredentialsRejected(name)
        if status == 403 or answer.code in ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI"):
            # An application access policy that leaves this mailbox out, or no such mailbox.
            raise MailboxAccessDenied(name, answer.code or str(status))
        if status == 404 and collection:
            raise CollectionNotFound(name, collection)
        if status >= 500:
            raise ProviderUnavailable(name, answer.code or str(status))
        raise ProviderUnavailable(name, f"unexpected {status} {answer.code}".strip())


# -- module helpers ----------------------------------------------------------------------------


def _parse_utc(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def _ends(deadline: float | None) -> float | None:
    return None if deadline is None else time.monotonic() + deadline


def _timeout(ends: float | None, default: float) -> float:
    if ends is None:
        return default
    return max(0.1, min(default, ends - time.monotonic()))


def _payload_kind(item: r.MailItem) -> r.ObjectKind.ValueType:
    return {
        "calendar_item": r.OBJECT_KIND_CALENDAR_ITEM,
        "task": r.OBJECT_KIND_TASK,
        "contact": r.OBJECT_KIND_CONTACT,
        "email": r.OBJECT_KIND_EMAIL,
    }.get(item.WhichOneof("payload") or "", r.OBJECT_KIND_UNSPECIFIED)


def _invalid(write: Write, message: str) -> WriteResult:
    return WriteResult(
        write.link_id,
        r.WRITE_STATUS_INVALID,
        error_code="INVALID",
        error_message=message or "a field has a value Exchange cannot store",
    )


def _convert(
    resource: dict[str, Any],
    kind: r.ObjectKind.ValueType,
    collection: str,
    folder: str,
    mime: bytes | None = None,
) -> r.MailItem | r.ItemProblem:
    try:
        return gi.to_mail_item(resource, kind, collection, folder, mime)
    except UnreadableItem as exc:
        return exc.problem()
    except Exception as exc:
        # Whatever one item's content does to the conversion stays with that item; the reason
        # names the failure, never the content.
        return r.ItemProblem(
            reason="CONVERSION_FAILED",
            message=f"the item could not be converted ({type(exc).__name__})",
        )


def _upsert(
    resource: dict[str, Any],
    kind: r.ObjectKind.ValueType,
    collection: str,
    folder: str,
    mime: bytes | None = None,
) -> r.MailChange:
    converted = _convert(resource, kind, collection, folder, mime)
    if isinstance(converted, r.ItemProblem):
        ref = gi.item_ref(resource, kind, collection)
        return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=ref, problem=converted)
    return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=converted.ref, item=converted)


def _decode_states(token: str, keys: set[str]) -> dict[str, str] | None:
    """Each delta query's next/delta link; None for a cursor this provider did not write,
    answered like an expired deltaLink (a full resync)."""
    if not token:
        return {}
    if not token.startswith(_CURSOR):
        return None
    try:
        states = json.loads(base64.urlsafe_b64decode(token[len(_CURSOR) :]))
    except ValueError:
        return None
    if not isinstance(states, dict) or not set(states) <= keys | {_DONE}:
        return None
    try:
        done = json.loads(str(states.get(_DONE, "[]")))
    except ValueError:
        return None
    if not isinstance(done, list) or not set(map(str, done)) <= keys:
        return None
    return {str(k): str(v) for k, v in states.items() if v}


def _encode_states(states: dict[str, str]) -> str:
    return _CURSOR + base64.urlsafe_b64encode(json.dumps(states, sort_keys=True).encode()).decode()


def _resync(cursor: Cursor) -> ProviderChangePage:
    # Never infer deletes from a lost state: the caller relists and reconciles against links.
    return ProviderChangePage(
        changes=(), next_cursor=Cursor(cursor.collection, ""), full_resync_required=True
    )
