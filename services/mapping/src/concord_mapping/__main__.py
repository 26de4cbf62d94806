"""`python -m concord_mapping [serve|migrate]`."""

from __future__ import annotations

from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.mapping.v1 import mapping_service_pb2 as pb
from concord.mapping.v1 import mapping_service_pb2_grpc as pb_grpc
from concord_mapping.adapters.crm_schema import GrpcOrgSchema
from concord_mapping.adapters.packaged import table_data
from concord_mapping.adapters.store import SqlMappingTableStore
from concord_mapping.api.servicer import MappingServicer
from concord_mapping.domain.service import MappingTables
from concord_mapping.settings import MappingSettings
from concord_rpc import AttachIdentity, channel
from concord_runtime import ServiceProcess, serve_main
from concord_runtime.identity import identity_signer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MappingService"].full_name
MIGRATIONS = "concord_mapping.adapters.migrations"
# What each crm-connector replica reports SERVING on its health service while it takes calls.
CRM_CONNECTOR_SERVICE = crm.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name


async def build(process: ServiceProcess[MappingSettings]) -> None:
    # Only UpdateMappingTable calls crm-connector (DescribeObject, a read: retrying channel).
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
    org_schema = GrpcOrgSchema(
        crm_grpc.CrmConnectorServiceStub(crm_channel),
        timeout_seconds=process.settings.peer_timeout_seconds,
    )
    servicer = MappingServicer(
        MappingTables(SqlMappingTableStore(process.engine), table_data(), org_schema)
    )
    process.server.add_service(
        SERVICE_NAME, lambda server: pb_grpc.add_MappingServiceServicer_to_server(servicer, server)
    )


def main() -> int:
    return serve_main(MappingSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
