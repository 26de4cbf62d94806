"""The Google Workspace provider: Calendar v3, People v1, Tasks v1 and Gmail v1 through the
unmodified google-api-python-client (built from the discovery documents it ships) and a service
account with domain-wide delegation (google-auth), the mailbox's address as the subject.

The client blocks, so every call runs in a bounded thread pool; one mailbox's calls run one at
a time (httplib2 connections are not thread-safe, and Google wants a user's mutations
sequential). Quota errors (403 rateLimitExceeded, 429) back off exponentially per mailbox.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import google_auth_httplib2  # type: ignore[import-untyped]
import httplib2  # type: ignore[import-untyped]
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build  # type: ignore[import-untyped]
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]
from googleapiclient.http import BatchHttpRequest  # type: ignore[import-untyped]

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.adapters.ews_items import UnreadableItem, UnwritableContent
from concord_mail_connector.adapters.google_items import (
    CATEGORIES_PROPERTY,
    LINK_ID_PROPERTY,
    PERSON_FIELDS,
    client_data,
    event_body,
    event_id_for,
    event_item,
    event_patch,
    event_ref,
    message_item,
    person_body,
    person_fields,
    person_item,
    person_link_id,
    person_ref,
    task_body,
    task_item,
)
from concord_mail_connector.domain.errors import (
    MailboxAccessDenied,
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

__all__ = ["SCOPES", "GoogleProvider"]

T = TypeVar("T")

SCOPES = (
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/contacts",
    "https://www.googleapis.com/auth/tasks",
    "https://www.googleapis.com/auth/gmail.modify",
)
_API_PATHS = {"calendar": "calendar/v3/", "gmail": "", "people": "", "tasks": ""}
_VERSIONS = {"calendar": "v3", "gmail": "v1", "people": "v1", "tasks": "v1"}
# Where each API takes batches (relative to the root) and its document's own root, used when
# no root is configured; the client would otherwise derive a batch URI from the document only.
_BATCH_PATHS = {
    "calendar": "batch/calendar/v3",
    "gmail": "batch",
    "people": "batch",
    "tasks": "batch",
}
_GOOGLE_ROOTS = {
    "calendar": "https://www.googleapis.com/",
    "gmail": "https://gmail.googleapis.com/",
    "people": "https://people.googleapis.com/",
    "tasks": "https://tasks.googleapis.com/",
}
MAX_PAGE = 250
DEFAULT_PAGE = 100
# Gmail asks for batches of at most 50 calls.
_BATCH = 50
# People's own batch writes take up to 200 contacts a create or update (and getBatchGet 200
# names), 500 names a delete (developers.google.com/people/api/rest/v1/people/
# batchCreateContacts, batchUpdateContacts, batchDeleteContacts, getBatchGet).
_PEOPLE_BATCH = 200
_PEOPLE_DELETE_BATCH = 500
# google.rpc codes a batch's error details give a contact (google.rpc.Code).
_RPC_INVALID, _RPC_NOT_FOUND, _RPC_PRECONDITION = 3, 5, 9
# The group and labels that are the selection, as the dedicated folders are for Exchange.
SHARE_LABEL = "Salesforce"
SHARED_FOLDER_LABEL = "Salesforce Emails"
CONTACT_GROUP = "Salesforce"
# MIME carried by one listed page at most (see the Exchange provider: gRPC's 4 MiB default).
MIME_PAGE_BYTES = 3 * 1024 * 1024
# The Tasks API has no sync token: listings go by `updatedMin` with deleted tasks shown. Google
# drops deleted tasks after a while, so a cursor older than this asks for a full relisting,
# which finds tasks purged before they were seen (the reconciler compares against its links).
TASK_RESYNC_SECONDS = 7 * 24 * 3600
# Calendar selection kinds (Google Calendar has no categories); see the README.
SELECTIONS = ("all", "external", "calendar", "color")
_CACHE_SECONDS = 60.0
_SYSTEM_GROUPS = {
    f"contactGroups/{name}"
    for name in (
        "myContacts",
        "starred",
        "friends",
        "family",
        "coworkers",
        "chatBuddies",
        "all",
        "blocked",
    )
}
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}
_DENIED_REASONS = {"insufficientPermissions", "forbidden", "authError", "domainPolicy"}

log = logging.getLogger(__name__)


class _Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class _Resync(Exception):
    """The server forgot the cursor (410, 404 history, expired People token)."""


def _reason(exc: HttpError) -> str:
    try:
        details = json.loads(exc.content or b"{}").get("error", {})
    except ValueError:
        return ""
    errors = details.get("errors") or [{}]
    reason = str(errors[0].get("reason", ""))
    for detail in details.get("details") or ():
        if detail.get("reason"):
            return str(detail["reason"])
    return reason


def _status(exc: HttpError) -> int:
    return int(exc.resp.status)


@dataclass
class _Session:
    """One mailbox's authorised transport and built services; used by one thread at a time."""

    credentials: Any
    http: Any
    root: str | None
    ca_file: str | None
    timeout: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    services: dict[str, Any] = field(default_factory=dict)
    # Label and contact-group maps, kept for a minute: every listed page needs them, and they
    # change rarely (a label made by a write here clears the cache).
    cached: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)

    def remembered(self, what: str, load: Callable[[], dict[str, str]]) -> dict[str, str]:
        found = self.cached.get(what)
        if found is not None and time.monotonic() - found[0] < _CACHE_SECONDS:
            return found[1]
        value = load()
        self.cached[what] = (time.monotonic(), value)
        return value

    def service(self, api: str) -> Any:
        found = self.services.get(api)
        if found is None:
            options = {"api_endpoint": self.root + _API_PATHS[api]} if self.root else None
            found = build(
                api,
                _VERSIONS[api],
                http=self.http,
                static_discovery=True,
                cache_discovery=False,
                client_options=options,
            )
            self.services[api] = found
        return found

    def batch(self, api: str) -> BatchHttpRequest:
        # A batch refreshes expired credentials over an HTTP object of its own, which knows
        # nothing of our CA bundle: refresh here, over ours, first.
        if not self.credentials.valid:
            plain = httplib2.Http(ca_certs=self.ca_file, timeout=self.timeout)
            try:
                self.credentials.refresh(google_auth_httplib2.Request(plain))
            finally:
                plain.close()
        root = self.root or _GOOGLE_ROOTS[api]
        return BatchHttpRequest(batch_uri=root + _BATCH_PATHS[api])

    def close(self) -> None:
        for service in self.services.values():
            service.close()
        self.http.http.close()


def _batch_get(session: _Session, api: str, requests: Sequence[Any]) -> list[Any]:
    """Each request's answer or its HttpError, in order, over as few batch calls as possible."""
    answers: list[Any] = [None] * len(requests)
    for start in range(0, len(requests), _BATCH):
        chunk = requests[start : start + _BATCH]
        if len(chunk) == 1:
            try:
                answers[start] = chunk[0].execute()
            except HttpError as exc:
                answers[start] = exc
            continue
        batch = session.batch(api)

        def done(request_id: str, response: Any, exception: Any) -> None:
            answers[int(request_id)] = exception if exception is not None else response

        for offset, request in enumerate(chunk):
            batch.add(request, callback=done, request_id=str(start + offset))
        batch.execute()
    for answer in answers:
        if isinstance(answer, HttpError) and (
            _status(answer) == 429 or _reason(answer) in _RATE_REASONS
        ):
            raise answer
    return answers


def _encode(**values: Any) -> str:
    return json.dumps({k: v for k, v in values.items() if v is not None}, sort_keys=True)


def _decode(token: str) -> dict[str, Any] | None:
    """A cursor's contents; None when it is not one of ours (the caller resyncs)."""
    if not token:
        return {}
    try:
        values = json.loads(token)
    except ValueError:
        return None
    return values if isinstance(values, dict) else None


def _resync(cursor: Cursor) -> ProviderChangePage:
    # Never infer deletes from a lost cursor: the caller relists and reconciles against links.
    return ProviderChangePage(
        changes=(), next_cursor=Cursor(cursor.collection, ""), full_resync_required=True
    )


def _problem_change(ref: r.ItemRef, exc: UnreadableItem) -> r.MailChange:
    return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=ref, problem=exc.problem())


