"""`python -m concord_mail_connector [serve|migrate]`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_mail_connector.adapters import push_nats
from concord_mail_connector.adapters.exchange import ExchangeProvider
from concord_mail_connector.adapters.google import GoogleProvider
from concord_mail_connector.adapters.graph import GraphProvider
from concord_mail_connector.adapters.push_accounts import SqlPushAccounts
from concord_mail_connector.adapters.push_exchange import ExchangeChangeFeed
from concord_mail_connector.adapters.push_google import GoogleChangeFeed, NotificationReceiver
from concord_mail_connector.adapters.push_graph import GraphChangeFeed, GraphWebhook
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.api.servicer import MailConnectorServicer
from concord_mail_connector.domain.model import Provider
from concord_mail_connector.domain.own_writes import OwnWrites
from concord_mail_connector.domain.push import ChangeFeed, PushSupervisor
from concord_mail_connector.domain.service import MailConnector
from concord_mail_connector.settings import MailConnectorSettings
from concord_runtime import ServiceProcess, serve_main
from concord_secrets import SecretBox
from concord_settings import var_dir

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
    graph = GraphProvider(
        max_back_off=process.settings.graph_max_back_off_seconds,
        request_timeout=process.settings.graph_request_timeout_seconds,
        ca_bundle=process.settings.graph_ca_bundle,
    )
    process.server.on_shutdown(graph.close)
    google = GoogleProvider(
        max_workers=process.settings.google_max_workers,
        max_back_off=process.settings.google_max_back_off_seconds,
        request_timeout=process.settings.google_request_timeout_seconds,
        ca_file=process.settings.google_ca_file,
    )
    process.server.on_shutdown(google.close)
    store = SqlAccountStore(process.engine, cipher)
    # The DAV adapters come later; their accounts answer UNIMPLEMENTED.
    # The versions this process's writes left: their notifications are not sent on as hints.
    own_writes = OwnWrites()
    domain = MailConnector(
        store,
        providers={
            Provider.EXCHANGE_EWS: exchange,
            Provider.GRAPH: graph,
            Provider.GOOGLE: google,
        },
        own_writes=own_writes,
    )
    push = (
        start_push(process, store, exchange, graph, google, own_writes)
        if process.settings.push_enabled
        else None
    )
    servicer = MailConnectorServicer(domain, push=push)
    process.server.add_service(
        SERVICE_NAME,
        lambda server: pb_grpc.add_MailConnectorServiceServicer_to_server(servicer, server),
    )


def start_push(
    process: ServiceProcess[MailConnectorSettings],
    store: SqlAccountStore,
    exchange: ExchangeProvider,
    graph: GraphProvider | None = None,
    google: GoogleProvider | None = None,
    own_writes: OwnWrites | None = None,
) -> PushSupervisor:
    """Watch every mailbox account for changes and publish hints on NATS, in the background:
    the service serves syncs whether or not NATS is reachable, and push joins when it is."""
    settings = process.settings
    feed = ExchangeChangeFeed(
        stream_minutes=settings.push_stream_minutes,
        pull_seconds=settings.push_pull_seconds,
        max_back_off=settings.push_max_back_off_seconds,
        # The provider's size for a credential's session pool, which the two share.
        sessions=exchange.sessions_per_credential,
    )
    exchange.on_folder_created(feed.folder_created)
    publisher = push_nats.NatsChangePublisher(tracer_provider=process.telemetry.provider)
    feeds: dict[Provider, ChangeFeed] = {Provider.EXCHANGE_EWS: feed}
    webhook: GraphWebhook | None = None
    if graph is not None and settings.graph_webhook_url:
        webhook = GraphWebhook(settings.graph_webhook_url)
        feeds[Provider.GRAPH] = GraphChangeFeed(
            graph, webhook, lifetime=dt.timedelta(hours=settings.graph_subscription_hours)
        )
    receiver = None
    if google is not None and settings.google_push_port:
        receiver = NotificationReceiver(
            settings.google_push_host,
            settings.google_push_port,
            var_dir() / "google-push",
            settings.google_push_url,
            settings.google_pubsub_token,
        )
        feeds[Provider.GOOGLE] = GoogleChangeFeed(
            google,
            receiver,
            channel_seconds=settings.google_channel_seconds,
            renew_margin=settings.google_channel_renew_margin_seconds,
            gmail_poll_seconds=settings.google_gmail_poll_seconds,
            gmail_topic=settings.google_pubsub_topic,
            max_back_off=settings.push_max_back_off_seconds,
        )
    supervisor = PushSupervisor(
        SqlPushAccounts(process.engine, store),
        feeds,
        publisher,
        window=settings.push_window_seconds,
        rescan_seconds=settings.push_rescan_seconds,
        poll_seconds=settings.push_poll_seconds,
        own_writes=own_writes,
    )

    async def run() -> None:
        if webhook is not None:
            # Graph validates the receiver when a subscription is made: it listens first.
            await webhook.start(settings.graph_webhook_host, settings.graph_webhook_port)
        if receiver is not None:
            await receiver.start()
        client = await push_nats.connect(settings.nats_url, f"mail-connector-{settings.port}")
        publisher.attach(client)
        await supervisor.start()

    started: list[asyncio.Task[None]] = []

    async def start() -> None:
        # A readiness check that never fails: it runs once the store is migrated (the checks
        # before it), and readiness never waits on NATS.
        if not started:
            started.append(asyncio.create_task(run(), name="push-start"))

    async def stop() -> None:
        for task in started:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await supervisor.stop()
        await publisher.close()
        if webhook is not None:
            await webhook.stop()
        if receiver is not None:
            await receiver.stop()

    process.server.add_readiness_check(start)
    process.server.on_shutdown(stop)
    return supervisor


def main() -> int:
    return serve_main(MailConnectorSettings, build, migrations=MIGRATIONS)


if __name__ == "__main__":
    raise SystemExit(main())
