"""The mail-connector process serves Graph accounts (not UNIMPLEMENTED) and watches them: its
webhook receiver passes the Graph emulator's validation and each kind gets a subscription."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_graph_emulator.testing import RunningEmulator
from concord_rpc.identity import Identity
from concord_testing import NatsServer, ServiceProcess, free_port, identity_env, vouched

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path / "graph").start()
    yield emu
    emu.stop()


async def test_a_graph_account_is_served_and_pushed_by_the_process(
    service_process: Callable[..., ServiceProcess],
    emulator: RunningEmulator,
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    port, hook = free_port(), free_port()
    process = service_process(
        "concord_mail_connector",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "MAIL_CONNECTOR_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            "MAIL_CONNECTOR_GRAPH_CA_BUNDLE": emulator.ca_cert,
            "MAIL_CONNECTOR_GRAPH_WEBHOOK_URL": f"http://127.0.0.1:{hook}",
            "MAIL_CONNECTOR_GRAPH_WEBHOOK_HOST": "127.0.0.1",
            "MAIL_CONNECTOR_GRAPH_WEBHOOK_PORT": str(hook),
            "MAIL_CONNECTOR_PUSH_RESCAN_SECONDS": "0.5",
            "NATS_URL": nats_server.url,
            **identity_env(),
        },
    )
    addr = f"127.0.0.1:{port}"
    process.wait_serving(addr, service="concord.mail.v1.MailConnectorService")
    app = emulator.new_app()
    address = emulator.new_mailbox("proc")
    account = pb.MailboxAccount(
        name="mailboxes/g1/account",
        address=address,
        provider=resources_pb2.MAIL_PROVIDER_GRAPH,
        graph=pb.GraphSettings(
            tenant_id=app.tenant_id,
            client_id=app.client_id,
            authority_url=emulator.base,
            graph_url=emulator.graph_url,
        ),
        secret=app.client_secret.encode(),
    )
    caller = Identity(subject="demo-admin", org="demo", role="admin")
    async with grpc.aio.insecure_channel(addr, interceptors=vouched(caller=caller)) as ch:
        stub = pb_grpc.MailConnectorServiceStub(ch)
        await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=account), timeout=5)
        listed = await stub.ListCollections(
            pb.ListCollectionsRequest(mailbox="mailboxes/g1"), timeout=10
        )
        assert "Calendar" in [c.display_name for c in listed.collections]
    ends = time.monotonic() + 20
    while True:
        subs = [
            s for s in emulator.admin("GET", "subscriptions")["value"] if address in s["resource"]
        ]
        if len(subs) == 4:
            break
        assert time.monotonic() < ends, "the process did not subscribe the mailbox"
        await asyncio.sleep(0.2)
    assert {s["notificationUrl"] for s in subs} == {f"http://127.0.0.1:{hook}/graph/notifications"}
    assert process.stop() == 0
