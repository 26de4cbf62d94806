"""HTTP: the token endpoint, the four APIs (checked against their discovery documents), batch,
quotas, faults, watch-channel delivery, and the admin API under /__admin/."""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import json
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from concord_google_emulator.auth import OAuthError, TokenIssuer
from concord_google_emulator.calendar import CalendarStore, Channel
from concord_google_emulator.core import ApiError, Call, Sequence
from concord_google_emulator.discovery import ParameterError, Router, schema_violations
from concord_google_emulator.gmail import GmailStore
from concord_google_emulator.people import PeopleStore
from concord_google_emulator.tasks import TasksStore

__all__ = ["FAULT_KINDS", "Emulator", "build_app"]

TOKEN_PATH = "/token"
FAULT_KINDS = {"latency", "http_error", "rate_limit", "drop_response", "refuse_contact"}
_JSON = "application/json; charset=UTF-8"


@dataclass
class Fault:
    """An injected fault for the next `times` calls of `method` ("*": any; a discovery method
    id such as `calendar.events.insert`) made for `user` ("*": anyone)."""

    kind: str
    method: str = "*"
    user: str = "*"
    times: int = 1
    status: int = 503
    latency_ms: int = 0
    retry_after: int = 0
    # refuse_contact: a People batch create/update refuses its contact at this position, as
    # Google does for a value it will not store, failing the batch (BatchCreate/Update-
    # ContactsErrorDetails name it).
    contact: int = 0


@dataclass
class Control:
    calls: Counter[str] = field(default_factory=Counter)
    # HTTP requests by endpoint ("api", "batch", "token"): a batch is one request, many calls.
    requests: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    # Requests the discovery documents refuse, or responses that depart from their schemas.
    violations: list[str] = field(default_factory=list)
    # Calls per minute allowed per user (None: unlimited), and each user's recent calls.
    per_minute: int | None = None
    recent: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, method: str, user: str) -> Fault | None:
        with self.lock:
            self.calls[method] += 1
            for fault in self.faults:
                if fault.method in {"*", method} and fault.user in {"*", user}:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def over_quota(self, user: str) -> bool:
        if self.per_minute is None:
            return False
        with self.lock:
            now = time.monotonic()
            window = self.recent[user]
            while window and window[0] < now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                return True
            window.append(now)
            return False


def _rate_limited(api: str, retry_after: int = 0) -> ApiError:
    """Calendar and People answer 403 rateLimitExceeded (usageLimits), Gmail and Tasks 429."""
    headers = {"retry-after": str(retry_after)} if retry_after else None
    if api in {"calendar.v3", "people.v1"}:
        return ApiError(
            403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits", headers=headers
        )
    return ApiError(
        429,
        "rateLimitExceeded",
        "Too many concurrent requests for user.",
        domain="usageLimits",
        headers=headers,
    )


