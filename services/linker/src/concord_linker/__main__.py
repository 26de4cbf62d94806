"""`python -m concord_linker [serve|migrate]`."""

from __future__ import annotations

from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.adapters.crm_cache import CachingCrmDirectory
from concord_linker.adapters.crm_grpc import GrpcCrmDirectory
from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.store import SqlLinkerStore
from concord_linker.api.servicer import LinkerServicer
from concord_linker.domain.ports import CrmDirectory
from concord_linker.domain.service import Linker
from concord_linker.settings import LinkerSettings
from concord_rpc import AttachIdentity, channel
from concord_runtime import ServiceProcess, serve_main
from concord_runtime.identity import identity_signer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LinkerService"].full_name
MIGRATIONS = "concord_linker.adapters.migrations"
# What each crm-connector replica reports SERVING on its health service while it takes calls.
CRM_CONNECTOR_SERVICE = crm.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name


async def build(process: ServiceProcess[LinkerSettings]) -> None:
    # No readiness check on crm-connector: peer availability is decided per call, so the
    # linker still answers what needs no Salesforce. Every call it makes is a read or an
    # upsert by idempotency key, hence the retrying channel.
    # Calls go on as the caller this service was called for (concord_rpc.identity).
    signer = identity_signer(
        process.settings, longest_call_seconds=process.settings.peer_timeout_seconds
    )
    # The address may name every replica (`ipv4:a:1,b:2`, a headless Service's `dns:///` name):
    # calls go round-robin over those SERVING, so a dead, starting or draining crm-connector
    # costs no call while another serves (through one virtual address gRPC keeps one connection
    # to one replica).
    crm_channel = channel(
        process.settings.crm_connector_addr,
        retry=True,
        interceptors=[AttachIdentity(signer)],
        balance=CRM_CONNECTOR_SERVICE,
    )
    process.server.on_shutdown(crm_channel.close)
    rules = PublicSuffixRules()
    crm: CrmDirectory = GrpcCrmDirectory(
        crm_grpc.CrmConnectorServiceStub(crm_channel),
        rules,
        timeout_seconds=process.settings.peer_timeout_seconds,
    )
    if process.settings.crm_cache_seconds > 0:
        crm = CachingCrmDirectory(crm, ttl_seconds=process.settings.crm_cache_seconds)
    servicer = LinkerServicer(Linker(SqlLinkerStore(process.engine), crm, rules))
    process.server.add_service(
        SERVICE_NAME, lambda server: pb_grpc.add_LinkerServiceServicer_to_server(servicer, server)
    )


def main() -> int:
    return serve_main(LinkerSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
