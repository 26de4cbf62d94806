"""Two replicas of one peer behind a caller's balanced channel (concord_rpc.channel's
`balance=`), and what such a caller owes them: its calls reach both, none reach a replica that
does not report SERVING, and none is lost when one stops while the other serves."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1.health_pb2 import HealthCheckResponse

from concord_rpc import channel
from concord_testing.grpc_servers import start_serving
from concord_testing.identity import TEST_IDENTITY_KEY, vouched
from concord_testing.peers.base import Peer
from concord_testing.peers.serving import ServedPeers, serving_peers
from concord_testing.processes import ServiceProcess
from concord_testing.waiting import eventually

__all__ = ["Replicas", "process_over_replicas", "serving_replicas"]

SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING


@dataclass
class Replicas:
    """`first` served with the other peers (`one`), `second` on a server of its own (`two`)."""

    first: Peer
    second: Peer
    one: ServedPeers
    two: ServedPeers

    @property
    def service(self) -> str:
        return self.first.service

    @property
    def target(self) -> str:
        """The gRPC target naming both replicas, as a headless Service's name resolves."""
        return f"ipv4:{self.one.address(self.service)},{self.two.address(self.service)}"

    @property
    def addresses(self) -> dict[str, str]:
        """Every peer's address by service name, the replicated one's being `target`."""
        return {**self.one.addresses, self.service: self.target}

    async def stop_first(self) -> None:
        await self.one.stop(self.service)

    async def assert_balanced(self, calls: Callable[[int], Awaitable[None]]) -> None:
        """`calls(n)` makes n calls that reach the replicated peer through the caller under
        test: they go to both replicas (one connection to one replica took every call), none
        to the first while it reports NOT_SERVING (starting, draining), and once it has
        stopped the second answers every one."""
        first, second = self.first, self.second

        async def both_answer() -> bool:
            was_first, was_second = len(first.calls), len(second.calls)
            await calls(4)
            return len(first.calls) > was_first and len(second.calls) > was_second

        await eventually(both_answer)

        health = self.one.services[self.service].health
        await health.set(first.full_name, NOT_SERVING)

        async def only_second() -> bool:
            before = len(first.calls)
            await calls(4)
            return len(first.calls) == before

        # The caller hears the change through its health watch, not at once.
        await eventually(only_second)
        before = len(first.calls)
        await calls(20)
        assert len(first.calls) == before, "a replica not SERVING was called"

        await health.set(first.full_name, SERVING)
        await eventually(both_answer)
        await self.stop_first()
        answered = len(second.calls)
        await calls(20)
        assert len(second.calls) == answered + 20, "calls were lost when one replica stopped"


@contextlib.asynccontextmanager
async def serving_replicas(
    first: Peer, second: Peer, *others: Peer, identity_keys: tuple[str, ...] = ()
) -> AsyncIterator[Replicas]:
    """Two replicas of one service (each a peer over state they share, as replicas do) and
    `others`, each on its own server, until the block ends (serving_peers)."""
    if first.service != second.service:
        raise ValueError(f"replicas of two services: {first.service}, {second.service}")
    async with (
        serving_peers(first, *others, identity_keys=identity_keys) as one,
        serving_peers(second, identity_keys=identity_keys) as two,
    ):
        yield Replicas(first, second, one, two)


@contextlib.asynccontextmanager
async def process_over_replicas(
    service_process: Callable[..., ServiceProcess],
    module: str,
    first: Peer,
    second: Peer,
    *,
    port_variable: str,
    health_service: str,
    var_dir: Path,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[Replicas, grpc.aio.Channel]]:
    """`python -m <module>` (start_serving) with its `<PEER>_ADDR` naming both replicas, wired
    as the process wires it; yields them and a channel to it that vouches for TEST_CALLER. The
    replicas require caller identities signed with the test key, as the real services do."""
    async with serving_replicas(first, second, identity_keys=(TEST_IDENTITY_KEY,)) as replicas:
        peer_variable = f"{first.service.upper().replace('-', '_')}_ADDR"
        _, addr = await start_serving(
            service_process,
            module,
            port_variable=port_variable,
            health_service=health_service,
            var_dir=var_dir,
            env={peer_variable: replicas.target, **(env or {})},
        )
        async with channel(addr, retry=False, interceptors=vouched()) as chan:
            yield replicas, chan
