"""Fake reconciler and linker servers on port 0, and the gateway in process in front of them."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

import grpc
import jwt
import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.linker.v1 import linker_service_pb2_grpc as linker_grpc
from concord.reconciler.v1 import reconciler_service_pb2 as rec_pb
from concord.reconciler.v1 import reconciler_service_pb2_grpc as rec_grpc
from concord_gateway.adapters.peers import Peers
from concord_gateway.api import install
from concord_gateway.domain.tokens import TokenVerifier
from concord_gateway.settings import GatewaySettings
from concord_rpc import (
    AlreadyExists,
    GrpcService,
    Identity,
    IdentityVerifier,
    NotFound,
    RequireIdentity,
    current_identity,
)
from concord_rpc.identity import CallerNotInOrg

KEY = "test-signing-key-0123456789-abcdefghij"
# The internal key gateway and fake peers share; the peers verify like the real ones will.
IDENTITY_KEY = "internal-identity-key-0123456789-abcdef"
# In the gateway's keyset under kid "2026-11" (KEY is its unnamed, older key).
NEW_KEY = "new-signing-key-2026-11-0123456789-abcdef"


class MailboxMissing(NotFound):
    reason = "MAILBOX_NOT_FOUND"


class MailboxExists(AlreadyExists):
    reason = "MAILBOX_ALREADY_EXISTS"


class SessionMissing(NotFound):
    reason = "SESSION_NOT_FOUND"


def mint_token(
    sub: str, org: str, role: str, *, key: str = KEY, kid: str | None = None, **changes: Any
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "concord",
        "aud": "concord-gateway",
        "sub": sub,
        "org": org,
        "role": role,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm="HS256", headers=headers)


def mailbox(mailbox_id: str, org: str, owner: str) -> res.Mailbox:
    return res.Mailbox(
        name=f"mailboxes/{mailbox_id}",
        mailbox_id=mailbox_id,
        org=f"orgs/{org}",
        owner_user_id=owner,
        crm_user_id=f"005{owner}",
        address=f"{owner}@{org}.test",
        state=res.MAILBOX_STATE_ACTIVE,
        push_state=res.PUSH_STATE_UNAVAILABLE,
    )


@dataclass
class FakeReconciler(rec_grpc.ReconcilerServiceServicer):
    """Answers like the reconciler, including its replay of a mutation's first answer by
    (method, request_id); `acted` counts the mutations actually carried out."""

    mailboxes: dict[str, res.Mailbox] = field(default_factory=dict)
    requests: list[Any] = field(default_factory=list)
    wait_timed_out: bool = False
    callers: list[Identity | None] = field(default_factory=list)
    acted: collections.Counter[str] = field(default_factory=collections.Counter)
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    share_error: Exception | None = None
    # Owners whose access to settings the org admin turned off (OrgSettings, issue #8).
    settings_access_disabled_users: set[str] = field(default_factory=set)

    def _seen(self, request: Any) -> None:
        self.requests.append(request)
        self.callers.append(current_identity())

    def _mutate(self, method: str, request: Any, act: Callable[[], Any]) -> Any:
        self._seen(request)
        key = (method, request.request_id)
        if request.request_id and key in self.answers:
            return self.answers[key]
        answer = act()
        self.acted[method] += 1
        if request.request_id:
            self.answers[key] = answer
        return answer

    def _get(self, name: str) -> res.Mailbox:
        if name not in self.mailboxes:
            raise MailboxMissing(f"no mailbox {name}", metadata={"mailbox": name})
        return self.mailboxes[name]

    def _session(self, mailbox: str, state: int) -> res.Session:
        return res.Session(
            name=f"{mailbox}/sessions/s1",
            session_id="s1",
            mailbox=mailbox,
            state=state,  # type: ignore[arg-type]
            trigger=res.SESSION_TRIGGER_FORCE,
            counts=res.SessionCounts(mail_changes_seen=3),
            trace_id="0af7651916cd43dd8448eb211c80319c",
        )

    async def GetMailbox(self, request: Any, context: Any) -> Any:
        self.callers.append(current_identity())
        return rec_pb.GetMailboxResponse(mailbox=self._in_callers_org(self._get(request.name)))

    def _in_callers_org(self, mailbox: res.Mailbox) -> res.Mailbox:
        # As the reconciler: a caller vouched for another org is refused (issue #17, case 6).
        caller = current_identity()
        if caller is not None and mailbox.org != f"orgs/{caller.org}":
            raise CallerNotInOrg("the caller does not act for this mailbox's org")
        return mailbox

    async def SuspendMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            mailbox = self._get(request.name)
            mailbox.state = res.MAILBOX_STATE_SUSPENDED
            mailbox.suspended_reason = request.reason or "suspended on request"
            suspended = res.Mailbox()
            suspended.CopyFrom(mailbox)
            return rec_pb.SuspendMailboxResponse(mailbox=suspended)

        return self._mutate("SuspendMailbox", request, act)

    async def DeleteMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            self._get(request.name)
            del self.mailboxes[request.name]
            return rec_pb.DeleteMailboxResponse()

        return self._mutate("DeleteMailbox", request, act)

    async def ResumeMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            mailbox = self._get(request.name)
            mailbox.state = res.MAILBOX_STATE_ACTIVE
            mailbox.suspended_reason = ""
            return rec_pb.ResumeMailboxResponse(
                mailbox=mailbox, session=self._session(request.name, res.SESSION_STATE_QUEUED)
            )

        return self._mutate("ResumeMailbox", request, act)

    async def RetryItem(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            mailbox = request.name.split("/itemErrors/")[0]
            return rec_pb.RetryItemResponse(
                item_error=res.ItemError(name=request.name, quarantined=False),
                session=self._session(mailbox, res.SESSION_STATE_QUEUED),
            )

        return self._mutate("RetryItem", request, act)

    async def ListConflicts(self, request: Any, context: Any) -> Any:
        self._seen(request)
        subject = res.ConflictField(field="Subject")
        subject.mail_value.string_value = "Kick-off (mailbox)"
        subject.crm_value.string_value = "Kick-off (salesforce)"
        conflict = res.Conflict(
            name=f"{request.parent}/conflicts/l1",
            kind=res.OBJECT_KIND_CALENDAR_ITEM,
            fields=[subject],
        )
        return rec_pb.ListConflictsResponse(conflicts=[conflict], next_page_token="p2")

    async def ResolveConflict(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            mailbox = request.name.split("/conflicts/")[0]
            return rec_pb.ResolveConflictResponse(
                conflict=res.Conflict(name=request.name, resolution_pending=True),
                session=self._session(mailbox, res.SESSION_STATE_QUEUED),
            )

        return self._mutate("ResolveConflict", request, act)

    async def UpdateMailboxSettings(self, request: Any, context: Any) -> Any:
        return self._mutate(
            "UpdateMailboxSettings",
            request,
            lambda: rec_pb.UpdateMailboxSettingsResponse(settings=request.settings),
        )

    async def UpdateOrgSettings(self, request: Any, context: Any) -> Any:
        return self._mutate(
            "UpdateOrgSettings",
            request,
            lambda: rec_pb.UpdateOrgSettingsResponse(settings=request.settings),
        )

    async def ShareEmail(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            if self.share_error is not None:
                raise self.share_error
            return rec_pb.ShareEmailResponse(
                session=self._session(request.mailbox, res.SESSION_STATE_QUEUED)
            )

        return self._mutate("ShareEmail", request, act)

    async def GetOrgHealth(self, request: Any, context: Any) -> Any:
        self._seen(request)
        return rec_pb.GetOrgHealthResponse(
            health=res.OrgHealth(org=request.org, quarantined_items=2)
        )

    async def ListMailboxes(self, request: Any, context: Any) -> Any:
        self._seen(request)
        found = [m for m in self.mailboxes.values() if m.org == request.org]
        return rec_pb.ListMailboxesResponse(mailboxes=found, next_page_token="next")

    async def CreateMailbox(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            taken = self.mailboxes.get(f"mailboxes/{request.mailbox_id}")
            if taken is not None:
                # The reconciler's answers: another org's id is not the caller's; their own
                # org's is taken.
                self._in_callers_org(taken)
                raise MailboxExists(f"mailboxes/{request.mailbox_id} already exists")
            created = res.Mailbox()
            created.CopyFrom(request.mailbox)
            created.name = f"mailboxes/{request.mailbox_id or 'generated'}"
            return rec_pb.CreateMailboxResponse(mailbox=created)

        return self._mutate("CreateMailbox", request, act)

    async def RequestSession(self, request: Any, context: Any) -> Any:
        def act() -> Any:
            self._get(request.mailbox)
            return rec_pb.RequestSessionResponse(
                session=self._session(request.mailbox, res.SESSION_STATE_QUEUED), coalesced=True
            )

        return self._mutate("RequestSession", request, act)

    async def WaitSession(self, request: Any, context: Any) -> Any:
        self._seen(request)
        mailbox_name = request.name.rsplit("/sessions/", 1)[0]
        state = res.SESSION_STATE_RUNNING if self.wait_timed_out else res.SESSION_STATE_COMPLETED
        return rec_pb.WaitSessionResponse(
            session=self._session(mailbox_name, state), timed_out=self.wait_timed_out
        )

    async def GetSession(self, request: Any, context: Any) -> Any:
        raise SessionMissing(f"no session {request.name}", metadata={"session": request.name})

    async def ListSessions(self, request: Any, context: Any) -> Any:
        self._seen(request)
        return rec_pb.ListSessionsResponse(
            sessions=[self._session(request.parent, res.SESSION_STATE_COMPLETED)]
        )

    async def ListItemErrors(self, request: Any, context: Any) -> Any:
        self._seen(request)
        error = res.ItemError(name=f"{request.parent}/itemErrors/e1", reason="UNKNOWN_TIME_ZONE")
        return rec_pb.ListItemErrorsResponse(
            item_errors=[error], total_size=7, next_page_token="p2"
        )

    async def GetMailboxSettings(self, request: Any, context: Any) -> Any:
        owner = self._get(request.name.removesuffix("/settings")).owner_user_id
        return rec_pb.GetMailboxSettingsResponse(
            settings=settings_pb2.MailboxSettings(
                name=request.name,
                blacklist=["spam.test"],
                settings_access_disabled=owner in self.settings_access_disabled_users,
            )
        )

    async def GetOrgSettings(self, request: Any, context: Any) -> Any:
        return rec_pb.GetOrgSettingsResponse(settings=settings_pb2.OrgSettings(name=request.name))


@dataclass
class FakeLinker(linker_grpc.LinkerServiceServicer):
    requests: list[Any] = field(default_factory=list)
    callers: list[Identity | None] = field(default_factory=list)

    async def InitialSearch(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        self.callers.append(current_identity())
        record = linker_pb.RelatedRecord(
            sobject_type="Contact", id="003A", name="Ann", score=0.9, explanation="sender"
        )
        return linker_pb.InitialSearchResponse(records=[record])


@contextlib.asynccontextmanager
async def serving(name: str, full_name: str, register: Any) -> AsyncIterator[GrpcService]:
    service = GrpcService(name, port=0, drain_seconds=0)
    # Verifying, as the real peers will once the lead enables it: a call the gateway did not
    # sign for a caller fails here.
    service.add_interceptor(RequireIdentity(IdentityVerifier([IDENTITY_KEY])))
    service.add_service(full_name, register)
    await service.start()
    await service.become_ready()
    try:
        yield service
    finally:
        await service.shutdown()


@dataclass
class Gateway:
    stub: pb_grpc.GatewayServiceStub
    channel: grpc.aio.Channel
    reconciler: FakeReconciler
    linker: FakeLinker

    ann: str = mint_token("ann", "acme", "user")
    bob: str = mint_token("bob", "acme", "user")
    admin: str = mint_token("root", "acme", "admin")
    sidebar: str = mint_token("sidebar", "acme", "service")

    async def call(
        self,
        method: str,
        request: Any,
        token: str | EllipsisType | None = ...,
        deadline: float = 10,
    ) -> Any:
        """`token`: ... for ann's (a user of acme), None for none at all."""
        if token is ...:
            token = self.ann
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=deadline)

    async def error(self, method: str, request: Any, token: str | EllipsisType | None = ...) -> Any:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.call(method, request, token)
        return raised.value


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    monkeypatch.setenv("GATEWAY_SYNC_WAIT_MAX_SECONDS", "60")
    return GatewaySettings.from_env()


