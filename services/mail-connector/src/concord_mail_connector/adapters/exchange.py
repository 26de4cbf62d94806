"""The Exchange provider: EWS through exchangelib, which blocks, so every call runs in a
bounded thread pool and the event loop never waits on a socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
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
    Folder,
    Message,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorAccessDenied,
    ErrorFolderNotFound,
    ErrorImpersonateUserDenied,
    ErrorInvalidIdMalformed,
    ErrorInvalidSyncStateData,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    EWSError,
    ResponseMessageError,
    TransportError,
    UnauthorizedError,
)
from exchangelib.fields import FieldPath  # type: ignore[import-untyped]
from exchangelib.items import (  # type: ignore[import-untyped]
    ALL_OCCURRENCES,
    HARD_DELETE,
    ID_ONLY,
    ITEM_CLASSES,
    NEVER_OVERWRITE,
    SAVE_ONLY,
    SEND_TO_NONE,
    CalendarItem,
)
from exchangelib.protocol import BaseProtocol  # type: ignore[import-untyped]
from exchangelib.services import (  # type: ignore[import-untyped]
    CreateItem,
    DeleteItem,
    GetItem,
    SyncFolderItems,
    UpdateItem,
)

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.adapters.ews_folders import DedicatedFolders, open_folders
from concord_mail_connector.adapters.ews_items import (
    LINK_ID_FIELD,
    MIME_FIELD,
    UnreadableItem,
    UnwritableContent,
    carries_category,
    ews_class,
    item_ref,
    kind_of,
    listed_fields,
    message_size,
    modified_occurrences,
    register_link_id,
    to_ews_fields,
    to_mail_item,
    update_fields,
)
from concord_mail_connector.domain.errors import (
    CollectionNotFound,
    MailboxAccessDenied,
    MailboxCredentialsRejected,
    ProviderThrottled,
    ProviderUnavailable,
)
from concord_mail_connector.domain.model import Cursor, Kind, default_collection
from concord_mail_connector.domain.provider import (
    Collection,
    FoundItems,
    ItemFailure,
    MailboxAccess,
    ProviderChangePage,
    Write,
    WriteOperation,
    WriteResult,
)

__all__ = ["ExchangeProvider"]

T = TypeVar("T")

# SyncFolderItems returns at most 512 changes a call (MS-OXWSSYNC).
MAX_PAGE = 512
DEFAULT_PAGE = 100
_DISTINGUISHED = {Kind.CALENDAR_ITEM: "calendar", Kind.TASK: "tasks"}
# The folders the product files mirrored contacts and shared emails in, under the message
# folder root; created on first use, since a new mailbox has neither.
_DEDICATED = {
    Kind.CONTACT: ("Salesforce Contacts", "IPF.Contact"),
    Kind.EMAIL: ("Salesforce Emails", "IPF.Note"),
}
_AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM}
_ACCESS_TYPES = {"impersonation": IMPERSONATION, "delegate": DELEGATE}
_KIND_ENUMS = {
    Kind.CALENDAR_ITEM: r.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: r.OBJECT_KIND_TASK,
    Kind.CONTACT: r.OBJECT_KIND_CONTACT,
    Kind.EMAIL: r.OBJECT_KIND_EMAIL,
}
_FOLDER_CLASSES = {
    "IPF.Appointment": Kind.CALENDAR_ITEM,
    "IPF.Task": Kind.TASK,
    "IPF.Contact": Kind.CONTACT,
    "IPF.Note": Kind.EMAIL,
}
# MIME carried by one listed page at most (by the server's item sizes); gRPC answers are
# limited to 4 MiB by default, and a page carries more than the MIME.
MIME_PAGE_BYTES = 3 * 1024 * 1024
# The category that shares an Inbox or Sent Items message (the product's selection rule).
SHARE_CATEGORY = "Salesforce"
# A cursor over several folders; a plain token is one folder's SyncState (every cursor handed
# out before shared emails spanned folders is one of those, and stays valid).
_MULTI = "concord-multi:"
_ACCESS_DENIED = (ErrorImpersonateUserDenied, ErrorAccessDenied, ErrorNonExistentMailbox)


@dataclass(frozen=True)
class Source:
    """One folder of a collection: its key in the cursor, and the category that selects its
    items (None: every item)."""

    key: str
    folder: Any
    category: str | None
    name: str


# exchangelib hands back only some per-item errors and raises the rest mid-batch (a stale
# ChangeKey among them), which would lose the other items' outcomes; these variants hand every
# per-item error back in place, and `_failed` decides which of them concern the whole call.
# EWSMaxConcurrency, the concurrent requests Exchange Online and Exchange 2013+ allow one
# account by default (Exchange 2010: 10); past it a request fails ErrorExceededConnectionCount.
EWS_MAX_CONCURRENCY = 27


def credential_sessions(max_workers: int) -> int:
    """The EWS sessions one credential is given in this process: as many as the provider has
    workers, within what EWS allows an account at once. exchangelib pools sessions per endpoint
    and credential, shared by every Configuration for them and sized by the first one opened, so
    the push feed opens its accounts with the same size (its streams each add one on top)."""
    return min(max_workers, EWS_MAX_CONCURRENCY)


class _UnsentBatch(Exception):
    """exchangelib refused to build a CreateItem request: an item of it did not validate, and
    nothing was sent."""


class _Downloaded:
    """An answer already read off the socket, handed to exchangelib's parser as the bytes it
    is (which lxml parses in one go)."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    def iter_content(self) -> bytes:
        return self._content


