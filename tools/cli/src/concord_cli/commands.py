"""The commands: each talks to the stack and returns its exit code; output goes to `out`."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.common.v1 import resources_pb2 as res
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord_cli import output
from concord_cli.config import CliError, Target, mailbox_name
from concord_rpc import rich_status

__all__ = ["describe_rpc_error", "mailboxes", "sessions", "status", "sync"]

Out = Callable[[str], None]

_CHECK_TIMEOUT = 2.0
_CALL_TIMEOUT = 30.0
# How long past the wait itself the call may take (the gateway answers at the wait's end).
_WAIT_MARGIN = 15.0
_DEFAULT_WAIT = 30.0
_ENDED_BADLY = (res.SESSION_STATE_FAILED, res.SESSION_STATE_CANCELLED)


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
    """Reachable when the server greets with its INFO line, as every NATS server does first."""
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
    return output.ServiceHealth("nats", url, state)


async def status(target: Target, as_json: bool, out: Out) -> int:
    services, nats = await asyncio.gather(
        asyncio.gather(*(_health(n, a) for n, a in target.services.items())),
        _nats(target.nats_url),
    )
    checks = [*services, nats]
    ok = all(check.ok for check in checks)
    if as_json:
        out(
            output.dumps(
                {
                    "ok": ok,
                    "services": [
                        {"name": c.name, "address": c.address, "status": c.status} for c in services
                    ],
                    "nats": {"url": nats.address, "status": nats.status},
                }
            )
        )
    else:
        out(output.status_table(checks))
    return 0 if ok else 1


async def sync(
    target: Target, mailbox: str, wait: bool, wait_seconds: float | None, as_json: bool, out: Out
) -> int:
    wait = wait or wait_seconds is not None
    request = pb.SyncMailboxRequest(
        mailbox=mailbox_name(mailbox), wait=wait, request_id=str(uuid.uuid4())
    )
    if wait_seconds is not None:
        request.wait_timeout.FromNanoseconds(int(wait_seconds * 1e9))
    deadline = (wait_seconds or _DEFAULT_WAIT) + _WAIT_MARGIN if wait else _CALL_TIMEOUT
    async with grpc.aio.insecure_channel(target.gateway) as channel:
        response = await pb_grpc.GatewayServiceStub(channel).SyncMailbox(
            request, metadata=_metadata(target), timeout=deadline
        )
    session = response.session
    out(
        output.dumps(output.message_dict(response))
        if as_json
        else output.session_block(session, timed_out=response.timed_out)
    )
    if response.timed_out:
        raise CliError(f"session {session.session_id} had not ended when the wait timed out")
    if session.state in _ENDED_BADLY:
        reason = f": {session.failure_reason}" if session.failure_reason else ""
        raise CliError(f"session {session.session_id} {output.state(session)}{reason}")
    return 0


async def sessions(target: Target, mailbox: str, limit: int, as_json: bool, out: Out) -> int:
    async with grpc.aio.insecure_channel(target.gateway) as channel:
        response = await pb_grpc.GatewayServiceStub(channel).ListSessions(
            pb.ListSessionsRequest(parent=mailbox_name(mailbox), page_size=limit),
            metadata=_metadata(target),
            timeout=_CALL_TIMEOUT,
        )
    if as_json:
        out(output.dumps(output.message_dict(response)))
    else:
        out(output.sessions_table(response.sessions[:limit]))
    return 0


async def mailboxes(target: Target, as_json: bool, out: Out) -> int:
    found: list[res.Mailbox] = []
    page_token = ""
    async with grpc.aio.insecure_channel(target.gateway) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        while True:
            response = await stub.ListMailboxes(
                pb.ListMailboxesRequest(page_size=100, page_token=page_token),
                metadata=_metadata(target),
                timeout=_CALL_TIMEOUT,
            )
            found.extend(response.mailboxes)
            page_token = response.next_page_token
            if not page_token:
                break
    if as_json:
        out(output.dumps(output.message_dict(pb.ListMailboxesResponse(mailboxes=found))))
    else:
        out(output.mailboxes_table(found))
    return 0
