from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest

from concord.common.v1 import resources_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_rpc import RpcFailure, from_rpc_error

pytestmark = pytest.mark.integration

Stub = pb_grpc.MailConnectorServiceStub
EWS = pb.EwsSettings(service_url="https://mail.example.com/EWS/Exchange.asmx", username="svc")


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


def ews_account(**fields: object) -> pb.MailboxAccount:
    values: dict[str, object] = {
        "name": "mailboxes/demo/account",
        "address": "ann@example.com",
        "provider": resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
        "ews": EWS,
        "secret": b"hunter2",
    }
    return pb.MailboxAccount(**(values | fields))  # type: ignore[arg-type]


async def test_empty_mailbox_lists_no_changes(stub: Stub) -> None:
    response = await stub.ListChanges(
        pb.ListChangesRequest(
            mailbox="mailboxes/demo",
            kind=resources_pb2.OBJECT_KIND_CALENDAR_ITEM,
            cursor=resources_pb2.Cursor(token="t1"),
        )
    )
    assert list(response.changes) == []
    assert response.next_cursor == resources_pb2.Cursor(collection="calendar-item", token="t1")
    assert not response.has_more
    assert not response.full_resync_required


async def test_list_changes_names_every_bad_field(stub: Stub) -> None:
    got = await failure(stub.ListChanges(pb.ListChangesRequest(mailbox="demo", page_size=-1)))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in got.field_violations] == ["mailbox", "kind", "page_size"]


async def test_account_round_trip_never_returns_the_secret(stub: Stub) -> None:
    upserted = await stub.UpsertMailboxAccount(
        pb.UpsertMailboxAccountRequest(account=ews_account(), request_id="r1")
    )
    got = await stub.GetMailboxAccount(pb.GetMailboxAccountRequest(name="mailboxes/demo/account"))
    assert got.account == upserted.account
    assert got.account.secret == b""
    assert got.account.has_secret
    assert got.account.ews == EWS
    assert got.account.etag
    assert got.account.HasField("secret_update_time")
    retried = await stub.UpsertMailboxAccount(
        pb.UpsertMailboxAccountRequest(account=ews_account(), request_id="r1")
    )
    assert retried.account == upserted.account


async def test_ews_account_lists_changes_as_unimplemented_naming_issue_4(stub: Stub) -> None:
    await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=ews_account()))
    got = await failure(
        stub.ListChanges(
            pb.ListChangesRequest(mailbox="mailboxes/demo", kind=resources_pb2.OBJECT_KIND_EMAIL)
        )
    )
    assert got.code == grpc.StatusCode.UNIMPLEMENTED
    assert got.message == "the Exchange (EWS) provider is not implemented yet (issue #4)"
    assert got.reason == "NOT_IMPLEMENTED_YET"


async def test_missing_account_is_not_found(stub: Stub) -> None:
    got = await failure(
        stub.GetMailboxAccount(pb.GetMailboxAccountRequest(name="mailboxes/nobody/account"))
    )
    assert got.code == grpc.StatusCode.NOT_FOUND
    assert got.reason == "MAILBOX_ACCOUNT_NOT_FOUND"
    assert got.domain == "mail-connector.concord.dev"
    assert got.metadata == {"mailbox": "mailboxes/nobody"}


async def test_delete_with_stale_etag_is_aborted_then_delete_works(stub: Stub) -> None:
    first = await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=ews_account()))
    await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=ews_account()))
    name = "mailboxes/demo/account"
    got = await failure(
        stub.DeleteMailboxAccount(
            pb.DeleteMailboxAccountRequest(name=name, etag=first.account.etag)
        )
    )
    assert got.code == grpc.StatusCode.ABORTED
    assert got.reason == "ETAG_MISMATCH"
    await stub.DeleteMailboxAccount(pb.DeleteMailboxAccountRequest(name=name))
    got = await failure(stub.GetMailboxAccount(pb.GetMailboxAccountRequest(name=name)))
    assert got.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("account", "fields"),
    [
        (ews_account(name="mailboxes/demo"), ["account.name"]),
        (ews_account(address="ann"), ["account.address"]),
        (ews_account(ews=pb.EwsSettings(username="svc")), ["account.ews.service_url"]),
        (
            pb.MailboxAccount(
                name="mailboxes/demo/account",
                address="ann@example.com",
                provider=resources_pb2.MAIL_PROVIDER_GRAPH,
                ews=EWS,
            ),
            ["account.graph"],
        ),
        (pb.MailboxAccount(name="mailboxes/demo/account"), ["account.address", "account.provider"]),
    ],
)
async def test_malformed_accounts_are_invalid(
    stub: Stub, account: pb.MailboxAccount, fields: list[str]
) -> None:
    got = await failure(stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=account)))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in got.field_violations] == fields


async def test_items_and_collections_of_a_provider_without_adapter_are_unimplemented(
    stub: Stub,
) -> None:
    graph = pb.MailboxAccount(
        name="mailboxes/demo/account",
        address="ann@example.com",
        provider=resources_pb2.MAIL_PROVIDER_GRAPH,
        graph=pb.GraphSettings(tenant_id="t", client_id="c"),
    )
    await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=graph))
    ref = resources_pb2.ItemRef(kind=resources_pb2.OBJECT_KIND_TASK, native_id="x")
    write = pb.MailWrite(operation=pb.MAIL_WRITE_OPERATION_DELETE, link_id="l1", ref=ref)
    calls: list[Awaitable[object]] = [
        stub.GetItems(pb.GetItemsRequest(mailbox="mailboxes/demo", refs=[ref])),
        stub.ApplyItems(pb.ApplyItemsRequest(mailbox="mailboxes/demo", writes=[write])),
        stub.ListCollections(pb.ListCollectionsRequest(mailbox="mailboxes/demo")),
    ]
    for call in calls:
        got = await failure(call)
        assert got.code == grpc.StatusCode.UNIMPLEMENTED
        assert got.metadata["provider"] == "graph"


async def test_apply_items_names_every_bad_write(stub: Stub) -> None:
    writes = [
        pb.MailWrite(),
        pb.MailWrite(operation=pb.MAIL_WRITE_OPERATION_UPDATE, link_id="l2"),
    ]
    got = await failure(stub.ApplyItems(pb.ApplyItemsRequest(mailbox="demo", writes=writes)))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in got.field_violations] == [
        "mailbox",
        "writes[0].operation",
        "writes[1].ref.native_id",
        "writes[1].item",
    ]


async def test_subscriptions_wait_for_issue_8(stub: Stub) -> None:
    calls: list[Awaitable[object]] = [
        stub.CreateSubscription(pb.CreateSubscriptionRequest(parent="mailboxes/demo")),
        stub.DeleteSubscription(
            pb.DeleteSubscriptionRequest(name="mailboxes/demo/subscriptions/s")
        ),
    ]
    for call in calls:
        got = await failure(call)
        assert got.code == grpc.StatusCode.UNIMPLEMENTED
        assert got.metadata["issue"] == "8"