class _WholeAnswer:
    """exchangelib parses an answer from `response.iter_content()` at requests' default chunk
    size of one byte: a Python call per byte, about 1 s of CPU per 1,000 listed items (2.5-3 s
    of a 3,000-item listing that took 10 s), and a write's answer (ids and ChangeKeys, 300
    bytes an item) costs so too. These calls do not stream, so the answer is read already; it
    is parsed whole, by the same parser."""

    @classmethod
    def _get_soap_parts(cls, response: Any) -> Any:
        return super()._get_soap_parts(_Downloaded(response.content))  # type: ignore[misc]


class _CreateEach(_WholeAnswer, CreateItem):  # type: ignore[misc]
    ERRORS_TO_CATCH_IN_RESPONSE = (ResponseMessageError,)

    def get_payload(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_payload(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise _UnsentBatch(str(exc)) from exc


class _UpdateEach(_WholeAnswer, UpdateItem):  # type: ignore[misc]
    ERRORS_TO_CATCH_IN_RESPONSE = (ResponseMessageError,)


class _DeleteEach(_WholeAnswer, DeleteItem):  # type: ignore[misc]
    ERRORS_TO_CATCH_IN_RESPONSE = (ResponseMessageError,)


class _SyncItems(_WholeAnswer, SyncFolderItems):  # type: ignore[misc]
    pass


class _GetItems(_WholeAnswer, GetItem):  # type: ignore[misc]
    pass


class _Busy(Exception):
    def __init__(self, back_off: float) -> None:
        self.back_off = back_off


class ExchangeProvider:
    """`max_workers` bounds the EWS calls in flight for the whole process; `max_back_off` caps
    how long one call waits out `ErrorServerBusy` before answering RESOURCE_EXHAUSTED."""

    def __init__(
        self,
        *,
        max_workers: int = 16,
        max_back_off: float = 30.0,
        default_back_off: float = 1.0,
        request_timeout: float = 30.0,
    ) -> None:
        register_link_id()
        # exchangelib logs whole SOAP bodies (subjects, addresses, bodies) at DEBUG; our logs
        # must never carry item content, whatever level the service runs at.
        logging.getLogger("exchangelib").setLevel(logging.WARNING)
        # A hung server must free its pool thread long before exchangelib's 120 s default; the
        # setting is process-wide in exchangelib, and this process talks EWS only through here.
        BaseProtocol.TIMEOUT = request_timeout
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="ews")
        self._max_workers = max_workers
        self._max_back_off = max_back_off
        self._default_back_off = default_back_off
        # exchangelib keeps a session pool and the probed version per Configuration; one per
        # endpoint and credential keeps those warm across calls instead of re-probing.
        self._configs: dict[tuple[str, str, str, str], Configuration] = {}
        self._accounts: dict[tuple[Any, ...], Account] = {}
        self._lock = threading.Lock()
        # Per mailbox: the monotonic time until which the server asked us to back off.
        self._busy_until: dict[str, float] = {}
        self._folder_listeners: list[Callable[[str], None]] = []
        self._dedicated = DedicatedFolders()

    @property
    def sessions_per_credential(self) -> int:
        """The size of a credential's exchangelib session pool: whoever else opens that pool
        (the push feed) must open it at this size (see `credential_sessions`)."""
        return credential_sessions(self._max_workers)

    def on_folder_created(self, listener: Callable[[str], None]) -> None:
        """`listener(address)` is called, on a pool thread, for each dedicated folder this
        provider creates in a mailbox: the push feed then watches it at once, not at its next
        look (a new mailbox's first sync creates them; issue #18)."""
        self._folder_listeners.append(listener)

    async def close(self) -> None:
        """After the drain: no call is waiting on the pool any more."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the port ---------------------------------------------------------------------------

    async def list_changes(
        self,
        mailbox: MailboxAccess,
        kind: Kind,
        cursor: Cursor,
        page_size: int,
        deadline: float | None = None,
        include_content: bool = False,
        refs_only: bool = False,
        known: Mapping[str, str] | None = None,
    ) -> ProviderChangePage:
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        # By id and ChangeKey alone (BaseShape IdOnly): the server neither reads nor sends the
        # items, nor does exchangelib parse them; with `known`, the other items are read after.
        # Not for emails: which Inbox message is shared depends on its categories.
        ids_only = (refs_only or bool(known)) and kind != Kind.EMAIL

        def page() -> ProviderChangePage:
            account = self._account(mailbox)
            sources = self._sources(account, kind, cursor.collection)
            states = _decode_states(cursor.token, sources)
            if states is None:
                return _resync(cursor)
            listed: list[tuple[str, Any, Source]] = []
            has_more = False
            for source in sources:
                budget = size - len(listed)
                if budget <= 0:
                    # Later folders may hold changes too; the next call finds out.
                    has_more = True
                    break
                try:
                    got = _sync(account, source.folder, states.get(source.key), budget, ids_only)
                except ErrorFolderNotFound:
                    if cursor.collection != default_collection(kind):
                        raise
                    # The user deleted a dedicated folder: forget the cached one, so the next
                    # listing makes it again, and list from scratch; its items went with it.
                    self._dedicated.forget(account)
                    return _resync(cursor)
                if got is None:
                    return _resync(cursor)
                entries, states[source.key], complete = got
                listed += [(change, item, source) for change, item in entries]
                if not complete:
                    has_more = True
                    break
            if ids_only:
                # Items at a version the caller holds stay references; the others are read in
                # full (GetItem), with the exceptions of their masters. An edited occurrence
                # changes its master's ChangeKey, so a master held stands for its exceptions.
                held = known or {}
                wanted = [
                    (item, source)
                    for change, item, source in listed
                    if not refs_only
                    and change in ("create", "update")
                    and held.get(item.id) != item.changekey
                ]
                read = _read_entries(account, wanted)
                changes: list[r.MailChange] = []
                full: list[tuple[str, Any]] = []
                for change, item, source in listed:
                    if id(item) not in read:
                        listed_change = _reference(change, item, kind, cursor.collection)
                    elif (got := read[id(item)]) is None:
                        continue  # deleted since the listing: the next one says so
                    else:
                        full.append((change, got))
                        listed_change = _change(change, got, kind, cursor.collection, source)
                    if listed_change is not None:
                        changes.append(listed_change)
                changes += _exceptions(account, full, cursor.collection)
                return ProviderChangePage(
                    changes=changes,
                    next_cursor=Cursor(cursor.collection, _encode_states(states, sources)),
                    has_more=has_more,
                )
            if include_content and kind == Kind.EMAIL:
                _attach_mime(account, [item for change, item, _ in listed if change != "delete"])
            changes = [
                c
                for change, item, source in listed
                if (c := _change(change, item, kind, cursor.collection, source)) is not None
            ]
            changes += _exceptions(account, [(c, i) for c, i, _ in listed], cursor.collection)
            return ProviderChangePage(
                changes=changes,
                next_cursor=Cursor(cursor.collection, _encode_states(states, sources)),
                has_more=has_more,
            )

        return await self._run(mailbox, page, deadline, cursor.collection)

    async def get_items(
        self,
        mailbox: MailboxAccess,
        refs: Sequence[r.ItemRef],
        deadline: float | None = None,
        link_ids: Sequence[str] = (),
        kind: Kind | None = None,
    ) -> FoundItems:
        def fetch() -> FoundItems:
            account = self._account(mailbox)
            wanted = list(refs)
            if link_ids and kind is not None:
                wanted += self._find_by_link_ids(account, kind, link_ids)
            found: list[r.MailItem] = []
            missing: list[r.ItemRef] = []
            failures: list[ItemFailure] = []
            if not wanted:
                return FoundItems(found, missing)
            # Any kind of item, emails with their MIME.
            fields = listed_fields(ITEM_CLASSES, account.version, mime=True)
            results = _fetch_each(account, [(ref.native_id, None) for ref in wanted], fields)
            for ref, got in zip(wanted, results, strict=True):
                if isinstance(got, ErrorItemNotFound | ErrorInvalidIdMalformed):
                    missing.append(ref)
                    continue
                if isinstance(got, Exception):
                    raise got
                if isinstance(got, _Unparsed):
                    failures.append(ItemFailure(ref, got.problem()))
                    continue
                converted = _convert(got, ref.kind, ref.collection)
                if isinstance(converted, r.ItemProblem):
                    failures.append(ItemFailure(item_ref(got, ref.kind, ref.collection), converted))
                elif converted is not None:
                    found.append(converted)
                else:
                    missing.append(ref)
            return FoundItems(found, missing, failures)

        return await self._run(mailbox, fetch, deadline)

    async def apply_items(
        self, mailbox: MailboxAccess, writes: Sequence[Write], deadline: float | None = None
    ) -> list[WriteResult]:
        """Consecutive writes of one operation go to the server as one batch (one FindItem per
        folder and one CreateItem for creates, one UpdateItem, one DeleteItem), so runs keep the
        input order and a batch costs a few requests, not a few per item."""
        results: list[WriteResult] = []
        runs: list[list[Write]] = []
        for write in writes:
            if runs and runs[-1][0].operation == write.operation:
                runs[-1].append(write)
            else:
                runs.append([write])
        for index, run in enumerate(runs):
            try:
                results += await self._run(
                    mailbox, partial(self._apply_run, mailbox, run), deadline
                )
            except (ProviderThrottled, ProviderUnavailable) as exc:
                # The writes already done stay reported; the rest are safe to resend with the
                # same link ids (creates find their item, updates carry the version).
                for rest in (w for later in runs[index:] for w in later):
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
        def listing() -> list[Collection]:
            account = self._account(mailbox)
            found: list[Collection] = []
            for wanted, name in _DISTINGUISHED.items():
                folder = getattr(account, name)
                found.append(Collection(default_collection(wanted), folder.name, wanted, True))
            for folder in account.msg_folder_root.walk():
                folder_kind = _FOLDER_CLASSES.get(folder.folder_class or "")
                # A mailbox's own system folders (ExternalContacts, …) are no place for items.
                if folder_kind is None or folder.is_distinguished or not folder.is_deletable:
                    continue
                is_default = _DEDICATED.get(folder_kind, ("",))[0] == folder.name
                found.append(
                    Collection(
                        default_collection(folder_kind) if is_default else folder.id,
                        folder.absolute.removeprefix(account.msg_folder_root.absolute + "/"),
                        folder_kind,
                        is_default,
                    )
                )
            return [c for c in found if kind is None or c.kind == kind]

        return await self._run(mailbox, listing, deadline)

    def _find_by_link_ids(
        self, account: Account, kind: Kind, link_ids: Sequence[str]
    ) -> list[r.ItemRef]:
        """One FindItem per folder of the kind, restricted on the link-id property; the caller
        reads the hits in the same GetItem batch as the refs it was given."""
        found: list[r.ItemRef] = []
        collection = default_collection(kind)
        for source in self._sources(account, kind, collection):
            query = source.folder.filter(**{f"{LINK_ID_FIELD}__in": list(link_ids)})
            for item in query.only("id", "changekey", LINK_ID_FIELD):
                found.append(
                    _written(item, _KIND_ENUMS[kind], getattr(item, LINK_ID_FIELD), collection)
                )
        return found

    def _sources(self, account: Account, kind: Kind, collection: str) -> list[Source]:
        """The folders one collection is listed from. Shared emails are the `Salesforce Emails`
        folder plus the Inbox and Sent Items messages that carry the share category."""
        folder = self._folder(account, kind, collection)
        if kind != Kind.EMAIL or collection != default_collection(kind):
            return [Source("", folder, None, folder.name)]
        return [
            Source("", folder, None, folder.name),
            Source("inbox", account.inbox, SHARE_CATEGORY, account.inbox.name),
            Source("sentitems", account.sent, SHARE_CATEGORY, account.sent.name),
        ]

    # -- writes -------------------------------------------------------------------------------

    def _apply_run(self, mailbox: MailboxAccess, run: Sequence[Write]) -> list[WriteResult]:
        account = self._account(mailbox)
        operation = run[0].operation
        if operation == WriteOperation.CREATE:
            return self._create(account, run)
        if operation == WriteOperation.UPDATE:
            return self._update(account, run)
        return self._delete(account, run)

    def _create(self, account: Account, run: Sequence[Write]) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        # Per target folder: (position in the run, write, exchangelib item).
        planned: dict[tuple[Kind, str], list[tuple[int, Write, Any]]] = {}
        for position, write in enumerate(run):
            kind = kind_of(write.item)
            cls = ews_class(kind)
            try:
                if cls is None or kind == r.OBJECT_KIND_EMAIL:
                    # Emails are shared one way: the mailbox never gets one from Concord.
                    raise UnwritableContent(
                        "only calendar items, tasks and contacts can be created"
                    )
                fields = to_ews_fields(write.item)
            except (ValueError, TypeError) as exc:
                results[position] = _invalid(write, exc)
                continue
            key = (_kind(kind), write.collection or default_collection(_kind(kind)))
            planned.setdefault(key, []).append((position, write, (cls, fields)))
        for (target, collection), entries in planned.items():
            folder = self._folder(account, target, collection)
            kind_enum = _KIND_ENUMS[target]
            # A retried create (lost response, crash after send) finds the item written first:
            # one FindItem for the whole batch, restricted on the link-id property. Creates the
            # caller proved new skip it: on a first sync that is every create, and the search
            # costs the server a scan of the folder per batch.
            link_ids = list(dict.fromkeys(w.link_id for _, w, _ in entries if not w.known_new))
            existing = (
                {
                    getattr(item, LINK_ID_FIELD): item
                    for item in folder.filter(**{f"{LINK_ID_FIELD}__in": link_ids}).only(
                        "id", "changekey", LINK_ID_FIELD
                    )
                }
                if link_ids
                else {}
            )
            fresh: list[tuple[int, Write, Any]] = []
            first_of: dict[str, int] = {}
            for position, write, (cls, fields) in entries:
                if write.link_id in existing or write.link_id in first_of:
                    continue
                try:
                    item = cls(
                        account=account, folder=folder, **fields, **{LINK_ID_FIELD: write.link_id}
                    )
                except (ValueError, TypeError) as exc:
                    results[position] = _invalid(write, exc)
                    continue
                first_of[write.link_id] = position
                fresh.append((position, write, item))
            try:
                created = _create_items(account, folder, [item for _, _, item in fresh])
            except _UnsentBatch:
                # exchangelib validates a whole request before sending it, so one bad item
                # refuses them all: each is checked on its own, and the others sent. (Checking
                # each first, every time, cost as much again as the validation in the send.)
                valid: list[tuple[int, Write, Any]] = []
                for position, write, item in fresh:
                    try:
                        item.clean(version=account.version)
                    except (ValueError, TypeError) as exc:
                        results[position] = _invalid(write, exc)
                    else:
                        valid.append((position, write, item))
                fresh = valid
                created = _create_items(account, folder, [item for _, _, item in fresh])
            for (position, write, _), got in zip(fresh, created, strict=True):
                if isinstance(got, Exception):
                    results[position] = _failed(write, got)
                    continue
                results[position] = WriteResult(
                    write.link_id,
                    r.WRITE_STATUS_OK,
                    ref=_written(got, kind_enum, write.link_id, collection),
                )
            for position, write, _ in entries:
                if position in results:
                    continue
                if write.link_id in existing:
                    ref: r.ItemRef | None = _written(
                        existing[write.link_id], kind_enum, write.link_id, collection
                    )
                    results[position] = WriteResult(
                        write.link_id, r.WRITE_STATUS_OK, ref=ref, already_applied=True
                    )
                    continue
                # The same link id twice in one batch: the first one's outcome is this one's.
                first = results[first_of[write.link_id]]
                results[position] = replace(
                    first, already_applied=first.status == r.WRITE_STATUS_OK
                )
        return [results[position] for position in range(len(run))]

    def _update(self, account: Account, run: Sequence[Write]) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        # An unconditional update still needs the current ChangeKey; NeverOverwrite then only
        # refuses an edit made between this read and the write. One GetItem for all of them.
        unversioned = [(p, w) for p, w in enumerate(run) if not w.ref.version]
        current: dict[int, str] = {}
        if unversioned:
            fetched = account.fetch(
                ids=[(w.ref.native_id, None) for _, w in unversioned], only_fields=["changekey"]
            )
            for (position, write), got in zip(unversioned, fetched, strict=True):
                if isinstance(got, Exception):
                    results[position] = _failed(write, got)
                else:
                    current[position] = got.changekey
        planned: list[tuple[int, Write, Any, list[str]]] = []
        for position, write in enumerate(run):
            if position in results:
                continue
            kind = kind_of(write.item)
            cls = ews_class(kind)
            try:
                if cls is None:
                    raise UnwritableContent("the update has no item payload")
                names = update_fields(write.item, list(write.update_mask))
                values = to_ews_fields(write.item) if names else {}
                # Every update stores the write's link id, over whatever the item carries:
                # an item Concord updates is then found by its link's id, and a copy of it
                # the server makes (a recurring task's completed occurrence, split off by
                # this very update) carries it too, which is how a crash that lost the
                # answer finds where the update went. A copy Concord adopts as an item of
                # its own gets its own id by an update of the link id alone.
                if write.link_id:
                    names.append(LINK_ID_FIELD)
                    values[LINK_ID_FIELD] = write.link_id
                changekey = write.ref.version or current[position]
                item = cls(account=account, id=write.ref.native_id, changekey=changekey)
                for name in names:
                    setattr(item, name, values.get(name))
                    # Checked per field (the item is partial), so one bad value fails only
                    # its own write, not the batch.
                    field = item.get_field_by_fieldname(name)
                    field.clean(getattr(item, name), version=account.version)
            except (ValueError, TypeError) as exc:
                results[position] = _invalid(write, exc)
                continue
            planned.append((position, write, item, names))
        updated = (
            list(
                _UpdateEach(account=account).call(
                    items=[(item, names) for _, _, item, names in planned],
                    # exchangelib defaults to AutoResolve, which would overwrite a concurrent edit.
                    conflict_resolution=NEVER_OVERWRITE,
                    message_disposition=SAVE_ONLY,
                    send_meeting_invitations_or_cancellations=SEND_TO_NONE,
                    suppress_read_receipts=True,
                )
            )
            if planned
            else []
        )
        for (position, write, _, _), got in zip(planned, updated, strict=True):
            if isinstance(got, Exception):
                results[position] = _failed(write, got)
                continue
            native_id, changekey = got
            results[position] = WriteResult(
                write.link_id,
                r.WRITE_STATUS_OK,
                ref=r.ItemRef(
                    kind=kind_of(write.item),
                    native_id=native_id or write.ref.native_id,
                    version=changekey or "",
                    link_id=write.link_id,
                    collection=write.ref.collection,
                ),
            )
        return [results[position] for position in range(len(run))]

    def _delete(self, account: Account, run: Sequence[Write]) -> list[WriteResult]:
        deleted = list(
            _DeleteEach(account=account).call(
                items=[(w.ref.native_id, w.ref.version or None) for w in run],
                delete_type=HARD_DELETE,
                send_meeting_cancellations=SEND_TO_NONE,
                affected_task_occurrences=ALL_OCCURRENCES,
                suppress_read_receipts=True,
            )
        )
        return [
            _failed(write, got)
            if isinstance(got, Exception)
            else WriteResult(write.link_id, r.WRITE_STATUS_OK)
            for write, got in zip(run, deleted, strict=True)
        ]

    # -- plumbing ----------------------------------------------------------------------------

    def _account(self, mailbox: MailboxAccess) -> Account:
        settings = mailbox.account.settings
        endpoint = str(settings["service_url"])
        username = str(settings["username"])
        auth = str(settings.get("auth_type") or "ntlm").lower()
        password = (mailbox.secret or b"").decode()
        digest = hashlib.sha256(password.encode()).hexdigest()
        key = (endpoint, username, auth, digest)
        address = mailbox.account.address
        configured = str(settings.get("access_type") or "").lower()
        if configured in _ACCESS_TYPES:
            access = _ACCESS_TYPES[configured]
        else:
            # Unset: a service account opening another mailbox impersonates it (one account
            # for a whole org); a user opening its own mailbox needs no right at all.
            access = DELEGATE if username.lower() == address.lower() else IMPERSONATION
        with self._lock:
            config = self._configs.get(key)
            if config is None:
                config = Configuration(
                    service_endpoint=endpoint,
                    credentials=Credentials(username, password),
                    auth_type=_AUTH_TYPES.get(auth, NTLM),
                    # We wait out ErrorServerBusy ourselves, bounded by the caller's deadline.
                    retry_policy=FailFast(),
                    # exchangelib's default is one session per credential: every mailbox a
                    # service account opens would wait for the one request in flight. As many
                    # as this process has workers, within what EWS allows an account at once.
                    max_connections=self.sessions_per_credential,
                )
                self._configs[key] = config
            account_key = (*key, address, access)
            account = self._accounts.get(account_key)
            if account is None:
                account = Account(
                    primary_smtp_address=address,
                    config=config,
                    autodiscover=False,
                    access_type=access,
                )
                self._accounts[account_key] = account
        # Outside the lock, on this mailbox's own: no other mailbox waits for its folders.
        return open_folders(account)

    def _folder(self, account: Account, kind: Kind, collection: str) -> Folder:
        if collection == default_collection(kind):
            if kind in _DISTINGUISHED:
                return getattr(account, _DISTINGUISHED[kind])
            folder, created = self._dedicated.folder(account, *_DEDICATED[kind])
            if created:
                for listener in self._folder_listeners:
                    listener(account.primary_smtp_address)
            return folder
        cached = account.root.get_folder(Folder(id=collection))
        if cached is not None:
            return cached
        return Folder.resolve(account=account, folder=Folder(root=account.root, id=collection))

    async def _run(
        self,
        mailbox: MailboxAccess,
        call: Callable[[], T],
        deadline: float | None,
        collection: str = "",
    ) -> T:
        name = mailbox.account.mailbox
        loop = asyncio.get_running_loop()
        ends = None if deadline is None else time.monotonic() + deadline
        while True:
            # A mailbox the server told to back off waits as a whole, so concurrent calls for
            # it do not each spend a request just to be told the same.
            waiting = self._busy_until.get(name, 0.0) - time.monotonic()
            if waiting > 0:
                await self._wait(name, waiting, ends)
                continue
            try:
                return await loop.run_in_executor(self._pool, _translate(name, collection, call))
            except _Busy as busy:
                back_off = busy.back_off if busy.back_off > 0 else self._default_back_off
                self._busy_until[name] = time.monotonic() + back_off
                await self._wait(name, back_off, ends)

    async def _wait(self, mailbox: str, back_off: float, ends: float | None) -> None:
        left = None if ends is None else ends - time.monotonic()
        if back_off > self._max_back_off or (left is not None and back_off >= left):
            raise ProviderThrottled(mailbox, round(back_off, 3))
        await asyncio.sleep(back_off)


def _create_items(account: Account, folder: Folder, items: list[Any]) -> list[Any]:
    """One CreateItem request for all of `items` (one request, so a refused payload means
    none was sent); an item refused by the server comes back as its exception."""
    if not items:
        return []
    service = _CreateEach(account=account, chunk_size=len(items))
    # Mirroring a meeting must never mail its attendees.
    return list(
        service.call(
            items=items,
            folder=folder,
            message_disposition=SAVE_ONLY,
            send_meeting_invitations=SEND_TO_NONE,
        )
    )


def _translate(mailbox: str, collection: str, call: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        try:
            return call()
        except ErrorServerBusy as exc:
            raise _Busy(float(exc.back_off or 0)) from None
        except UnauthorizedError:
            raise MailboxCredentialsRejected(mailbox) from None
        except _ACCESS_DENIED as exc:
            raise MailboxAccessDenied(mailbox, type(exc).__name__) from None
        except ErrorFolderNotFound:
            raise CollectionNotFound(mailbox, collection) from None
        except ErrorTimeoutExpired:
            # Also what a response lost after the server committed looks like: the caller
            # retries, and a create finds its item by link id.
            raise ProviderUnavailable(mailbox, "ErrorTimeoutExpired") from None
        except ResponseMessageError:
            raise
        except TransportError as exc:
            raise ProviderUnavailable(mailbox, type(exc).__name__) from None
        except (OSError, ConnectionError) as exc:
            raise ProviderUnavailable(mailbox, type(exc).__name__) from None

    return run


def _sync(
    account: Account, folder: Any, state: str | None, budget: int, ids_only: bool = False
) -> tuple[list[tuple[str, Any]], str, bool] | None:
    """One SyncFolderItems call: (changes, new state, complete), or None when the state is no
    longer valid. `ids_only` lists ids and ChangeKeys, no other field."""
    fields = _listed_fields(account, folder)

    def listing(paths: set[Any]) -> tuple[list[Any], SyncFolderItems]:
        svc = _SyncItems(account=account)
        found = svc.call(
            folder=folder,
            shape=ID_ONLY,
            additional_fields=paths,
            sync_state=state or None,
            ignore=None,
            max_changes_returned=budget,
            sync_scope=None,
        )
        return list(found), svc

    try:
        if ids_only:
            listed, svc = listing(set())
        else:
            try:
                listed, svc = listing(_paths(fields))
            except Exception as exc:
                if _from_server(exc):
                    raise
                # exchangelib could not parse one of the page's items (e.g. an all-day item in
                # a zone no table knows) and so lost the whole page. The same SyncState lists
                # the same changes again: by id alone, which always parses, then item by item.
                listed, svc = listing(set())
                listed = _read_listed(account, fields, listed)
    except ErrorInvalidSyncStateData:
        return None
    for entry in listed:
        # exchangelib hands per-response errors back as values, not raised.
        if isinstance(entry, ErrorInvalidSyncStateData):
            return None
        if isinstance(entry, Exception):
            raise entry
    return listed, svc.sync_state or state or "", bool(svc.includes_last_item_in_range)


def _listed_fields(account: Account, folder: Any) -> list[Any]:
    # What the conversion reads of the folder's items (`ews_items.READS`); never MIME, which
    # would multiply what every sync of a mail folder transfers: it is fetched per page, and
    # only when content was asked for.
    return listed_fields(folder.supported_item_models, account.version)


def _paths(fields: Sequence[Any]) -> set[Any]:
    return {FieldPath(field=f) for f in fields}


@dataclass(frozen=True)
class _Unparsed:
    """An item exchangelib could not parse: quarantined by its id, never guessed at."""

    id: str
    changekey: str
    error: str  # the exception's class name, never the item's content

    def ref(self, kind: r.ObjectKind.ValueType, collection: str) -> r.ItemRef:
        return r.ItemRef(
            kind=kind, native_id=self.id, version=self.changekey, collection=collection
        )

    def problem(self) -> r.ItemProblem:
        return r.ItemProblem(
            reason="CONVERSION_FAILED",
            message=f"the server's item could not be read ({self.error})",
        )


def _from_server(exc: Exception) -> bool:
    """An error the server or the network answered, as opposed to one parsing an answer."""
    return isinstance(exc, (EWSError, OSError))


def _get(account: Account, ids: Sequence[Any], fields: Sequence[Any]) -> list[Any]:
    """GetItem of `ids` (items or (id, changekey) pairs) with `fields`, 100 ids a request (as
    `Account.fetch`); an item's error in its place."""
    if not ids:
        return []
    return list(
        _GetItems(account=account).call(items=ids, additional_fields=_paths(fields), shape=ID_ONLY)
    )


def _fetch_each(account: Account, ids: Sequence[Any], fields: Sequence[Any]) -> list[Any]:
    """GetItem of `ids` (items or (id, changekey) pairs), one result per id: in one batch, or —
    when exchangelib cannot parse the batch (one poison item loses all of it) — id by id, so
    only an unparseable item is set aside, as `_Unparsed`. Errors the server answered stay
    errors: of the batch (raised) or of an item (in its place)."""
    try:
        return _get(account, ids, fields)
    except Exception as exc:
        if _from_server(exc):
            raise
    return [_fetch_one(account, each, fields) for each in ids]


def _fetch_one(account: Account, each: Any, fields: Sequence[Any]) -> Any:
    try:
        [found] = _get(account, [each], fields)
    except Exception as exc:
        if _from_server(exc):
            raise
        native, key = (each.id, each.changekey) if hasattr(each, "id") else each
        return _Unparsed(native or "", key or "", type(exc).__name__)
    return found


def _read_listed(
    account: Account, fields: Sequence[Any], listed: list[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    """The items of an id-only listing, read by GetItem (`_fetch_each`)."""
    wanted = [item for change, item in listed if change in ("create", "update")]
    got = _fetch_each(account, wanted, fields)
    read = {id(item): found for item, found in zip(wanted, got, strict=True)}
    out: list[tuple[str, Any]] = []
    for change, item in listed:
        found = read.get(id(item), item)
        if isinstance(found, ErrorItemNotFound):
            continue  # deleted since the listing: the next one says so
        if isinstance(found, Exception):
            raise found
        out.append((change, found))
    return out


def _decode_states(token: str, sources: Sequence[Source]) -> dict[str, str] | None:
    """Each folder's SyncState; None for a cursor this adapter did not write, which is answered
    like an invalid SyncState (a full resync)."""
    if not token.startswith(_MULTI):
        return {sources[0].key: token} if token else {}
    try:
        states = json.loads(base64.urlsafe_b64decode(token[len(_MULTI) :]))
    except ValueError:
        return None
    if not isinstance(states, dict) or set(states) != {s.key for s in sources}:
        return None
    return {str(k): str(v) for k, v in states.items()}


def _encode_states(states: dict[str, str], sources: Sequence[Source]) -> str:
    if len(sources) == 1:
        return states.get(sources[0].key, "")
    ordered = {s.key: states.get(s.key, "") for s in sources}
    return _MULTI + base64.urlsafe_b64encode(json.dumps(ordered).encode()).decode()


def _attach_mime(account: Account, items: Sequence[Any]) -> None:
    """One GetItem batch per page for the MIME of the listed messages, as far as MIME_PAGE_BYTES
    (by the size the server reports) allows: an answer must stay well inside gRPC's 4 MiB.
    Messages past the budget are listed without MIME; GetItems reads it."""
    messages: list[Any] = []
    budget = MIME_PAGE_BYTES
    for item in items:
        if not isinstance(item, Message) or not item.id:
            continue
        size = message_size(item)
        if size > budget:
            continue
        budget -= size
        messages.append(item)
    if not messages:
        return
    mime = [Message.get_field_by_fieldname(MIME_FIELD)]
    fetched = _get(account, [(m.id, None) for m in messages], mime)
    for message, got in zip(messages, fetched, strict=True):
        if isinstance(got, ErrorItemNotFound):
            # Deleted since the sync answered; the next sync lists the delete.
            continue
        if isinstance(got, Exception):
            raise got
        message.mime_content = got.mime_content


def _convert(
    item: Any, kind: r.ObjectKind.ValueType, collection: str, folder: str = ""
) -> r.MailItem | r.ItemProblem | None:
    try:
        return to_mail_item(item, collection, folder)
    except UnreadableItem as exc:
        return exc.problem()
    except Exception as exc:
        # Whatever one item's content does to the conversion stays with that item: the rest of
        # the page goes on, and the reason names the failure, never the content.
        return r.ItemProblem(
            reason="CONVERSION_FAILED",
            message=f"the item could not be converted ({type(exc).__name__})",
        )


def _exceptions(account: Account, listed: Sequence[Any], collection: str) -> list[r.MailChange]:
    """Exchange reports an edited occurrence only as an update of its master; the exceptions
    themselves are fetched in one GetItem batch per page and listed as their own items, keyed
    by series and original start."""
    wanted: list[tuple[str, str, str]] = []
    for change, item in listed:
        if change in ("create", "update"):
            wanted += [(item.id, o, key) for o, key in modified_occurrences(item)]
    if not wanted:
        return []
    fields = listed_fields([CalendarItem], account.version)
    fetched = _fetch_each(account, [(occurrence, key) for _, occurrence, key in wanted], fields)
    found: list[r.MailChange] = []
    for (series, _, _), got in zip(wanted, fetched, strict=True):
        if isinstance(got, ErrorItemNotFound):
            # Deleted since the sync answered; the master's next update says so.
            continue
        if isinstance(got, Exception):
            raise got
        if isinstance(got, _Unparsed):
            ref = got.ref(r.OBJECT_KIND_CALENDAR_ITEM, collection)
            found.append(r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=ref, problem=got.problem()))
            continue
        converted = _convert(got, r.OBJECT_KIND_CALENDAR_ITEM, collection)
        if isinstance(converted, r.ItemProblem):
            ref = item_ref(got, r.OBJECT_KIND_CALENDAR_ITEM, collection)
            found.append(r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=ref, problem=converted))
            continue
        if converted is None:
            continue
        converted.calendar_item.series_id = series
        found.append(r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=converted.ref, item=converted))
    return found


