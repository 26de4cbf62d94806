"""The HTTPS server: OAuth, the REST API, API limits, call counters, faults and the admin API.

As Salesforce does, one client's long call holds up no other's: the REST API's work (a query
of thousands of rows, a Composite, rendering its JSON) runs on a pool of worker threads, and
the loop only receives, authenticates, counts and answers. What keeps each request atomic and
each row whole there is the org's (`org.py`, `store.py`); API usage is checked and counted on
the loop, one request after another, so the limit holds exactly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from aiohttp import web

from concord_salesforce_emulator import seed
from concord_salesforce_emulator.api import (
    LATEST_VERSION,
    MIN_VERSION,
    Call,
    Reply,
    RestApi,
    encode,
    version_of,
)
from concord_salesforce_emulator.errors import (
    SalesforceError,
    invalid_session,
    not_found,
    request_limit_exceeded,
)
from concord_salesforce_emulator.org import Org
from concord_salesforce_emulator.pubsub import ChangeBus
from concord_salesforce_emulator.schema import load_schema
from concord_salesforce_emulator.store import OrgStore

_T = TypeVar("_T")

JSON_TYPE = "application/json;charset=UTF-8"
# Requests served at once; more wait for a thread (they are still received and counted).
WORKER_THREADS = 16


@dataclass
class Settings:
    """What a test or `make up` may choose; every value has a working default."""

    username: str = "admin@concord-demo.example"
    password: str = "concord-demo-password"
    client_id: str = "concord-demo-client-id"
    client_secret: str = "concord-demo-client-secret"
    daily_api_limit: int = 100_000
    page_size: int = 2000
    token_ttl_seconds: float = 7200.0


@dataclass
class Fault:
    """One injected fault: applies to matching Salesforce calls while `remaining` lasts."""

    kind: str  # throttle | error | latency | drop_response
    path: str = ""  # regex searched in the request path; "" matches every call
    method: str = ""
    remaining: int | None = 1  # None: until cleared
    status: int = 503
    latency_ms: int = 0
    probability: float = 1.0  # below 1: a random share of matching calls, from a seeded RNG
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def matches(self, request: web.Request) -> bool:
        if self.method and self.method.upper() != request.method:
            return False
        if self.path and re.search(self.path, request.path) is None:
            return False
        return self.probability >= 1.0 or self.rng.random() < self.probability


@dataclass
class Runtime:
    counters: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)


class Emulator:
    def __init__(self, data_dir: Path, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.store = OrgStore(data_dir / "salesforce.db")
        self.org = Org(self.store, load_schema())
        self.runtime = Runtime()
        self.api = RestApi(self.org, self.settings.page_size, self.api_usage)
        # Change Data Capture: every committed write of a captured object, for the Pub/Sub API.
        self.changes = ChangeBus(self.org.schema, self.org.org_id)
        self.org.on_commit = self.changes.committed
        self.admin_user_id = seed.ensure_admin_user(self.org, self.settings.username)
        seed.ensure_standard_rows(self.org, self.admin_user_id)
        self.base_url = ""  # set once the server knows its port
        self._session: str | None = None  # the access token the last login got
        self.workers = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="salesforce-api")

    def serve(self, call: Call) -> tuple[Reply, bytes | None]:
        """One REST call, answered and encoded (on a worker thread)."""
        reply = self.api.dispatch(call)
        return reply, encode(reply)

    async def in_worker(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self.workers, work)

    def close(self) -> None:
        self.workers.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    # ---- limits ------------------------------------------------------------------------------

    def api_usage(self) -> tuple[int, int]:
        minute = int(time.time() // 60)
        return self.store.calls_since(minute - 24 * 60 + 1), self.settings.daily_api_limit

    def limit_header(self) -> str:
        used, limit = self.api_usage()
        return f"api-usage={used}/{limit}"

    # ---- OAuth -------------------------------------------------------------------------------

    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        if grant not in ("password", "client_credentials"):
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "grant type not supported",
            }
        if form.get("client_id") != self.settings.client_id:
            return 400, {
                "error": "invalid_client_id",
                "error_description": "client identifier invalid",
            }
        if not hmac.compare_digest(form.get("client_secret", ""), self.settings.client_secret):
            return 400, {
                "error": "invalid_client",
                "error_description": "invalid client credentials",
            }
        user_id = self.admin_user_id
        if grant == "password":
            # Any active user of the org may log in (with the org's one password): a person
            # editing in Salesforce is another user than the integration user Concord logs in
            # as, and Salesforce stamps their edits with their own LastModifiedById.
            found = self._user_named(form.get("username", ""))
            good = found is not None and hmac.compare_digest(
                form.get("password", ""), self.settings.password
            )
            if found is None or not good:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "authentication failure",
                }
            user_id = found
        token = self._live_session() if user_id == self.admin_user_id else None
        if token is None:
            token = f"{self.org.org_id}!{secrets.token_urlsafe(72)}"
            self.store.save_token(token, user_id, time.time() + self.settings.token_ttl_seconds)
            if user_id == self.admin_user_id:
                self._session = token
        identity = f"{self.base_url}/id/{self.org.org_id}/{user_id}"
        issued_at = str(int(time.time() * 1000))
        # What Salesforce signs: the identity URL and issue time, keyed by the client secret.
        signature = base64.b64encode(
            hmac.new(
                self.settings.client_secret.encode(),
                (identity + issued_at).encode(),
                hashlib.sha256,
            ).digest()
        ).decode()
        return 200, {
            "access_token": token,
            "instance_url": self.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }

    def _user_named(self, username: str) -> str | None:
        """The Id of the org's active user of this username (the run-as user's included)."""
        if username == self.settings.username:
            return self.admin_user_id
        user = self.org.schema.get("User")
        assert user is not None
        found = [
            r
            for r in self.org.find_by(user, "Username", username)
            if r.fields.get("IsActive") is not False
        ]
        return found[0].id if found else None

    def _live_session(self) -> str | None:
        """The session a new login gets while the last one is valid: Salesforce hands a user
        logging in again through the same connected app the access token it already holds."""
        if self._session is None:
            return None
        found = self.store.token(self._session)
        if found is None or found[1] < time.time():
            return None
        return self._session

    def identity(self, request: web.Request, org_id: str, user_id: str) -> tuple[int, Any]:
        """The identity service (`id` in the token response): who the token's user is."""
        if self.user_for(request) is None:
            return 403, "Bad_OAuth_Token"
        user = self.store.get(user_id)
        if org_id != self.org.org_id or user is None or user.sobject != "User":
            return 404, "Bad_Id"
        fields = user.fields
        base = self.base_url
        version = LATEST_VERSION
        data = f"{base}/services/data/v{version}"
        urls = {
            "enterprise": f"{base}/services/Soap/c/{version}/{org_id}",
            "partner": f"{base}/services/Soap/u/{version}/{org_id}",
            "rest": f"{data}/",
            "sobjects": f"{data}/sobjects/",
            "search": f"{data}/search/",
            "query": f"{data}/query/",
            "recent": f"{data}/recent/",
            "limits": f"{data}/limits/",
            "profile": f"{base}/{user_id}",
        }
        return 200, {
            "id": f"{base}/id/{org_id}/{user_id}",
            "asserted_user": True,
            "user_id": user_id,
            "organization_id": org_id,
            "username": fields.get("Username"),
            "nick_name": fields.get("CommunityNickname") or fields.get("Alias"),
            "display_name": fields.get("Name"),
            "email": fields.get("Email"),
            "email_verified": True,
            "first_name": fields.get("FirstName"),
            "last_name": fields.get("LastName"),
            "timezone": fields.get("TimeZoneSidKey"),
            "photos": {
                "picture": f"{base}/profilephoto/005/F",
                "thumbnail": f"{base}/profilephoto/005/T",
            },
            "addr_street": None,
            "addr_city": None,
            "addr_state": None,
            "addr_country": None,
            "addr_zip": None,
            "mobile_phone": None,
            "mobile_phone_verified": False,
            "is_lightning_login_user": False,
            "status": {"created_date": None, "body": None},
            "urls": urls,
            "active": bool(fields.get("IsActive", True)),
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
            "last_modified_date": fields.get("LastModifiedDate"),
            "is_app_installed": True,
        }

    def valid_token(self, token: str) -> bool:
        found = self.store.token(token.strip())
        return found is not None and found[1] >= time.time()

    def user_for(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token:
            return None
        found = self.store.token(token.strip())
        if found is None or found[1] < time.time():
            return None
        return found[0]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        charset="UTF-8",
        headers=headers,
    )


