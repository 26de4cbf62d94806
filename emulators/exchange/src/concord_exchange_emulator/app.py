"""HTTP: the EWS endpoint (Basic auth, impersonation, faults) and the admin API under /__admin/."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from concord_exchange_emulator import autodiscover, ews
from concord_exchange_emulator.ntlm import NtlmAcceptor
from concord_exchange_emulator.push import PushSender
from concord_exchange_emulator.seed import seed_mailbox
from concord_exchange_emulator.store import Store, User
from concord_exchange_emulator.xmlns import m

EWS_PATH = "/EWS/Exchange.asmx"
# Exchange sends a heartbeat about every 30 s; shorter here so idle streams are visibly alive.
STREAM_HEARTBEAT_SECONDS = 5.0
# How often a stream looks for new changes: bounds the change → event latency.
STREAM_POLL_SECONDS = 0.05
AFFINITY_COOKIE = "X-BackEndOverrideCookie"
# How long an idle keep-alive connection stays open (IIS's default connection timeout).
IDLE_CONNECTION_SECONDS = 120
FAULT_KINDS = {"server_busy", "http_error", "latency", "drop_response"}


@dataclass
class Fault:
    """An injected fault: applies to `operation` ("*" for all) for the next `times` calls made
    as `mailbox` (the caller's own or the impersonated one; "*" for any)."""

    kind: str
    operation: str = "*"
    mailbox: str = "*"
    times: int = 1
    back_off_ms: int = 1000
    status: int = 503
    latency_ms: int = 0


@dataclass
class Control:
    """What the admin API changes at run time: call counters and pending faults."""

    calls: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, operation: str, mailbox: str) -> Fault | None:
        with self.lock:
            self.calls[operation] += 1
            for fault in self.faults:
                if (
                    fault.operation in {"*", operation}
                    and fault.mailbox.lower() in {"*", mailbox}
                    and fault.times > 0
                ):
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None


def _xml(env: etree._Element) -> bytes:
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def _xml_response(env: etree._Element, status: int = 200) -> Response:
    body = _xml(env)
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8")


def _unauthorized(ntlm_challenge: str | None = None) -> Response:
    response = Response("401 Unauthorized", status_code=401)
    if ntlm_challenge:
        response.headers["WWW-Authenticate"] = f"NTLM {ntlm_challenge}"
        return response
    # Both schemes offered, as an Exchange server with Basic and Windows authentication does.
    response.raw_headers.append((b"www-authenticate", b'Basic realm="concord-exchange-emulator"'))
    response.raw_headers.append((b"www-authenticate", b"NTLM"))
    return response