class GoogleProvider:
    """`max_workers` bounds the Google calls in flight for the whole process; `max_back_off`
    caps how long one call waits out quota errors before answering RESOURCE_EXHAUSTED."""

    def __init__(
        self,
        *,
        max_workers: int = 16,
        max_back_off: float = 30.0,
        base_back_off: float = 1.0,
        request_timeout: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        # A CA bundle to trust besides the system's (an emulator's or a proxy's certificate).
        self._ca_file = ca_file
        # The discovery client logs request URLs with ids and query text at DEBUG.
        logging.getLogger("googleapiclient").setLevel(logging.WARNING)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="google")
        self._max_back_off = max_back_off
        self._base_back_off = base_back_off
        self._timeout = request_timeout
        self._sessions: dict[tuple[str, ...], _Session] = {}
        self._lock = threading.Lock()
        # Per mailbox: until when quota errors told us to wait, and how many in a row.
        self._busy_until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}
        # Calls made per mailbox and API method, for the benchmarks and tests.
        self.calls: dict[str, int] = {}

    async def close(self) -> None:
        """After the drain: no call is waiting on the pool any more."""
        self.shutdown()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()

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
        size = max(1, min(page_size or DEFAULT_PAGE, MAX_PAGE))
        listers: dict[
            Kind, Callable[[_Session, MailboxAccess, Cursor, int, bool], ProviderChangePage]
        ] = {
            Kind.CALENDAR_ITEM: self._list_events,
            Kind.CONTACT: self._list_people,
            Kind.TASK: self._list_tasks,
            Kind.EMAIL: self._list_messages,
        }
        lister = listers[kind]

        def page(session: _Session) -> ProviderChangePage:
            try:
                return lister(session, mailbox, cursor, size, include_content)
            except _Resync:
                return _resync(cursor)

        return await self._run(mailbox, page, deadline)

    async def get_items(
        self,
        mailbox: MailboxAccess,
        refs: Sequence[r.ItemRef],
        deadline: float | None = None,
        link_ids: Sequence[str] = (),
        kind: Kind | None = None,
    ) -> FoundItems:
        def fetch(session: _Session) -> FoundItems:
            found: list[r.MailItem] = []
            missing: list[r.ItemRef] = []
            failures: list[ItemFailure] = []
            by_kind: dict[r.ObjectKind.ValueType, list[r.ItemRef]] = {}
            for ref in refs:
                by_kind.setdefault(ref.kind, []).append(ref)
            if link_ids and kind is not None:
                by_kind.setdefault(_KIND_ENUMS[kind], [])
            for kind_enum, wanted in by_kind.items():
                looked_up = (
                    list(link_ids) if kind is not None and _KIND_ENUMS[kind] == kind_enum else []
                )
                got = self._read(session, mailbox, kind_enum, wanted, looked_up)
                for ref, answer in got:
                    if isinstance(answer, r.MailItem):
                        found.append(answer)
                    elif isinstance(answer, UnreadableItem):
                        failures.append(ItemFailure(ref, answer.problem()))
                    elif ref.native_id:
                        missing.append(ref)
            return FoundItems(found, missing, failures)

        return await self._run(mailbox, fetch, deadline)

    async def apply_items(
        self, mailbox: MailboxAccess, writes: Sequence[Write], deadline: float | None = None
    ) -> list[WriteResult]:
        """Writes in order, one request each except where Google writes many at once:
        consecutive event creates, updates or deletes go as one HTTP batch (50 a request),
        consecutive contact creates, updates
        (of one field set) and deletes as People's own batch calls. One user's mutations stay
        sequential, as Google asks; a write refused for quota is retried after the back-off."""
        results: list[WriteResult] = []
        context: dict[str, Any] = {}
        # A run is retried as a whole after a back-off, so it holds only writes that replay
        # safely: event creates (their ids are the links'), event updates (one that landed
        # is refused as stale when replayed, and listed again) and deletes (a replay finds it
        # gone), contact writes of one kind whose batch call is all-or-nothing (see
        # _create_people).
        runs: list[list[Write]] = []
        keys: list[tuple[str, ...] | None] = []
        for write in writes:
            key = _run_key(write)
            last = runs[-1] if runs else []
            if (
                key is not None
                and keys
                and keys[-1] == key
                and len(last) < _RUN_LIMITS[key[0]]
                # One contact twice (an update map is keyed by it) waits for the next call.
                and (
                    key[0] in {"event", "person-create"}
                    or write.ref.native_id not in {w.ref.native_id for w in last}
                )
            ):
                last.append(write)
            else:
                runs.append([write])
                keys.append(key)
        done = 0
        batched: dict[str, Callable[..., list[WriteResult]]] = {
            "event": self._create_events,
            "event-update": self._patch_events,
            "event-delete": self._delete_events,
            "person-create": partial(self._create_people, context=context),
            "person-update": self._update_people,
            "person-delete": partial(self._delete_people, context=context),
        }
        for run, key in zip(runs, keys, strict=True):
            try:
                if len(run) > 1 and key is not None:
                    results += await self._run(
                        mailbox, partial(batched[key[0]], mailbox=mailbox, run=run), deadline
                    )
                else:
                    write = run[0]
                    results.append(
                        await self._run(
                            mailbox,
                            partial(self._apply, mailbox=mailbox, write=write, context=context),
                            deadline,
                        )
                    )
                done += len(run)
            except (ProviderThrottled, ProviderUnavailable) as exc:
                for rest in writes[done:]:
                    results.append(
                        WriteResult(
                            rest.link_id,
                            r.WRITE_STATUS_RETRYABLE,
                            error_code=exc.reason,
                            error_message=exc.message,
                        )
                    )
                break
        return results

    async def list_collections(
        self, mailbox: MailboxAccess, kind: Kind | None, deadline: float | None = None
    ) -> list[Collection]:
        def listing(session: _Session) -> list[Collection]:
            found: list[Collection] = []
            calendars = session.service("calendar").calendarList().list().execute()
            self._count(mailbox, "calendar.calendarList.list")
            for entry in calendars.get("items", []):
                primary = bool(entry.get("primary"))
                found.append(
                    Collection(
                        default_collection(Kind.CALENDAR_ITEM) if primary else str(entry["id"]),
                        str(entry.get("summary", entry["id"])),
                        Kind.CALENDAR_ITEM,
                        primary,
                    )
                )
            lists = session.service("tasks").tasklists().list().execute()
            self._count(mailbox, "tasks.tasklists.list")
            for n, entry in enumerate(lists.get("items", [])):
                found.append(
                    Collection(
                        default_collection(Kind.TASK) if n == 0 else str(entry["id"]),
                        str(entry.get("title", "")),
                        Kind.TASK,
                        n == 0,
                    )
                )
            found.append(
                Collection(default_collection(Kind.CONTACT), CONTACT_GROUP, Kind.CONTACT, True)
            )
            found.append(
                Collection(default_collection(Kind.EMAIL), SHARED_FOLDER_LABEL, Kind.EMAIL, True)
            )
            return [c for c in found if kind is None or c.kind == kind]

        return await self._run(mailbox, listing, deadline)

    # -- Calendar -----------------------------------------------------------------------------

    def _calendar_id(self, mailbox: MailboxAccess, collection: str) -> str:
        if collection and collection != default_collection(Kind.CALENDAR_ITEM):
            return collection
        settings = mailbox.account.settings
        if settings.get("calendar_selection") == "calendar" and settings.get("calendar_id"):
            return str(settings["calendar_id"])
        return "primary"

    def _selected(self, mailbox: MailboxAccess, event: Mapping[str, Any]) -> bool:
        """The Calendar selection (Google has no categories): every meeting, meetings with
        someone from outside the user's domain, a chosen calendar (by collection), or a
        colour."""
        settings = mailbox.account.settings
        selection = str(settings.get("calendar_selection") or "all")
        if selection == "external":
            domain = mailbox.account.address.rpartition("@")[2].lower()
            return any(
                str(a.get("email", "")).rpartition("@")[2].lower() != domain
                for a in event.get("attendees") or ()
            )
        if selection == "color":
            return str(event.get("colorId", "")) == str(settings.get("color_id", ""))
        return True

    def _list_events(
        self, session: _Session, mailbox: MailboxAccess, cursor: Cursor, size: int, _: bool
    ) -> ProviderChangePage:
        state = _decode(cursor.token)
        if state is None:
            raise _Resync
        calendar_id = self._calendar_id(mailbox, cursor.collection)
        events = session.service("calendar").events()
        full = "s" not in state or bool(state.get("f"))
        params: dict[str, Any] = {"calendarId": calendar_id, "maxResults": size}
        if state.get("s"):
            params["syncToken"] = state["s"]
        else:
            # Cancelled instances of series come with the listing, so masters carry them.
            params["showDeleted"] = True
        if state.get("p"):
            params["pageToken"] = state["p"]
        try:
            answer = events.list(**params).execute()
        except HttpError as exc:
            if _status(exc) == 410:
                raise _Resync from None
            raise
        finally:
            self._count(mailbox, "calendar.events.list")
        listed: list[dict[str, Any]] = answer.get("items", [])
        changes: list[r.MailChange] = []
        cancelled: dict[str, list[dict[str, Any]]] = {}
        masters: dict[str, dict[str, Any]] = {}
        for event in listed:
            if event.get("status") == "cancelled" and event.get("recurringEventId"):
                cancelled.setdefault(str(event["recurringEventId"]), []).append(event)
            elif event.get("recurrence") and event.get("status") != "cancelled":
                masters[str(event["id"])] = event
        # A series whose instance was cancelled is listed again with that instance excluded;
        # its master is read (in one batch per page) when the page does not carry it.
        needed = [m for m in cancelled if m not in masters]
        if needed:
            got = _batch_get(
                session,
                "calendar",
                [events.get(calendarId=calendar_id, eventId=m) for m in needed],
            )
            self._count(mailbox, "calendar.events.get", len(needed))
            for master_id, master in zip(needed, got, strict=True):
                if isinstance(master, dict) and master.get("status") != "cancelled":
                    masters[master_id] = master
        exclusions = self._exclusions(session, mailbox, calendar_id, list(masters))
        for event in listed:
            if event.get("status") == "cancelled":
                if not full:
                    changes.append(
                        r.MailChange(
                            type=r.CHANGE_TYPE_DELETE, ref=event_ref(event, cursor.collection)
                        )
                    )
                continue
            if event.get("recurrence"):
                continue  # listed below, with its exclusions
            changes.append(self._event_change(mailbox, event, cursor.collection, full))
        for master_id, master in masters.items():
            changes.append(
                self._event_change(
                    mailbox, master, cursor.collection, full, exclusions.get(master_id, [])
                )
            )
        changes = [c for c in changes if c.type != r.CHANGE_TYPE_UNSPECIFIED]
        if answer.get("nextPageToken"):
            token = _encode(p=answer["nextPageToken"], s=state.get("s"), f=full or None)
            return ProviderChangePage(changes, Cursor(cursor.collection, token), has_more=True)
        return ProviderChangePage(
            changes, Cursor(cursor.collection, _encode(s=answer.get("nextSyncToken", "")))
        )

    def _exclusions(
        self, session: _Session, mailbox: MailboxAccess, calendar_id: str, masters: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Each series' cancelled instances (events.instances with deleted ones shown), one
        batch per page of masters."""
        if not masters:
            return {}
        events = session.service("calendar").events()
        got = _batch_get(
            session,
            "calendar",
            [
                events.instances(
                    calendarId=calendar_id, eventId=m, showDeleted=True, maxResults=2500
                )
                for m in masters
            ],
        )
        self._count(mailbox, "calendar.events.instances", len(masters))
        found: dict[str, list[dict[str, Any]]] = {}
        for master_id, answer in zip(masters, got, strict=True):
            if isinstance(answer, dict):
                found[master_id] = [
                    i for i in answer.get("items", []) if i.get("status") == "cancelled"
                ]
        return found

    def _event_change(
        self,
        mailbox: MailboxAccess,
        event: Mapping[str, Any],
        collection: str,
        full: bool,
        excluded: Sequence[Mapping[str, Any]] = (),
    ) -> r.MailChange:
        ref = event_ref(event, collection)
        if not self._selected(mailbox, event):
            # Out of the selection: gone from Concord's point of view (nothing on a full list).
            if full:
                return r.MailChange()
            return r.MailChange(type=r.CHANGE_TYPE_DELETE, ref=ref)
        try:
            item = self._event_item(mailbox, event, collection, excluded)
        except UnreadableItem as exc:
            return _problem_change(ref, exc)
        return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=item.ref, item=item)

    def _event_item(
        self,
        mailbox: MailboxAccess,
        event: Mapping[str, Any],
        collection: str,
        excluded: Sequence[Mapping[str, Any]] = (),
    ) -> r.MailItem:
        """The canonical event. Google Calendar has no categories: an event Concord never
        categorised carries the share category when the mailbox's selection takes it, so the
        reconciler's category rule shares what the Google selection chose; categories Concord
        wrote (in a private property) are the event's own, so unsharing sticks."""
        item = event_item(event, collection, excluded)
        private = event.get("extendedProperties", {}).get("private", {})
        if CATEGORIES_PROPERTY not in private and self._selected(mailbox, event):
            item.calendar_item.categories.append(SHARE_LABEL)
        return item

    # -- People -------------------------------------------------------------------------------

    def _groups(
        self, session: _Session, mailbox: MailboxAccess, fresh: bool = False
    ) -> dict[str, str]:
        """resourceName -> name of the user's own contact groups (read again when `fresh`)."""
        if fresh:
            session.cached.pop("groups", None)

        def load() -> dict[str, str]:
            answer = session.service("people").contactGroups().list().execute()
            self._count(mailbox, "people.contactGroups.list")
            return {
                str(g["resourceName"]): str(g.get("name", ""))
                for g in answer.get("contactGroups", [])
                if g.get("groupType") == "USER_CONTACT_GROUP"
            }

        return session.remembered("groups", load)

    def _share_group(self, session: _Session, mailbox: MailboxAccess, create: bool) -> str | None:
        for resource, name in self._groups(session, mailbox).items():
            if name == CONTACT_GROUP:
                return resource
        if not create:
            return None
        made = (
            session.service("people")
            .contactGroups()
            .create(body={"contactGroup": {"name": CONTACT_GROUP}})
            .execute()
        )
        self._count(mailbox, "people.contactGroups.create")
        # Known from now on: the next create of the same call must not make it a second time
        # (Google refuses a second group of the name).
        self._groups(session, mailbox)[str(made["resourceName"])] = CONTACT_GROUP
        return str(made["resourceName"])

    def _list_people(
        self, session: _Session, mailbox: MailboxAccess, cursor: Cursor, size: int, _: bool
    ) -> ProviderChangePage:
        state = _decode(cursor.token)
        if state is None:
            raise _Resync
        full = "s" not in state
        groups = self._groups(session, mailbox, fresh=full and not state.get("p"))
        share = next((g for g, n in groups.items() if n == CONTACT_GROUP), None)
        params: dict[str, Any] = {
            "resourceName": "people/me",
            "personFields": PERSON_FIELDS,
            "pageSize": size,
            "requestSyncToken": True,
        }
        if state.get("s"):
            params["syncToken"] = state["s"]
        if state.get("p"):
            params["pageToken"] = state["p"]
        try:
            answer = session.service("people").people().connections().list(**params).execute()
        except HttpError as exc:
            if _reason(exc) == "EXPIRED_SYNC_TOKEN" or (
                _status(exc) == 400 and "sync token" in str(exc).lower()
            ):
                raise _Resync from None
            raise
        finally:
            self._count(mailbox, "people.people.connections.list")
        members_of = {
            m.get("contactGroupMembership", {}).get("contactGroupResourceName", "")
            for person in answer.get("connections", [])
            for m in person.get("memberships") or ()
        }
        if members_of - set(groups) - _SYSTEM_GROUPS:
            groups = self._groups(session, mailbox, fresh=True)
            share = next((g for g, n in groups.items() if n == CONTACT_GROUP), None)
        names = {g: n for g, n in groups.items() if g != share}
        changes: list[r.MailChange] = []
        for person in answer.get("connections", []):
            ref = person_ref(person, cursor.collection)
            member = share is not None and share in {
                m.get("contactGroupMembership", {}).get("contactGroupResourceName")
                for m in person.get("memberships") or ()
            }
            if person.get("metadata", {}).get("deleted") or not member:
                if not full:
                    changes.append(r.MailChange(type=r.CHANGE_TYPE_DELETE, ref=ref))
                continue
            try:
                item = person_item(person, cursor.collection, names)
            except UnreadableItem as exc:
                changes.append(_problem_change(ref, exc))
                continue
            changes.append(r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=item.ref, item=item))
        if answer.get("nextPageToken"):
            token = _encode(p=answer["nextPageToken"], s=state.get("s"))
            return ProviderChangePage(changes, Cursor(cursor.collection, token), has_more=True)
        return ProviderChangePage(
            changes, Cursor(cursor.collection, _encode(s=answer.get("nextSyncToken", "")))
        )

    def _people_by_link(
        self, session: _Session, mailbox: MailboxAccess
    ) -> dict[str, dict[str, Any]]:
        """Every contact that carries a link id (People has no query by client data)."""
        found: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            answer = (
                session.service("people")
                .people()
                .connections()
                .list(
                    resourceName="people/me",
                    personFields=PERSON_FIELDS,
                    pageSize=1000,
                    pageToken=token,
                )
                .execute()
            )
            self._count(mailbox, "people.people.connections.list")
            for person in answer.get("connections", []):
                link = person_link_id(person)
                if link:
                    found[link] = person
            token = answer.get("nextPageToken")
            if not token:
                return found

    # -- Tasks --------------------------------------------------------------------------------

    def _task_list(self, collection: str) -> str:
        if collection and collection != default_collection(Kind.TASK):
            return collection
        return "@default"

    def _list_tasks(
        self, session: _Session, mailbox: MailboxAccess, cursor: Cursor, size: int, _: bool
    ) -> ProviderChangePage:
        state = _decode(cursor.token)
        if state is None:
            raise _Resync
        now = time.time()
        if state.get("full") and now - float(state["full"]) > TASK_RESYNC_SECONDS:
            raise _Resync
        full = "u" not in state
        params: dict[str, Any] = {
            "tasklist": self._task_list(cursor.collection),
            "maxResults": min(size, 100),
            "showHidden": True,
            "showDeleted": not full,
        }
        if state.get("u"):
            params["updatedMin"] = state["u"]
        if state.get("p"):
            params["pageToken"] = state["p"]
        try:
            answer = session.service("tasks").tasks().list(**params).execute()
        finally:
            self._count(mailbox, "tasks.tasks.list")
        changes: list[r.MailChange] = []
        newest = str(state.get("m") or state.get("u") or "")
        # Tasks listed last time at the boundary instant, unchanged since: not listed again.
        already = set(state.get("seen") or ())
        at_newest = set(state.get("at") or ())
        for task in answer.get("items", []):
            updated = str(task.get("updated", ""))
            version = f"{task.get('id')}/{task.get('etag')}"
            if version in already:
                continue
            if updated > newest:
                newest, at_newest = updated, set()
            if updated == newest:
                at_newest.add(version)
            try:
                item = task_item(task, cursor.collection)
            except UnreadableItem as exc:
                ref = r.ItemRef(
                    kind=r.OBJECT_KIND_TASK,
                    native_id=str(task.get("id", "")),
                    collection=cursor.collection,
                )
                changes.append(_problem_change(ref, exc))
                continue
            if task.get("deleted"):
                changes.append(r.MailChange(type=r.CHANGE_TYPE_DELETE, ref=item.ref))
            else:
                # Tasks have no categories either: the task list is the selection.
                item.task.categories.append(SHARE_LABEL)
                changes.append(r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=item.ref, item=item))
        started = state.get("full") or now
        if answer.get("nextPageToken"):
            token = _encode(
                p=answer["nextPageToken"],
                u=state.get("u"),
                m=newest or None,
                full=started,
                seen=sorted(already) or None,
                at=sorted(at_newest) or None,
            )
            return ProviderChangePage(changes, Cursor(cursor.collection, token), has_more=True)
        # `updatedMin` is inclusive, so nothing updated in the newest instant seen is missed;
        # what was seen in it is remembered, so a quiet list lists nothing. With nothing seen
        # yet, five minutes back from our clock allows for the server's being behind.
        fallback = dt.datetime.fromtimestamp(now - 300, dt.UTC)
        mark = newest or fallback.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if mark != state.get("u"):
            already = set()
        token = _encode(u=mark, full=started, seen=sorted(already | at_newest) or None)
        return ProviderChangePage(changes, Cursor(cursor.collection, token))

    # -- Gmail --------------------------------------------------------------------------------

    def _labels(
        self, session: _Session, mailbox: MailboxAccess, fresh: bool = False
    ) -> dict[str, str]:
        """id -> name of the user's own labels (read again when `fresh`)."""
        if fresh:
            session.cached.pop("labels", None)

        def load() -> dict[str, str]:
            answer = session.service("gmail").users().labels().list(userId="me").execute()
            self._count(mailbox, "gmail.users.labels.list")
            return {
                str(x["id"]): str(x["name"])
                for x in answer.get("labels", [])
                if x.get("type") == "user"
            }

        return session.remembered("labels", load)

    def _list_messages(
        self,
        session: _Session,
        mailbox: MailboxAccess,
        cursor: Cursor,
        size: int,
        include_content: bool,
    ) -> ProviderChangePage:
        state = _decode(cursor.token)
        if state is None:
            raise _Resync
        users = session.service("gmail").users()
        # A full listing reads the labels afresh; later pages trust the minute-old map unless
        # a message carries a label it does not know.
        labels = self._labels(session, mailbox, fresh="h" not in state and "start" not in state)
        selection = {i for i, n in labels.items() if n in (SHARE_LABEL, SHARED_FOLDER_LABEL)}
        folder_label = next((i for i, n in labels.items() if n == SHARED_FOLDER_LABEL), "")
        if "h" not in state:
            # A full listing: the history id first, so nothing after it is missed.
            if "start" not in state:
                state["start"] = users.getProfile(userId="me").execute()["historyId"]
                self._count(mailbox, "gmail.users.getProfile")
            queue = list(state.get("q") or sorted(selection))
            ids: list[str] = list(state.get("ids") or [])
            while queue and len(ids) < size:
                answer = (
                    users.messages()
                    .list(
                        userId="me",
                        labelIds=[queue[0]],
                        maxResults=size - len(ids),
                        pageToken=state.get("p"),
                    )
                    .execute()
                )
                self._count(mailbox, "gmail.users.messages.list")
                ids += [m["id"] for m in answer.get("messages", []) if m["id"] not in ids]
                state["p"] = answer.get("nextPageToken")
                if not state["p"]:
                    queue.pop(0)
            wanted = list(dict.fromkeys(ids))
            changes = self._read_messages(
                session,
                mailbox,
                wanted,
                cursor.collection,
                labels,
                folder_label,
                selection,
                include_content,
            )
            if queue:
                token = _encode(start=state["start"], q=queue, p=state.get("p"), seen=None)
                return ProviderChangePage(changes, Cursor(cursor.collection, token), has_more=True)
            return ProviderChangePage(changes, Cursor(cursor.collection, _encode(h=state["start"])))
        try:
            answer = (
                users.history()
                .list(
                    userId="me",
                    startHistoryId=state["h"],
                    historyTypes=["messageAdded", "labelAdded"],
                    maxResults=size,
                    pageToken=state.get("p"),
                )
                .execute()
            )
        except HttpError as exc:
            if _status(exc) == 404:
                raise _Resync from None
            raise
        finally:
            self._count(mailbox, "gmail.users.history.list")
        seen = {
            label
            for record in answer.get("history", [])
            for entry in record.get("messagesAdded", []) + record.get("labelsAdded", [])
            for label in entry.get("message", {}).get("labelIds") or ()
        }
        # User label ids are mixed case (Label_12); system ones (INBOX, CATEGORY_...) are not.
        if any(label not in labels and not label.isupper() for label in seen):
            labels = self._labels(session, mailbox, fresh=True)
            selection = {i for i, n in labels.items() if n in (SHARE_LABEL, SHARED_FOLDER_LABEL)}
            folder_label = next((i for i, n in labels.items() if n == SHARED_FOLDER_LABEL), "")
        added: list[str] = []
        for record in answer.get("history", []):
            for entry in record.get("messagesAdded", []) + record.get("labelsAdded", []):
                message = entry.get("message", {})
                now_labels = set(message.get("labelIds") or ())
                if now_labels & selection and message.get("id") not in added:
                    added.append(str(message["id"]))
        changes = self._read_messages(
            session,
            mailbox,
            added,
            cursor.collection,
            labels,
            folder_label,
            selection,
            include_content,
        )
        if answer.get("nextPageToken"):
            token = _encode(h=state["h"], p=answer["nextPageToken"], last=answer.get("historyId"))
            return ProviderChangePage(changes, Cursor(cursor.collection, token), has_more=True)
        latest = state.get("last") or answer.get("historyId") or state["h"]
        return ProviderChangePage(changes, Cursor(cursor.collection, _encode(h=str(latest))))

    def _read_messages(
        self,
        session: _Session,
        mailbox: MailboxAccess,
        ids: Sequence[str],
        collection: str,
        labels: Mapping[str, str],
        folder_label: str,
        selection: set[str],
        include_content: bool,
    ) -> list[r.MailChange]:
        """format=raw for each (one batch call per 50): the MIME is what is shared, and the
        canonical fields are read from it; MIME beyond the page's budget is left out."""
        if not ids:
            return []
        users = session.service("gmail").users()
        got = _batch_get(
            session, "gmail", [users.messages().get(userId="me", id=i, format="raw") for i in ids]
        )
        self._count(mailbox, "gmail.users.messages.get", len(ids))
        budget = MIME_PAGE_BYTES
        changes: list[r.MailChange] = []
        for message_id, message in zip(ids, got, strict=True):
            ref = r.ItemRef(kind=r.OBJECT_KIND_EMAIL, native_id=message_id, collection=collection)
            if not isinstance(message, dict):
                continue  # deleted since it was listed
            if not set(message.get("labelIds") or ()) & selection:
                continue
            size = int(message.get("sizeEstimate", 0))
            with_mime = include_content and size <= budget
            if with_mime:
                budget -= size
            try:
                item = message_item(message, collection, labels, folder_label, with_mime)
            except UnreadableItem as exc:
                changes.append(_problem_change(ref, exc))
                continue
            changes.append(r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=item.ref, item=item))
        return changes

    # -- reads by reference and link id ---------------------------------------------------------

    def _read(
        self,
        session: _Session,
        mailbox: MailboxAccess,
        kind: r.ObjectKind.ValueType,
        refs: Sequence[r.ItemRef],
        link_ids: Sequence[str],
    ) -> list[tuple[r.ItemRef, Any]]:
        """(ref, MailItem | UnreadableItem | None) per ref, then per link id found."""
        out: list[tuple[r.ItemRef, Any]] = []
        if kind == r.OBJECT_KIND_CALENDAR_ITEM:
            events = session.service("calendar").events()
            wanted = list(refs) + [
                r.ItemRef(kind=kind, native_id=event_id_for(link), link_id=link)
                for link in link_ids
            ]
            got = _batch_get(
                session,
                "calendar",
                [
                    events.get(
                        calendarId=self._calendar_id(mailbox, ref.collection), eventId=ref.native_id
                    )
                    for ref in wanted
                ],
            )
            self._count(mailbox, "calendar.events.get", len(wanted))
            for n, (ref, event) in enumerate(zip(wanted, got, strict=True)):
                by_link = n >= len(refs)
                if not isinstance(event, dict) or event.get("status") == "cancelled":
                    if not by_link:
                        out.append((ref, None))
                    continue
                try:
                    out.append((ref, self._event_item(mailbox, event, ref.collection)))
                except UnreadableItem as exc:
                    out.append((event_ref(event, ref.collection), exc))
            return out
        if kind == r.OBJECT_KIND_CONTACT:
            people = session.service("people").people()
            groups = self._groups(session, mailbox)
            names = {g: n for g, n in groups.items() if n != CONTACT_GROUP}
            got = _batch_get(
                session,
                "people",
                [
                    people.get(resourceName=ref.native_id, personFields=PERSON_FIELDS)
                    for ref in refs
                ],
            )
            self._count(mailbox, "people.people.get", len(refs))
            pairs: list[tuple[r.ItemRef, Any]] = list(zip(refs, got, strict=True))
            if link_ids:
                linked = self._people_by_link(session, mailbox)
                pairs += [(r.ItemRef(kind=kind, link_id=x), linked.get(x)) for x in link_ids]
            for ref, person in pairs:
                if not isinstance(person, dict):
                    if ref.native_id:
                        out.append((ref, None))
                    continue
                try:
                    out.append((ref, person_item(person, ref.collection, names)))
                except UnreadableItem as exc:
                    out.append((ref, exc))
            return out
        if kind == r.OBJECT_KIND_TASK:
            tasks = session.service("tasks").tasks()
            got = _batch_get(
                session,
                "tasks",
                [
                    tasks.get(tasklist=self._task_list(ref.collection), task=ref.native_id)
                    for ref in refs
                ],
            )
            self._count(mailbox, "tasks.tasks.get", len(refs))
            pairs = list(zip(refs, got, strict=True))
            if link_ids:
                linked_tasks = self._tasks_by_link(session, mailbox, default_collection(Kind.TASK))
                pairs += [(r.ItemRef(kind=kind, link_id=x), linked_tasks.get(x)) for x in link_ids]
            for ref, task in pairs:
                if not isinstance(task, dict) or task.get("deleted"):
                    if ref.native_id:
                        out.append((ref, None))
                    continue
                try:
                    found = task_item(task, ref.collection)
                    found.task.categories.append(SHARE_LABEL)
                    out.append((ref, found))
                except UnreadableItem as exc:
                    out.append((ref, exc))
            return out
        if kind == r.OBJECT_KIND_EMAIL:
            labels = self._labels(session, mailbox)
            folder_label = next((i for i, n in labels.items() if n == SHARED_FOLDER_LABEL), "")
            users = session.service("gmail").users()
            got = _batch_get(
                session,
                "gmail",
                [users.messages().get(userId="me", id=ref.native_id, format="raw") for ref in refs],
            )
            self._count(mailbox, "gmail.users.messages.get", len(refs))
            for ref, message in zip(refs, got, strict=True):
                if not isinstance(message, dict):
                    out.append((ref, None))
                    continue
                try:
                    out.append(
                        (ref, message_item(message, ref.collection, labels, folder_label, True))
                    )
                except UnreadableItem as exc:
                    out.append((ref, exc))
            return out
        return [(ref, None) for ref in refs]

    def _tasks_by_link(
        self, session: _Session, mailbox: MailboxAccess, collection: str
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            answer = (
                session.service("tasks")
                .tasks()
                .list(
                    tasklist=self._task_list(collection),
                    maxResults=100,
                    pageToken=token,
                    showHidden=True,
                )
                .execute()
            )
            self._count(mailbox, "tasks.tasks.list")
            for task in answer.get("items", []):
                item = task_item(task, collection)
                if item.ref.link_id:
                    found[item.ref.link_id] = task
            token = answer.get("nextPageToken")
            if not token:
                return found

    # -- writes -------------------------------------------------------------------------------

    def _apply(
        self, session: _Session, mailbox: MailboxAccess, write: Write, context: dict[str, Any]
    ) -> WriteResult:
        kind = write.ref.kind or _kind_of(write.item)
        try:
            if kind == r.OBJECT_KIND_CALENDAR_ITEM:
                return self._write_event(session, mailbox, write)
            if kind == r.OBJECT_KIND_CONTACT:
                return self._write_person(session, mailbox, write, context)
            if kind == r.OBJECT_KIND_TASK:
                return self._write_task(session, mailbox, write, context)
            if kind == r.OBJECT_KIND_EMAIL:
                return self._write_message(session, mailbox, write)
            raise UnwritableContent("the write has no item kind")
        except (UnwritableContent, ValueError) as exc:
            return _invalid(write, exc)
        except HttpError as exc:
            return _failed(write, exc)

    def _create_events(
        self, session: _Session, mailbox: MailboxAccess, run: Sequence[Write]
    ) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        events = session.service("calendar").events()
        requests: list[tuple[int, Write, str, Any]] = []
        for position, write in enumerate(run):
            collection = write.collection or default_collection(Kind.CALENDAR_ITEM)
            calendar_id = self._calendar_id(mailbox, collection)
            try:
                body = event_body(write.item, write.link_id) | {"id": event_id_for(write.link_id)}
            except (UnwritableContent, ValueError) as exc:
                results[position] = _invalid(write, exc)
                continue
            request = events.insert(calendarId=calendar_id, body=body, sendUpdates="none")
            requests.append((position, write, collection, request))
        answers = _batch_get(session, "calendar", [x[3] for x in requests])
        self._count(mailbox, "calendar.events.insert", len(requests))
        existing: list[tuple[int, Write, str]] = []
        for (position, write, collection, _), answer in zip(requests, answers, strict=True):
            if isinstance(answer, HttpError) and _status(answer) == 409:
                existing.append((position, write, collection))
            elif isinstance(answer, HttpError):
                results[position] = _failed(write, answer)
            else:
                results[position] = WriteResult(
                    write.link_id, r.WRITE_STATUS_OK, ref=event_ref(answer, collection)
                )
        # The id is the link's: a retried create (or the same link twice) finds the first.
        found = _batch_get(
            session,
            "calendar",
            [
                events.get(
                    calendarId=self._calendar_id(mailbox, collection),
                    eventId=event_id_for(write.link_id),
                )
                for _, write, collection in existing
            ],
        )
        self._count(mailbox, "calendar.events.get", len(existing))
        for (position, write, collection), event in zip(existing, found, strict=True):
            if isinstance(event, HttpError):
                results[position] = _failed(write, event)
                continue
            results[position] = WriteResult(
                write.link_id,
                r.WRITE_STATUS_OK,
                ref=event_ref(event, collection),
                already_applied=True,
            )
        return [results[position] for position in range(len(run))]

    def _write_event(self, session: _Session, mailbox: MailboxAccess, write: Write) -> WriteResult:
        collection = (
            write.collection or write.ref.collection or default_collection(Kind.CALENDAR_ITEM)
        )
        calendar_id = self._calendar_id(mailbox, collection)
        events = session.service("calendar").events()
        if write.operation == WriteOperation.CREATE:
            body = event_body(write.item, write.link_id) | {"id": event_id_for(write.link_id)}
            try:
                made = events.insert(
                    calendarId=calendar_id, body=body, sendUpdates="none"
                ).execute()
                self._count(mailbox, "calendar.events.insert")
            except HttpError as exc:
                self._count(mailbox, "calendar.events.insert")
                if _status(exc) != 409:
                    raise
                # The id is the link's: a retried create finds the first one's event.
                made = events.get(calendarId=calendar_id, eventId=body["id"]).execute()
                self._count(mailbox, "calendar.events.get")
                return WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_OK,
                    ref=event_ref(made, collection),
                    already_applied=True,
                )
            return WriteResult(write.link_id, r.WRITE_STATUS_OK, ref=event_ref(made, collection))
        if write.operation == WriteOperation.UPDATE:
            [result] = self._patch_events(session, mailbox, [write])
        else:
            [result] = self._delete_events(session, mailbox, [write])
        return result

    def _patch_events(
        self, session: _Session, mailbox: MailboxAccess, run: Sequence[Write]
    ) -> list[WriteResult]:
        """Event updates, 50 to an HTTP batch request (one patch each all the same)."""

        def request(events: Any, calendar_id: str, write: Write) -> Any:
            # Patch semantics: extendedProperties merge key by key, so the event's other
            # private keys stay beside the link id every update stores.
            body = event_patch(write.item, list(write.update_mask), write.link_id)
            return events.patch(
                calendarId=calendar_id, eventId=write.ref.native_id, body=body, sendUpdates="none"
            )

        def answered(write: Write, collection: str, made: Any) -> WriteResult:
            ref = event_ref(made, collection)
            ref.link_id = ref.link_id or write.link_id
            return WriteResult(write.link_id, r.WRITE_STATUS_OK, ref=ref)

        return self._event_batch(session, mailbox, run, "patch", request, answered)

    def _delete_events(
        self, session: _Session, mailbox: MailboxAccess, run: Sequence[Write]
    ) -> list[WriteResult]:
        """Event deletes, 50 to an HTTP batch request."""

        def request(events: Any, calendar_id: str, write: Write) -> Any:
            return events.delete(
                calendarId=calendar_id, eventId=write.ref.native_id, sendUpdates="none"
            )

        def answered(write: Write, collection: str, made: Any) -> WriteResult:
            return WriteResult(write.link_id, r.WRITE_STATUS_OK)

        return self._event_batch(session, mailbox, run, "delete", request, answered)

    def _event_batch(
        self,
        session: _Session,
        mailbox: MailboxAccess,
        run: Sequence[Write],
        method: str,
        request: Callable[[Any, str, Write], Any],
        answered: Callable[[Write, str, Any], WriteResult],
    ) -> list[WriteResult]:
        """Each write's request (with its If-Match) in as few batch calls as can take them;
        a write Google refuses fails alone, as it would on its own."""
        results: dict[int, WriteResult] = {}
        events = session.service("calendar").events()
        sent: list[tuple[int, Write, str, Any]] = []
        for position, write in enumerate(run):
            collection = (
                write.collection or write.ref.collection or default_collection(Kind.CALENDAR_ITEM)
            )
            try:
                made = request(events, self._calendar_id(mailbox, collection), write)
            except (UnwritableContent, ValueError) as exc:
                results[position] = _invalid(write, exc)
                continue
            if write.ref.version:
                made.headers["If-Match"] = write.ref.version
            sent.append((position, write, collection, made))
        # Counted before they run: a write Google refuses is a call made all the same.
        self._count(mailbox, f"calendar.events.{method}", len(sent))
        answers = _batch_get(session, "calendar", [x[3] for x in sent])
        for (position, write, collection, _), answer in zip(sent, answers, strict=True):
            if isinstance(answer, HttpError):
                results[position] = _failed(write, answer)
            else:
                results[position] = answered(write, collection, answer)
        return [results[position] for position in range(len(run))]

    def _write_person(
        self, session: _Session, mailbox: MailboxAccess, write: Write, context: dict[str, Any]
    ) -> WriteResult:
        people = session.service("people").people()
        collection = write.collection or write.ref.collection or default_collection(Kind.CONTACT)
        if write.operation == WriteOperation.CREATE:
            # A create the caller proved new has nothing to find: no listing of every contact.
            if "people" not in context and not write.known_new:
                context["people"] = self._people_by_link(session, mailbox)
            existing = context.get("people", {}).get(write.link_id)
            if existing is not None:
                return WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_OK,
                    ref=person_ref(existing, collection),
                    already_applied=True,
                )
            group = self._share_group(session, mailbox, create=True)
            body = person_body(write.item) | {
                "clientData": [{"key": LINK_ID_PROPERTY, "value": write.link_id}],
                "memberships": [{"contactGroupMembership": {"contactGroupResourceName": group}}],
            }
            made = people.createContact(body=body, personFields=PERSON_FIELDS).execute()
            self._count(mailbox, "people.people.createContact")
            if "people" in context:
                context["people"][write.link_id] = made
            return WriteResult(write.link_id, r.WRITE_STATUS_OK, ref=person_ref(made, collection))
        if write.operation == WriteOperation.UPDATE:
            current = people.get(
                resourceName=write.ref.native_id, personFields=PERSON_FIELDS
            ).execute()
            self._count(mailbox, "people.people.get")
            fields = person_fields(list(write.update_mask))
            merged = person_item(current, collection, {})
            _copy_fields(write.item.contact, merged.contact, list(write.update_mask))
            body = {k: v for k, v in person_body(merged).items() if k in fields}
            body["clientData"] = client_data(current, write.link_id)
            body["etag"] = write.ref.version or current["etag"]
            made = people.updateContact(
                resourceName=write.ref.native_id,
                updatePersonFields=",".join(fields),
                personFields=PERSON_FIELDS,
                body=body,
            ).execute()
            self._count(mailbox, "people.people.updateContact")
            ref = person_ref(made, collection)
            ref.link_id = ref.link_id or write.link_id
            return WriteResult(write.link_id, r.WRITE_STATUS_OK, ref=ref)
        # Counted before it runs: a delete Google refuses is a call made all the same.
        self._count(mailbox, "people.people.deleteContact")
        people.deleteContact(resourceName=write.ref.native_id).execute()
        return WriteResult(write.link_id, r.WRITE_STATUS_OK)

    def _create_people(
        self,
        session: _Session,
        mailbox: MailboxAccess,
        run: Sequence[Write],
        context: dict[str, Any],
    ) -> list[WriteResult]:
        """Contact creates as batchCreateContacts calls. A batch with a bad contact creates
        none and names the bad ones, so the rest are sent again without them: whichever call
        succeeds is the only one that wrote, and a run retried after a back-off duplicates
        nothing the single-create path would not."""
        if "people" not in context and not all(w.known_new for w in run):
            context["people"] = self._people_by_link(session, mailbox)
        known: dict[str, dict[str, Any]] = context.get("people", {})
        results: dict[int, WriteResult] = {}
        pending: list[tuple[int, Write, dict[str, Any]]] = []
        first_of: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []
        for position, write in enumerate(run):
            collection = _contact_collection(write)
            existing = known.get(write.link_id)
            if existing is not None:
                results[position] = WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_OK,
                    ref=person_ref(existing, collection),
                    already_applied=True,
                )
                continue
            if write.link_id in first_of:
                repeats.append((position, first_of[write.link_id]))
                continue
            try:
                body = person_body(write.item)
            except (UnwritableContent, ValueError) as exc:
                results[position] = _invalid(write, exc)
                continue
            group = self._share_group(session, mailbox, create=True)
            body |= {
                "clientData": [{"key": LINK_ID_PROPERTY, "value": write.link_id}],
                "memberships": [{"contactGroupMembership": {"contactGroupResourceName": group}}],
            }
            first_of[write.link_id] = position
            pending.append((position, write, body))
        people = session.service("people").people()
        while pending:
            request = people.batchCreateContacts(
                body={
                    "contacts": [{"contactPerson": body} for _, _, body in pending],
                    "readMask": PERSON_FIELDS,
                }
            )
            self._count(mailbox, "people.people.batchCreateContacts")
            try:
                answer = request.execute()
            except HttpError as exc:
                refused = _contact_errors(exc, [str(i) for i in range(len(pending))])
                for index, (position, write, _) in enumerate(pending):
                    if refused is None:
                        results[position] = _failed(write, exc)
                    elif str(index) in refused:
                        results[position] = _refused(write, refused[str(index)])
                pending = (
                    []
                    if refused is None
                    else [p for i, p in enumerate(pending) if str(i) not in refused]
                )
                continue
            # Matched by the link id each carries, not by position in the answer.
            created = {
                person_link_id(made["person"]): made["person"]
                for made in answer.get("createdPeople") or ()
                if isinstance(made.get("person"), dict)
            }
            for position, write, _ in pending:
                person = created.get(write.link_id)
                if person is None:
                    # The batch committed (it is all or nothing) but did not read this one
                    # back: a retry finds it by link id.
                    results[position] = WriteResult(
                        write.link_id,
                        r.WRITE_STATUS_RETRYABLE,
                        error_code="unanswered",
                        error_message="Google did not answer for this contact",
                    )
                    continue
                results[position] = WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_OK,
                    ref=person_ref(person, _contact_collection(write)),
                )
                if "people" in context:
                    context["people"][write.link_id] = person
            pending = []
        for position, first in repeats:
            # The same link twice in one call: the second is the first's replay.
            made_first = results[first]
            results[position] = WriteResult(
                run[position].link_id,
                made_first.status,
                ref=made_first.ref,
                error_code=made_first.error_code,
                error_message=made_first.error_message,
                already_applied=made_first.status == r.WRITE_STATUS_OK,
            )
        return [results[position] for position in range(len(run))]

    def _update_people(
        self, session: _Session, mailbox: MailboxAccess, run: Sequence[Write]
    ) -> list[WriteResult]:
        """Contact updates of one field set: one getBatchGet for the contacts as they are (an
        update of some of a Person field's parts keeps the others), one batchUpdateContacts
        with each write's expected etag. A stale etag or a missing contact fails that write
        alone: the batch is sent again without it."""
        fields = person_fields(list(run[0].update_mask))
        people = session.service("people").people()
        self._count(mailbox, "people.people.getBatchGet")
        try:
            got = people.getBatchGet(
                resourceNames=[w.ref.native_id for w in run], personFields=PERSON_FIELDS
            ).execute()
        except HttpError as exc:
            # Should Google refuse the whole read for one bad name, each goes on its own.
            _call_level(exc)
            return [self._apply(session, mailbox, write, {}) for write in run]
        current = {str(x.get("requestedResourceName")): x for x in got.get("responses") or ()}
        results: dict[int, WriteResult] = {}
        pending: dict[str, tuple[int, Write, dict[str, Any]]] = {}
        for position, write in enumerate(run):
            collection = _contact_collection(write)
            found = current.get(write.ref.native_id) or {}
            person = found.get("person")
            if not isinstance(person, dict):
                results[position] = _refused(write, found.get("status") or {"code": _RPC_NOT_FOUND})
                continue
            try:
                merged = person_item(person, collection, {})
                _copy_fields(write.item.contact, merged.contact, list(write.update_mask))
                body = {k: v for k, v in person_body(merged).items() if k in fields}
                body["clientData"] = client_data(person, write.link_id)
            except (UnwritableContent, UnreadableItem, ValueError) as exc:
                results[position] = _invalid(write, exc)
                continue
            body["etag"] = write.ref.version or person["etag"]
            pending[write.ref.native_id] = (position, write, body)
        while pending:
            request = people.batchUpdateContacts(
                body={
                    "contacts": {name: body for name, (_, _, body) in pending.items()},
                    "updateMask": ",".join(fields),
                    "readMask": PERSON_FIELDS,
                }
            )
            self._count(mailbox, "people.people.batchUpdateContacts")
            try:
                answer = request.execute()
            except HttpError as exc:
                refused = _contact_errors(exc, list(pending))
                for name, (position, write, _) in pending.items():
                    if refused is None:
                        results[position] = _failed(write, exc)
                    elif name in refused:
                        results[position] = _refused(write, refused[name])
                pending = (
                    {}
                    if refused is None
                    else {n: p for n, p in pending.items() if n not in refused}
                )
                continue
            updated = answer.get("updateResult") or {}
            for name, (position, write, _) in pending.items():
                made = updated.get(name) or {}
                person = made.get("person")
                if not isinstance(person, dict):
                    results[position] = _refused(write, made.get("status") or {})
                    continue
                ref = person_ref(person, _contact_collection(write))
                ref.link_id = ref.link_id or write.link_id
                results[position] = WriteResult(write.link_id, r.WRITE_STATUS_OK, ref=ref)
            pending = {}
        return [results[position] for position in range(len(run))]

    def _delete_people(
        self,
        session: _Session,
        mailbox: MailboxAccess,
        run: Sequence[Write],
        context: dict[str, Any],
    ) -> list[WriteResult]:
        """Contact deletes as one batchDeleteContacts call. It deletes none when one contact
        is gone already, so then each is deleted on its own, and the missing one answers
        NOT_FOUND as a single delete would."""
        request = (
            session.service("people")
            .people()
            .batchDeleteContacts(body={"resourceNames": [w.ref.native_id for w in run]})
        )
        self._count(mailbox, "people.people.batchDeleteContacts")
        try:
            request.execute()
        except HttpError as exc:
            _call_level(exc)
            return [self._apply(session, mailbox, write, context) for write in run]
        return [WriteResult(write.link_id, r.WRITE_STATUS_OK) for write in run]

    def _write_task(
        self, session: _Session, mailbox: MailboxAccess, write: Write, context: dict[str, Any]
    ) -> WriteResult:
        tasks = session.service("tasks").tasks()
        collection = write.collection or write.ref.collection or default_collection(Kind.TASK)
        task_list = self._task_list(collection)
        if write.operation == WriteOperation.CREATE:
            key = f"tasks:{collection}"
            if key not in context and not write.known_new:
                context[key] = self._tasks_by_link(session, mailbox, collection)
            existing = context.get(key, {}).get(write.link_id)
            if existing is not None:
                return WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_OK,
                    ref=task_item(existing, collection).ref,
                    already_applied=True,
                )
            made = tasks.insert(
                tasklist=task_list, body=task_body(write.item, write.link_id)
            ).execute()
            self._count(mailbox, "tasks.tasks.insert")
            if key in context:
                context[key][write.link_id] = made
            return WriteResult(
                write.link_id, r.WRITE_STATUS_OK, ref=task_item(made, collection).ref
            )
        current = tasks.get(tasklist=task_list, task=write.ref.native_id).execute()
        self._count(mailbox, "tasks.tasks.get")
        if write.ref.version and current.get("etag") != write.ref.version:
            return WriteResult(
                write.link_id,
                r.WRITE_STATUS_CONFLICT,
                error_code="ETAG_MISMATCH",
                error_message="the item changed since the given version",
            )
        if write.operation == WriteOperation.UPDATE:
            merged = task_item(current, collection)
            _copy_fields(write.item.task, merged.task, list(write.update_mask))
            # Every update stores its link id, over the one the task carries.
            link = write.link_id or merged.ref.link_id
            made = tasks.patch(
                tasklist=task_list, task=write.ref.native_id, body=task_body(merged, link)
            ).execute()
            self._count(mailbox, "tasks.tasks.patch")
            return WriteResult(
                write.link_id, r.WRITE_STATUS_OK, ref=task_item(made, collection).ref
            )
        tasks.delete(tasklist=task_list, task=write.ref.native_id).execute()
        self._count(mailbox, "tasks.tasks.delete")
        return WriteResult(write.link_id, r.WRITE_STATUS_OK)

    def _write_message(
        self, session: _Session, mailbox: MailboxAccess, write: Write
    ) -> WriteResult:
        if write.operation != WriteOperation.UPDATE or set(write.update_mask) - {"categories"}:
            # Emails are shared one way; only the selection (labels) is written back.
            raise UnwritableContent("only an email's categories can be written")
        users = session.service("gmail").users()
        labels = self._labels(session, mailbox)
        by_name = {n: i for i, n in labels.items()}
        wanted = set(write.item.email.categories)
        for name in wanted - set(by_name):
            session.cached.pop("labels", None)
            made = users.labels().create(userId="me", body={"name": name}).execute()
            self._count(mailbox, "gmail.users.labels.create")
            by_name[name] = str(made["id"])
        current = (
            users.messages().get(userId="me", id=write.ref.native_id, format="minimal").execute()
        )
        self._count(mailbox, "gmail.users.messages.get")
        have = set(current.get("labelIds") or ())
        remove = [
            i
            for i in have
            if i in labels and labels[i] != SHARED_FOLDER_LABEL and labels[i] not in wanted
        ]
        add = [by_name[n] for n in wanted if by_name[n] not in have]
        made = (
            users.messages()
            .modify(
                userId="me",
                id=write.ref.native_id,
                body={"addLabelIds": add, "removeLabelIds": remove},
            )
            .execute()
        )
        self._count(mailbox, "gmail.users.messages.modify")
        ref = r.ItemRef(
            kind=r.OBJECT_KIND_EMAIL,
            native_id=write.ref.native_id,
            version=str(made.get("historyId", "")),
            link_id=write.link_id,
            collection=write.ref.collection,
        )
        return WriteResult(write.link_id, r.WRITE_STATUS_OK, ref=ref)

    # -- push (adapters/push_google.py) -----------------------------------------------------

    async def watch_calendar(
        self, mailbox: MailboxAccess, channel_id: str, address: str, token: str, seconds: float
    ) -> tuple[str, float]:
        """A watch channel on the mailbox's calendar POSTing to `address`: (resourceId,
        expiration as a Unix time). Google never renews a channel: a new one replaces it."""

        def watch(session: _Session) -> tuple[str, float]:
            expiration = int((time.time() + seconds) * 1000)
            answer = (
                session.service("calendar")
                .events()
                .watch(
                    calendarId=self._calendar_id(mailbox, ""),
                    body={
                        "id": channel_id,
                        "type": "web_hook",
                        "address": address,
                        "token": token,
                        "expiration": expiration,
                    },
                )
                .execute()
            )
            self._count(mailbox, "calendar.events.watch")
            return str(answer["resourceId"]), int(answer.get("expiration", expiration)) / 1000

        return await self._run(mailbox, watch, None)

    async def stop_channel(self, mailbox: MailboxAccess, channel_id: str, resource_id: str) -> None:
        def stop(session: _Session) -> None:
            body = {"id": channel_id, "resourceId": resource_id}
            try:
                session.service("calendar").channels().stop(body=body).execute()
            except HttpError as exc:
                if _status(exc) != 404:  # already gone (expired): nothing to stop
                    raise
            finally:
                self._count(mailbox, "calendar.channels.stop")

        await self._run(mailbox, stop, None)

    async def watch_gmail(self, mailbox: MailboxAccess, topic: str) -> float:
        """Gmail's `users.watch` on `topic` (its Pub/Sub push subscription reaches our
        receiver): the watch's expiration as a Unix time. Renewed by calling it again."""

        def watch(session: _Session) -> float:
            answer = (
                session.service("gmail")
                .users()
                .watch(userId="me", body={"topicName": topic})
                .execute()
            )
            self._count(mailbox, "gmail.users.watch")
            return int(answer["expiration"]) / 1000

        return await self._run(mailbox, watch, None)

    async def history_id(self, mailbox: MailboxAccess) -> str:
        """The mailbox's current Gmail history id: it moves with every change to the mailbox."""

        def profile(session: _Session) -> str:
            answer = session.service("gmail").users().getProfile(userId="me").execute()
            self._count(mailbox, "gmail.users.getProfile")
            return str(answer["historyId"])

        return await self._run(mailbox, profile, None)

    # -- plumbing -----------------------------------------------------------------------------

    def _count(self, mailbox: MailboxAccess, method: str, n: int = 1) -> None:
        key = f"{mailbox.account.mailbox}:{method}"
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + n

    def calls_made(self, mailbox: str | None = None) -> int:
        with self._lock:
            return sum(
                v for k, v in self.calls.items() if mailbox is None or k.startswith(f"{mailbox}:")
            )

    def _session(self, mailbox: MailboxAccess) -> _Session:
        settings = mailbox.account.settings
        secret = mailbox.secret or b""
        # GoogleSettings.api_url: the API root an emulator (or a proxy) serves all four APIs at.
        root = str(settings.get("api_url") or "") or None
        if root and not root.endswith("/"):
            root += "/"
        ca_file = self._ca_file
        key = (
            hashlib.sha256(secret).hexdigest(),
            mailbox.account.address.lower(),
            root or "",
            ca_file or "",
        )
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                return session
        try:
            info = json.loads(secret)
            expected = str(settings.get("service_account_email") or "")
            if expected and info.get("client_email") != expected:
                # The stored key is another service account's than the settings name.
                raise MailboxAccessDenied(mailbox.account.mailbox, "service_account_mismatch")
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(SCOPES), subject=mailbox.account.address
            )
        except (ValueError, KeyError, TypeError):
            raise MailboxAccessDenied(
                mailbox.account.mailbox, "invalid_service_account_key"
            ) from None
        http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=httplib2.Http(ca_certs=ca_file, timeout=self._timeout)
        )
        session = _Session(credentials, http, root, ca_file, self._timeout)
        with self._lock:
            return self._sessions.setdefault(key, session)

    async def _run(
        self, mailbox: MailboxAccess, call: Callable[[_Session], T], deadline: float | None
    ) -> T:
        name = mailbox.account.mailbox
        loop = asyncio.get_running_loop()
        ends = None if deadline is None else time.monotonic() + deadline

        def run() -> T:
            session = self._session(mailbox)
            with session.lock:
                return _translate(name, lambda: call(session))

        while True:
            # A mailbox told to back off waits as a whole: concurrent calls for it do not each
            # spend a request (and quota) just to be told the same.
            waiting = self._busy_until.get(name, 0.0) - time.monotonic()
            if waiting > 0:
                self._check_wait(name, waiting, ends)
                await asyncio.sleep(waiting)
                continue
            try:
                result = await loop.run_in_executor(self._pool, run)
            except _Throttled as throttled:
                strikes = self._strikes.get(name, 0)
                self._strikes[name] = strikes + 1
                back_off = max(throttled.retry_after, self._base_back_off * 2**strikes)
                self._busy_until[name] = time.monotonic() + back_off
                self._check_wait(name, back_off, ends)
                continue
            self._strikes.pop(name, None)
            return result

    def _check_wait(self, mailbox: str, back_off: float, ends: float | None) -> None:
        left = None if ends is None else ends - time.monotonic()
        if back_off > self._max_back_off or (left is not None and back_off >= left):
            raise ProviderThrottled(mailbox, round(back_off, 3))


