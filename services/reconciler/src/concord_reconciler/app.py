"""The composition root: the one place the reconciler's rooms are wired to their adapters.

`__main__` serves what `build` returns, and the integration tests run the very same object, so
the process and the tests cannot drift apart. The process runs in one of three roles
(`ReconcilerSettings.role`): `all` (API, consumer, scheduler), `api` (the API and the
scheduler, which one replica leads) or `worker` (the consumer only), so that scaling the
workers out does not scale the API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from opentelemetry.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_events import EventBus
from concord_reconciler.api.base import ApiPorts
from concord_reconciler.api.servicer import ReconcilerServicer
from concord_reconciler.kernel.errors import QueueUnavailable
from concord_reconciler.mailboxes.adapters.health import SqlHealthFigures
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.adapters.peers import PeerChannels
from concord_reconciler.sessions.adapters.engine import GrpcSyncEngine
from concord_reconciler.sessions.adapters.messaging import (
    NatsSessionMessaging,
    NatsSessionQueue,
    SessionConsumer,
)
from concord_reconciler.sessions.adapters.scheduler import Scheduler, ScheduleReader
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sessions.domain.schedule import SchedulePolicy
from concord_reconciler.settings import ReconcilerSettings
from concord_reconciler.sharing.adapters.sharing import EmailSharing
from concord_rpc.identity import IdentitySigner

__all__ = ["Reconciler", "build", "schedule_policy"]


@dataclass
class Reconciler:
    """The reconciler's parts, wired; the background parts start once NATS is connected."""

    settings: ReconcilerSettings
    store: SqlStore
    channels: PeerChannels
    servicer: ReconcilerServicer
    engine: GrpcSyncEngine
    schedule: ScheduleReader
    policy: SchedulePolicy
    tracer_provider: TracerProvider | None = None
    bus_or_none: EventBus | None = None
    consumers: list[SessionConsumer] = field(default_factory=list)
    schedulers: list[Scheduler] = field(default_factory=list)

    @property
    def serves_api(self) -> bool:
        return self.settings.role in ("all", "api")

    @property
    def runs_sessions(self) -> bool:
        return self.settings.role in ("all", "worker")

    def bus(self) -> EventBus:
        """The NATS connection once `start` made it; before that, callers get UNAVAILABLE."""
        if self.bus_or_none is None or not self.bus_or_none.client.is_connected:
            raise QueueUnavailable("not connected to NATS yet; retry shortly")
        return self.bus_or_none

    def consumer(self, bus: EventBus) -> SessionConsumer:
        settings = self.settings
        return SessionConsumer(
            bus,
            self.store,
            self.engine,
            deadline_seconds=settings.session_deadline_seconds,
            busy_retry_seconds=settings.lease_busy_retry_seconds,
            concurrency=settings.session_concurrency,
            long_after_seconds=settings.session_long_after_seconds,
            ack_wait_seconds=settings.session_ack_wait_seconds,
            tracer_provider=self.tracer_provider,
        )

    def scheduler(self, bus: EventBus, owner: str) -> Scheduler:
        return Scheduler(
            bus,
            self.store,
            NatsSessionQueue(bus),
            self.schedule,
            owner=owner,
            tick_seconds=self.settings.schedule_tick_seconds,
            policy=self.policy,
            tracer_provider=self.tracer_provider,
        )

    async def start(self, bus: EventBus, *, consume: bool = True, schedule: bool = True) -> None:
        """Take `bus` as the connection, and start what this role runs in the background
        (tests that drive sessions by hand pass `consume=False`)."""
        self.bus_or_none = bus
        await bus.ensure_topology()
        if consume and self.runs_sessions and not self.consumers:
            consumer = self.consumer(bus)
            await consumer.start()
            self.consumers.append(consumer)
        if schedule and self.serves_api and not self.schedulers:
            owner = f"reconciler-{self.settings.port}-{uuid.uuid4().hex[:8]}"
            scheduler = self.scheduler(bus, owner)
            await scheduler.start()
            self.schedulers.append(scheduler)

    async def close(self) -> None:
        for scheduler in self.schedulers:
            await scheduler.stop()
        for consumer in self.consumers:
            await consumer.stop()
        if self.bus_or_none is not None:
            await self.bus_or_none.close()
        await self.channels.close()


def schedule_policy(settings: ReconcilerSettings) -> SchedulePolicy:
    """The scheduler's policy as the settings say (back-off, re-queue, retentions)."""
    return SchedulePolicy(
        failures_before_back_off=settings.back_off_after_failures,
        base_delay=timedelta(seconds=settings.back_off_base_seconds),
        max_delay=timedelta(seconds=settings.back_off_max_seconds),
        requeue_after=timedelta(seconds=settings.requeue_after_seconds),
        answer_retention=timedelta(seconds=settings.request_answer_retention_seconds),
        session_retention=timedelta(seconds=settings.session_retention_seconds),
    )


def build(
    settings: ReconcilerSettings,
    engine: AsyncEngine,
    *,
    signer: IdentitySigner,
    tracer_provider: TracerProvider | None = None,
    share_emails: bool = True,
) -> Reconciler:
    """Wire every room over `engine` and the peers the settings name."""
    store = SqlStore(engine)
    channels = PeerChannels.open(
        mail_addr=settings.mail_connector_addr,
        crm_addr=settings.crm_connector_addr,
        mapping_addr=settings.mapping_addr,
        linker_addr=settings.linker_addr,
        timeout=settings.peer_timeout_seconds,
        # Peers refuse calls nobody vouched for: the caller's identity goes on with each call,
        # and a session runs as the reconciler (sessions.adapters.messaging).
        signer=signer,
    )
    links = SqlLinkStore(engine)
    # Emails go one way, exactly once per org, from sessions and from the Save button.
    sharing = EmailSharing(engine, channels.crm, channels.linker) if share_emails else None
    # One schedule for the scheduler and for the next sync time a mailbox read shows.
    schedule = ScheduleReader(engine, timedelta(seconds=settings.default_sync_interval_seconds))
    policy = schedule_policy(settings)
    holder: list[Reconciler] = []

    def bus() -> EventBus:
        return holder[0].bus()

    servicer = ReconcilerServicer(
        ApiPorts(
            mailboxes=store,
            session_store=store,
            sessions=store,
            answers=store,
            messaging=NatsSessionMessaging(bus),
            accounts=channels.mail,
            conflicts=links,
            schedule=(schedule, policy),
            sharing=sharing,
            health=SqlHealthFigures(engine, channels.crm),
        ),
        wait_max_seconds=settings.wait_session_max_seconds,
    )
    reconciler = Reconciler(
        settings=settings,
        store=store,
        channels=channels,
        servicer=servicer,
        engine=GrpcSyncEngine(
            channels.mail, channels.crm, channels.mapping, channels.linker, links, sharing
        ),
        schedule=schedule,
        policy=policy,
        tracer_provider=tracer_provider,
    )
    holder.append(reconciler)
    return reconciler