def _credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class EwsEndpoint:
    """A raw ASGI endpoint, so that a "drop_response" fault can cut the connection mid-reply."""

    def __init__(self, store: Store, control: Control) -> None:
        self.store = store
        self.control = control
        self.ntlm = NtlmAcceptor(store)

    async def _authenticate(self, request: Request) -> tuple[User | None, Response | None]:
        """(the user, or the 401 to send): Basic per request, NTLM per connection."""
        client = request.client
        connection = (client.host, client.port) if client else ("", 0)
        header = request.headers.get("authorization", "")
        if header.lower().startswith("ntlm "):
            challenge, username = await run_in_threadpool(self.ntlm.step, connection, header)
            if challenge is not None:
                await request.body()
                return None, _unauthorized(challenge)
            user = self.store.user(username) if username else None
            return (user, None) if user else (None, _unauthorized())
        if not header:
            known = self.ntlm.user_of(connection)
            user = self.store.user(known) if known else None
            if user is not None:
                return user, None
        creds = _credentials(request)
        user = self.store.user(creds[0]) if creds else None
        if creds is None or user is None or user.password != creds[1]:
            return None, _unauthorized()
        return user, None

    async def _caller(
        self, request: Request, service: str, receive: Receive, send: Send
    ) -> User | None:
        """The authenticated user of a POST, or None once the refusal (405, 401) is sent."""
        if request.method != "POST":
            await Response(f"{service} accepts POST", status_code=405)(request.scope, receive, send)
            return None
        user, refusal = await self._authenticate(request)
        if refusal is not None or user is None:
            await (refusal or _unauthorized())(request.scope, receive, send)
            return None
        return user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        user = await self._caller(request, "EWS", receive, send)
        if user is None:
            return
        body = await request.body()
        fault: Fault | None = None
        try:
            operation, req, header = ews.operation_of(body)
            ctx = self._context(user.username, user.mailbox, user.can_impersonate, header)
            fault = self.control.take(operation, ctx.acting_as)
            if fault is not None and fault.kind == "latency":
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault is not None and fault.kind == "server_busy":
                raise ews.SoapFault(
                    "ErrorServerBusy",
                    "The server cannot service this request right now. Try again later.",
                    back_off_ms=fault.back_off_ms,
                )
            if fault is not None and fault.kind == "http_error":
                await Response("injected failure", status_code=fault.status)(scope, receive, send)
                return
            if operation == "GetStreamingEvents":
                try:
                    sub_ids = await run_in_threadpool(ews.streaming_subscriptions, ctx, req)
                except ews.InvalidSubscriptions as exc:
                    invalid = _xml_response(ews.invalid_subscriptions(exc.sub_ids))
                    await invalid(scope, receive, send)
                    return
                minutes = int(req.findtext(m("ConnectionTimeout")) or "30")
                await self._stream(sub_ids, minutes * 60, receive, send)
                return
            env = await run_in_threadpool(ews.handle, ctx, operation, req)
            response = _xml_response(env)
            if operation == "Subscribe":
                # Exchange pins a subscription to the mailbox server that holds it; clients send
                # this cookie back with their GetEvents/GetStreamingEvents calls.
                response.set_cookie(AFFINITY_COOKIE, f"{ctx.acting_as}~emulator")
        except ews.SoapFault as exc:
            response = _xml_response(ews.fault(exc.code, exc.text, exc.back_off_ms), status=500)
        if fault is not None and fault.kind == "drop_response":
            # The work is committed; the client sees the connection die mid-response, the case
            # a retried create must survive without a duplicate.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"100000"), (b"content-type", b"text/xml")],
                }
            )
            await send({"type": "http.response.body", "body": b"<?xml", "more_body": True})
            raise ConnectionAbortedError("drop_response fault injected")
        await response(scope, receive, send)

    async def _stream(
        self, sub_ids: list[str], seconds: float, receive: Receive, send: Send
    ) -> None:
        """GetStreamingEvents: one chunked response of SOAP documents, as Exchange streams them:
        events as they are committed, a heartbeat while idle, "Closed" at the timeout."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/xml; charset=utf-8")],
            }
        )
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        last_sent = loop.time()
        try:
            while not gone.is_set() and loop.time() < deadline:
                env = await run_in_threadpool(ews.streaming_envelope, self.store, sub_ids, "OK")
                if env is None and loop.time() - last_sent >= STREAM_HEARTBEAT_SECONDS:
                    env = ews.envelope(ews.streaming_status("OK"))
                if env is not None:
                    await send({"type": "http.response.body", "body": _xml(env), "more_body": True})
                    last_sent = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), STREAM_POLL_SECONDS)
            if not gone.is_set():
                closing = await run_in_threadpool(
                    ews.streaming_envelope, self.store, sub_ids, "Closed"
                )
                assert closing is not None
                await send({"type": "http.response.body", "body": _xml(closing)})
        finally:
            watcher.cancel()

    def _context(
        self,
        username: str,
        mailbox: str,
        can_impersonate: bool,
        header: etree._Element | None,
    ) -> ews.Context:
        target = ews.impersonated(header)
        if target is None:
            return ews.Context(self.store, username, mailbox, impersonating=False)
        if not can_impersonate:
            raise ews.SoapFault(
                "ErrorImpersonateUserDenied",
                "The account does not have permission to impersonate the requested user.",
            )
        if not self.store.mailbox_exists(target):
            raise ews.SoapFault(
                "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."
            )
        return ews.Context(self.store, username, target, impersonating=True)


class AutodiscoverEndpoint(EwsEndpoint):
    """SOAP Autodiscover, authenticated as EWS is (see `autodiscover`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        user = await self._caller(request, "Autodiscover", receive, send)
        if user is None:
            return
        body = await request.body()
        # The EWS endpoint of this very server, as the client reached it.
        ews_url = f"{request.url.scheme}://{request.url.netloc}{EWS_PATH}"
        try:
            answer = await run_in_threadpool(
                autodiscover.get_user_settings, self.store, body, ews_url
            )
            status = 200
        except autodiscover.AutodiscoverFault as exc:
            answer, status = autodiscover.fault(str(exc)), 500
        media_type = "text/xml; charset=utf-8"
        await Response(answer, status_code=status, media_type=media_type)(scope, receive, send)


def build_app(store: Store) -> Starlette:
    control = Control()
    started = time.monotonic()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "uptime_seconds": time.monotonic() - started})

    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            with control.lock:
                control.calls.clear()
            return JSONResponse({})
        with control.lock:
            return JSONResponse(dict(control.calls))

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
            return JSONResponse([vars(f) for f in control.faults])

    async def users(request: Request) -> Response:
        spec: dict[str, Any] = await request.json()
        try:
            username, password = str(spec["username"]), str(spec["password"])
        except KeyError as exc:
            return JSONResponse({"error": f"missing {exc}"}, 400)
        mailbox = str(spec.get("mailbox", username))

        def create() -> None:
            language = spec.get("language")
            ews.ensure_mailbox(
                store,
                mailbox,
                str(spec.get("display_name", mailbox)),
                str(language) if language else None,
            )
            if spec.get("archive"):
                store.enable_archive(mailbox)
            store.add_user(
                username, password, mailbox, can_impersonate=bool(spec.get("can_impersonate"))
            )
            for other in spec.get("delegate_of", []):
                store.add_delegate(str(other), username)

        await run_in_threadpool(create)
        return JSONResponse({"username": username.lower(), "mailbox": mailbox.lower()}, 201)

    async def seed(request: Request) -> Response:
        name = request.path_params["name"]
        if name != "demo":
            return JSONResponse({"error": f"unknown seed {name!r}"}, 404)
        created = await run_in_threadpool(seed_mailbox, store)
        return JSONResponse({"seed": name, "created": created})

    async def invalidate_sync_states(request: Request) -> Response:
        generation = await run_in_threadpool(store.invalidate_sync_states)
        return JSONResponse({"sync_generation": generation})

    routes = [
        Route(EWS_PATH, EwsEndpoint(store, control), methods=["POST", "GET"]),
        Route(autodiscover.PATH, AutodiscoverEndpoint(store, control), methods=["POST", "GET"]),
        Route("/__admin/health", health),
        Route("/__admin/calls", calls, methods=["GET", "DELETE"]),
        Route("/__admin/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/__admin/users", users, methods=["POST"]),
        Route("/__admin/seed/{name}", seed, methods=["POST"]),
        Route("/__admin/invalidate-sync-states", invalidate_sync_states, methods=["POST"]),
    ]
    pusher = PushSender(store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pusher.start()
        try:
            yield
        finally:
            await run_in_threadpool(pusher.stop)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.control = control
    app.state.store = store
    return app
