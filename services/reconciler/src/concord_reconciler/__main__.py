"""`python -m concord_reconciler [serve|migrate]`: the process, as `app.build` wires it."""

from __future__ import annotations

from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_events import EventBus, Topology
from concord_reconciler.api.servicer import SERVICE_NAME
from concord_reconciler.app import build
from concord_reconciler.settings import ReconcilerSettings
from concord_rpc.limits import RequestLimits
from concord_runtime import ServiceProcess, serve_main
from concord_runtime.identity import identity_signer

__all__ = ["main", "serve"]


async def serve(process: ServiceProcess[ReconcilerSettings]) -> None:
    settings = process.settings
    reconciler = build(
        settings,
        process.engine,
        signer=identity_signer(settings, longest_call_seconds=settings.peer_timeout_seconds),
        tracer_provider=process.telemetry.provider,
    )
    if reconciler.serves_api:
        # The public API's limits, checked again here: what the reconciler stores (a suspension
        # reason, settings, stored answers) is read back by every later status of the org.
        process.server.add_interceptor(RequestLimits())
        process.server.add_service(
            SERVICE_NAME,
            lambda server: api_grpc.add_ReconcilerServiceServicer_to_server(
                reconciler.servicer, server
            ),
        )

    async def nats_ready() -> None:
        # Readiness: connected, streams and the lease bucket exist, this role's parts run.
        if reconciler.bus_or_none is None:
            bus = await EventBus.connect(
                settings.nats_url,
                f"reconciler-{settings.port}",
                topology=Topology(
                    lease_ttl_seconds=settings.lease_ttl_seconds,
                    replicas=settings.jetstream_replicas,
                ),
                tracer_provider=process.telemetry.provider,
            )
        else:
            bus = reconciler.bus_or_none
        await reconciler.start(bus)

    process.server.add_readiness_check(nats_ready)
    process.server.on_shutdown(reconciler.close)


def main() -> int:
    return serve_main(ReconcilerSettings, serve, migrations="concord_reconciler.migrations")


if __name__ == "__main__":
    raise SystemExit(main())
