"""Serve in-memory peers on loopback ports for a test, each behind its own server.

`serving_peers` is for tests on an event loop; `serving_peers_in_thread` for tests whose code
under test runs its own loop (a CLI's `main()`), so the peers answer from a thread of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from concord_rpc import GrpcService, IdentityVerifier, RequireIdentity, channel
from concord_testing.peers.base import Peer

__all__ = ["ServedPeers", "serving_peers", "serving_peers_in_thread"]


@dataclass
class ServedPeers:
    """The servers of a set of peers, by service name (`crm-connector`, `mapping`, …)."""

    services: dict[str, GrpcService] = field(default_factory=dict)

    @property
    def addresses(self) -> dict[str, str]:
        """`host:port` of each peer, by service name."""
        return {name: service.address for name, service in self.services.items()}

    def address(self, service: str) -> str:
        return self.services[service].address

    def channel(self, service: str, **options: Any) -> grpc.aio.Channel:
        """A channel to one peer, without retries unless `retry=True` is passed."""
        options.setdefault("retry", False)
        return channel(self.address(service), **options)

    async def stop(self, service: str) -> None:
        """Stop one peer's server: its address refuses connections from now on."""
        await self.services[service].shutdown()


@contextlib.asynccontextmanager
async def serving_peers(
    *peers: Peer, identity_keys: tuple[str, ...] = ()
) -> AsyncIterator[ServedPeers]:
    """Each peer on its own server on port 0, SERVING on health, until the block ends.

    With `identity_keys` a peer refuses calls without a caller identity signed with one of them,
    as the real internal services do; each call's identity is then in `peer.calls`.
    """
    served = ServedPeers()
    try:
        for peer in peers:
            service = GrpcService(peer.service, port=0, drain_seconds=0)
            if identity_keys:
                service.add_interceptor(RequireIdentity(IdentityVerifier(list(identity_keys))))
            service.add_service(peer.full_name, peer.register)
            await service.start()
            await service.become_ready()
            served.services[peer.service] = service
        yield served
    finally:
        for service in served.services.values():
            await service.shutdown()


@contextlib.contextmanager
def serving_peers_in_thread(
    *peers: Peer, identity_keys: tuple[str, ...] = ()
) -> Iterator[tuple[ServedPeers, asyncio.AbstractEventLoop]]:
    """`serving_peers` on an event loop in a thread of its own; yields the servers and that loop
    (to run coroutines on it, such as a health change, with `run_coroutine_threadsafe`)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="concord-peers", daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()

    async def start() -> ServedPeers:
        return await stack.enter_async_context(serving_peers(*peers, identity_keys=identity_keys))

    try:
        served = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        yield served, loop
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
