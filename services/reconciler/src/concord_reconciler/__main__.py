"""`python -m concord_reconciler [serve|migrate]`: the reconciler process."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_events import EventBus, Topology
from concord_reconciler.adapters.links import SqlLinkStore
from concord_reconciler.adapters.messaging import NatsSessionQueue, SessionConsumer
from concord_reconciler.adapters.peers import PeerChannels
from concord_reconciler.adapters.scheduler import Scheduler, ScheduleReader
from concord_reconciler.adapters.sharing import EmailSharing
from concord_reconciler.adapters.store import SqlStore
from concord_reconciler.adapters.sync_sides import GrpcSyncEngine
from concord_reconciler.api.servicer import SERVICE_NAME, ReconcilerServicer
from concord_reconciler.domain.errors import QueueUnavailable
from concord_reconciler.domain.schedule import SchedulePolicy
from concord_reconciler.settings import ReconcilerSettings
from concord_runtime import ServiceProcess, serve_main
from concord_runtime.identity import identity_signer

__all__ = ["build", "main"]

log = logging.getLogger(__name__)


class Messaging:
    """The NATS connection once readiness made it; before that, callers get UNAVAILABLE."""

    def __init__(self) -> None:
        self.bus_or_none: EventBus | None = None

    def bus(self) -> EventBus:
        if self.bus_or_none is None or not self.bus_or_none.client.is_connected:
            raise QueueUnavailable("not connected to NATS yet; retry shortly")
        return self.bus_or_none


async def build(process: ServiceProcess[ReconcilerSettings]) -> None:
    settings = process.settings
    store = SqlStore(process.engine)
    channels = PeerChannels.open(
        mail_addr=settings.mail_connector_addr,
        crm_addr=settings.crm_connector_addr,
        mapping_addr=settings.mapping_addr,
        linker_addr=settings.linker_addr,
        timeout=settings.peer_timeout_seconds,
        # Peers refuse calls nobody vouched for: the caller's identity goes on with each call,
        # and a session runs as the reconciler (adapters.messaging).
        signer=identity_signer(settings, longest_call_seconds=settings.peer_timeout_seconds),
    )
    messaging = Messaging()
    consumers: list[SessionConsumer] = []
    schedulers: list[Scheduler] = []
    # Emails go one way, exactly once per org, from sessions and from the Save button.
    sharing = EmailSharing(process.engine, channels.crm, channels.linker)
    servicer = ReconcilerServicer(
        store,
        messaging.bus,
        channels.mail,
        wait_max_seconds=settings.wait_session_max_seconds,
    )
    servicer.email_sharing = sharing
    servicer.crm_budget = channels.crm
    # One schedule for the scheduler and for the next sync time a mailbox read shows.
    schedule = ScheduleReader(
        process.engine, timedelta(seconds=settings.default_sync_interval_seconds)
    )
    policy = SchedulePolicy(
        failures_before_back_off=settings.back_off_after_failures,
        base_delay=timedelta(seconds=settings.back_off_base_seconds),
        max_delay=timedelta(seconds=settings.back_off_max_seconds),
        requeue_after=timedelta(seconds=settings.requeue_after_seconds),
    )
    servicer.schedule = (schedule, policy)
    process.server.add_service(
        SERVICE_NAME,
        lambda server: api_grpc.add_ReconcilerServiceServicer_to_server(servicer, server),
    )

    async def nats_ready() -> None:
        # Readiness: connected, streams and the lease bucket exist, the consumer runs.
        if messaging.bus_or_none is None:
            bus = await EventBus.connect(
                settings.nats_url,
                f"reconciler-{settings.port}",
                topology=Topology(lease_ttl_seconds=settings.lease_ttl_seconds),
                tracer_provider=process.telemetry.provider,
            )
            messaging.bus_or_none = bus
        bus = messaging.bus_or_none
        await bus.ensure_topology()
        if not consumers:
            consumer = SessionConsumer(
                bus,
                store,
                GrpcSyncEngine(
                    channels.mail,
                    channels.crm,
                    channels.mapping,
                    channels.linker,
                    SqlLinkStore(process.engine),
                    sharing,
                ),
                deadline_seconds=settings.session_deadline_seconds,
                busy_retry_seconds=settings.lease_busy_retry_seconds,
                concurrency=settings.session_concurrency,
                ack_wait_seconds=settings.session_ack_wait_seconds,
                tracer_provider=process.telemetry.provider,
            )
            await consumer.start()
            consumers.append(consumer)
        if not schedulers:
            scheduler = Scheduler(
                bus,
                store,
                NatsSessionQueue(bus),
                schedule,
                owner=f"reconciler-{settings.port}-{uuid.uuid4().hex[:8]}",
                tick_seconds=settings.schedule_tick_seconds,
                policy=policy,
                tracer_provider=process.telemetry.provider,
            )
            await scheduler.start()
            schedulers.append(scheduler)

    async def close() -> None:
        for scheduler in schedulers:
            await scheduler.stop()
        for consumer in consumers:
            await consumer.stop()
        if messaging.bus_or_none is not None:
            await messaging.bus_or_none.close()
        await channels.close()

    process.server.add_readiness_check(nats_ready)
    process.server.on_shutdown(close)


def main() -> int:
    return serve_main(
        ReconcilerSettings, build, migrations="concord_reconciler.adapters.migrations"
    )


if __name__ == "__main__":
    raise SystemExit(main())