_KIND_ENUMS = {
    Kind.CALENDAR_ITEM: r.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: r.OBJECT_KIND_TASK,
    Kind.CONTACT: r.OBJECT_KIND_CONTACT,
    Kind.EMAIL: r.OBJECT_KIND_EMAIL,
}


def _kind_of(item: r.MailItem) -> r.ObjectKind.ValueType:
    return {
        "calendar_item": r.OBJECT_KIND_CALENDAR_ITEM,
        "task": r.OBJECT_KIND_TASK,
        "contact": r.OBJECT_KIND_CONTACT,
        "email": r.OBJECT_KIND_EMAIL,
    }.get(item.WhichOneof("payload") or "", r.OBJECT_KIND_UNSPECIFIED)


def _copy_fields(source: Any, target: Any, mask: Sequence[str]) -> None:
    """Copies the masked top-level fields of a canonical payload (all when the mask is empty,
    none when it is LINK_ID_PATH alone: the link id is no payload field)."""
    paths = [p for p in mask if p != LINK_ID_PATH]
    if mask and not paths:
        return
    names = [p.split(".")[0] for p in paths] or [f.name for f in source.DESCRIPTOR.fields]
    for name in dict.fromkeys(names):
        descriptor = source.DESCRIPTOR.fields_by_name.get(name)
        if descriptor is None:
            raise UnwritableContent(f"the field {name!r} does not exist")
        if isinstance(getattr(source, name), Iterable) and not isinstance(
            getattr(source, name), str | bytes
        ):
            target.ClearField(name)
            getattr(target, name).extend(getattr(source, name))
        elif descriptor.message_type is not None:
            if source.HasField(name):
                getattr(target, name).CopyFrom(getattr(source, name))
            else:
                target.ClearField(name)
        else:
            setattr(target, name, getattr(source, name))


