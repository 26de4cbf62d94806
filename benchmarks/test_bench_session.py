"""A session must be cheap: measured against the stack's own gRPC floor.

Printed as ratios measured in one run, never asserted against absolute times:
- session time over the demo data / one gateway gRPC round trip (paid once per hop);
- peer calls per session / the floor (one change listing per two-way pair and side: with
  the cursors kept with the links, a session after the first lists nothing and so maps,
  links and writes nothing);
- the writes of those sessions (must be zero: nothing changed).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from tests.e2e.conftest import RunningStack

ROUNDS = 30
# Calendar items, tasks and contacts: one listing each in the mailbox and in Salesforce.
FLOOR_CALLS = 3 + 3


async def _median_seconds(action: Callable[[], Awaitable[object]], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


@pytest.mark.timeout(300)
async def test_noop_session_cost(stack: RunningStack) -> None:
    address = stack.info["services"]["gateway"]["address"]
    auth = [("authorization", f"Bearer {stack.info['demo']['token']}")]
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        gateway = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_service_pb2.SyncMailboxRequest(mailbox="mailboxes/demo", wait=True)

        async def session() -> rres.Session:
            reply = await gateway.SyncMailbox(request, metadata=auth, timeout=30)
            assert reply.session.state == rres.SESSION_STATE_COMPLETED
            return reply.session

        async def round_trip() -> object:
            return await health.Check(health_pb2.HealthCheckRequest())

        await session()  # warm-up: connections, and the first sync of the demo data
        rtt = await _median_seconds(round_trip, ROUNDS)
        noop = await _median_seconds(session, ROUNDS)
        last = await session()

    await asyncio.to_thread(
        stack.receiver.wait_for,
        lambda spans: any(s.trace_id == last.trace_id and s.name == "sync.session" for s in spans),
        timeout=20,
    )
    calls = [
        s
        for s in stack.receiver.trace(last.trace_id)
        if s.service_name == "reconciler" and s.kind == "CLIENT"
    ]
    peer_calls = len([s for s in calls if "/concord." in s.name and "Reconciler" not in s.name])
    print()
    counts = last.counts
    written = sum(s.created + s.updated + s.deleted for s in (counts.mail, counts.crm))
    print(f"quiet session over the synced demo data, median of {ROUNDS}: {noop * 1000:.1f} ms")
    print(f"gateway gRPC round trip, median of {ROUNDS}: {rtt * 1000:.2f} ms")
    print(f"ratio session / round trip: {noop / rtt:.1f}x")
    print(
        f"peer calls per session: {peer_calls} (floor {FLOOR_CALLS}): "
        f"{peer_calls / FLOOR_CALLS:.2f}x the floor"
    )
    print(f"writes of a session with no changes: {written}")
    assert peer_calls > 0
    assert written == 0
