"""`python -m concord_crm_connector [serve|migrate]`."""

from __future__ import annotations

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.adapters.store import SqlOrgStore
from concord_crm_connector.api.servicer import CrmConnectorServicer
from concord_crm_connector.domain.service import CrmConnector
from concord_crm_connector.settings import CrmConnectorSettings
from concord_runtime import ServiceProcess, serve_main
from concord_secrets import SecretBox

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CrmConnectorService"].full_name
MIGRATIONS = "concord_crm_connector.adapters.migrations"


async def build(process: ServiceProcess[CrmConnectorSettings]) -> None:
    settings = process.settings
    cipher = SecretBox.from_setting(
        settings.encryption_key, key_name="crm-connector", setting="CRM_CONNECTOR_ENCRYPTION_KEY"
    )
    # No Salesforce adapter yet: it arrives with issue #3.
    domain = CrmConnector(SqlOrgStore(process.engine, cipher), salesforce=None)
    servicer = CrmConnectorServicer(domain, budget_share=settings.budget_share)
    process.server.add_service(
        SERVICE_NAME,
        lambda server: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, server),
    )


def main() -> int:
    return serve_main(CrmConnectorSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