class Emulator:
    """The state of one emulated Google Workspace domain."""

    def __init__(self, *, strict: bool = True) -> None:
        self.seq = Sequence()
        self.issuer = TokenIssuer()
        self.users: set[str] = set()
        self.calendar = CalendarStore(self.seq, self._notify)
        self.gmail = GmailStore(self.seq, self._publish)
        # Pub/Sub push subscriptions: topic -> the endpoints its messages are POSTed to.
        self.subscriptions: dict[str, list[str]] = {}
        self.people = PeopleStore(self.seq)
        self.tasks = TasksStore(self.seq)
        self.router = Router()
        self.control = Control()
        self.strict = strict
        self.lock = threading.RLock()
        self.trusted_ca: list[str] = []
        self.deliveries: list[dict[str, Any]] = []
        self._pending: list[asyncio.Task[None]] = []
        self.handlers = self._handlers()

    def add_user(self, address: str) -> None:
        address = address.lower()
        with self.lock:
            self.users.add(address)
            self.calendar.add_user(address)
            self.gmail.add_user(address)
            self.people.add_user(address)
            self.tasks.add_user(address)

    def _handlers(self) -> dict[str, Callable[[Call], Any]]:
        c, g, p, t = self.calendar, self.gmail, self.people, self.tasks
        return {
            "calendar.events.list": c.list_events,
            "calendar.events.get": c.get,
            "calendar.events.insert": c.insert,
            "calendar.events.patch": lambda call: c.modify(call, replace=False),
            "calendar.events.update": lambda call: c.modify(call, replace=True),
            "calendar.events.delete": c.delete,
            "calendar.events.instances": c.instances,
            "calendar.events.watch": c.watch,
            "calendar.channels.stop": c.stop,
            "calendar.calendarList.list": self._calendar_list,
            "gmail.users.getProfile": g.profile,
            "gmail.users.watch": g.watch,
            "gmail.users.stop": g.stop,
            "gmail.users.labels.list": g.labels_list,
            "gmail.users.labels.create": g.label_create,
            "gmail.users.labels.get": g.label_get,
            "gmail.users.messages.list": g.list,
            "gmail.users.messages.get": g.get,
            "gmail.users.messages.insert": g.insert,
            "gmail.users.messages.modify": g.modify,
            "gmail.users.messages.delete": g.delete,
            "gmail.users.messages.trash": g.trash,
            "gmail.users.history.list": g.history,
            "people.people.connections.list": p.connections,
            "people.people.get": p.get,
            "people.people.createContact": p.create,
            "people.people.updateContact": p.update,
            "people.people.deleteContact": p.delete,
            "people.people.getBatchGet": p.batch_get,
            "people.people.batchCreateContacts": p.batch_create,
            "people.people.batchUpdateContacts": p.batch_update,
            "people.people.batchDeleteContacts": p.batch_delete,
            "people.contactGroups.list": p.groups_list,
            "people.contactGroups.create": p.group_create,
            "people.contactGroups.members.modify": p.members_modify,
            "tasks.tasklists.list": t.lists,
            "tasks.tasklists.insert": t.list_insert,
            "tasks.tasks.list": t.list,
            "tasks.tasks.get": t.get,
            "tasks.tasks.insert": t.insert,
            "tasks.tasks.patch": lambda call: t.modify(call, replace=False),
            "tasks.tasks.update": lambda call: t.modify(call, replace=True),
            "tasks.tasks.delete": t.delete,
        }

    def _calendar_list(self, call: Call) -> dict[str, Any]:
        items = [
            {
                "kind": "calendar#calendarListEntry",
                "etag": f'"{cal.epoch}"',
                "id": cal.id,
                "summary": cal.summary,
                "timeZone": cal.time_zone,
                "colorId": cal.color_id,
                "accessRole": "owner",
                "primary": cal.id == call.user,
            }
            for cal in self.calendar.calendars[call.user].values()
        ]
        for item in items:
            if not item["primary"]:
                del item["primary"]
        return {"kind": "calendar#calendarList", "etag": f'"{self.seq.current}"', "items": items}

    # ---- one API call, as JSON in and out

    def call(
        self,
        http_method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> tuple[int, dict[str, str], Any, Fault | None]:
        """(status, headers, JSON body or None, fault to apply after answering)."""
        override = headers.get("x-http-method-override", "").upper()
        if http_method == "POST" and override:
            # A GET whose URL would pass 2,048 characters comes as a POST naming the method in
            # X-HTTP-Method-Override, its query as a form body (google-api-python-client does
            # so, e.g. people.getBatchGet for 200 names; Google's front end takes it).
            http_method = override
            if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                query = "&".join(part for part in (query, body.decode()) if part)
                body = b""
        routed = self.router.route(http_method, path.lstrip("/"))
        if routed is None:
            self._violation(f"{http_method} {path}: no discovery method")
            return 404, {}, ApiError(404, "notFound", "Not Found").body(), None
        method, path_params = routed
        api = method.api
        try:
            params = method.check_query(urllib.parse.parse_qs(query, keep_blank_values=True))
        except ParameterError as exc:
            self._violation(str(exc))
            return 400, {}, ApiError(400, "invalidParameter", str(exc)).body(), None
        params.update(path_params)
        grant = self.issuer.grant(headers.get("authorization"))
        if grant is None:
            error = ApiError(401, "authError", "Invalid Credentials", status="UNAUTHENTICATED")
            return (
                401,
                {"www-authenticate": 'Bearer realm="https://accounts.google.com/"'},
                error.body(),
                None,
            )
        if method.scopes and not grant.scopes & set(method.scopes):
            error = ApiError(
                403,
                "insufficientPermissions",
                "Request had insufficient authentication scopes.",
                status="PERMISSION_DENIED",
            )
            return 403, {}, error.body(), None
        fault = self.control.take(method.id, grant.user)
        try:
            if fault is not None and fault.kind == "http_error":
                raise ApiError(fault.status, "backendError", "Backend Error")
            if fault is not None and fault.kind == "rate_limit":
                raise _rate_limited(api, fault.retry_after)
            if self.control.over_quota(grant.user):
                raise _rate_limited(api)
            handler = self.handlers.get(method.id)
            if handler is None:
                raise ApiError(501, "notImplemented", f"{method.id} is not emulated")
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                raise ApiError(400, "parseError", "Parse Error") from None
            call = Call(grant.user, method.id, params, parsed, headers, base_url)
            if fault is not None and fault.kind == "refuse_contact":
                call.refuse_contact = fault.contact
            with self.lock:
                answer = handler(call)
            for after in call.after:
                after()
        except ApiError as exc:
            return exc.code, exc.headers, exc.body(), fault
        if answer is None:
            return 204, {}, None, fault
        if self.strict and method.response_schema:
            for problem in schema_violations(api, method.response_schema, answer):
                self._violation(f"{method.id} response: {problem}")
        return 200, {}, answer, fault

    def _violation(self, what: str) -> None:
        with self.control.lock:
            self.control.violations.append(what)

    # ---- watch channels

    def _publish(self, topic: str, data: dict[str, Any]) -> None:
        """A Gmail watch notification, as Pub/Sub pushes it: base64 JSON in `message.data`."""
        for endpoint in self.subscriptions.get(topic, []):
            body = {
                "message": {
                    "data": base64.b64encode(json.dumps(data).encode()).decode(),
                    "messageId": uuid.uuid4().hex,
                    "publishTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                "subscription": topic.replace("/topics/", "/subscriptions/") + "-push",
            }
            self._send(endpoint, {"content-type": "application/json"}, json.dumps(body).encode())

    def _notify(self, channel: Channel, state: str) -> None:
        channel.message_number += 1
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": time.strftime(
                "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(channel.expiration_ms / 1000)
            ),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-URI": f"calendars/{channel.calendar}/events",
            "X-Goog-Message-Number": str(channel.message_number),
        }
        if channel.token:
            headers["X-Goog-Channel-Token"] = channel.token
        self._send(channel.address, headers, b"")

    def _send(self, address: str, headers: dict[str, str], body: bytes) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no server loop (state built offline): nobody is listening
        task = loop.create_task(self._deliver(address, headers, body))
        self._pending.append(task)
        task.add_done_callback(self._pending.remove)

    async def _deliver(self, address: str, headers: dict[str, str], body: bytes) -> None:
        context = ssl.create_default_context()
        for ca in self.trusted_ca:
            context.load_verify_locations(cafile=ca)
        outcome: dict[str, Any] = {"address": address, "headers": headers}
        try:
            async with httpx.AsyncClient(verify=context, timeout=10) as client:
                reply = await client.post(address, headers=headers, content=body)
            outcome["status"] = reply.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = type(exc).__name__
        self.deliveries.append(outcome)


