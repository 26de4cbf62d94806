"""HTTP: the identity platform's token endpoint (client credentials), Graph's `/v1.0`, and the
admin API under `/__admin/` (users, apps, deliveries, faults, counters, lifecycle events)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from concord_graph_emulator import resources as res
from concord_graph_emulator.graph import FAULT_KINDS, Fault, GraphApi, GraphRequest
from concord_graph_emulator.store import Item, Store, new_id, utcnow

__all__ = ["TOKEN_LIFETIME", "build_app"]

TOKEN_LIFETIME = dt.timedelta(hours=1)
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def _aad_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description, "error_codes": [], "timestamp": ""},
        status_code=status,
    )


def build_app(store: Store) -> Starlette:
    api = GraphApi(store)

    def root(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    async def openid(request: Request) -> Response:
        # What msal reads to find the token endpoint of an authority (tenant discovery).
        tenant = request.path_params["tenant"]
        base = f"{root(request)}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "response_types_supported": ["code", "id_token", "token"],
                "scopes_supported": ["openid"],
            }
        )

    async def token(request: Request) -> Response:
        api.control.calls["token"] += 1
        fault = api.control.take("token", "*")
        if fault is not None and fault.kind in ("throttle", "unavailable"):
            return Response(status_code=503, headers={"Retry-After": f"{fault.retry_after:g}"})
        # A urlencoded form, read without starlette's multipart dependency.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        tenant = request.path_params["tenant"]
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", "AADSTS70003: grant type")
        app = store.apps.get(str(form.get("client_id") or ""))
        if app is None or app.tenant_id != tenant:
            return _aad_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application not found in the directory '{tenant}'.",
            )
        secret = str(form.get("client_secret") or "")
        auth = request.headers.get("authorization", "")
        if not secret and auth.lower().startswith("basic "):
            try:
                secret = base64.b64decode(auth[6:]).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                secret = ""
        if secret != app.client_secret:
            return _aad_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret provided."
            )
        if GRAPH_SCOPE not in str(form.get("scope") or "").split():
            return _aad_error(400, "invalid_scope", "AADSTS1002012: scope must be .default")
        issued, lifetime = store.issue_token(app.client_id, TOKEN_LIFETIME)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": issued,
            }
        )

    async def graph(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        app = store.app_of(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
        raw = await request.body()
        body: Any = None
        if raw and "json" in request.headers.get("content-type", "json"):
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse(
                    {"error": {"code": "BadRequest", "message": "Invalid JSON body."}},
                    status_code=400,
                )
        req = GraphRequest(
            method=request.method,
            path=request.path_params["path"],
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base=f"{root(request)}/v1.0",
            app=app,
        )
        answer = await api.serve(req)
        if answer.body is None:
            return Response(status_code=answer.status, headers=answer.headers)
        if isinstance(answer.body, bytes):
            return Response(
                answer.body,
                status_code=answer.status,
                headers=answer.headers,
                media_type=answer.content_type,
            )
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    # -- admin -------------------------------------------------------------------------------

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def admin_apps(request: Request) -> Response:
        body = await request.json()
        app = store.add_app(body["tenant_id"], body["client_id"], body["client_secret"])
        return JSONResponse({"client_id": app.client_id}, status_code=201)

    async def admin_users(request: Request) -> Response:
        body = await request.json()
        box = store.add_mailbox(body["address"], body.get("display_name", ""))
        return JSONResponse({"id": box.id, "address": box.address}, status_code=201)

    def _box(request: Request) -> Any:
        box = store.mailbox(request.path_params["user"])
        if box is None:
            raise KeyError(request.path_params["user"])
        return box

    async def admin_deny(request: Request) -> Response:
        body = await request.json()
        box = _box(request)
        app = store.apps[body["client_id"]]
        (app.denied.add if body.get("deny", True) else app.denied.discard)(box.address)
        return JSONResponse({})

    async def admin_deliver(request: Request) -> Response:
        """Files a message in a folder (well-known name or display name, created when absent)
        as delivery or a foreign client would, MIME and all."""
        body = await request.json()
        box = _box(request)
        where = str(body.get("folder") or "inbox")
        folder = box.folder(where, "mailFolder") or next(
            (f for f in box.folders.values() if f.kind == "mailFolder" and f.display_name == where),
            None,
        )
        if folder is None:
            folder = store.add_folder(box, "mailFolder", where)
        mime = base64.b64decode(body["mime"])
        data = res.message_from_mime(mime, utcnow())
        data["categories"] = list(body.get("categories") or [])
        item = Item(new_id(), "message", folder.id, data, mime=mime)
        store.insert(box, item)
        return JSONResponse({"id": item.id, "folder": folder.id}, status_code=201)

    async def admin_item(request: Request) -> Response:
        """Another client edits an item (merging these properties; `title` sets whichever
        property titles the kind); its change key moves on."""
        body = await request.json()
        box = _box(request)
        item = box.items.get(request.path_params["id"])
        if item is None:
            return JSONResponse({"error": "no such item"}, status_code=404)
        if "title" in body:
            titled = {"contact": "displayName", "todoTask": "title"}.get(item.kind, "subject")
            body[titled] = body.pop("title")
        item.data.update(body)
        store.updated(box, item)
        return JSONResponse({"changeKey": item.change_key})

    async def admin_plant(request: Request) -> Response:
        """Stores an event as given, unchecked: what a damaged store or a foreign client
        leaves, which no Graph write can make."""
        body = await request.json()
        box = _box(request)
        calendar = box.well_known("calendar")
        assert calendar is not None
        item = Item(new_id(), "event", calendar.id, {**body, "_raw": True})
        store.insert(box, item)
        return JSONResponse({"id": item.id}, status_code=201)

    async def admin_expire(request: Request) -> Response:
        box = _box(request)
        box.min_seq = store.seq + 1
        return JSONResponse({})

    async def admin_faults(request: Request) -> Response:
        if request.method == "DELETE":
            with api.control.lock:
                api.control.faults.clear()
            return JSONResponse({})
        body = await request.json()
        if body.get("kind") not in FAULT_KINDS:
            return JSONResponse({"error": f"kind must be one of {sorted(FAULT_KINDS)}"}, 400)
        with api.control.lock:
            api.control.faults.append(Fault(**body))
        return JSONResponse({}, status_code=201)

    async def admin_calls(request: Request) -> Response:
        if request.method == "DELETE":
            with api.control.lock:
                api.control.calls.clear()
                api.control.max_in_flight.clear()
            return JSONResponse({})
        with api.control.lock:
            return JSONResponse(
                {
                    "calls": dict(api.control.calls),
                    "max_in_flight": dict(api.control.max_in_flight),
                }
            )

    async def admin_subscriptions(request: Request) -> Response:
        return JSONResponse(
            {
                "value": [api.notifier.to_json(s) for s in store.subscriptions.values()],
                "sent": api.notifier.sent[-200:],
            }
        )

    async def admin_lifecycle(request: Request) -> Response:
        body = await request.json()
        sub = store.subscriptions.get(request.path_params["sid"])
        if sub is None:
            return JSONResponse({"error": "no such subscription"}, status_code=404)
        api.notifier.lifecycle(sub, str(body["event"]))
        return JSONResponse({})

    async def admin_expire_subscription(request: Request) -> Response:
        sub = store.subscriptions.get(request.path_params["sid"])
        if sub is None:
            return JSONResponse({"error": "no such subscription"}, status_code=404)
        sub.expires = utcnow() - dt.timedelta(seconds=1)
        return JSONResponse({})

    routes = [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/v1.0/{path:path}", graph, methods=["GET", "POST", "PATCH", "DELETE", "PUT"]),
        Route("/__admin/health", health),
        Route("/__admin/apps", admin_apps, methods=["POST"]),
        Route("/__admin/users", admin_users, methods=["POST"]),
        Route("/__admin/users/{user}/deny", admin_deny, methods=["POST"]),
        Route("/__admin/users/{user}/deliver", admin_deliver, methods=["POST"]),
        Route("/__admin/users/{user}/items/{id}", admin_item, methods=["PATCH"]),
        Route("/__admin/users/{user}/plant", admin_plant, methods=["POST"]),
        Route("/__admin/users/{user}/expire-delta", admin_expire, methods=["POST"]),
        Route("/__admin/faults", admin_faults, methods=["POST", "DELETE"]),
        Route("/__admin/calls", admin_calls, methods=["GET", "DELETE"]),
        Route("/__admin/subscriptions", admin_subscriptions),
        Route("/__admin/subscriptions/{sid}/lifecycle", admin_lifecycle, methods=["POST"]),
        Route("/__admin/subscriptions/{sid}/expire", admin_expire_subscription, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await api.notifier.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.api = api
    return app
