"""The commands: each talks to the stack and returns its exit code; output goes to `out`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_cli import output
from concord_cli.config import (
    Target,
    UsageProblem,
    conflict_name,
    item_error_name,
    mailbox_name,
    org_name,
)
from concord_cli.exits import EXIT_TIMED_OUT, CommandFailed
from concord_cli.values import settings_change
from concord_rpc import rich_status

__all__ = [
    "REQUEST_ID",
    "Gateway",
    "add_mailbox",
    "conflicts",
    "describe_rpc_error",
    "errors",
    "gateway",
    "get_settings",
    "mailbox_status",
    "mailboxes",
    "org_health",
    "resolve",
    "resume",
    "retry",
    "sessions",
    "set_settings",
    "status",
    "suspend",
    "sync",
]

Out = Callable[[str], None]

_CHECK_TIMEOUT = 2.0
_CALL_TIMEOUT = 30.0
_DEFAULT_WAIT = 30.0
# How often `sync --wait` re-reads the session: often enough to see RUNNING, cheap for the
# gateway (one indexed read).
_POLL_SECONDS = 0.5
_PAGE = 100
_ENDED_BADLY = (rres.SESSION_STATE_FAILED, rres.SESSION_STATE_CANCELLED)
_ENDED = (rres.SESSION_STATE_COMPLETED, *_ENDED_BADLY)


def describe_rpc_error(err: grpc.aio.AioRpcError, gateway: str) -> str:
    """One line: what the server said and the status code, or that nothing answered."""
    code = err.code()
    if rich_status(err) is None:
        # No google.rpc.Status: nothing of ours answered; grpc's own text is long and internal.
        if code == grpc.StatusCode.UNAVAILABLE:
            return f"gateway at {gateway} is unreachable (UNAVAILABLE)"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"gateway at {gateway} did not answer in time (DEADLINE_EXCEEDED)"
    details = re.sub(r"\s+", " ", err.details() or "").strip() or code.name.lower()
    return f"{details} ({code.name})"


def _metadata(target: Target) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {target.require_token()}")]


async def _health(name: str, address: str) -> output.ServiceHealth:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=_CHECK_TIMEOUT
            )
        state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.aio.AioRpcError as err:
        dead = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        state = "UNREACHABLE" if err.code() in dead else err.code().name
    return output.ServiceHealth(name, address, state)


async def _nats(url: str) -> output.ServiceHealth:
    """Reachable when a server greets with its INFO line, as every NATS server does first. A
    cluster's URL lists its nodes, comma-separated: reachable while any node is (the clients
    fail over to it)."""
    servers = [part.strip() for part in url.split(",") if part.strip()] or [url]
    states = await asyncio.gather(*(_nats_state(server) for server in servers))
    state = "REACHABLE" if "REACHABLE" in states else states[0]
    return output.ServiceHealth("nats", url, state)


async def _nats_state(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    state = "UNREACHABLE"
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                if (await reader.readline()).startswith(b"INFO "):
                    state = "REACHABLE"
                else:
                    state = "NOT_NATS"
            finally:
                writer.close()
                await writer.wait_closed()
    except (OSError, TimeoutError):
        pass
    return state


async def status(target: Target, as_json: bool, out: Out) -> int:
    """Every service's health; then, when the gateway serves and there is a token, the
    caller's mailboxes with their state and items in error. Only health decides the exit code:
    this is the command to run when something is down."""
    services, nats = await asyncio.gather(
        asyncio.gather(*(_health(n, a) for n, a in target.services.items())),
        _nats(target.nats_url),
    )
    checks = [*services, nats]
    ok = all(check.ok for check in checks)
    gateway_up = any(c.name == "gateway" and c.ok for c in services)
    overview: list[pb.MailboxStatus] = []
    problem = ""
    if target.token and gateway_up:
        try:
            overview = await _mailbox_overview(target)
        except grpc.aio.AioRpcError as err:
            problem = describe_rpc_error(err, target.gateway)
    if as_json:
        data: dict[str, Any] = {
            "ok": ok,
            "services": [
                {"name": c.name, "address": c.address, "status": c.status} for c in services
            ],
            "nats": {"url": nats.address, "status": nats.status},
            "mailboxes": [output.message_dict(m) for m in overview],
        }
        if problem:
            data["mailboxesError"] = problem
        out(output.dumps(data))
    else:
        text = output.status_table(checks)
        if overview:
            text += "\n\n" + output.overview_table(overview)
        elif problem:
            text += f"\n\nmailboxes: {problem}"
        out(text)
    return 0 if ok else 1


# More than a screenful is `concord mailboxes`' job; status stays quick.
_OVERVIEW_LIMIT = 20


async def _mailbox_overview(target: Target) -> list[pb.MailboxStatus]:
    async with gateway(target) as gw:
        listing = await gw.call("ListMailboxes", pb.ListMailboxesRequest(page_size=_PAGE))
        names = [m.name for m in listing.mailboxes[:_OVERVIEW_LIMIT]]
        answers = await asyncio.gather(
            *(
                gw.call(
                    "GetMailboxStatus",
                    pb.GetMailboxStatusRequest(mailbox=n, session_count=1, item_error_page_size=1),
                )
                for n in names
            )
        )
    return [a.status for a in answers]


class Gateway:
    """The gateway's API as this run's caller: one channel, the bearer token on every call."""

    def __init__(self, target: Target, channel: grpc.aio.Channel) -> None:
        self._stub = pb_grpc.GatewayServiceStub(channel)
        self._metadata = _metadata(target)

    async def call(self, method: str, request: Any) -> Any:
        rpc = getattr(self._stub, method)
        return await rpc(request, metadata=self._metadata, timeout=_CALL_TIMEOUT)


@contextlib.asynccontextmanager
async def gateway(target: Target) -> AsyncIterator[Gateway]:
    target.require_token()  # before connecting: no token is a usage problem, not a network one
    async with grpc.aio.insecure_channel(target.gateway) as channel:
        yield Gateway(target, channel)


#: `--request-id`: a script retrying a mutation after a lost answer passes the same id, and the
#: gateway answers as the first time instead of acting twice.
REQUEST_ID: ContextVar[str | None] = ContextVar("concord_cli_request_id", default=None)


def _request_id() -> str:
    # Otherwise one per command run, so the gateway's own retries of it stay idempotent.
    return REQUEST_ID.get() or str(uuid.uuid4())


def _print(out: Out, as_json: bool, message: Message, human: str) -> None:
    out(output.dumps(output.message_dict(message)) if as_json else human)


# -- sync ------------------------------------------------------------------------------------


async def sync(
    target: Target,
    mailbox: str,
    wait: bool,
    wait_seconds: float | None,
    as_json: bool,
    out: Out,
    *,
    poll_seconds: float = _POLL_SECONDS,
) -> int:
    """Requests a session; with `wait`, follows it to its end, showing each state it passes."""
    wait = wait or wait_seconds is not None
    request = pb.SyncMailboxRequest(mailbox=mailbox_name(mailbox), request_id=_request_id())
    async with gateway(target) as gw:
        requested = await gw.call("SyncMailbox", request)
        session = requested.session
        timed_out = False
        if wait:
            progress = output.Progress(out if not as_json else None)
            progress.show(session, coalesced=requested.coalesced)
            session, timed_out = await _follow(
                gw, session, wait_seconds or _DEFAULT_WAIT, poll_seconds, progress
            )
    response = pb.SyncMailboxResponse(
        session=session, coalesced=requested.coalesced, timed_out=timed_out
    )
    _print(out, as_json, response, output.session_block(session, timed_out=timed_out))
    if timed_out:
        raise CommandFailed(
            f"session {session.session_id} had not ended when the wait timed out", EXIT_TIMED_OUT
        )
    if session.state in _ENDED_BADLY:
        reason = f": {session.failure_reason}" if session.failure_reason else ""
        raise CommandFailed(f"session {session.session_id} {output.state(session)}{reason}")
    return 0


async def _follow(
    gw: Gateway,
    session: rres.Session,
    wait_seconds: float,
    poll_seconds: float,
    progress: output.Progress,
) -> tuple[rres.Session, bool]:
    """Re-reads the session until it ends or `wait_seconds` pass; (last seen, timed out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    # Polling GetSession rather than one long SyncMailbox(wait): only polling sees the states
    # in between, and each short call survives a gateway restart in the middle.
    while session.state not in _ENDED:
        left = deadline - loop.time()
        if left <= 0:
            return session, True
        await asyncio.sleep(min(poll_seconds, left))
        answer = await gw.call("GetSession", pb.GetSessionRequest(name=session.name))
        session = answer.session
        progress.show(session)
    return session, False


# -- reading ---------------------------------------------------------------------------------


async def sessions(target: Target, mailbox: str, limit: int, as_json: bool, out: Out) -> int:
    async with gateway(target) as gw:
        response = await gw.call(
            "ListSessions", pb.ListSessionsRequest(parent=mailbox_name(mailbox), page_size=limit)
        )
    del response.sessions[limit:]
    _print(out, as_json, response, output.sessions_table(response.sessions))
    return 0


async def mailbox_status(target: Target, mailbox: str, as_json: bool, out: Out) -> int:
    async with gateway(target) as gw:
        response = await gw.call(
            "GetMailboxStatus", pb.GetMailboxStatusRequest(mailbox=mailbox_name(mailbox))
        )
    _print(out, as_json, response, output.dashboard(response.status))
    return 0


async def _collect(gw: Gateway, method: str, request: Any, items: str, limit: int) -> Any:
    """Up to `limit` items of a paged listing, in its last page's response."""
    found: list[Any] = []
    while True:
        request.page_size = min(limit - len(found), _PAGE)
        response = await gw.call(method, request)
        found.extend(getattr(response, items))
        request.page_token = response.next_page_token
        if not request.page_token or len(found) >= limit:
            break
    del found[limit:]
    response.ClearField(items)
    getattr(response, items).extend(found)
    return response


async def errors(
    target: Target, mailbox: str, quarantined_only: bool, limit: int, as_json: bool, out: Out
) -> int:
    request = pb.ListItemErrorsRequest(
        parent=mailbox_name(mailbox), quarantined_only=quarantined_only
    )
    async with gateway(target) as gw:
        response = await _collect(gw, "ListItemErrors", request, "item_errors", limit)
    total = response.total_size
    listing = pb.ListItemErrorsResponse(item_errors=response.item_errors, total_size=total)
    shown = output.item_errors_table(listing.item_errors)
    if total > len(listing.item_errors):
        shown += f"\n({len(listing.item_errors)} of {total}; --limit shows more)"
    _print(out, as_json, listing, shown)
    return 0


async def conflicts(target: Target, mailbox: str, limit: int, as_json: bool, out: Out) -> int:
    """The conflicts held for the user (org policy `manual`), one row per field."""
    request = pb.ListConflictsRequest(parent=mailbox_name(mailbox))
    async with gateway(target) as gw:
        listing = await _collect(gw, "ListConflicts", request, "conflicts", limit)
    shown = output.conflicts_table(listing.conflicts)
    if listing.next_page_token:
        shown += f"\n(the first {limit}; --limit shows more)"
    _print(out, as_json, listing, shown)
    return 0


async def mailboxes(target: Target, as_json: bool, out: Out) -> int:
    found: list[rres.Mailbox] = []
    page_token = ""
    async with gateway(target) as gw:
        while True:
            response = await gw.call(
                "ListMailboxes", pb.ListMailboxesRequest(page_size=_PAGE, page_token=page_token)
            )
            found.extend(response.mailboxes)
            page_token = response.next_page_token
            if not page_token:
                break
    listing = pb.ListMailboxesResponse(mailboxes=found)
    _print(out, as_json, listing, output.mailboxes_table(found))
    return 0


async def org_health(target: Target, org: str, as_json: bool, out: Out) -> int:
    async with gateway(target) as gw:
        response = await gw.call("GetOrgHealth", pb.GetOrgHealthRequest(org=org_name(target, org)))
    _print(out, as_json, response, output.org_health_block(response.health))
    return 0


# -- mutations -------------------------------------------------------------------------------


async def retry(target: Target, item: str, as_json: bool, out: Out) -> int:
    async with gateway(target) as gw:
        response = await gw.call(
            "RetryItem", pb.RetryItemRequest(name=item_error_name(item), request_id=_request_id())
        )
    human = (
        f"released {response.item_error.name}; "
        f"session {response.session.session_id} {output.state(response.session)}"
    )
    _print(out, as_json, response, human)
    return 0


_SIDES = {"mail": res.SYNC_SIDE_MAIL, "crm": res.SYNC_SIDE_CRM}


def _side(text: str, what: str) -> res.SyncSide.ValueType:
    side = _SIDES.get(text.strip().lower())
    if side is None:
        raise UsageProblem(f"{what} takes 'mail' or 'crm', got {text!r}")
    return side


async def resolve(
    target: Target, conflict: str, take: str, fields: Sequence[str], as_json: bool, out: Out
) -> int:
    """Records which side's values a held conflict keeps; the next session writes them."""
    choices = []
    for assignment in fields:
        name, equals, side = assignment.partition("=")
        if not equals or not name.strip():
            raise UsageProblem(f"--field takes FIELD=mail|crm, got {assignment!r}")
        choices.append(pb.ConflictChoice(field=name.strip(), take=_side(side, "--field")))
    request = pb.ResolveConflictRequest(
        name=conflict_name(conflict),
        take=_side(take, "--take"),
        fields=choices,
        request_id=_request_id(),
    )
    async with gateway(target) as gw:
        response = await gw.call("ResolveConflict", request)
    human = (
        f"resolved {response.conflict.name}; "
        f"session {response.session.session_id} {output.state(response.session)} applies it"
        if response.HasField("session")
        else f"resolved {response.conflict.name}; applied when the mailbox is resumed"
    )
    _print(out, as_json, response, human)
    return 0


async def suspend(target: Target, mailbox: str, reason: str, as_json: bool, out: Out) -> int:
    async with gateway(target) as gw:
        response = await gw.call(
            "SuspendMailbox",
            pb.SuspendMailboxRequest(
                mailbox=mailbox_name(mailbox), reason=reason, request_id=_request_id()
            ),
        )
    _print(out, as_json, response, output.mailboxes_table([response.mailbox]))
    return 0


async def resume(target: Target, mailbox: str, as_json: bool, out: Out) -> int:
    async with gateway(target) as gw:
        response = await gw.call(
            "ResumeMailbox",
            pb.ResumeMailboxRequest(mailbox=mailbox_name(mailbox), request_id=_request_id()),
        )
    human = output.mailboxes_table([response.mailbox])
    if response.session.name:
        human += f"\nsession {response.session.session_id} {output.state(response.session)}"
    _print(out, as_json, response, human)
    return 0


async def remove_mailbox(target: Target, mailbox: str, as_json: bool, out: Out) -> int:
    name = mailbox_name(mailbox)
    async with gateway(target) as gw:
        response = await gw.call(
            "DeleteMailbox", pb.DeleteMailboxRequest(name=name, request_id=_request_id())
        )
    _print(out, as_json, response, f"{name} removed")
    return 0


async def add_mailbox(
    target: Target,
    request: pb.RegisterMailboxRequest,
    as_json: bool,
    out: Out,
) -> int:
    request.request_id = request.request_id or _request_id()
    async with gateway(target) as gw:
        response = await gw.call("RegisterMailbox", request)
    _print(out, as_json, response, output.mailboxes_table([response.mailbox]))
    return 0


# -- settings --------------------------------------------------------------------------------


def _settings_target(mailbox: str | None, org: str | None, target: Target) -> str:
    """`org` None: the mailbox's settings; "": the token's org's; else that org's."""
    if org is not None:
        if mailbox:
            raise UsageProblem("give a mailbox or --org, not both")
        return f"{org_name(target, org)}/settings"
    if not mailbox:
        raise UsageProblem("give a mailbox, or --org for the org's settings")
    return f"{mailbox_name(mailbox)}/settings"


async def get_settings(
    target: Target, mailbox: str | None, org: str | None, as_json: bool, out: Out
) -> int:
    name = _settings_target(mailbox, org, target)
    async with gateway(target) as gw:
        if org is not None:
            response = await gw.call("GetOrgSettings", pb.GetOrgSettingsRequest(name=name))
        else:
            response = await gw.call("GetUserSettings", pb.GetUserSettingsRequest(name=name))
    _print(out, as_json, response, output.settings_block(response.settings))
    return 0


async def set_settings(
    target: Target,
    mailbox: str | None,
    org: str | None,
    assignments: Sequence[str],
    as_json: bool,
    out: Out,
) -> int:
    name = _settings_target(mailbox, org, target)
    request: pb.UpdateOrgSettingsRequest | pb.UpdateUserSettingsRequest
    try:
        if org is not None:
            org_settings, paths = settings_change(st.OrgSettings, assignments)
            org_settings.name = name
            request = pb.UpdateOrgSettingsRequest(settings=org_settings)
        else:
            user_settings, paths = settings_change(st.MailboxSettings, assignments)
            user_settings.name = name
            request = pb.UpdateUserSettingsRequest(settings=user_settings)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    request.update_mask.paths.extend(paths)
    request.request_id = _request_id()
    method = "UpdateOrgSettings" if org is not None else "UpdateUserSettings"
    async with gateway(target) as gw:
        response = await gw.call(method, request)
    _print(out, as_json, response, output.settings_block(response.settings))
    return 0
