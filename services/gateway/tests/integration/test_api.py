"""GatewayService in process before fake reconciler and linker servers: auth, delegation, errors."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.reconciler.v1 import reconciler_service_pb2 as rec_pb
from concord_gateway.settings import GatewaySettings
from concord_rpc import from_rpc_error
from concord_testing import free_port

# conftest.py is not importable under --import-mode=importlib: its helpers come as fixtures,
# and these names are only for annotations.
if TYPE_CHECKING:
    from conftest import Gateway, Mint, StartGateway  # type: ignore[import-not-found]

pytestmark = pytest.mark.integration


SYNC_ANN = pb.SyncMailboxRequest(mailbox="mailboxes/ann")


# -- authentication --------------------------------------------------------------------------


async def test_no_token_is_unauthenticated(gateway: Gateway) -> None:
    failure = from_rpc_error(await gateway.error("SyncMailbox", SYNC_ANN, token=None))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert (failure.reason, failure.domain) == ("TOKEN_MISSING", "gateway.concord.dev")
    assert gateway.reconciler.requests == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": 1_000_000}, "TOKEN_EXPIRED"),
        ({"key": "another-key-0123456789-abcdefghijklm"}, "TOKEN_INVALID"),
        ({"aud": "someone-else"}, "TOKEN_INVALID"),
        (None, "TOKEN_INVALID"),
    ],
    ids=["expired", "bad-signature", "wrong-audience", "garbage"],
)
async def test_a_bad_token_is_unauthenticated_and_not_echoed(
    gateway: Gateway, mint: Mint, changes: dict[str, Any] | None, reason: str
) -> None:
    token = "not-a-token" if changes is None else mint("ann", "acme", "user", **changes)
    err = await gateway.error("SyncMailbox", SYNC_ANN, token=token)
    failure = from_rpc_error(err)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert token not in (err.details() or "")
    assert token not in str(failure.metadata)
    assert gateway.reconciler.requests == []


async def test_health_and_reflection_need_no_token(gateway: Gateway) -> None:
    response = await health_pb2_grpc.HealthStub(gateway.channel).Check(
        health_pb2.HealthCheckRequest(service="concord.gateway.v1.GatewayService"), timeout=5
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request])):
        listed = {s.name for s in answer.list_services_response.service}
        assert "concord.gateway.v1.GatewayService" in listed
        break


async def test_the_token_never_reaches_the_logs(
    gateway: Gateway, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    expired = mint("ann", "acme", "user", exp=1_000_000)
    with caplog.at_level(logging.DEBUG):
        await gateway.call("SyncMailbox", SYNC_ANN)
        await gateway.error("SyncMailbox", SYNC_ANN, token=expired)
        await gateway.error("SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/bob"))
    assert "TOKEN_EXPIRED" in caplog.text  # the refusal was logged, by its reason only
    for token in (gateway.ann, expired):
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text  # not even the signature part


# -- authorisation ---------------------------------------------------------------------------


async def test_a_user_cannot_act_on_another_users_mailbox(gateway: Gateway) -> None:
    failure = from_rpc_error(
        await gateway.error("SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/bob"))
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MAILBOX_ACCESS_DENIED",
    )
    assert not [
        r for r in gateway.reconciler.requests if isinstance(r, rec_pb.RequestSessionRequest)
    ]


async def test_another_orgs_mailbox_is_indistinguishable_from_a_missing_one(
    gateway: Gateway,
) -> None:
    other = await gateway.error("SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/eve"))
    missing = await gateway.error("SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/nope"))
    assert other.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    as_other, as_missing = from_rpc_error(other), from_rpc_error(missing)
    assert as_missing.message == "mailbox 'nope' not found"
    assert as_other.message == "mailbox 'eve' not found"
    assert (as_other.reason, as_other.domain) == (as_missing.reason, as_missing.domain)
    assert as_other.metadata.keys() == as_missing.metadata.keys()


async def test_an_admin_acts_on_any_mailbox_of_their_org(gateway: Gateway) -> None:
    response = await gateway.call(
        "SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/bob"), gateway.admin
    )
    assert response.session.mailbox == "mailboxes/bob"


async def test_registering_a_mailbox_needs_an_admin(gateway: Gateway) -> None:
    request = pb.RegisterMailboxRequest(
        mailbox_id="carol",
        mailbox=res.Mailbox(owner_user_id="carol", address="carol@acme.test"),
        request_id="r-1",
    )
    failure = from_rpc_error(await gateway.error("RegisterMailbox", request))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")

    response = await gateway.call("RegisterMailbox", request, gateway.admin)
    assert response.mailbox.name == "mailboxes/carol"
    (create,) = [
        r for r in gateway.reconciler.requests if isinstance(r, rec_pb.CreateMailboxRequest)
    ]
    assert create.mailbox.org == "orgs/acme"  # the admin's org, filled in
    assert (create.mailbox_id, create.request_id) == ("carol", "r-1")
    assert not create.HasField("account")

    request.mailbox.org = "orgs/globex"
    failure = from_rpc_error(await gateway.error("RegisterMailbox", request, gateway.admin))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ORG_ACCESS_DENIED",
    )


async def test_org_settings_need_an_admin_of_that_org(gateway: Gateway) -> None:
    request = pb.GetOrgSettingsRequest(name="orgs/acme/settings")
    assert (
        await gateway.error("GetOrgSettings", request)
    ).code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        await gateway.call("GetOrgSettings", request, gateway.admin)
    ).settings.name == request.name
    other = pb.GetOrgSettingsRequest(name="orgs/globex/settings")
    assert (await gateway.error("GetOrgSettings", other, gateway.admin)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_user_lists_their_own_mailboxes_an_admin_the_orgs(gateway: Gateway) -> None:
    mine = await gateway.call("ListMailboxes", pb.ListMailboxesRequest())
    assert [m.name for m in mine.mailboxes] == ["mailboxes/ann"]
    assert mine.next_page_token == "next"
    org = await gateway.call("ListMailboxes", pb.ListMailboxesRequest(), gateway.admin)
    assert sorted(m.name for m in org.mailboxes) == ["mailboxes/ann", "mailboxes/bob"]
    other = pb.ListMailboxesRequest(org="orgs/globex")
    assert (await gateway.error("ListMailboxes", other, gateway.admin)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_malformed_name_is_invalid_argument(gateway: Gateway) -> None:
    err = await gateway.error("SyncMailbox", pb.SyncMailboxRequest(mailbox="not a/mailbox name"))
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.field_violations == [("mailbox", "must be 'mailboxes/{mailbox}'")]


# -- delegation ------------------------------------------------------------------------------


async def test_sync_with_wait_returns_the_ended_session(gateway: Gateway) -> None:
    request = pb.SyncMailboxRequest(mailbox="mailboxes/ann", wait=True)
    response = await gateway.call("SyncMailbox", request, deadline=60)
    assert response.session.state == res.SESSION_STATE_COMPLETED
    assert response.session.counts.mail_changes_seen == 3
    assert (response.coalesced, response.timed_out) == (True, False)
    asked, waited = gateway.reconciler.requests
    assert asked.trigger == res.SESSION_TRIGGER_FORCE
    assert asked.request_id  # minted, so channel retries stay idempotent
    assert waited.name == "mailboxes/ann/sessions/s1"
    assert waited.timeout.seconds == 30  # the default wait


async def test_sync_without_wait_returns_the_queued_session(gateway: Gateway) -> None:
    response = await gateway.call(
        "SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/ann", request_id="x")
    )
    assert response.session.state == res.SESSION_STATE_QUEUED
    (asked,) = gateway.reconciler.requests
    assert asked.request_id == "x"


async def test_a_wait_is_capped_and_a_timeout_is_reported(gateway: Gateway) -> None:
    gateway.reconciler.wait_timed_out = True
    request = pb.SyncMailboxRequest(
        mailbox="mailboxes/ann", wait=True, wait_timeout=duration_pb2.Duration(seconds=10_000)
    )
    response = await gateway.call("SyncMailbox", request)
    assert response.timed_out
    assert response.session.state == res.SESSION_STATE_RUNNING
    # Capped at GATEWAY_SYNC_WAIT_MAX_SECONDS, and kept within the caller's 10 s deadline.
    assert 0 < gateway.reconciler.requests[-1].timeout.seconds < 10


async def test_a_reconciler_not_found_reaches_the_caller_with_its_reason(gateway: Gateway) -> None:
    err = await gateway.error("GetSession", pb.GetSessionRequest(name="mailboxes/ann/sessions/zz"))
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert (failure.reason, failure.domain) == ("SESSION_NOT_FOUND", "reconciler.concord.dev")
    assert failure.metadata == {"session": "mailboxes/ann/sessions/zz"}


async def test_the_mailbox_status_is_assembled(gateway: Gateway) -> None:
    response = await gateway.call(
        "GetMailboxStatus", pb.GetMailboxStatusRequest(mailbox="mailboxes/ann")
    )
    status = response.status
    assert status.mailbox.name == "mailboxes/ann"
    assert [s.name for s in status.recent_sessions] == ["mailboxes/ann/sessions/s1"]
    assert (status.item_error_count, status.item_errors_next_page_token) == (7, "p2")
    assert status.item_errors[0].reason == "UNKNOWN_TIME_ZONE"
    assert status.push_state == res.PUSH_STATE_UNAVAILABLE
    page_sizes = {type(r).__name__: r.page_size for r in gateway.reconciler.requests}
    assert page_sizes == {"ListSessionsRequest": 10, "ListItemErrorsRequest": 20}


async def test_initial_search_asks_the_linker_for_the_mailboxs_org_and_user(
    gateway: Gateway,
) -> None:
    request = pb.InitialSearchRequest(
        mailbox="mailboxes/ann", email=res.EmailItem(internet_message_id="<m@x>"), page_size=5
    )
    response = await gateway.call("InitialSearch", request)
    assert [(r.sobject_type, r.id, r.explanation) for r in response.records] == [
        ("Contact", "003A", "sender")
    ]
    (asked,) = gateway.linker.requests
    assert (asked.org, asked.user_id, asked.page_size) == ("orgs/acme", "005ann", 5)
    assert list(asked.blacklist) == ["spam.test"]
    assert asked.email.internet_message_id == "<m@x>"


async def test_user_settings_are_the_mailboxs(gateway: Gateway) -> None:
    response = await gateway.call(
        "GetUserSettings", pb.GetUserSettingsRequest(name="mailboxes/ann/settings")
    )
    assert response.settings == settings_pb2.MailboxSettings(
        name="mailboxes/ann/settings", blacklist=["spam.test"]
    )
    denied = pb.GetUserSettingsRequest(name="mailboxes/bob/settings")
    assert (
        await gateway.error("GetUserSettings", denied)
    ).code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_dead_reconciler_is_unavailable_naming_it(
    settings: GatewaySettings, start_gateway: StartGateway, mint: Mint
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    service = await start_gateway(settings, nowhere, nowhere)
    token = mint("ann", "acme", "user")
    try:
        async with grpc.aio.insecure_channel(service.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await pb_grpc.GatewayServiceStub(channel).SyncMailbox(
                    SYNC_ANN, metadata=[("authorization", f"Bearer {token}")], timeout=20
                )
    finally:
        await service.shutdown()
    failure = from_rpc_error(raised.value)
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.message == "reconciler is unavailable"
    assert failure.reason == "DEPENDENCY_UNAVAILABLE"
    assert failure.metadata["peer"] == "reconciler"
    assert failure.metadata["peerMethod"].endswith("ReconcilerService/GetMailbox")
    assert nowhere not in (raised.value.details() or "")