async def _start_gateway(
    settings: GatewaySettings, reconciler_addr: str, linker_addr: str
) -> GrpcService:
    peers = Peers.connect(reconciler_addr, linker_addr, identity_key=IDENTITY_KEY)
    service = GrpcService("gateway", port=0, drain_seconds=0)
    service.on_shutdown(peers.close)
    verifier = TokenVerifier(
        [KEY], keyset={"2026-11": NEW_KEY}, issuer="concord", audience="concord-gateway"
    )
    install(service, settings, peers, verifier)
    await service.start()
    await service.become_ready()
    return service


StartGateway = Callable[[GatewaySettings, str, str], Awaitable[GrpcService]]
Mint = Callable[..., str]


@pytest.fixture
def start_gateway() -> StartGateway:
    """Starts a gateway in process in front of the given peer addresses; shut it down after."""
    return _start_gateway


@pytest.fixture
def mint() -> Mint:
    """mint(sub, org, role, key=..., **claim_changes) -> a signed token."""
    return mint_token


@dataclass
class FakePeers:
    reconciler: FakeReconciler
    linker: FakeLinker
    reconciler_addr: str
    linker_addr: str


@pytest.fixture
async def fake_peers() -> AsyncIterator[FakePeers]:
    """A fake reconciler (mailboxes ann and bob of acme, eve of globex) and linker, SERVING."""
    reconciler = FakeReconciler(
        {
            m.name: m
            for m in (
                mailbox("ann", "acme", "ann"),
                mailbox("bob", "acme", "bob"),
                mailbox("eve", "globex", "eve"),
            )
        }
    )
    linker = FakeLinker()
    async with (
        serving(
            "reconciler",
            "concord.reconciler.v1.ReconcilerService",
            lambda s: rec_grpc.add_ReconcilerServiceServicer_to_server(reconciler, s),
        ) as rec_server,
        serving(
            "linker",
            "concord.linker.v1.LinkerService",
            lambda s: linker_grpc.add_LinkerServiceServicer_to_server(linker, s),
        ) as linker_server,
    ):
        yield FakePeers(reconciler, linker, rec_server.address, linker_server.address)


@pytest.fixture
async def gateway(settings: GatewaySettings, fake_peers: FakePeers) -> AsyncIterator[Gateway]:
    service = await _start_gateway(settings, fake_peers.reconciler_addr, fake_peers.linker_addr)
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            yield Gateway(
                pb_grpc.GatewayServiceStub(channel),
                channel,
                fake_peers.reconciler,
                fake_peers.linker,
            )
    finally:
        await service.shutdown()
