"""The demo's registration over a var/ an earlier `make up` left (issue #17, case 5).

With `--free-ports` the emulators' addresses change from run to run and may come back (default
ports, then free ports, then default ports again). Each run must leave the demo mailbox with
this run's account: the gateway below replays a request id's first answer, as the reconciler
does for a day.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from concord.gateway.v1 import gateway_service_pb2 as gw
from concord.gateway.v1 import gateway_service_pb2_grpc as gw_grpc
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mail.v1 import mail_connector_service_pb2_grpc as mail_grpc
from concord_devstack import demo
from concord_devstack.tokens import DEMO_MAILBOX
from concord_rpc import AlreadyExists, GrpcService

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

KEY = "devstack-demo-test-internal-key-0123456789abcdef"


class MailboxExists(AlreadyExists):
    reason = "MAILBOX_ALREADY_EXISTS"


@dataclass
class Peers(gw_grpc.GatewayServiceServicer, mail_grpc.MailConnectorServiceServicer):
    """The gateway (with the reconciler's replay of stored answers) and the mail-connector, as
    far as registering a mailbox goes: `accounts` is how each mailbox is reached now."""

    accounts: dict[str, mail.MailboxAccount] = field(default_factory=dict)
    answers: dict[str, gw.RegisterMailboxResponse] = field(default_factory=dict)

    async def RegisterMailbox(self, request: Any, context: Any) -> gw.RegisterMailboxResponse:
        if request.request_id in self.answers:
            return self.answers[request.request_id]
        name = f"mailboxes/{request.mailbox_id}"
        if name in self.accounts:
            raise MailboxExists(f"{name} already exists")
        self.accounts[name] = request.account
        answer = gw.RegisterMailboxResponse(mailbox=request.mailbox)
        self.answers[request.request_id] = answer
        return answer

    async def UpsertMailboxAccount(
        self, request: Any, context: Any
    ) -> mail.UpsertMailboxAccountResponse:
        self.accounts[request.account.name.removesuffix("/account")] = request.account
        return mail.UpsertMailboxAccountResponse(account=request.account)


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peers, dict[str, str]]]:
    fake = Peers()
    server = GrpcService("peers", port=0)
    server.add_service(
        "concord.gateway.v1.GatewayService",
        lambda s: gw_grpc.add_GatewayServiceServicer_to_server(fake, s),
    )
    server.add_service(
        "concord.mail.v1.MailConnectorService",
        lambda s: mail_grpc.add_MailConnectorServiceServicer_to_server(fake, s),
    )
    port = await server.start()
    address = f"127.0.0.1:{port}"
    try:
        yield fake, {"gateway": address, "mail-connector": address, "crm-connector": address}
    finally:
        await server.shutdown()


def _exchange(url: str) -> dict[str, Any]:
    return {"exchange": {"url": url, "username": "demo", "password": "demo"}}


async def test_every_run_leaves_the_mailbox_with_its_own_addresses(
    peers: tuple[Peers, dict[str, str]],
) -> None:
    fake, addresses = peers
    # Default ports, free ports, default ports again: the third run writes what the first did.
    for url in (
        "http://127.0.0.1:8801/EWS",
        "http://127.0.0.1:41234/EWS",
        "http://127.0.0.1:8801/EWS",
    ):
        await demo._register_demo(addresses, "admin-token", _exchange(url), KEY)
        reached = fake.accounts[f"mailboxes/{DEMO_MAILBOX}"].ews.service_url
        assert reached == url


def test_a_retry_within_a_run_is_the_same_request() -> None:
    written = mail.UpsertMailboxAccountRequest(account=mail.MailboxAccount(address="a@b.c"))
    run = demo.new_run()
    assert demo.content_request_id("account", written, run) == demo.content_request_id(
        "account", written, run
    )
    assert demo.content_request_id("account", written, run) != demo.content_request_id(
        "account", written, demo.new_run()
    )