class ApiEndpoint:
    """A raw ASGI endpoint, so that a `drop_response` fault can cut a committed reply."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        base = str(request.base_url)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self.emulator.control.lock:
            self.emulator.control.requests["api"] += 1
        status, extra, answer, fault = self.emulator.call(
            request.method, request.url.path, request.url.query, headers, body, base
        )
        if fault is not None and fault.kind == "latency":
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault is not None and fault.kind == "drop_response":
            await _drop(send)
        payload = b"" if answer is None else json.dumps(answer).encode()
        response = Response(payload, status_code=status, headers=extra, media_type=_JSON)
        await response(scope, receive, send)


async def _drop(send: Send) -> None:
    """The work is committed; the client sees the connection die mid-response."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"100000"), (b"content-type", _JSON.encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise ConnectionAbortedError("drop_response fault injected")


class BatchEndpoint:
    """`multipart/mixed` batches of `application/http` parts, answered part by part in order."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        with self.emulator.control.lock:
            self.emulator.control.requests["batch"] += 1
        if request.method != "POST" or not content_type.startswith("multipart/mixed"):
            error = ApiError(400, "badRequest", "Batch requests are multipart/mixed POSTs")
            await JSONResponse(error.body(), 400)(scope, receive, send)
            return
        envelope = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        parts = list(envelope.iter_parts()) if envelope.is_multipart() else []
        outer_auth = request.headers.get("authorization", "")
        base = str(request.base_url)
        boundary = f"batch_{uuid.uuid4().hex}"
        out: list[bytes] = []
        drop = False
        for part in parts:
            raw = part.get_payload(decode=True)
            content_id = str(part.get("Content-ID", "")).strip("<>")
            status, answer, fault = self._one(
                raw if isinstance(raw, bytes) else b"", outer_auth, base
            )
            drop = drop or (fault is not None and fault.kind == "drop_response")
            payload = b"" if answer is None else json.dumps(answer).encode()
            out.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{content_id}>\r\n\r\n"
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: {_JSON}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
                + b"\r\n"
            )
        if drop:
            await _drop(send)
        out.append(f"--{boundary}--\r\n".encode())
        await Response(b"".join(out), media_type=f"multipart/mixed; boundary={boundary}")(
            scope, receive, send
        )

    def _one(self, raw: bytes, outer_auth: str, base: str) -> tuple[int, Any, Fault | None]:
        head, _, body = raw.partition(b"\r\n\r\n")
        if not body and b"\n\n" in raw:
            head, _, body = raw.partition(b"\n\n")
        lines = head.decode("latin-1").splitlines()
        if not lines:
            return 400, ApiError(400, "badRequest", "Empty batch part").body(), None
        method, target, *_ = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        headers.setdefault("authorization", outer_auth)
        url = urllib.parse.urlsplit(target)
        status, _, answer, fault = self.emulator.call(
            method, url.path, url.query, headers, body.strip(), base
        )
        return status, answer, fault


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def build_app(emulator: Emulator) -> ASGIApp:
    started = time.monotonic()
    control = emulator.control

    async def token(request: Request) -> Response:
        with control.lock:
            control.requests["token"] += 1
        # application/x-www-form-urlencoded, as RFC 6749 has it.
        parsed = urllib.parse.parse_qs((await request.body()).decode("latin-1"))
        form = {k: v[0] for k, v in parsed.items()}
        token_uri = str(request.url.replace(query="", fragment=""))
        try:
            answer = emulator.issuer.exchange(form, token_uri, emulator.users)
        except OAuthError as exc:
            return JSONResponse(exc.body(), exc.status)
        return JSONResponse(answer)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "uptime_seconds": time.monotonic() - started})

    async def users(request: Request) -> Response:
        spec: dict[str, Any] = await request.json()
        emulator.add_user(str(spec["email"]))
        return JSONResponse({"email": str(spec["email"]).lower()}, 201)

    async def service_accounts(request: Request) -> Response:
        spec: dict[str, Any] = await request.json()
        scopes = spec.get("scopes")
        account = emulator.issuer.create_account(
            str(spec.get("name") or f"concord-{uuid.uuid4().hex[:8]}"),
            set(scopes) if scopes is not None else None,
        )
        token_uri = str(request.base_url).rstrip("/") + TOKEN_PATH
        return JSONResponse(account.key_file(token_uri), 201)

    async def grants(request: Request) -> Response:
        """Domain-wide delegation: the scopes granted to a service account (PUT replaces)."""
        account = emulator.issuer.accounts.get(request.path_params["email"])
        if account is None:
            return JSONResponse({"error": "no such service account"}, 404)
        spec: dict[str, Any] = await request.json()
        account.granted_scopes = set(spec.get("scopes", []))
        for key, grant in list(emulator.issuer.tokens.items()):
            if grant.client_email == account.client_email:
                del emulator.issuer.tokens[key]
        return JSONResponse({"scopes": sorted(account.granted_scopes)})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            with control.lock:
                control.faults.clear()
            return JSONResponse({})
        if request.method == "POST":
            spec: dict[str, Any] = await request.json()
            if spec.get("kind") not in FAULT_KINDS:
                return JSONResponse({"error": f"kind must be one of {sorted(FAULT_KINDS)}"}, 400)
            try:
                fault = Fault(**spec)
            except TypeError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            with control.lock:
                control.faults.append(fault)
        with control.lock:
            return JSONResponse([asdict(f) for f in control.faults])

    async def quota(request: Request) -> Response:
        spec: dict[str, Any] = await request.json() if request.method == "POST" else {}
        with control.lock:
            control.per_minute = spec.get("per_minute")
            control.recent.clear()
        return JSONResponse({"per_minute": control.per_minute})

    async def calls(request: Request) -> Response:
        with control.lock:
            if request.method == "DELETE":
                control.calls.clear()
            return JSONResponse(dict(control.calls))

    async def requests(request: Request) -> Response:
        with control.lock:
            if request.method == "DELETE":
                control.requests.clear()
            return JSONResponse(dict(control.requests))

    async def violations(request: Request) -> Response:
        with control.lock:
            found = list(control.violations)
            if request.method == "DELETE":
                control.violations.clear()
        return JSONResponse(found)

    async def deliveries(request: Request) -> Response:
        return JSONResponse(emulator.deliveries)

    async def pubsub(request: Request) -> Response:
        """A push subscription on a topic, as an operator makes one in Google Cloud."""
        spec: dict[str, Any] = await request.json()
        emulator.subscriptions.setdefault(str(spec["topic"]), []).append(str(spec["push_endpoint"]))
        return JSONResponse(emulator.subscriptions, 201)

    async def trust(request: Request) -> Response:
        spec: dict[str, Any] = await request.json()
        emulator.trusted_ca.append(str(spec["ca_file"]))
        return JSONResponse({"trusted": emulator.trusted_ca})

    async def invalidate(request: Request) -> Response:
        user, what = request.path_params["user"].lower(), request.path_params["what"]
        with emulator.lock:
            if what == "calendar-sync-tokens":
                emulator.calendar.invalidate_sync_tokens(user)
            elif what == "people-sync-tokens":
                emulator.people.invalidate_sync_tokens(user)
            elif what == "gmail-history":
                emulator.gmail.expire_history(user)
            elif what == "deleted-tasks":
                emulator.tasks.purge(user)
            else:
                return JSONResponse({"error": f"nothing called {what!r}"}, 404)
        return JSONResponse({"invalidated": what})

    async def plant_event(request: Request) -> Response:
        spec: dict[str, Any] = await request.json()
        user = request.path_params["user"].lower()
        with emulator.lock:
            event = emulator.calendar.plant(user, str(spec.get("calendar", user)), spec["event"])
        return JSONResponse(event, 201)

    async def calendars(request: Request) -> Response:
        spec: dict[str, Any] = await request.json()
        user = request.path_params["user"].lower()
        with emulator.lock:
            made = emulator.calendar.add_calendar(user, str(spec["summary"]))
        return JSONResponse({"id": made.id, "summary": made.summary}, 201)

    api = ApiEndpoint(emulator)
    batch = BatchEndpoint(emulator)
    routes = [
        Route(TOKEN_PATH, token, methods=["POST"]),
        Route("/__admin/health", health),
        Route("/__admin/users", users, methods=["POST"]),
        Route("/__admin/service-accounts", service_accounts, methods=["POST"]),
        Route("/__admin/service-accounts/{email}/scopes", grants, methods=["PUT"]),
        Route("/__admin/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/__admin/quota", quota, methods=["POST", "DELETE"]),
        Route("/__admin/calls", calls, methods=["GET", "DELETE"]),
        Route("/__admin/requests", requests, methods=["GET", "DELETE"]),
        Route("/__admin/violations", violations, methods=["GET", "DELETE"]),
        Route("/__admin/deliveries", deliveries),
        Route("/__admin/trust", trust, methods=["POST"]),
        Route("/__admin/pubsub", pubsub, methods=["POST"]),
        Route("/__admin/users/{user}/invalidate/{what}", invalidate, methods=["POST"]),
        Route("/__admin/users/{user}/events", plant_event, methods=["POST"]),
        Route("/__admin/users/{user}/calendars", calendars, methods=["POST"]),
    ]
    admin = Starlette(routes=routes)
    admin.state.emulator = emulator

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == TOKEN_PATH or path.startswith("/__admin/"):
            await admin(scope, receive, send)
        elif path == "/batch" or path.startswith("/batch/"):
            await batch(scope, receive, send)
        else:
            await api(scope, receive, send)

    return app