def _error(error: SalesforceError) -> web.Response:
    return _json(error.status, error.rest_body())


def build_app(emulator: Emulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    routes = web.RouteTableDef()

    @routes.post("/services/oauth2/token")
    async def token(request: web.Request) -> web.Response:
        emulator.runtime.counters["POST /services/oauth2/token"] += 1
        raw = await request.text()
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        form.update({k: v for k, v in request.query.items()})
        status, body = emulator.issue_token(form)
        return _json(status, body)

    @routes.get("/id/{org_id}/{user_id}")
    async def identity(request: web.Request) -> web.Response:
        emulator.runtime.counters["GET /id"] += 1
        status, body = emulator.identity(
            request, request.match_info["org_id"], request.match_info["user_id"]
        )
        if isinstance(body, str):
            # The identity service answers a bad token or id with a bare word, not JSON.
            return web.Response(status=status, text=body)
        return _json(status, body)

    @routes.get("/services/data")
    @routes.get("/services/data/")
    async def versions(request: web.Request) -> web.Response:
        emulator.runtime.counters["GET /services/data"] += 1
        return _json(
            200,
            [
                {"label": f"v{v}", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                for v in range(int(MIN_VERSION), int(float(LATEST_VERSION)) + 1)
            ],
        )

    @routes.route("*", "/services/data/{version}/{rest:.*}")
    @routes.route("*", "/services/data/{version}")
    async def rest(request: web.Request) -> web.StreamResponse:
        version = version_of(request.match_info["version"])
        # The still-encoded path: an external id may hold `/` (sent as %2F), and handlers
        # decode each segment themselves.
        raw_parts = request.rel_url.raw_path.split("/", 4)
        rest_path = (raw_parts[4] if len(raw_parts) > 4 else "").rstrip("/")
        emulator.runtime.counters[f"{request.method} {_endpoint(rest_path)}"] += 1
        if version is None:
            return _with_limit(emulator, _error(not_found()))
        user_id = emulator.user_for(request)
        if user_id is None:
            return _with_limit(emulator, _error(invalid_session()))
        drop = False
        for fault in list(emulator.runtime.faults):
            if not fault.matches(request):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    emulator.runtime.faults.remove(fault)
            if fault.kind == "latency":
                await asyncio.sleep(fault.latency_ms / 1000)
            elif fault.kind == "throttle":
                return _with_limit(emulator, _error(request_limit_exceeded()))
            elif fault.kind == "error":
                return _with_limit(emulator, _server_error(fault.status))
            elif fault.kind == "drop_response":
                drop = True
        used, limit = emulator.api_usage()
        if used >= limit:
            return _with_limit(emulator, _error(request_limit_exceeded()))
        emulator.store.count_call(int(time.time() // 60))
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    return _with_limit(
                        emulator,
                        _json(
                            400,
                            [
                                {
                                    "message": "Unexpected character: was expecting a JSON value",
                                    "errorCode": "JSON_PARSER_ERROR",
                                }
                            ],
                        ),
                    )
        call = Call(
            method=request.method,
            path=rest_path,
            query={k: request.query.getall(k) for k in request.query},
            body=body,
            user_id=user_id,
            version=version,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        reply, payload = await emulator.in_worker(lambda: emulator.serve(call))
        if drop:
            # The lost acknowledgement: the write is committed, the client never hears of it.
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=204)
        response = web.Response(status=reply.status, headers=reply.headers)
        if payload is not None:
            response.body = payload
            response.content_type = "application/json"
            response.charset = "UTF-8"
        return _with_limit(emulator, response)

    # ---- admin (not Salesforce's) --------------------------------------------------------------

    @routes.get("/__admin/health")
    async def health(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    @routes.get("/__admin/calls")
    async def calls(request: web.Request) -> web.Response:
        used, limit = emulator.api_usage()
        return _json(
            200,
            {"calls": dict(emulator.runtime.counters), "apiUsage": {"used": used, "limit": limit}},
        )

    @routes.post("/__admin/reset")
    async def reset(request: web.Request) -> web.Response:
        emulator.runtime.counters.clear()
        emulator.runtime.faults.clear()
        emulator.store.reset_usage()
        return _json(200, {"reset": True})

    @routes.post("/__admin/seed")
    async def seed_org(request: web.Request) -> web.Response:
        body = await _body(request)
        name = str(body.get("seed", "demo"))
        if name != "demo":
            return _json(400, {"error": f"unknown seed {name!r}"})

        def seed_demo() -> dict[str, Any]:
            # Seeding looks for what exists before it adds: one write, as a request is.
            with emulator.org.writing():
                return seed.demo(emulator.org, emulator.admin_user_id)

        return _json(200, await emulator.in_worker(seed_demo))

    @routes.post("/__admin/faults")
    async def add_fault(request: web.Request) -> web.Response:
        body = await _body(request)
        kind = str(body.get("kind", ""))
        if kind not in ("throttle", "error", "latency", "drop_response"):
            return _json(400, {"error": "kind must be throttle, error, latency or drop_response"})
        fault = Fault(
            kind=kind,
            path=str(body.get("path", "")),
            method=str(body.get("method", "")),
            remaining=body.get("count", 1),
            status=int(body.get("status", 503)),
            latency_ms=int(body.get("latency_ms", 0)),
            probability=float(body.get("probability", 1.0)),
            rng=random.Random(body.get("seed", 0)),
        )
        emulator.runtime.faults.append(fault)
        return _json(200, {"faults": len(emulator.runtime.faults)})

    @routes.delete("/__admin/faults")
    async def clear_faults(request: web.Request) -> web.Response:
        emulator.runtime.faults.clear()
        return _json(200, {"faults": 0})

    @routes.post("/__admin/settings")
    async def change_settings(request: web.Request) -> web.Response:
        body = await _body(request)
        if "daily_api_limit" in body:
            emulator.settings.daily_api_limit = int(body["daily_api_limit"])
        if "page_size" in body:
            emulator.settings.page_size = emulator.api.page_size = int(body["page_size"])
        return _json(
            200,
            {
                "daily_api_limit": emulator.settings.daily_api_limit,
                "page_size": emulator.settings.page_size,
            },
        )

    @routes.post("/__admin/expire-sessions")
    async def expire(request: web.Request) -> web.Response:
        emulator.store.expire_tokens()
        return _json(200, {"expired": True})

    @routes.post("/__admin/pubsub/gap")
    async def pubsub_gap(request: web.Request) -> web.Response:
        """A gap or overflow event: `{"sobject": "Event", "change_type": "GAP_OVERFLOW",
        "record_ids": [...]}`."""
        body = await _body(request)
        change_type = str(body.get("change_type", "GAP_OVERFLOW"))
        if not change_type.startswith("GAP_"):
            return _json(400, {"error": "change_type must be a GAP_ type"})
        emulator.changes.gap(
            str(body.get("sobject", "Event")), change_type, list(body.get("record_ids", []))
        )
        return _json(200, {"published": change_type})

    @routes.post("/__admin/pubsub/expire")
    async def pubsub_expire(request: web.Request) -> web.Response:
        """Past retention: every event kept so far (replay ids up to now are refused)."""
        return _json(200, {"expired": emulator.changes.expire(older_than=time.time() + 1)})

    @routes.post("/__admin/pubsub/close")
    async def pubsub_close(request: web.Request) -> web.Response:
        emulator.changes.close_streams()
        return _json(200, {"closed": True})

    @routes.post("/__admin/recycle-bin/purge")
    async def purge(request: web.Request) -> web.Response:
        return _json(200, {"purged": await emulator.in_worker(emulator.org.purge_recycle_bin)})

    app.add_routes(routes)
    return app


def _endpoint(rest_path: str) -> str:
    """A counter key per resource, ids and values replaced so calls group by endpoint."""
    parts = rest_path.split("/") if rest_path else []
    if (
        parts[:1] == ["sobjects"]
        and len(parts) >= 3
        and parts[2] not in ("describe", "updated", "deleted")
    ):
        parts = [*parts[:2], "{id}"] if len(parts) == 3 else [*parts[:3], "{value}"]
    if parts[:1] in (["query"], ["queryAll"]) and len(parts) == 2:
        parts = [parts[0], "{locator}"]
    return "/".join(parts) or "/"


def _with_limit(emulator: Emulator, response: web.Response) -> web.Response:
    response.headers["Sforce-Limit-Info"] = emulator.limit_header()
    return response


def _server_error(status: int) -> web.Response:
    if status == 503:
        return _json(
            503, [{"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable"}]
        )
    return _json(
        status,
        [
            {
                "errorCode": "UNKNOWN_EXCEPTION",
                "message": "An unexpected error occurred. Please include this ErrorId "
                f"if you contact support: {secrets.randbelow(10**9)}-{status}",
            }
        ],
    )


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
