"""`python -m concord_crm_connector [serve|migrate]`."""

from __future__ import annotations

from concord.crm.v1 import crm_connector_service_pb2 as pb
from concord.crm.v1 import crm_connector_service_pb2_grpc as pb_grpc
from concord_crm_connector.adapters.salesforce import SalesforceOptions, SalesforceOrgs
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
    domain = CrmConnector(store, salesforce)
    servicer = CrmConnectorServicer(domain, budget_share=settings.budget_share)
    process.server.add_service(
        SERVICE_NAME,
        lambda server: pb_grpc.add_CrmConnectorServiceServicer_to_server(servicer, server),
    )


def main() -> int:
    return serve_main(CrmConnectorSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