def _translate(mailbox: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except HttpError as exc:
        status, reason = _status(exc), _reason(exc)
        if status == 429 or (status == 403 and reason in _RATE_REASONS):
            retry_after = float(exc.resp.get("retry-after") or 0)
            raise _Throttled(retry_after) from None
        if status in (401, 403):
            raise MailboxAccessDenied(mailbox, reason or str(status)) from None
        if status >= 500:
            raise ProviderUnavailable(mailbox, f"HTTP {status}") from None
        raise
    except RefreshError as exc:
        code = _refresh_code(exc)
        if getattr(exc, "retryable", False):
            raise ProviderUnavailable(mailbox, f"token endpoint: {code}") from None
        # The key was refused, or the scopes were never delegated to it: suspend the mailbox.
        raise MailboxAccessDenied(mailbox, code) from None
    except (TransportError, httplib2.HttpLib2Error, http.client.HTTPException, OSError) as exc:
        # Also what a response lost after Google committed looks like: the caller retries,
        # and a create finds its item by link id.
        raise ProviderUnavailable(mailbox, type(exc).__name__) from None
    except GoogleAuthError as exc:
        raise MailboxAccessDenied(mailbox, type(exc).__name__) from None


def _refresh_code(exc: RefreshError) -> str:
    for arg in exc.args:
        if isinstance(arg, Mapping) and arg.get("error"):
            return str(arg["error"])
    text = str(exc.args[0]) if exc.args else ""
    return text.split(":", 1)[0].strip() or "refresh_failed"


def _invalid(write: Write, exc: Exception) -> WriteResult:
    if isinstance(exc, UnwritableContent):
        message = str(exc)
    else:
        message = "a field has a value Google cannot store"
    return WriteResult(
        write.link_id, r.WRITE_STATUS_INVALID, error_code="INVALID", error_message=message
    )


_RUN_LIMITS = {
    "event": _BATCH,
    "event-update": _BATCH,
    "event-delete": _BATCH,
    "person-create": _PEOPLE_BATCH,
    "person-update": _PEOPLE_BATCH,
    "person-delete": _PEOPLE_DELETE_BATCH,
}


def _run_key(write: Write) -> tuple[str, ...] | None:
    """What consecutive writes share to go in one batch call (None: sent on its own)."""
    kind = write.ref.kind or _kind_of(write.item)
    if kind == r.OBJECT_KIND_CALENDAR_ITEM:
        return {
            WriteOperation.CREATE: ("event",),
            WriteOperation.UPDATE: ("event-update",),
            WriteOperation.DELETE: ("event-delete",),
        }.get(write.operation)
    if kind != r.OBJECT_KIND_CONTACT:
        return None
    if write.operation == WriteOperation.CREATE:
        return ("person-create",)
    if write.operation == WriteOperation.DELETE:
        return ("person-delete",)
    try:
        # One batchUpdateContacts takes one updateMask for all its contacts.
        return ("person-update", *person_fields(list(write.update_mask)))
    except UnwritableContent:
        return None


def _contact_collection(write: Write) -> str:
    return write.collection or write.ref.collection or default_collection(Kind.CONTACT)


def _contact_errors(exc: HttpError, keys: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """The contacts a failed People batch write names as bad (by index for creates, by
    resource name for updates: BatchCreateContactsErrorDetails / BatchUpdateContactsErrorDetails),
    or None when the call failed as a whole."""
    _call_level(exc)
    try:
        details = json.loads(exc.content or b"{}").get("error", {}).get("details") or ()
    except ValueError:
        return None
    for detail in details:
        errors = detail.get("contactErrors") if isinstance(detail, dict) else None
        if isinstance(errors, dict) and set(errors) & set(keys):
            return {str(k): v if isinstance(v, dict) else {} for k, v in errors.items()}
    return None


# A batch answer's per-contact google.rpc.Status code -> (status, error code, message).
_REFUSALS: dict[int, tuple[r.WriteStatus.ValueType, str, str]] = {
    _RPC_PRECONDITION: (
        r.WRITE_STATUS_CONFLICT,
        "failedPrecondition",
        "the item changed since the given version",
    ),
    _RPC_NOT_FOUND: (r.WRITE_STATUS_NOT_FOUND, "notFound", "the item no longer exists"),
    _RPC_INVALID: (r.WRITE_STATUS_INVALID, "invalid", "Google refused a field's value"),
}


def _refused(write: Write, status: Mapping[str, Any]) -> WriteResult:
    """One contact's outcome from the google.rpc.Status a batch answer gives it."""
    code = int(status.get("code") or 0)
    outcome, error_code, message = _REFUSALS.get(
        code, (r.WRITE_STATUS_FAILED, str(code or "unknown"), "Google refused the write")
    )
    return WriteResult(write.link_id, outcome, error_code=error_code, error_message=message)


def _call_level(exc: HttpError) -> None:
    """Raises an error that is the call's own (quota, access, Google's side), not a write's:
    _translate turns it into a back-off, a suspended mailbox or a retryable failure."""
    status = _status(exc)
    if (
        status == 429
        or (status == 403 and _reason(exc) in _RATE_REASONS)
        or status in (401, 403)
        or status >= 500
    ):
        raise exc


# Per-write outcomes of the API's errors; messages never quote the server's text.
def _failed(write: Write, exc: HttpError) -> WriteResult:
    status = _status(exc)
    reason = _reason(exc)
    _call_level(exc)  # the call's own status (_translate), not this write's
    if status == 412 or (status == 400 and reason == "failedPrecondition"):
        return WriteResult(
            write.link_id,
            r.WRITE_STATUS_CONFLICT,
            error_code=reason or "412",
            error_message="the item changed since the given version",
        )
    if status in (404, 410):
        return WriteResult(
            write.link_id,
            r.WRITE_STATUS_NOT_FOUND,
            error_code=reason or str(status),
            error_message="the item no longer exists",
        )
    if status == 400:
        return WriteResult(
            write.link_id,
            r.WRITE_STATUS_INVALID,
            error_code=reason or "400",
            error_message="Google refused a field's value",
        )
    return WriteResult(
        write.link_id,
        r.WRITE_STATUS_FAILED,
        error_code=reason or str(status),
        error_message="Google refused the write",
    )