# exchangelib's field errors start with the field's name; a length error ends with the limit.
_FIELD_ERROR = re.compile(r"^'(?P<field>[a-z_]+)'(?:.* exceeds length (?P<limit>\d+)$)?", re.S)


def _invalid(write: Write, exc: Exception) -> WriteResult:
    if isinstance(exc, UnwritableContent):
        message = str(exc)
    else:
        # exchangelib's own validation; its messages quote values, so only the field's name and
        # a length limit leave here (e.g. a subject over Exchange's 255 characters).
        found = _FIELD_ERROR.match(str(exc))
        message = "a field has a value Exchange cannot store"
        if found:
            limit = f" (longer than {found['limit']} characters)" if found["limit"] else ""
            message = f"the {found['field']} field has a value Exchange cannot store{limit}"
    return WriteResult(
        write.link_id, r.WRITE_STATUS_INVALID, error_code="INVALID", error_message=message
    )


# Per-item errors and what they mean for that one write; messages never quote the server's text.
_ITEM_ERRORS: tuple[
    tuple[type[Exception] | tuple[type[Exception], ...], r.WriteStatus.ValueType, str], ...
] = (
    (
        ErrorIrresolvableConflict,
        r.WRITE_STATUS_CONFLICT,
        "the item changed since the given version",
    ),
    (
        (ErrorItemNotFound, ErrorInvalidIdMalformed),
        r.WRITE_STATUS_NOT_FOUND,
        "the item no longer exists",
    ),
    # Refused inside an answer whose other items may have been written: only this one is resent
    # (retrying the batch would turn its applied updates into false conflicts).
    (
        (ErrorServerBusy, ErrorTimeoutExpired),
        r.WRITE_STATUS_RETRYABLE,
        "the server did not apply this write; send it again",
    ),
)


