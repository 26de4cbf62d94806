from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_rpc import from_rpc_error
from concord_rpc.identity import Identity
from concord_testing import (
    ServiceProcess,
    assert_process_lifecycle,
    free_port,
    identity_env,
    vouched,
)

pytestmark = pytest.mark.integration


async def test_process_serves_from_empty_state_and_stops_on_sigterm(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    async def call(chan: grpc.aio.Channel) -> None:
        response = await pb_grpc.MailConnectorServiceStub(chan).ListChanges(
            pb.ListChangesRequest(mailbox="mailboxes/demo", kind=resources_pb2.OBJECT_KIND_TASK),
            timeout=5,
        )
        assert response.next_cursor.collection == "task"

    await assert_process_lifecycle(
        service_process,
        "concord_mail_connector",
        port_variable="MAIL_CONNECTOR_PORT",
        health_service="concord.mail.v1.MailConnectorService",
        var_dir=tmp_path / "var",
        call=call,
    )
    # The embedded default: a dev key was generated where the service's state lives.
    key = tmp_path / "var" / "secrets" / "mail-connector.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_a_caller_for_another_org_is_refused_for_every_account_call(
    service_process: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # The service holds every mailbox's credentials: a call vouched for another org (a bug, a
    # guessed mailbox id) must neither read, change nor delete an org's account.
    port = free_port()
    process = service_process(
        "concord_mail_connector",
        env={
            "CONCORD_VAR_DIR": str(tmp_path / "var"),
            "MAIL_CONNECTOR_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            **identity_env(),
        },
    )
    addr = f"127.0.0.1:{port}"
    process.wait_serving(addr, service="concord.mail.v1.MailConnectorService")
    owner = Identity(subject="demo-admin", org="demo", role="admin")
    stranger = Identity(subject="mallory", org="globex", role="admin")
    account = pb.MailboxAccount(
        name="mailboxes/carol/account",
        address="carol@demo.example",
        provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
        ews=pb.EwsSettings(
            service_url="https://mail.demo.example/EWS/Exchange.asmx",
            username="carol@demo.example",
            auth_type="basic",
        ),
        secret=b"hunter2",
    )

    async def ask(caller: Identity) -> list[str]:
        answers = []
        async with grpc.aio.insecure_channel(addr, interceptors=vouched(caller=caller)) as ch:
            stub = pb_grpc.MailConnectorServiceStub(ch)
            for call in (
                lambda: stub.GetMailboxAccount(
                    pb.GetMailboxAccountRequest(name="mailboxes/carol/account"), timeout=5
                ),
                lambda: stub.UpsertMailboxAccount(
                    pb.UpsertMailboxAccountRequest(account=account), timeout=5
                ),
                lambda: stub.ListCollections(
                    pb.ListCollectionsRequest(mailbox="mailboxes/carol"), timeout=5
                ),
                lambda: stub.DeleteMailboxAccount(
                    pb.DeleteMailboxAccountRequest(name="mailboxes/carol/account", etag="x"),
                    timeout=5,
                ),
            ):
                try:
                    await call()
                    answers.append("OK")
                except grpc.aio.AioRpcError as error:
                    failure = from_rpc_error(error)
                    answers.append(f"{failure.code.name} {failure.reason}")
        return answers

    async with grpc.aio.insecure_channel(addr, interceptors=vouched(caller=owner)) as ch:
        await pb_grpc.MailConnectorServiceStub(ch).UpsertMailboxAccount(
            pb.UpsertMailboxAccountRequest(account=account), timeout=5
        )
    denied = "PERMISSION_DENIED CALLER_NOT_IN_ORG"
    assert await ask(stranger) == [denied] * 4
    # The org's own admin still reaches it (the delete's stale etag is its own answer).
    owners = await ask(owner)
    assert owners[:2] == ["OK", "OK"]
    assert denied not in owners
    assert process.stop() == 0
