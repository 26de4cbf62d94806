"""`python -m concord_crm_connector [serve|migrate]`."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from opentelemetry.trace import TracerProvider

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.adapters.hints import NatsHints, NatsOrgLeases
from concord_crm_connector.adapters.pubsub import PubSubSource
from concord_crm_connector.adapters.salesforce import SalesforceOptions, SalesforceOrgs
from concord_crm_connector.adapters.store import SqlOrgStore, SqlReplayStore, SqlStreamReports
from concord_crm_connector.api.servicer import CrmConnectorServicer
from concord_crm_connector.changes.status import StreamStatus
from concord_crm_connector.changes.streams import ChangeStreams
from concord_crm_connector.domain.service import CrmConnector
from concord_crm_connector.settings import CrmConnectorSettings
from concord_events import EventBus, Topology
from concord_runtime import ServiceProcess, serve_main
from concord_secrets import SecretBox

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name
MIGRATIONS = "concord_crm_connector.adapters.migrations"

log = logging.getLogger(__name__)


async def build(process: ServiceProcess[CrmConnectorSettings]) -> None:
    settings = process.settings
    cipher = SecretBox.from_setting(
        settings.encryption_key, key_name="crm-connector", setting="CRM_CONNECTOR_ENCRYPTION_KEY"
    )
    store = SqlOrgStore(process.engine, cipher)
    salesforce = SalesforceOrgs(
        store,
        SalesforceOptions(
            ca_bundle=settings.ca_bundle,
            api_version=settings.api_version,
            max_concurrent_calls=settings.max_concurrent_calls,
            request_timeout_seconds=settings.request_timeout_seconds,
            retry_attempts=settings.retry_attempts,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            describe_ttl_seconds=settings.describe_ttl_seconds,
            budget_share=settings.budget_share,
        ),
    )

    async def close_salesforce() -> None:
        salesforce.close()

    process.server.on_shutdown(close_salesforce)
    if settings.change_streams:
        streams = ChangeStreamsProcess(settings, store, salesforce, process.telemetry.provider)
        # Started once the store is migrated (the first readiness check); never waited for:
        # without NATS the service serves, and Salesforce changes wait for the schedule.
        process.server.add_readiness_check(streams.start)
        process.server.on_shutdown(streams.stop)
    domain = CrmConnector(store, salesforce)
    status = StreamStatus(
        SqlStreamReports(process.engine),
        enabled=settings.change_streams,
        # The holder reports every rescan; three missed reports and the org reads as silent.
        silent_after=timedelta(seconds=3 * settings.change_rescan_seconds + 5),
    )
    servicer = CrmConnectorServicer(domain, budget_share=settings.budget_share, streams=status)
    process.server.add_service(
        SERVICE_NAME,
        lambda server: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, server),
    )


class ChangeStreamsProcess:
    """The change streams of this replica: NATS first (waited for in the background, so a
    missing NATS costs push latency, never the service), then one stream per org it leases."""

    def __init__(
        self,
        settings: CrmConnectorSettings,
        store: SqlOrgStore,
        salesforce: SalesforceOrgs,
        tracer_provider: TracerProvider | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.salesforce = salesforce
        self.tracer_provider = tracer_provider
        roots = Path(settings.ca_bundle).read_bytes() if settings.ca_bundle else None
        self.source = PubSubSource(
            store, salesforce, settings.pubsub_endpoint, root_certificates=roots
        )
        self.bus: EventBus | None = None
        self.streams: ChangeStreams | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-streams-start")

    async def _run(self) -> None:
        while self.bus is None:
            try:
                self.bus = await EventBus.connect(
                    self.settings.nats_url,
                    f"crm-connector-{self.settings.port}",
                    topology=Topology(replicas=self.settings.jetstream_replicas),
                    tracer_provider=self.tracer_provider,
                )
                await self.bus.ensure_topology()
            except Exception as error:
                log.warning("change streams: NATS not reachable yet (%s)", type(error).__name__)
                self.bus = None
                await asyncio.sleep(2.0)
        # One name per replica instance that outlives a restart of its process (the pod's name
        # under Kubernetes, the host here): a restarted replica takes its orgs' leases back at
        # once instead of leaving their changes waiting for the lease's TTL.
        owner = f"crm-connector-{socket.gethostname()}-{self.settings.port}"
        self.streams = ChangeStreams(
            self.store.connected,
            self.source,
            SqlReplayStore(self.store.engine),
            OrgOwners(self.store, self.salesforce),
            NatsHints(self.bus, self.tracer_provider),
            NatsOrgLeases(self.bus, owner),
            reports=SqlStreamReports(self.store.engine),
            rescan_seconds=self.settings.change_rescan_seconds,
        )
        await self.streams.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.streams is not None:
            await self.streams.stop()
        await self.source.close()
        if self.bus is not None:
            await self.bus.close()


class OrgOwners:
    """`OwnerLookup` through the org's connection."""

    def __init__(self, store: SqlOrgStore, salesforce: SalesforceOrgs) -> None:
        self.store = store
        self.salesforce = salesforce

    async def owners(self, org: str, ids_by_type: Mapping[str, Sequence[str]]) -> dict[str, str]:
        connection = await self.store.get(org)
        if connection is None:
            return {}
        return await self.salesforce.owners(connection, ids_by_type)


def main() -> int:
    return serve_main(CrmConnectorSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
