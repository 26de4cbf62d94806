"""`python -m concord_gateway [serve|migrate]`."""

from __future__ import annotations

from collections.abc import Sequence

from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord_gateway.adapters.keys import identity_key, verification_keys
from concord_gateway.adapters.peers import RECONCILER_SERVICE, Peers
from concord_gateway.api import install
from concord_gateway.domain.tokens import TokenVerifier
from concord_gateway.settings import GatewaySettings
from concord_rpc import channel
from concord_runtime import ServiceProcess, serve_main

MIGRATIONS = "concord_gateway.adapters.migrations"


async def build(process: ServiceProcess[GatewaySettings]) -> None:
    settings = process.settings
    verifier = TokenVerifier(
        verification_keys(settings),
        keyset=settings.configured_keyset(),
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        leeway=settings.auth_leeway_seconds,
    )
    peers = Peers.connect(
        settings.reconciler_addr,
        settings.linker_addr,
        identity_key=identity_key(settings),
        longest_call_seconds=settings.sync_wait_max_seconds + settings.peer_timeout_seconds,
    )
    process.server.on_shutdown(peers.close)
    install(process.server, settings, peers, verifier)

    async def reconciler_serving() -> None:
        # Every RPC but InitialSearch needs the reconciler: not SERVING until one replica is
        # (balanced as the calls are, the probe reaches only a replica that serves).
        async with channel(
            settings.reconciler_addr, retry=False, balance=RECONCILER_SERVICE
        ) as probe:
            response = await health_pb2_grpc.HealthStub(probe).Check(
                health_pb2.HealthCheckRequest(service=RECONCILER_SERVICE), timeout=2
            )
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError("the reconciler is not SERVING yet")

    process.server.add_readiness_check(reconciler_serving)


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main(GatewaySettings, build, migrations=MIGRATIONS, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
