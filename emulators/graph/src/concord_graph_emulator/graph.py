"""The `/v1.0` surface: one dispatcher that serves a request, whether it came over HTTP or as a
sub-request of `$batch`, so both get the same auth, faults, throttling and answers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from concord_graph_emulator import resources as res
from concord_graph_emulator import zones
from concord_graph_emulator.notify import Notifier, SubscriptionRefused
from concord_graph_emulator.store import App, Folder, Item, Mailbox, Store, new_id, utcnow

__all__ = ["Control", "Fault", "GraphApi", "GraphRequest", "GraphResponse"]

MAX_BATCH = 20
# Graph lets an app have 4 requests in flight against one mailbox; the 5th is throttled.
MAILBOX_CONCURRENCY = 4
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# Outlook resources: a subscription lives 7 days at most.
MAX_SUBSCRIPTION_MINUTES = 10080
SIZE_PROPERTY = "Integer 0x0E08"
FAULT_KINDS = {"throttle", "unavailable", "drop_response", "latency"}
_PROP_ID = re.compile(
    r"^(String|Integer|Boolean|SystemTime|Binary|Double|Long|Short|Float|Currency|CLSID)"
    r"( \{[0-9a-fA-F-]{36}\} (Name \S+|Id 0x[0-9a-fA-F]+)| 0x[0-9a-fA-F]{4})$"
)
_QUOTED = r"'((?:[^']|'')*)'"
_FILTER_PROP = re.compile(
    rf"^singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id eq {_QUOTED}"
    rf" and \1/value eq {_QUOTED}\s*\)$",
    re.IGNORECASE,
)
_FILTER_NAME = re.compile(rf"^displayName eq {_QUOTED}$", re.IGNORECASE)
_EXPAND = re.compile(r"^singleValueExtendedProperties\(\$filter=(.*)\)$", re.IGNORECASE)
_EXPAND_ID = re.compile(rf"id eq {_QUOTED}", re.IGNORECASE)


@dataclass
class Fault:
    """An injected fault for the next `times` requests of `operation` ("*": any) on `mailbox`
    ("*": any): `throttle` (429), `unavailable` (503), both with Retry-After; `drop_response`
    (the request is applied, its answer lost as a 504); `latency` (answered late)."""

    kind: str
    operation: str = "*"
    mailbox: str = "*"
    times: int = 1
    retry_after: float = 1.0
    latency_ms: int = 0


@dataclass
class Control:
    calls: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: Counter[tuple[str, str]] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)

    def take(self, operation: str, mailbox: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.operation in {"*", operation} and fault.mailbox.lower() in {"*", mailbox}:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


@dataclass
class GraphRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    base: str
    app: App | None = None

    def prefer(self, name: str) -> str | None:
        for part in self.headers.get("prefer", "").split(","):
            key, _, value = part.strip().partition("=")
            if key.strip().lower() == name.lower():
                return value.strip().strip('"')
        return None


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Applied, but its answer is lost on the way back (a `drop_response` fault).
    dropped: bool = False


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.dropped = False

    def response(self) -> GraphResponse:
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": res.timestamp(utcnow()),
                    "request-id": str(uuid.uuid4()),
                    "client-request-id": str(uuid.uuid4()),
                },
            }
        }
        return GraphResponse(self.status, body, dict(self.headers))


def _not_found(what: str = "item") -> GraphError:
    return GraphError(
        404, "ErrorItemNotFound", f"The specified object was not found in the store ({what})."
    )


Handler = Callable[..., Awaitable[GraphResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    handler: Handler


# Kinds of item a folder-scoped collection holds.
_FOLDER_KINDS = {"contactFolder": "contact", "mailFolder": "message", "todoList": "todoTask"}


class GraphApi:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.control = Control()
        self.notifier = Notifier(store)
        self.routes: list[Route] = []
        u = r"users/(?P<user>[^/]+)"
        add = self._add
        add("POST", r"\$batch", "batch", self.batch)
        add("POST", r"subscriptions", "subscribe", self.create_subscription)
        add("GET", r"subscriptions", "read", self.list_subscriptions)
        add("GET", r"subscriptions/(?P<sid>[^/]+)", "read", self.get_subscription)
        add("PATCH", r"subscriptions/(?P<sid>[^/]+)", "subscribe", self.renew_subscription)
        add("DELETE", r"subscriptions/(?P<sid>[^/]+)", "subscribe", self.delete_subscription)
        add("POST", r"subscriptions/(?P<sid>[^/]+)/reauthorize", "subscribe", self.reauthorize)
        add("GET", rf"{u}", "read", self.get_user)
        # Events and calendar views.
        add("GET", rf"{u}/calendarView/delta", "delta", self.calendar_delta)
        add("GET", rf"{u}/calendarView", "read", self.calendar_view)
        add("GET", rf"{u}/events", "read", self.list_events)
        add("POST", rf"{u}/events", "create", self.create_event)
        add("GET", rf"{u}/events/(?P<id>[^/]+)/instances", "read", self.event_instances)
        add("GET", rf"{u}/events/(?P<id>[^/]+)", "read", self.get_event)
        add("PATCH", rf"{u}/events/(?P<id>[^/]+)", "update", self.update_event)
        add("DELETE", rf"{u}/events/(?P<id>[^/]+)", "delete", self.delete_event)
        # Folders and the items they hold.
        for collection, kind in (
            ("contactFolders", "contactFolder"),
            ("mailFolders", "mailFolder"),
            ("todo/lists", "todoList"),
        ):
            items = {"contactFolder": "contacts", "mailFolder": "messages", "todoList": "tasks"}[
                kind
            ]
            f = rf"{u}/{collection}/(?P<folder>[^/]+)"
            add("GET", rf"{u}/{collection}", "read", self.list_folders, kind=kind)
            add("POST", rf"{u}/{collection}", "create", self.create_folder, kind=kind)
            add("GET", f, "read", self.get_folder, kind=kind)
            add("GET", rf"{f}/{items}/delta", "delta", self.folder_delta, kind=kind)
            add("GET", rf"{f}/{items}", "read", self.list_items, kind=kind)
            add("POST", rf"{f}/{items}", "create", self.create_item, kind=kind)
            add("GET", rf"{f}/{items}/(?P<id>[^/]+)", "read", self.get_item, kind=kind)
            add("PATCH", rf"{f}/{items}/(?P<id>[^/]+)", "update", self.update_item, kind=kind)
            add("DELETE", rf"{f}/{items}/(?P<id>[^/]+)", "delete", self.delete_item, kind=kind)
        # A To Do task's linked resources (its own resources: a task's PATCH writes none).
        linked = rf"{u}/todo/lists/(?P<folder>[^/]+)/tasks/(?P<id>[^/]+)/linkedResources"
        add("GET", linked, "read", self.list_linked)
        add("POST", linked, "create", self.create_linked)
        add("PATCH", rf"{linked}/(?P<lid>[^/]+)", "update", self.update_linked)
        # The default contacts folder, and items by id alone.
        add("GET", rf"{u}/contacts/delta", "delta", self.folder_delta, kind="contactFolder")
        add("GET", rf"{u}/contacts", "read", self.list_items, kind="contactFolder")
        add("POST", rf"{u}/contacts", "create", self.create_item, kind="contactFolder")
        for collection, kind in (("contacts", "contactFolder"), ("messages", "mailFolder")):
            one = rf"{u}/{collection}/(?P<id>[^/]+)"
            add("GET", one, "read", self.get_item, kind=kind)
            add("PATCH", one, "update", self.update_item, kind=kind)
            add("DELETE", one, "delete", self.delete_item, kind=kind)
        add("GET", rf"{u}/messages/(?P<id>[^/]+)/\$value", "value", self.message_mime)
        add("GET", rf"{u}/outlook/masterCategories", "read", self.list_categories)
        add("POST", rf"{u}/outlook/masterCategories", "create", self.create_category)

    def _add(
        self, method: str, pattern: str, operation: str, handler: Handler, **fixed: str
    ) -> None:
        async def bound(req: GraphRequest, **groups: str) -> GraphResponse:
            return await handler(req, **groups, **fixed)

        self.routes.append(Route(method, re.compile(pattern + "$"), operation, bound))

    # -- dispatch ------------------------------------------------------------------------------

    async def serve(self, req: GraphRequest) -> GraphResponse:
        try:
            return await self._serve(req)
        except GraphError as err:
            answer = err.response()
            answer.dropped = err.dropped
            return answer
        except res.BadInput as exc:
            return GraphError(400, exc.code, exc.message).response()

    async def _serve(self, req: GraphRequest) -> GraphResponse:
        # `mailFolders('inbox')` and `mailFolders/inbox` name the same folder.
        path = re.sub(r"\('([^']*)'\)", r"/\1", req.path.strip("/"))
        allowed = False
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            allowed = True
            if route.method != req.method:
                continue
            return await self._run(route, req, match.groupdict())
        if allowed:
            raise GraphError(405, "Request_BadRequest", f"{req.method} is not allowed here")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path}'.")

    async def _run(self, route: Route, req: GraphRequest, groups: dict[str, str]) -> GraphResponse:
        if req.app is None:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty, expired or invalid.",
            )
        box = self.store.mailbox(groups["user"]) if "user" in groups else None
        if "user" in groups:
            if box is None:
                raise GraphError(
                    404, "ErrorInvalidUser", f"The requested user '{groups['user']}' is invalid."
                )
            if box.address in req.app.denied:
                raise GraphError(
                    403,
                    "ErrorAccessDenied",
                    "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
                    "AccessPolicy settings.",
                )
        who = box.address if box is not None else "*"
        with self.control.lock:
            self.control.calls[route.operation] += 1
            self.control.calls["requests"] += 1
            for name in ("IdType", "outlook.timezone", "outlook.body-content-type"):
                value = req.prefer(name)
                if value is not None:
                    self.control.calls[f"prefer:{name}={value}"] += 1
        fault = self.control.take(route.operation, who)
        if fault is not None and fault.kind in ("throttle", "unavailable"):
            status, code = (
                (429, "TooManyRequests")
                if fault.kind == "throttle"
                else (503, "ServiceUnavailable")
            )
            raise GraphError(
                status,
                code,
                "Application is over its MailboxConcurrency limit."
                if status == 429
                else "The service is temporarily unavailable.",
                **{"Retry-After": f"{fault.retry_after:g}"},
            )
        key = (req.app.client_id, who)
        with self.control.lock:
            self.control.in_flight[key] += 1
            busy = self.control.in_flight[key]
            self.control.max_in_flight[who] = max(self.control.max_in_flight[who], busy)
        try:
            if box is not None and busy > MAILBOX_CONCURRENCY:
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    **{"Retry-After": "1"},
                )
            if fault is not None and fault.kind == "latency":
                await asyncio.sleep(fault.latency_ms / 1000)
            args = {k: v for k, v in groups.items() if k != "user"}
            if box is not None:
                args["box"] = box  # type: ignore[assignment]
            answer = await route.handler(req, **args)
        finally:
            with self.control.lock:
                self.control.in_flight[key] -= 1
        if fault is not None and fault.kind == "drop_response":
            # Applied, but the client never learns it did (a gateway timeout on the way back).
            lost = GraphError(504, "GatewayTimeout", "The gateway did not receive a response.")
            lost.dropped = True
            raise lost
        return answer

    # -- helpers ---------------------------------------------------------------------------

    def _zone(self, req: GraphRequest) -> str:
        name = req.prefer("outlook.timezone") or "UTC"
        try:
            zones.zone(name)
        except zones.UnknownZone:
            return "UTC"
        return name

    def _render(
        self, req: GraphRequest, item: Item, instance: res.Instance | None = None, **opts: Any
    ) -> dict[str, Any]:
        select = opts.get("select", _select(req))
        expand = opts.get("expand", _expand(req))
        if item.kind == "message" and expand is not None and SIZE_PROPERTY.lower() in expand:
            item.props[SIZE_PROPERTY.lower()] = (SIZE_PROPERTY, str(len(self._mime(item))))
        out = res.render(
            item, zone_name=self._zone(req), instance=instance, select=select, expand_props=expand
        )
        out["@odata.type"] = res.ODATA_TYPES[item.kind]
        if (req.prefer("outlook.body-content-type") or "").lower() == "text":
            body = out.get("body")
            if isinstance(body, dict) and body.get("contentType") == "html":
                text = re.sub(r"<[^>]+>", "", str(body.get("content") or ""))
                out["body"] = {"contentType": "text", "content": text}
        return out

    def _mime(self, item: Item) -> bytes:
        if item.mime is not None:
            return item.mime
        # A message written through Graph: Exchange makes its MIME from the properties.
        data = item.data
        lines = [
            f"Subject: {data.get('subject', '')}",
            f"Message-ID: {data.get('internetMessageId', '')}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            str((data.get("body") or {}).get("content") or ""),
        ]
        return "\r\n".join(lines).encode()

    def _write_props(self, item: Item, data: dict[str, Any]) -> None:
        for prop in data.pop("singleValueExtendedProperties", None) or []:
            pid = str(prop.get("id") or "")
            if not _PROP_ID.match(pid):
                raise res.BadInput("ErrorInvalidProperty", "The extended property id is not valid.")
            item.props[pid.lower()] = (pid, str(prop.get("value") or ""))

    def _check_etag(self, req: GraphRequest, item: Item) -> None:
        wanted = req.headers.get("if-match")
        if wanted is None or wanted.strip() == "*":
            return
        if wanted.strip().removeprefix("W/").strip('"') != item.change_key:
            raise GraphError(
                412,
                "ErrorIrresolvableConflict",
                "The send or update operation could not be performed because the change key "
                "passed in the request does not match the current change key for the item.",
            )

    def _page(
        self, req: GraphRequest, values: list[dict[str, Any]], top_default: int = DEFAULT_PAGE
    ) -> GraphResponse:
        top = _int(req.query.get("$top"), top_default, MAX_PAGE)
        skip = _int(req.query.get("$skip"), 0, 10**9)
        body: dict[str, Any] = {"value": values[skip : skip + top]}
        if skip + top < len(values):
            query = {**req.query, "$skip": str(skip + top), "$top": str(top)}
            body["@odata.nextLink"] = _link(req, req.path, query)
        return GraphResponse(200, body)

    def _filter(self, req: GraphRequest, items: list[Item]) -> list[Item]:
        text = req.query.get("$filter")
        if not text:
            return items
        prop = _FILTER_PROP.match(text.strip())
        if prop is not None:
            pid, value = prop.group(2).replace("''", "'").lower(), prop.group(3).replace("''", "'")
            return [i for i in items if i.props.get(pid, ("", None))[1] == value]
        raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter is not supported.")

    # -- users and categories ------------------------------------------------------------

    async def get_user(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        body = {
            "@odata.context": f"{req.base}/$metadata#users/$entity",
            "id": box.id,
            "displayName": box.display_name,
            "mail": box.address,
            "userPrincipalName": box.address,
        }
        return GraphResponse(200, body)

    async def list_categories(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        return self._page(req, [dict(c) for c in box.categories])

    async def create_category(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        name = str((req.body or {}).get("displayName") or "").strip()
        if not name:
            raise res.BadInput("ErrorInvalidRequest", "A category needs a displayName")
        if any(c["displayName"].lower() == name.lower() for c in box.categories):
            raise GraphError(409, "ErrorDuplicateCategory", "The category already exists.")
        category = {
            "id": str(uuid.uuid4()),
            "displayName": name,
            "color": str((req.body or {}).get("color") or "preset0"),
        }
        box.categories.append(category)
        return GraphResponse(201, dict(category))

    # -- events ----------------------------------------------------------------------------

    def _calendar(self, box: Mailbox) -> Folder:
        found = box.well_known("calendar")
        assert found is not None
        return found

    def _exceptions(self, box: Mailbox, master: Item) -> list[Item]:
        return [
            i
            for i in box.items.values()
            if i.kind == "event" and i.data.get("seriesMasterId") == master.id
        ]

    def _instances(
        self, box: Mailbox, master: Item, window: tuple[dt.datetime, dt.datetime] | None
    ) -> list[res.Instance]:
        return res.event_instances(master, self._exceptions(box, master), window)

    def _render_instance(self, req: GraphRequest, inst: res.Instance, **opts: Any) -> Any:
        if inst.source is not None:
            return self._render(req, inst.source, inst, **opts)
        if inst.kind == "occurrence":
            return self._render(req, inst.item, inst, **opts)
        return self._render(req, inst.item, **opts)

    def _event(self, box: Mailbox, event_id: str) -> tuple[Item, res.Instance | None]:
        """An event by id: a stored one, or an occurrence of a stored series."""
        item = box.items.get(event_id)
        if item is not None and item.kind == "event":
            return item, None
        split = res.split_occurrence_id(event_id)
        if split is not None:
            master = box.items.get(split[0])
            if master is not None and master.data.get("recurrence"):
                for inst in self._instances(box, master, None):
                    if inst.id == event_id and inst.kind == "occurrence":
                        return master, inst
        raise _not_found("event")

    async def list_events(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        calendar = self._calendar(box)
        items = [
            i
            for i in box.items.values()
            if i.kind == "event" and i.parent == calendar.id and i.data.get("type") != "exception"
        ]
        return self._page(req, [self._render(req, i) for i in self._filter(req, items)], 10)

    async def create_event(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        data = dict(req.body or {})
        txn = data.get("transactionId")
        if txn:
            for existing in box.items.values():
                if existing.kind == "event" and existing.data.get("transactionId") == txn:
                    # The same create sent again: Graph answers with the first one.
                    return GraphResponse(201, self._render(req, existing))
        res.validate("event", data, data)
        item = Item(new_id(), "event", self._calendar(box).id, {})
        self._write_props(item, data)
        item.data = _normalise_event(data, box)
        return GraphResponse(201, self._render(req, self.store.insert(box, item)))

    async def get_event(self, req: GraphRequest, box: Mailbox, id: str) -> GraphResponse:
        item, inst = self._event(box, id)
        return GraphResponse(200, self._render(req, item, inst))

    async def update_event(self, req: GraphRequest, box: Mailbox, id: str) -> GraphResponse:
        item, inst = self._event(box, id)
        self._check_etag(req, item)
        data = dict(req.body or {})
        if inst is not None:
            # Editing an occurrence makes it an exception of its series.
            rendered = self._render(req, item, inst, select=None, expand=None)
            exception = Item(inst.id, "event", item.parent, {})
            exception.data = _normalise_event(
                {k: rendered[k] for k in res.WRITABLE["event"] if k in rendered}, box
            )
            exception.data.update(
                type="exception",
                seriesMasterId=item.id,
                originalStart=res.timestamp(inst.start),
                recurrence=None,
                start={"dateTime": res.graph_datetime(inst.start.replace(tzinfo=None)),
                       "timeZone": item.data["start"]["timeZone"]},
                end={"dateTime": res.graph_datetime(inst.end.replace(tzinfo=None)),
                     "timeZone": item.data["end"]["timeZone"]},
            )  # fmt: skip
            exception.data["start"] = _in_zone(exception.data["start"], inst.start)
            exception.data["end"] = _in_zone(exception.data["end"], inst.end)
            item = exception
            box.items[item.id] = item
        res.validate("event", data, {**item.data, **data})
        # Extended properties are the item's own, set one by one (the others kept), and no
        # event property: they are answered only when asked for by $expand.
        self._write_props(item, data)
        item.data = _normalise_event({**item.data, **data}, box, keep=item.data)
        self.store.updated(box, item)
        return GraphResponse(200, self._render(req, item))

    async def delete_event(self, req: GraphRequest, box: Mailbox, id: str) -> GraphResponse:
        item, inst = self._event(box, id)
        self._check_etag(req, item)
        if inst is not None or item.data.get("type") == "exception":
            master = item if inst is not None else box.items.get(item.data["seriesMasterId"])
            original = inst.start if inst is not None else res.parse_utc(item.data["originalStart"])
            if inst is None:
                self.store.remove(box, item)
            if master is not None:
                master.cancelled.add(res.timestamp(original))
                self.store.updated(box, master)
            return GraphResponse(204)
        ids = (
            [i.id for i in self._instances(box, item, None)] if item.data.get("recurrence") else []
        )
        for exception in self._exceptions(box, item):
            self.store.remove(box, exception)
        self.store.remove(box, item, ids)
        return GraphResponse(204)

    def _window(self, req: GraphRequest) -> tuple[dt.datetime, dt.datetime]:
        try:
            start = res.parse_utc(req.query["startDateTime"])
            end = res.parse_utc(req.query["endDateTime"])
        except (KeyError, ValueError):
            raise GraphError(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters "
                "StartDateTime and EndDateTime.",
            ) from None
        return start, end

    async def calendar_view(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        window = self._window(req)
        values = self._view(req, box, window)
        return self._page(req, values, 10)

    def _view(
        self, req: GraphRequest, box: Mailbox, window: tuple[dt.datetime, dt.datetime]
    ) -> list[dict[str, Any]]:
        calendar = self._calendar(box)
        out: list[tuple[dt.datetime, dict[str, Any]]] = []
        for item in list(box.items.values()):
            if item.kind != "event" or item.parent != calendar.id:
                continue
            if item.data.get("type") == "exception":
                continue
            for inst in self._instances(box, item, window):
                out.append((inst.start, self._render_instance(req, inst)))
        return [v for _, v in sorted(out, key=lambda x: x[0])]

    async def event_instances(self, req: GraphRequest, box: Mailbox, id: str) -> GraphResponse:
        item, _ = self._event(box, id)
        window = self._window(req)
        values = [self._render_instance(req, i) for i in self._instances(box, item, window)]
        return self._page(req, values, 10)

    async def calendar_delta(self, req: GraphRequest, box: Mailbox) -> GraphResponse:
        calendar = self._calendar(box)
        return self._delta(req, box, f"calendarView/{calendar.id}", {calendar.id}, True)

    # -- folders and their items -------------------------------------------------------------

    def _folder(self, box: Mailbox, ref: str | None, kind: str) -> Folder:
        found = box.well_known("contacts") if ref is None else box.folder(ref, kind)
        if found is None:
            raise _not_found("folder")
        return found

    def _folder_json(self, folder: Folder, box: Mailbox) -> dict[str, Any]:
        out: dict[str, Any] = {"id": folder.id, "displayName": folder.display_name}
        if folder.kind == "mailFolder":
            count = sum(1 for i in box.items.values() if i.parent == folder.id)
            out.update(
                parentFolderId=folder.parent_id or "msgfolderroot",
                childFolderCount=0,
                totalItemCount=count,
                unreadItemCount=count,
                isHidden=False,
            )
        elif folder.kind == "contactFolder":
            out["parentFolderId"] = folder.parent_id or "root"
        elif folder.kind == "todoList":
            out.update(
                isOwner=True,
                isShared=False,
                wellknownListName=folder.well_known or "none",
            )
            out["@odata.etag"] = f'W/"{folder.id[-12:]}"'
        return out

    async def list_folders(self, req: GraphRequest, box: Mailbox, kind: str) -> GraphResponse:
        folders = [f for f in box.folders.values() if f.kind == kind]
        if kind == "contactFolder":
            # Graph lists the folders inside the default Contacts folder, not that folder
            # itself (it is `/contacts`).
            folders = [f for f in folders if f.well_known != "contacts"]
        text = (req.query.get("$filter") or "").strip()
        if text:
            match = _FILTER_NAME.match(text)
            if match is None:
                raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The filter is not supported.")
            name = match.group(1).replace("''", "'")
            folders = [f for f in folders if f.display_name == name]
        return self._page(req, [self._folder_json(f, box) for f in folders])

    async def create_folder(self, req: GraphRequest, box: Mailbox, kind: str) -> GraphResponse:
        name = str((req.body or {}).get("displayName") or "").strip()
        if not name:
            raise res.BadInput("ErrorInvalidRequest", "A folder needs a displayName")
        if any(f.kind == kind and f.display_name == name for f in box.folders.values()):
            raise GraphError(409, "ErrorFolderExists", "A folder with that name already exists.")
        return GraphResponse(201, self._folder_json(self.store.add_folder(box, kind, name), box))

    async def get_folder(
        self, req: GraphRequest, box: Mailbox, folder: str, kind: str
    ) -> GraphResponse:
        return GraphResponse(200, self._folder_json(self._folder(box, folder, kind), box))

    def _item(self, box: Mailbox, item_id: str, kind: str, folder: Folder | None = None) -> Item:
        item = box.items.get(item_id)
        if item is None or item.kind != _FOLDER_KINDS[kind]:
            raise _not_found()
        if folder is not None and item.parent != folder.id:
            raise _not_found()
        return item

    async def list_items(
        self, req: GraphRequest, box: Mailbox, kind: str, folder: str | None = None
    ) -> GraphResponse:
        where = self._folder(box, folder, kind)
        items = [i for i in box.items.values() if i.parent == where.id]
        return self._page(req, [self._render(req, i) for i in self._filter(req, items)], 10)

    async def create_item(
        self, req: GraphRequest, box: Mailbox, kind: str, folder: str | None = None
    ) -> GraphResponse:
        where = self._folder(box, folder, kind)
        item_kind = _FOLDER_KINDS[kind]
        data = dict(req.body or {})
        data.pop("@odata.type", None)
        res.validate(item_kind, data, data)
        item = Item(new_id(), item_kind, where.id, {})
        self._write_props(item, data)
        if "linkedResources" in data:
            data["linkedResources"] = [res.linked_resource(x) for x in data["linkedResources"]]
        item.data = data
        if item_kind == "message":
            data.setdefault("internetMessageId", f"<{uuid.uuid4().hex}@emulator.concord.test>")
            data.setdefault("conversationId", new_id("AAQk"))
            data["isDraft"] = True
        return GraphResponse(201, self._render(req, self.store.insert(box, item)))

    async def get_item(
        self, req: GraphRequest, box: Mailbox, id: str, kind: str, folder: str | None = None
    ) -> GraphResponse:
        where = self._folder(box, folder, kind) if folder else None
        return GraphResponse(200, self._render(req, self._item(box, id, kind, where)))

    async def update_item(
        self, req: GraphRequest, box: Mailbox, id: str, kind: str, folder: str | None = None
    ) -> GraphResponse:
        where = self._folder(box, folder, kind) if folder else None
        item = self._item(box, id, kind, where)
        self._check_etag(req, item)
        data = dict(req.body or {})
        data.pop("@odata.type", None)
        res.validate(item.kind, data, {**item.data, **data})
        self._write_props(item, data)
        item.data = {**item.data, **data}
        self.store.updated(box, item)
        return GraphResponse(200, self._render(req, item))

    async def delete_item(
        self, req: GraphRequest, box: Mailbox, id: str, kind: str, folder: str | None = None
    ) -> GraphResponse:
        where = self._folder(box, folder, kind) if folder else None
        item = self._item(box, id, kind, where)
        self._check_etag(req, item)
        self.store.remove(box, item)
        return GraphResponse(204)

    def _task(self, box: Mailbox, folder: str, id: str) -> Item:
        return self._item(box, id, "todoList", self._folder(box, folder, "todoList"))

    async def list_linked(
        self, req: GraphRequest, box: Mailbox, folder: str, id: str
    ) -> GraphResponse:
        item = self._task(box, folder, id)
        return self._page(req, list(item.data.get("linkedResources") or []))

    async def create_linked(
        self, req: GraphRequest, box: Mailbox, folder: str, id: str
    ) -> GraphResponse:
        item = self._task(box, folder, id)
        made = res.linked_resource(dict(req.body or {}))
        item.data["linkedResources"] = [*(item.data.get("linkedResources") or []), made]
        # Exchange keeps a task's linked resources in the task item: it changed.
        self.store.updated(box, item)
        return GraphResponse(201, made)

    async def update_linked(
        self, req: GraphRequest, box: Mailbox, folder: str, id: str, lid: str
    ) -> GraphResponse:
        item = self._task(box, folder, id)
        kept = list(item.data.get("linkedResources") or [])
        for n, linked in enumerate(kept):
            if linked.get("id") == lid:
                kept[n] = res.linked_resource({**linked, **dict(req.body or {})}, lid)
                item.data["linkedResources"] = kept
                self.store.updated(box, item)
                return GraphResponse(200, kept[n])
        raise _not_found()

    async def message_mime(self, req: GraphRequest, box: Mailbox, id: str) -> GraphResponse:
        item = self._item(box, id, "mailFolder")
        return GraphResponse(200, self._mime(item), content_type="message/rfc822")

    async def folder_delta(
        self, req: GraphRequest, box: Mailbox, kind: str, folder: str | None = None
    ) -> GraphResponse:
        where = self._folder(box, folder, kind)
        return self._delta(req, box, f"{kind}/{where.id}", {where.id}, False)

    # -- delta -------------------------------------------------------------------------------

    def _delta(
        self, req: GraphRequest, box: Mailbox, scope: str, parents: set[str], is_view: bool
    ) -> GraphResponse:
        skip, delta = req.query.get("$skiptoken"), req.query.get("$deltatoken")
        token = _decode(skip or delta) if (skip or delta) else None
        if (skip or delta) and (token is None or token.get("k") != scope):
            raise GraphError(410, "syncStateInvalid", "The sync state is not valid; resync.")
        if token is None:
            token = {"k": scope, "a": 0, "s": sorted(_select(req) or []), "e": None}
            expand = _expand(req)
            token["e"] = sorted(expand) if expand is not None else None
            if is_view:
                start, end = self._window(req)
                token["w"] = [res.timestamp(start), res.timestamp(end)]
        after = int(token["a"])
        if after and after < box.min_seq:
            raise GraphError(
                410, "syncStateNotFound", "The sync state generation is not found; resync."
            )
        upto = int(token.get("u") or self.store.seq)
        offset = int(token.get("o") or 0)
        opts = {
            "select": set(token["s"]) or None,
            "expand": set(token["e"]) if token.get("e") is not None else None,
        }
        window = None
        if is_view:
            window = (res.parse_utc(token["w"][0]), res.parse_utc(token["w"][1]))
        entries = self._delta_entries(req, box, parents, after, upto, window, opts)
        size = _int(
            req.prefer("odata.maxpagesize") or req.query.get("$top"), DEFAULT_PAGE, MAX_PAGE
        )
        page = entries[offset : offset + size]
        body: dict[str, Any] = {"value": page}
        path = req.path.split("?")[0]
        if offset + size < len(entries):
            nxt = {**token, "u": upto, "o": offset + size}
            body["@odata.nextLink"] = _link(req, path, {"$skiptoken": _encode(nxt)})
        else:
            done = {k: v for k, v in token.items() if k not in ("u", "o")} | {"a": upto}
            body["@odata.deltaLink"] = _link(req, path, {"$deltatoken": _encode(done)})
        return GraphResponse(200, body)

    def _delta_entries(
        self,
        req: GraphRequest,
        box: Mailbox,
        parents: set[str],
        after: int,
        upto: int,
        window: tuple[dt.datetime, dt.datetime] | None,
        opts: dict[str, Any],
    ) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}

        def removed(item_id: str) -> None:
            if after:
                out[item_id] = {"id": item_id, "@removed": {"reason": "deleted"}}

        for change in self.store.changes_since(box, parents, after, upto):
            item = box.items.get(change.item_id)
            if change.removed or item is None:
                for gone in (change.item_id, *change.instance_ids):
                    removed(gone)
                continue
            if window is None:
                out.pop(item.id, None)
                out[item.id] = self._render(req, item, **opts)
                continue
            if item.data.get("type") == "exception":
                master = box.items.get(str(item.data.get("seriesMasterId")))
                if master is None:
                    continue
                listed = [i for i in self._instances(box, master, window) if i.id == item.id]
            else:
                listed = self._instances(box, item, window)
                for start in sorted(item.cancelled):
                    removed(res.occurrence_id(item.id, res.parse_utc(start)))
            if not listed:
                removed(item.id)
            for inst in listed:
                out.pop(inst.id, None)
                out[inst.id] = self._render_instance(req, inst, **opts)
        return list(out.values())

    # -- $batch ------------------------------------------------------------------------------

    async def batch(self, req: GraphRequest) -> GraphResponse:
        requests = (req.body or {}).get("requests")
        if not isinstance(requests, list) or not requests:
            raise res.BadInput("BadRequest", "A batch needs a list of requests.")
        if len(requests) > MAX_BATCH:
            raise res.BadInput(
                "BadRequest", f"Number of requests exceeds the limit of {MAX_BATCH}."
            )
        ids = [str(r.get("id") or "") for r in requests]
        if "" in ids or len(set(ids)) != len(ids):
            raise res.BadInput("BadRequest", "Each request of a batch needs a unique id.")
        responses = []
        dropped = False
        for sub in requests:
            parts = urlsplit(str(sub.get("url") or ""))
            sub_req = GraphRequest(
                method=str(sub.get("method") or "GET").upper(),
                path=parts.path.strip("/").removeprefix("v1.0/"),
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers={str(k).lower(): str(v) for k, v in (sub.get("headers") or {}).items()},
                body=sub.get("body"),
                base=req.base,
                app=req.app,
            )
            with self.control.lock:
                self.control.calls["batched"] += 1
            answer = await self.serve(sub_req)
            dropped = dropped or answer.dropped
            body = answer.body
            headers = dict(answer.headers)
            if isinstance(body, bytes):
                # JSON batching carries other content base64-encoded.
                body = base64.b64encode(body).decode()
                headers["Content-Type"] = answer.content_type
            elif body is not None:
                headers["Content-Type"] = "application/json"
            entry: dict[str, Any] = {"id": sub["id"], "status": answer.status, "headers": headers}
            if body is not None:
                entry["body"] = body
            responses.append(entry)
        if dropped:
            # One lost answer loses the batch's: every request in it was applied, unanswered.
            raise GraphError(504, "GatewayTimeout", "The gateway did not receive a response.")
        return GraphResponse(200, {"responses": responses})

    # -- subscriptions -----------------------------------------------------------------------

    async def create_subscription(self, req: GraphRequest) -> GraphResponse:
        assert req.app is not None
        try:
            sub = await self.notifier.subscribe(req.app, dict(req.body or {}))
        except SubscriptionRefused as exc:
            raise GraphError(400, exc.code, exc.message) from None
        return GraphResponse(201, self.notifier.to_json(sub))

    async def list_subscriptions(self, req: GraphRequest) -> GraphResponse:
        assert req.app is not None
        mine = [s for s in self.store.subscriptions.values() if s.app == req.app.client_id]
        return GraphResponse(200, {"value": [self.notifier.to_json(s) for s in mine]})

    def _subscription(self, req: GraphRequest, sid: str) -> Any:
        sub = self.store.subscriptions.get(sid)
        if sub is None or req.app is None or sub.app != req.app.client_id:
            raise GraphError(404, "ResourceNotFound", "The object was not found.")
        if sub.expires <= utcnow():
            self.store.subscriptions.pop(sid, None)
            raise GraphError(404, "ResourceNotFound", "The subscription expired.")
        return sub

    async def get_subscription(self, req: GraphRequest, sid: str) -> GraphResponse:
        return GraphResponse(200, self.notifier.to_json(self._subscription(req, sid)))

    async def renew_subscription(self, req: GraphRequest, sid: str) -> GraphResponse:
        sub = self._subscription(req, sid)
        self.notifier.renew(sub, (req.body or {}).get("expirationDateTime"))
        return GraphResponse(200, self.notifier.to_json(sub))

    async def reauthorize(self, req: GraphRequest, sid: str) -> GraphResponse:
        self._subscription(req, sid)
        return GraphResponse(204)

    async def delete_subscription(self, req: GraphRequest, sid: str) -> GraphResponse:
        self._subscription(req, sid)
        self.store.subscriptions.pop(sid, None)
        return GraphResponse(204)


# -- module helpers ----------------------------------------------------------------------------


def _int(value: str | None, default: int, cap: int) -> int:
    try:
        return max(1, min(int(value), cap)) if value else default
    except ValueError:
        raise GraphError(400, "BadRequest", "Invalid page size.") from None


def _select(req: GraphRequest) -> set[str] | None:
    text = req.query.get("$select")
    return {s.strip() for s in text.split(",") if s.strip()} if text else None


def _expand(req: GraphRequest) -> set[str] | None:
    text = (req.query.get("$expand") or "").strip()
    if not text:
        return None
    match = _EXPAND.match(text)
    if match is None:
        raise GraphError(400, "BadRequest", "Only singleValueExtendedProperties expand.")
    return {m.group(1).replace("''", "'").lower() for m in _EXPAND_ID.finditer(match.group(1))}


def _encode(token: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()


def _decode(text: str | None) -> dict[str, Any] | None:
    try:
        found = json.loads(base64.urlsafe_b64decode((text or "").encode()))
    except (ValueError, binascii.Error):
        return None
    return found if isinstance(found, dict) else None


def _link(req: GraphRequest, path: str, query: dict[str, str]) -> str:
    encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in query.items())
    return f"{req.base}/{path.strip('/')}?{encoded}"


def _in_zone(value: dict[str, Any], instant: dt.datetime) -> dict[str, Any]:
    tz = zones.zone(str(value.get("timeZone") or "UTC"))
    local = instant.astimezone(tz).replace(tzinfo=None)
    return {"dateTime": res.graph_datetime(local), "timeZone": value.get("timeZone") or "UTC"}


def _normalise_event(
    data: dict[str, Any], box: Mailbox, keep: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What Exchange stores for a written event: zones as Windows ids, defaults filled in."""
    out = dict(data)
    for side in ("start", "end"):
        value = dict(out[side])
        value["timeZone"] = zones.to_windows(str(value.get("timeZone") or "UTC"))
        value["dateTime"] = res.graph_datetime(res.parse_local(str(value["dateTime"])))
        out[side] = value
    out.setdefault(
        "iCalUId",
        (keep or {}).get("iCalUId")
        or "040000008200E00074C5B7101A82E008" + uuid.uuid4().hex.upper(),
    )
    out.setdefault(
        "organizer", {"emailAddress": {"name": box.display_name, "address": box.address}}
    )
    if out.get("type") != "exception":
        out["type"] = "seriesMaster" if out.get("recurrence") else "singleInstance"
    location = out.get("location")
    if isinstance(location, dict):
        out["location"] = {"displayName": "", "locationType": "default", **location}
    attendees = []
    for attendee in out.get("attendees") or []:
        entry = {"type": "required", **attendee}
        entry.setdefault("status", {"response": "none", "time": "0001-01-01T00:00:00Z"})
        attendees.append(entry)
    out["attendees"] = attendees
    return out
