"""`python -m concord_mail_connector [serve|migrate]`."""

from __future__ import annotations

from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_mail_connector.adapters.exchange import ExchangeProvider
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.api.servicer import MailConnectorServicer
from concord_mail_connector.domain.model import Provider
from concord_mail_connector.domain.service import MailConnector
from concord_mail_connector.settings import MailConnectorSettings
from concord_runtime import ServiceProcess, serve_main
from concord_secrets import SecretBox

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MailConnectorService"].full_name
MIGRATIONS = "concord_mail_connector.adapters.migrations"


async def build(process: ServiceProcess[MailConnectorSettings]) -> None:
    cipher = SecretBox.from_setting(
        process.settings.encryption_key,
        key_name="mail-connector",
        setting="MAIL_CONNECTOR_ENCRYPTION_KEY",
    )
    exchange = ExchangeProvider(
        max_workers=process.settings.ews_max_workers,
        max_back_off=process.settings.ews_max_back_off_seconds,
        request_timeout=process.settings.ews_request_timeout_seconds,
    )
    process.server.on_shutdown(exchange.close)
    # Graph, Google and DAV adapters come after issue #4; their accounts answer UNIMPLEMENTED.
    domain = MailConnector(
        SqlAccountStore(process.engine, cipher), providers={Provider.EXCHANGE_EWS: exchange}
    )
    servicer = MailConnectorServicer(domain)
    process.server.add_service(
        SERVICE_NAME,
        lambda server: pb_grpc.add_MailConnectorServiceServicer_to_server(servicer, server),
    )


def main() -> int:
    return serve_main(MailConnectorSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