def _failed(write: Write, exc: Exception) -> WriteResult:
    """One write's error as its result; errors about the call or the mailbox are raised, so
    `_translate` turns them into the call's own status (and the rest become RETRYABLE)."""
    if isinstance(exc, (ErrorFolderNotFound, *_ACCESS_DENIED)):
        raise exc
    found = next(((s, m) for errors, s, m in _ITEM_ERRORS if isinstance(exc, errors)), None)
    if found is None:
        if not isinstance(exc, ResponseMessageError):
            raise exc
        found = (r.WRITE_STATUS_FAILED, "the server refused the write")
    status, message = found
    return WriteResult(
        write.link_id,
        status,
        error_code=type(exc).__name__,
        error_message=message,
    )


def _resync(cursor: Cursor) -> ProviderChangePage:
    # Never infer deletes from a lost state: the caller relists and reconciles against links.
    return ProviderChangePage(
        changes=(), next_cursor=Cursor(cursor.collection, ""), full_resync_required=True
    )


def _kind(kind: r.ObjectKind.ValueType) -> Kind:
    return {v: k for k, v in _KIND_ENUMS.items()}[kind]


def _written(item: Any, kind: r.ObjectKind.ValueType, link_id: str, collection: str) -> r.ItemRef:
    return r.ItemRef(
        kind=kind,
        native_id=item.id or "",
        version=item.changekey or "",
        link_id=link_id,
        collection=collection,
    )


