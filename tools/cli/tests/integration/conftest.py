"""The real gateway (`python -m concord_gateway`) in front of a fake reconciler.

The fake is a sync grpc server in threads, so `main()` can run its own event loop in the test
thread. It verifies the caller identity the gateway signs, as the real peers will, and keeps
what the CLI needs to see: mailboxes of two orgs, sessions that move QUEUED -> RUNNING -> an
end on each read, item errors, settings with the org's locks, and replays by request_id.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.reconciler.v1 import reconciler_service_pb2 as rec
from concord.reconciler.v1 import reconciler_service_pb2_grpc as rec_grpc
from concord_rpc import Identity, IdentityVerifier, Unauthenticated
from concord_testing import NatsServer, ServiceProcess, free_port

KEY = "cli-test-signing-key-0123456789-abcdefghij"
IDENTITY_KEY = "cli-test-identity-key-0123456789-abcdefgh"
_RECONCILER = "/concord.reconciler.v1.ReconcilerService/"


def mint(sub: str, org: str, role: str, *, key: str = KEY, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "concord", "aud": "concord-gateway", "sub": sub}
    claims |= {"org": org, "role": role, "iat": now, "exp": now + 600}
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="HS256")


USER_TOKEN = mint("demo-user", "demo", "user")
ADMIN_TOKEN = mint("root", "demo", "admin")


def _abort(context: Any, code: int, reason: str, message: str, **metadata: str) -> None:
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason=reason, domain="reconciler.concord.dev", metadata=metadata
        )
    )
    context.abort_with_status(rpc_status.to_status(status))


def _mailbox(mailbox_id: str, org: str, owner: str) -> res.Mailbox:
    return res.Mailbox(
        name=f"mailboxes/{mailbox_id}",
        mailbox_id=mailbox_id,
        org=f"orgs/{org}",
        owner_user_id=owner,
        crm_user_id="005000000000001AAA",
        address=f"{owner}@{org}.test",
        provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
        state=res.MAILBOX_STATE_ACTIVE,
        push_state=res.PUSH_STATE_UNAVAILABLE,
    )


def _conflict(mailbox_id: str) -> res.Conflict:
    """A meeting whose subject and location were changed differently on both sides."""
    subject = res.ConflictField(field="Subject")
    subject.mail_value.string_value = "Pipeline review (moved)"
    subject.crm_value.string_value = "Pipeline review"
    people = res.ConflictField(field="Location")
    people.mail_value.list_value.values.add().string_value = "Room 2"
    people.crm_value.null_value = struct_pb2.NULL_VALUE
    return res.Conflict(
        name=f"mailboxes/{mailbox_id}/conflicts/l1",
        kind=res.OBJECT_KIND_CALENDAR_ITEM,
        mail_ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id="AAMk1"),
        crm_record_id="00U000000000001",
        fields=[subject, people],
    )


@dataclass
class FakeReconciler(rec_grpc.ReconcilerServiceServicer):
    # How sessions end once they have been read RUNNING: COMPLETED, FAILED, or never (None).
    outcome: int | None = res.SESSION_STATE_COMPLETED
    failure_reason: str = ""
    mailboxes: dict[str, res.Mailbox] = field(default_factory=dict)
    sessions: dict[str, res.Session] = field(default_factory=dict)
    item_errors: dict[str, res.ItemError] = field(default_factory=dict)
    conflicts: dict[str, res.Conflict] = field(default_factory=dict)
    resolutions: list[Any] = field(default_factory=list)
    user_settings: dict[str, st.MailboxSettings] = field(default_factory=dict)
    org_settings: dict[str, st.OrgSettings] = field(default_factory=dict)
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    acted: list[str] = field(default_factory=list)
    callers: list[tuple[str, Identity]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.outcome, self.failure_reason = res.SESSION_STATE_COMPLETED, ""
            self.mailboxes = {
                m.name: m
                for m in (
                    _mailbox("demo", "demo", "demo-user"),
                    _mailbox("colleague", "demo", "someone-else"),
                    _mailbox("foreign", "globex", "demo-user"),
                )
            }
            self.sessions.clear()
            self._ids = itertools.count(1)
            self.item_errors = {
                "mailboxes/demo/itemErrors/e1": res.ItemError(
                    name="mailboxes/demo/itemErrors/e1",
                    mailbox="mailboxes/demo",
                    ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id="AAMk1"),
                    side=res.SYNC_SIDE_MAIL,
                    reason="UNKNOWN_TIME_ZONE",
                    message="time zone 'Mars Standard Time' is not known",
                    attempts=3,
                    quarantined=True,
                    last_seen_time=timestamp_pb2.Timestamp(seconds=1_800_000_000),
                )
            }
            self.conflicts = {c.name: c for c in (_conflict("demo"), _conflict("colleague"))}
            self.resolutions.clear()
            self.user_settings.clear()
            self.org_settings.clear()
            self.answers.clear()
            self.acted.clear()
            self.callers.clear()

    # -- plumbing -----------------------------------------------------------------------------

    def _caller(self, context: Any, method: str) -> None:
        try:
            identity = IdentityVerifier([IDENTITY_KEY]).verify(
                context.invocation_metadata(), _RECONCILER + method
            )
        except Unauthenticated as refused:
            _abort(context, code_pb2.UNAUTHENTICATED, refused.reason, refused.message)
            raise
        with self._lock:
            self.callers.append((method, identity))

    def _mailbox(self, name: str, context: Any) -> res.Mailbox:
        if name not in self.mailboxes:
            _abort(context, code_pb2.NOT_FOUND, "MAILBOX_NOT_FOUND", f"no {name}", mailbox=name)
        return self.mailboxes[name]

    def _replayed(self, method: str, request: Any, context: Any, act: Callable[[], Any]) -> Any:
        self._caller(context, method)
        key = (method, request.request_id)
        with self._lock:
            if request.request_id and key in self.answers:
                return self.answers[key]
        answer = act()
        with self._lock:
            self.acted.append(method)
            if request.request_id:
                self.answers[key] = answer
        return answer

    def _new_session(self, mailbox: str, trigger: int) -> res.Session:
        session_id = f"s-{next(self._ids)}"
        session = res.Session(
            name=f"{mailbox}/sessions/{session_id}",
            session_id=session_id,
            mailbox=mailbox,
            state=res.SESSION_STATE_QUEUED,
            trigger=trigger,  # type: ignore[arg-type]
            request_time=timestamp_pb2.Timestamp(seconds=int(time.time())),
        )
        self.sessions[session.name] = session
        return session

    # -- mailboxes ----------------------------------------------------------------------------

    def GetMailbox(self, request: Any, context: Any) -> Any:
        self._caller(context, "GetMailbox")
        return rec.GetMailboxResponse(mailbox=self._mailbox(request.name, context))

    def ListMailboxes(self, request: Any, context: Any) -> Any:
        self._caller(context, "ListMailboxes")
        found = [m for m in self.mailboxes.values() if m.org == request.org]
        return rec.ListMailboxesResponse(mailboxes=found)

    def CreateMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            created = res.Mailbox()
            created.CopyFrom(request.mailbox)
            created.name = f"mailboxes/{request.mailbox_id}"
            created.mailbox_id = request.mailbox_id
            created.state = res.MAILBOX_STATE_ACTIVE
            self.mailboxes[created.name] = created
            return rec.CreateMailboxResponse(mailbox=created)

        return self._replayed("CreateMailbox", request, context, act)

    def DeleteMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            self._mailbox(request.name, context)
            del self.mailboxes[request.name]
            return rec.DeleteMailboxResponse()

        return self._replayed("DeleteMailbox", request, context, act)

    def SuspendMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            mailbox = self._mailbox(request.name, context)
            mailbox.state = res.MAILBOX_STATE_SUSPENDED
            mailbox.suspended_reason = request.reason or "suspended on request"
            return rec.SuspendMailboxResponse(mailbox=mailbox)

        return self._replayed("SuspendMailbox", request, context, act)

    def ResumeMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            mailbox = self._mailbox(request.name, context)
            mailbox.state, mailbox.suspended_reason = res.MAILBOX_STATE_ACTIVE, ""
            session = self._new_session(request.name, res.SESSION_TRIGGER_FORCE)
            return rec.ResumeMailboxResponse(mailbox=mailbox, session=session)

        return self._replayed("ResumeMailbox", request, context, act)

    # -- sessions -----------------------------------------------------------------------------

    def RequestSession(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            self._mailbox(request.mailbox, context)
            session = self._new_session(request.mailbox, request.trigger)
            return rec.RequestSessionResponse(session=session)

        return self._replayed("RequestSession", request, context, act)

    def GetSession(self, request: Any, context: Any) -> Any:
        self._caller(context, "GetSession")
        session = self.sessions.get(request.name)
        if session is None:
            _abort(context, code_pb2.NOT_FOUND, "SESSION_NOT_FOUND", f"no {request.name}")
        assert session is not None
        answer = res.Session()
        answer.CopyFrom(session)
        # Each read moves it on: QUEUED -> RUNNING -> the outcome.
        if session.state == res.SESSION_STATE_QUEUED:
            session.state = res.SESSION_STATE_RUNNING
            session.start_time.GetCurrentTime()
        elif session.state == res.SESSION_STATE_RUNNING and self.outcome is not None:
            session.state = self.outcome  # type: ignore[assignment]
            session.end_time.GetCurrentTime()
            session.failure_reason = self.failure_reason
            session.counts.CopyFrom(
                res.SessionCounts(mail_changes_seen=2, crm=res.SideCounts(created=2))
            )
        return rec.GetSessionResponse(session=answer)

    def ListSessions(self, request: Any, context: Any) -> Any:
        self._caller(context, "ListSessions")
        mine = [s for s in self.sessions.values() if s.mailbox == request.parent]
        mine.reverse()
        return rec.ListSessionsResponse(sessions=mine[: request.page_size or 50])

    def WaitSession(self, request: Any, context: Any) -> Any:
        self._caller(context, "WaitSession")
        return rec.WaitSessionResponse(session=self.sessions[request.name], timed_out=True)

    # -- item errors ---------------------------------------------------------------------------

    def ListItemErrors(self, request: Any, context: Any) -> Any:
        self._caller(context, "ListItemErrors")
        mine = [e for e in self.item_errors.values() if e.mailbox == request.parent]
        if request.quarantined_only:
            mine = [e for e in mine if e.quarantined]
        return rec.ListItemErrorsResponse(item_errors=mine, total_size=len(mine))

    def RetryItem(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            error = self.item_errors.get(request.name)
            if error is None:
                _abort(context, code_pb2.NOT_FOUND, "ITEM_ERROR_NOT_FOUND", "no such item")
            assert error is not None
            error.quarantined = False
            session = self._new_session(error.mailbox, res.SESSION_TRIGGER_RETRY)
            return rec.RetryItemResponse(item_error=error, session=session)

        return self._replayed("RetryItem", request, context, act)

    # -- conflicts -----------------------------------------------------------------------------

    def ListConflicts(self, request: Any, context: Any) -> Any:
        self._caller(context, "ListConflicts")
        mine = [c for n, c in self.conflicts.items() if n.startswith(request.parent + "/")]
        return rec.ListConflictsResponse(conflicts=mine)

    def ResolveConflict(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            conflict = self.conflicts.get(request.name)
            if conflict is None:
                _abort(context, code_pb2.NOT_FOUND, "CONFLICT_NOT_FOUND", "no such conflict")
            assert conflict is not None
            self.resolutions.append(request)
            conflict.resolution_pending = True
            mailbox = request.name.split("/conflicts/")[0]
            session = self._new_session(mailbox, res.SESSION_TRIGGER_RETRY)
            return rec.ResolveConflictResponse(conflict=conflict, session=session)

        return self._replayed("ResolveConflict", request, context, act)

    # -- settings ------------------------------------------------------------------------------

    def _org(self, org: str) -> st.OrgSettings:
        return self.org_settings.setdefault(
            org,
            st.OrgSettings(name=f"{org}/settings", conflict_policy=st.CONFLICT_POLICY_NEWEST_WINS),
        )

    def _effective(self, name: str, context: Any) -> st.MailboxSettings:
        mailbox = self._mailbox(name.removesuffix("/settings"), context)
        settings = st.MailboxSettings()
        settings.CopyFrom(self.user_settings.get(name, st.MailboxSettings(name=name)))
        org = self._org(mailbox.org)
        settings.locked_fields[:] = org.locked_user_fields
        settings.settings_access_disabled = (
            mailbox.owner_user_id in org.settings_access_disabled_users
        )
        return settings

    def GetMailboxSettings(self, request: Any, context: Any) -> Any:
        self._caller(context, "GetMailboxSettings")
        return rec.GetMailboxSettingsResponse(settings=self._effective(request.name, context))

    def UpdateMailboxSettings(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            name = request.settings.name
            current = self._effective(name, context)
            for path in request.update_mask.paths:
                if path in current.locked_fields:
                    _abort(
                        context,
                        code_pb2.FAILED_PRECONDITION,
                        "SETTING_LOCKED",
                        f"{path} is locked by the org admin",
                    )
                current.ClearField(path)
                getattr(current, path).extend(getattr(request.settings, path))
            self.user_settings[name] = current
            return rec.UpdateMailboxSettingsResponse(settings=current)

        return self._replayed("UpdateMailboxSettings", request, context, act)

    def GetOrgHealth(self, request: Any, context: Any) -> Any:
        self._caller(context, "GetOrgHealth")
        return rec.GetOrgHealthResponse(
            health=res.OrgHealth(
                org=request.org,
                state=res.HEALTH_STATE_DEGRADED,
                reasons=["1 mailbox suspended"],
                mailboxes=[
                    res.MailboxStateCount(state=res.MAILBOX_STATE_ACTIVE, count=2),
                    res.MailboxStateCount(state=res.MAILBOX_STATE_SUSPENDED, count=1),
                ],
                quarantined_items=1,
                budget=res.ApiBudget(
                    org=request.org, used=1200, limit=15000, concord_share=0.5, concord_used=300
                ),
            )
        )

    def GetOrgSettings(self, request: Any, context: Any) -> Any:
        self._caller(context, "GetOrgSettings")
        return rec.GetOrgSettingsResponse(
            settings=self._org(request.name.removesuffix("/settings"))
        )

    def UpdateOrgSettings(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            settings = self._org(request.settings.name.removesuffix("/settings"))
            for path in request.update_mask.paths:
                settings.ClearField(path)
                value = getattr(request.settings, path)
                if isinstance(value, (int, float, str)):
                    setattr(settings, path, value)
                elif hasattr(value, "extend"):
                    getattr(settings, path).extend(value)
                else:
                    getattr(settings, path).CopyFrom(value)
            return rec.UpdateOrgSettingsResponse(settings=settings)

        return self._replayed("UpdateOrgSettings", request, context, act)


@dataclass
class Stack:
    fake: FakeReconciler
    gateway: str
    peers: str
    up_file: Path
    health: health.HealthServicer
    process: ServiceProcess

    def write_up(self, *, token: str | None = USER_TOKEN, admin_token: str = ADMIN_TOKEN) -> None:
        info = json.loads(self.up_file.read_text())
        info["demo"] = {"admin_token": admin_token} | ({"token": token} if token else {})
        self.up_file.write_text(json.dumps(info))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    """One fake reconciler and one real gateway process per test module (no CLI command
    reaches the linker; its address is the fake's, which answers health)."""
    fake = FakeReconciler()
    fake.reset()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rec_grpc.add_ReconcilerServiceServicer_to_server(fake, server)  # type: ignore[arg-type]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set(
        "concord.reconciler.v1.ReconcilerService", health_pb2.HealthCheckResponse.SERVING
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    peers = f"127.0.0.1:{port}"
    gateway_port = free_port()
    directory = tmp_path_factory.mktemp("gateway")
    process = ServiceProcess(
        "concord_gateway",
        directory / "logs",
        name="gateway",
        env={
            "CONCORD_VAR_DIR": str(directory / "var"),
            "GATEWAY_PORT": str(gateway_port),
            "RECONCILER_ADDR": peers,
            "LINKER_ADDR": peers,
            "GATEWAY_AUTH_HS256_KEY": KEY,
            "GATEWAY_AUTH_HS256_KEYS": "",
            "GATEWAY_AUTH_HS256_KEYSET": "",
            "GATEWAY_INTERNAL_IDENTITY_KEY": IDENTITY_KEY,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        },
    ).start()
    try:
        process.wait_serving(f"127.0.0.1:{gateway_port}", 60.0)
        yield fake, peers, f"127.0.0.1:{gateway_port}", health_servicer, process
    finally:
        process.stop()
        server.stop(grace=None)


@pytest.fixture
def stack(
    running: tuple[Any, ...], tmp_path: Path, nats_server_session: NatsServer
) -> Iterator[Stack]:
    fake, peers, gateway, health_servicer, process = running
    fake.reset()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # The gateway is the real one; the rest answer health at the fakes' address.
    services = {"gateway": gateway} | {
        name: peers for name in ("reconciler", "mail-connector", "crm-connector", "mapping")
    }
    services["linker"] = peers
    up_file = tmp_path / "up.json"
    up_file.write_text(
        json.dumps(
            {
                "nats": {"url": nats_server_session.url},
                "services": {name: {"address": a} for name, a in services.items()},
                "demo": {"token": USER_TOKEN, "admin_token": ADMIN_TOKEN},
            }
        )
    )
    yield Stack(fake, gateway, peers, up_file, health_servicer, process)
    assert process.running, process.log_tail()


@pytest.fixture
def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"
