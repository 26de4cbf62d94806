"""Google accounts through the API: the Calendar selection is part of the account, checked."""

from __future__ import annotations

import grpc
import pytest

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_rpc import from_rpc_error

pytestmark = pytest.mark.integration


def google_account(**settings: str) -> pb.MailboxAccount:
    return pb.MailboxAccount(
        name="mailboxes/g/account",
        address="ann@example.com",
        provider=resources_pb2.MAIL_PROVIDER_GOOGLE,
        google=pb.GoogleSettings(service_account_email="svc@p.iam.gserviceaccount.com", **settings),
        secret=b"{}",
    )


async def test_a_calendar_selection_round_trips(stub: pb_grpc.MailConnectorServiceStub) -> None:
    account = google_account(calendar_selection="color", color_id="11")
    await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=account))
    got = await stub.GetMailboxAccount(pb.GetMailboxAccountRequest(name="mailboxes/g/account"))
    assert (got.account.google.calendar_selection, got.account.google.color_id) == ("color", "11")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"calendar_selection": "starred"}, "account.google.calendar_selection"),
        ({"calendar_selection": "calendar"}, "account.google.calendar_id"),
        ({"calendar_selection": "color"}, "account.google.color_id"),
    ],
)
async def test_a_selection_that_cannot_work_is_refused(
    stub: pb_grpc.MailConnectorServiceStub, settings: dict[str, str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpsertMailboxAccount(
            pb.UpsertMailboxAccountRequest(account=google_account(**settings))
        )
    failure = from_rpc_error(caught.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in failure.field_violations] == [field]