def _read_entries(account: Account, wanted: list[tuple[Any, Source]]) -> dict[int, Any]:
    """Items of an id-only listing read in full (one GetItem batch per folder), by the
    listed item's `id()`; None for one deleted since the listing."""
    read: dict[int, Any] = {}
    for source in dict.fromkeys(source for _, source in wanted):
        items = [item for item, s in wanted if s is source]
        got = _fetch_each(account, items, _listed_fields(account, source.folder))
        for item, found in zip(items, got, strict=True):
            if isinstance(found, ErrorItemNotFound):
                read[id(item)] = None
            elif isinstance(found, Exception):
                raise found
            else:
                read[id(item)] = found
    return read


def _reference(change: str, item: Any, kind: Kind, collection: str) -> r.MailChange | None:
    """A change of an id-only listing: the item's reference, its ChangeKey as the version."""
    if change == "read_flag_change":
        return None
    ref = r.ItemRef(kind=_KIND_ENUMS[kind], native_id=item.id or "", collection=collection)
    if change == "delete":
        return r.MailChange(type=r.CHANGE_TYPE_DELETE, ref=ref)
    ref.version = item.changekey or ""
    return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=ref)


def _change(
    change: str, item: Any, kind: Kind, collection: str, source: Source
) -> r.MailChange | None:
    kind_enum = _KIND_ENUMS[kind]
    if change == "delete":
        if source.category is not None:
            # Which deleted message carried the category is unknowable now, and a shared email
            # stays in Salesforce anyway: listing every Inbox delete would only be noise.
            return None
        return r.MailChange(
            type=r.CHANGE_TYPE_DELETE,
            ref=r.ItemRef(kind=kind_enum, native_id=item.id or "", collection=collection),
        )
    if change == "read_flag_change":
        # A read flag is not part of any mirrored field.
        return None
    if isinstance(item, _Unparsed):
        return r.MailChange(
            type=r.CHANGE_TYPE_UPSERT, ref=item.ref(kind_enum, collection), problem=item.problem()
        )
    if source.category is not None and not carries_category(item, source.category):
        return None
    converted = _convert(item, kind_enum, collection, source.name)
    if isinstance(converted, r.ItemProblem):
        ref = item_ref(item, kind_enum, collection)
        return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=ref, problem=converted)
    if converted is None:
        return None
    return r.MailChange(type=r.CHANGE_TYPE_UPSERT, ref=converted.ref, item=converted)
