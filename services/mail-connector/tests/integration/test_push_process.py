"""Push as `python -m concord_mail_connector` runs it: NATS from `NATS_URL`, accounts registered
over gRPC picked up by the rescan, a change in the emulator out as a hint."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import nats
import pytest
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    FailFast,
)
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from nats.aio.msg import Msg

from concord.common.v1 import resources_pb2 as r
from concord.events.v1 import events_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_exchange_emulator.testing import RunningEmulator
from concord_testing import NatsServer, ServiceProcess, free_port, identity_env, vouched

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    data = tmp_path / "exchange"
    data.mkdir()
    emu = RunningEmulator(data).start()
    yield emu
    emu.stop()
    close_connections()


async def test_the_service_publishes_hints_for_an_account_registered_while_it_runs(
    service_process: Callable[..., ServiceProcess],
    nats_server: NatsServer,
    emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    port = free_port()
    process = service_process(
        "concord_mail_connector",
        env={
            "MAIL_CONNECTOR_PORT": str(port),
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "NATS_URL": nats_server.url,
            "MAIL_CONNECTOR_PUSH_RESCAN_SECONDS": "0.5",
            "MAIL_CONNECTOR_PUSH_STREAM_MINUTES": "1",
            **identity_env(),
        },
    )
    await asyncio.to_thread(process.wait_serving, f"127.0.0.1:{port}", 30.0)

    address = f"u-{uuid.uuid4().hex[:10]}@concord.test"
    password = uuid.uuid4().hex
    emulator.admin("POST", "users", {"username": address, "password": password})
    client = await nats.connect(nats_server.url)
    hints: asyncio.Queue[Msg] = asyncio.Queue()

    async def seen(msg: Msg) -> None:
        await hints.put(msg)

    await client.subscribe("concord.mail.changed.demo", cb=seen)
    await client.flush()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=vouched()) as channel:
        stub = pb_grpc.MailConnectorServiceStub(channel)
        await stub.UpsertMailboxAccount(
            pb.UpsertMailboxAccountRequest(
                account=pb.MailboxAccount(
                    name="mailboxes/demo/account",
                    address=address,
                    provider=r.MAIL_PROVIDER_EXCHANGE_EWS,
                    ews=pb.EwsSettings(
                        service_url=emulator.endpoint, username=address, auth_type="basic"
                    ),
                    secret=password.encode(),
                )
            )
        )
        async with asyncio.timeout(30):
            while True:
                listed = await stub.ListSubscriptions(
                    pb.ListSubscriptionsRequest(parent="mailboxes/demo")
                )
                if listed.subscriptions:
                    break
                await asyncio.sleep(0.2)
        # What changed before the watch held its subscription: one catch-up hint for any kind.
        async with asyncio.timeout(15):
            caught_up = events_pb2.MailChanged.FromString((await hints.get()).data)
        assert (caught_up.hint, caught_up.kind) == ("subscribed", r.OBJECT_KIND_UNSPECIFIED)

    config = Configuration(
        service_endpoint=emulator.endpoint,
        credentials=Credentials(address, password),
        auth_type=BASIC,
        retry_policy=FailFast(),
    )
    account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
    start = EWSDateTime(2026, 12, 1, 9, tzinfo=EWSTimeZone("UTC"))
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="pipeline review",
        start=start,
        end=start + dt.timedelta(hours=1),
    )
    await asyncio.to_thread(meeting.save)
    async with asyncio.timeout(15):
        msg = await hints.get()
    hint = events_pb2.MailChanged()
    hint.ParseFromString(msg.data)
    assert hint.mailbox == "demo"
    assert hint.kind == r.OBJECT_KIND_CALENDAR_ITEM
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"].startswith("mail-changed-demo-")
    await client.drain()
