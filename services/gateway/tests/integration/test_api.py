"""GatewayService in process before the in-memory reconciler and linker: auth, delegation."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_gateway.settings import GatewaySettings
from concord_rpc import FailedPrecondition, Identity, from_rpc_error
from concord_testing import free_port

# conftest.py is not importable under --import-mode=importlib: its helpers come as fixtures,
# and these names are only for annotations.
if TYPE_CHECKING:
    from conftest import Gateway, Mint, StartGateway  # type: ignore[import-not-found]

# The test keys, as conftest.py has them (it is not importable; see above).
KEY = "test-signing-key-0123456789-abcdefghij"
NEW_KEY = "new-signing-key-2026-11-0123456789-abcdef"

pytestmark = pytest.mark.integration


SYNC_ANN = pb.SyncMailboxRequest(mailbox="mailboxes/ann")


# -- authentication --------------------------------------------------------------------------


async def test_no_token_is_unauthenticated(gateway: Gateway) -> None:
    failure = from_rpc_error(await gateway.error("SyncMailbox", SYNC_ANN, token=None))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert (failure.reason, failure.domain) == ("TOKEN_MISSING", "gateway.concord.dev")
    assert gateway.forwarded() == []


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
    assert gateway.forwarded() == []


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
    assert not gateway.reconciler.received("RequestSession")


def _same_shape(a: grpc.aio.AioRpcError, b: grpc.aio.AioRpcError, a_id: str, b_id: str) -> None:
    """Two refusals that differ only by the mailbox id the caller typed."""
    fa, fb = from_rpc_error(a), from_rpc_error(b)
    assert fa.code == fb.code == grpc.StatusCode.PERMISSION_DENIED
    assert (
        (fa.reason, fa.domain)
        == (fb.reason, fb.domain)
        == (
            "MAILBOX_ACCESS_DENIED",
            "gateway.concord.dev",
        )
    )
    assert fa.message.replace(a_id, "X") == fb.message.replace(b_id, "X")
    assert fa.metadata.keys() == fb.metadata.keys()


@pytest.mark.parametrize(
    "rpc",
    [
        ("SyncMailbox", lambda m: pb.SyncMailboxRequest(mailbox=m)),
        ("GetMailboxStatus", lambda m: pb.GetMailboxStatusRequest(mailbox=m)),
        ("SuspendMailbox", lambda m: pb.SuspendMailboxRequest(mailbox=m, request_id="r")),
        ("ListItemErrors", lambda m: pb.ListItemErrorsRequest(parent=m)),
        ("RetryItem", lambda m: pb.RetryItemRequest(name=f"{m}/itemErrors/e1")),
        ("ListConflicts", lambda m: pb.ListConflictsRequest(parent=m)),
        (
            "ResolveConflict",
            lambda m: pb.ResolveConflictRequest(name=f"{m}/conflicts/l1", take=res.SYNC_SIDE_MAIL),
        ),
        ("GetUserSettings", lambda m: pb.GetUserSettingsRequest(name=f"{m}/settings")),
        ("ShareEmail", lambda m: pb.ShareEmailRequest(mailbox=m)),
    ],
    ids=lambda rpc: rpc[0],
)
async def test_another_users_another_orgs_and_a_missing_mailbox_get_one_answer(
    gateway: Gateway, rpc: tuple[str, Any]
) -> None:
    method, make = rpc
    bobs = await gateway.error(method, make("mailboxes/bob"))
    eves = await gateway.error(method, make("mailboxes/eve"))
    missing = await gateway.error(method, make("mailboxes/nope"))
    _same_shape(bobs, missing, "bob", "nope")
    _same_shape(eves, missing, "eve", "nope")
    # Nothing was asked of the reconciler but whether the mailbox is there.
    assert gateway.reconciler.acted == {}
    assert gateway.forwarded() == []


async def test_a_service_token_acts_in_its_own_org_only(gateway: Gateway, mint: Mint) -> None:
    response = await gateway.call("SyncMailbox", SYNC_ANN, gateway.sidebar)
    assert response.session.mailbox == "mailboxes/ann"
    foreign = await gateway.error(
        "SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/eve"), gateway.sidebar
    )
    missing = await gateway.error(
        "SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/nope"), gateway.sidebar
    )
    _same_shape(foreign, missing, "eve", "nope")
    # Globex's own service token reaches globex's mailbox and not acme's.
    globex = mint("sidebar", "globex", "service")
    assert (
        await gateway.call("SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/eve"), globex)
    ).session
    assert (await gateway.error("SyncMailbox", SYNC_ANN, globex)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # A service acts for users, it does not administer the org.
    for method, request in (
        ("GetOrgSettings", pb.GetOrgSettingsRequest(name="orgs/acme/settings")),
        ("GetOrgHealth", pb.GetOrgHealthRequest(org="orgs/acme")),
    ):
        failure = from_rpc_error(await gateway.error(method, request, gateway.sidebar))
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ADMIN_REQUIRED",
        )


async def test_an_admin_acts_on_any_mailbox_of_their_org(gateway: Gateway) -> None:
    response = await gateway.call(
        "SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/bob"), gateway.admin
    )
    assert response.session.mailbox == "mailboxes/bob"


async def test_registering_a_mailbox_needs_an_admin(gateway: Gateway) -> None:
    request = pb.RegisterMailboxRequest(
        mailbox_id="carol",
        mailbox=rres.Mailbox(owner_user_id="carol", address="carol@acme.test"),
        request_id="r-1",
    )
    failure = from_rpc_error(await gateway.error("RegisterMailbox", request))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")

    response = await gateway.call("RegisterMailbox", request, gateway.admin)
    assert response.mailbox.name == "mailboxes/carol"
    (create,) = gateway.reconciler.received("CreateMailbox")
    assert create.mailbox.org == "orgs/acme"  # the admin's org, filled in
    assert create.mailbox_id == "carol"
    assert create.request_id not in ("", "r-1")  # scoped to the caller (domain/requests.py)
    assert not create.HasField("account")

    request.mailbox.org = "orgs/globex"
    failure = from_rpc_error(await gateway.error("RegisterMailbox", request, gateway.admin))
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ORG_ACCESS_DENIED",
    )


async def test_registering_an_id_another_org_holds_does_not_say_it_exists(
    gateway: Gateway, mint: Mint
) -> None:
    # eve is globex's; acme's admin registering "eve" must not learn that (issue #17, case 6).
    globex_admin = mint("root", "globex", "admin")
    request = pb.RegisterMailboxRequest(
        mailbox_id="ann", mailbox=rres.Mailbox(owner_user_id="ann", address="ann@globex.test")
    )
    taken = await gateway.error("RegisterMailbox", request, globex_admin)
    missing = await gateway.error(
        "GetMailboxStatus", pb.GetMailboxStatusRequest(mailbox="mailboxes/nope"), globex_admin
    )
    # The same answer as for a mailbox that does not exist: nothing says "ann" is acme's.
    _same_shape(taken, missing, "ann", "nope")
    assert "exist" not in taken.details()
    # In one's own org a taken id is still said to be taken.
    request.mailbox_id = "bob"
    own = from_rpc_error(await gateway.error("RegisterMailbox", request, gateway.admin))
    assert own.code == grpc.StatusCode.ALREADY_EXISTS


async def test_deleting_a_mailbox_needs_an_admin_of_its_org(gateway: Gateway) -> None:
    request = pb.DeleteMailboxRequest(name="mailboxes/ann", request_id="d-1")
    # Even its owner may not drop it out of the org's sync.
    failure = from_rpc_error(await gateway.error("DeleteMailbox", request))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
    assert "mailboxes/ann" in gateway.reconciler.mailboxes

    await gateway.call("DeleteMailbox", request, gateway.admin)
    assert "mailboxes/ann" not in gateway.reconciler.mailboxes
    # Gone for everyone, a retry included: it is refused like any missing mailbox (nothing
    # is deleted twice, and nothing tells whether it existed).
    for retry in (request, pb.SyncMailboxRequest(mailbox="mailboxes/ann")):
        method = "DeleteMailbox" if retry is request else "SyncMailbox"
        failure = from_rpc_error(await gateway.error(method, retry, gateway.admin))
        assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    assert gateway.reconciler.acted["DeleteMailbox"] == 1


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
    mine = await gateway.call("ListMailboxes", pb.ListMailboxesRequest(page_size=1))
    assert [m.name for m in mine.mailboxes] == ["mailboxes/ann"]
    assert mine.next_page_token == "o1"  # the reconciler's, passed on
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


async def test_a_request_past_the_api_limits_is_refused_before_any_peer_sees_it(
    gateway: Gateway,
) -> None:
    # Found by a probe: a plain user's 20 MiB suspension reason was stored, and every later
    # status read of the org then failed on the answer's size.
    huge = pb.SuspendMailboxRequest(mailbox="mailboxes/ann", reason="x" * (20 << 20))
    failure = from_rpc_error(await gateway.error("SuspendMailbox", huge))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "REQUEST_LIMIT_VIOLATED"
    assert failure.field_violations == [("reason", "at most 1000 characters")]
    nul = pb.SuspendMailboxRequest(mailbox="mailboxes/ann", reason="a\x00b")
    assert from_rpc_error(await gateway.error("SuspendMailbox", nul)).field_violations[0][0] == (
        "reason"
    )
    assert gateway.reconciler.acted.get("SuspendMailbox", 0) == 0


# -- delegation ------------------------------------------------------------------------------


async def test_sync_with_wait_returns_the_ended_session(gateway: Gateway) -> None:
    # A session already queued for ann, which the request joins.
    gateway.reconciler.add_session(
        rres.Session(
            name="mailboxes/ann/sessions/s1",
            session_id="s1",
            mailbox="mailboxes/ann",
            state=rres.SESSION_STATE_QUEUED,
        )
    )
    request = pb.SyncMailboxRequest(mailbox="mailboxes/ann", wait=True)
    response = await gateway.call("SyncMailbox", request, deadline=60)
    assert response.session.state == rres.SESSION_STATE_COMPLETED
    assert response.session.counts.mail_changes_seen == 3
    assert (response.coalesced, response.timed_out) == (True, False)
    asked, waited = gateway.forwarded()
    assert asked.trigger == res.SESSION_TRIGGER_FORCE
    assert asked.request_id  # minted, so channel retries stay idempotent
    assert waited.name == "mailboxes/ann/sessions/s1"
    assert waited.timeout.seconds == 30  # the default wait


async def test_sync_without_wait_returns_the_queued_session(gateway: Gateway) -> None:
    response = await gateway.call(
        "SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/ann", request_id="x")
    )
    assert response.session.state == rres.SESSION_STATE_QUEUED
    (asked,) = gateway.forwarded()
    assert asked.request_id not in ("", "x")


async def test_a_wait_is_capped_and_a_timeout_is_reported(gateway: Gateway) -> None:
    gateway.reconciler.outcome = None  # the session never ends
    request = pb.SyncMailboxRequest(
        mailbox="mailboxes/ann", wait=True, wait_timeout=duration_pb2.Duration(seconds=10_000)
    )
    response = await gateway.call("SyncMailbox", request)
    assert response.timed_out
    assert response.session.state == rres.SESSION_STATE_RUNNING
    # Capped at GATEWAY_SYNC_WAIT_MAX_SECONDS, and kept within the caller's 10 s deadline.
    assert 0 < gateway.forwarded()[-1].timeout.seconds < 10


async def test_a_reconciler_not_found_reaches_the_caller_with_its_reason(gateway: Gateway) -> None:
    err = await gateway.error("GetSession", pb.GetSessionRequest(name="mailboxes/ann/sessions/zz"))
    failure = from_rpc_error(err)
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert (failure.reason, failure.domain) == ("SESSION_NOT_FOUND", "reconciler.concord.dev")
    assert failure.metadata == {"session": "mailboxes/ann/sessions/zz"}


async def test_the_mailbox_status_is_assembled(gateway: Gateway) -> None:
    gateway.reconciler.add_session(
        rres.Session(
            name="mailboxes/ann/sessions/s1",
            session_id="s1",
            mailbox="mailboxes/ann",
            state=rres.SESSION_STATE_COMPLETED,
        )
    )
    response = await gateway.call(
        "GetMailboxStatus", pb.GetMailboxStatusRequest(mailbox="mailboxes/ann")
    )
    status = response.status
    assert status.mailbox.name == "mailboxes/ann"
    assert [s.name for s in status.recent_sessions] == ["mailboxes/ann/sessions/s1"]
    assert (status.item_error_count, status.item_errors_next_page_token) == (25, "o20")
    assert status.item_errors[0].reason == "UNKNOWN_TIME_ZONE"
    assert status.push_state == res.PUSH_STATE_UNAVAILABLE
    page_sizes = {type(r).__name__: r.page_size for r in gateway.forwarded()}
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
    (asked,) = gateway.linker.received("InitialSearch")
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


# -- issue #8: keys, hostile callers, replays, identity on peer calls ---------------------------


async def test_alg_none_and_a_wrong_key_get_one_sentence(gateway: Gateway, mint: Mint) -> None:
    unsigned = jwt.encode(
        {"iss": "concord", "aud": "concord-gateway", "sub": "root", "org": "acme"}
        | {"role": "admin", "exp": int(time.time()) + 600},
        "",
        algorithm="none",
    )
    wrong_key = mint("ann", "acme", "user", key="attacker-key-0123456789-abcdefghijk")
    unknown_kid = mint("ann", "acme", "user", key=NEW_KEY, kid="2099-01")
    answers = []
    for token in (unsigned, wrong_key, unknown_kid, "", "a.b.c"):
        failure = from_rpc_error(await gateway.error("SyncMailbox", SYNC_ANN, token=token))
        answers.append((failure.code, failure.reason, failure.message, failure.metadata))
    # Nothing tells a forger which check failed.
    assert {(code, reason, message) for code, reason, message, _ in answers} == {
        (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID", "the bearer token is invalid")
    }
    assert all(not metadata for *_, metadata in answers)
    assert gateway.reconciler.acted == {}
    assert gateway.callers(gateway.reconciler) == []


async def test_a_token_naming_the_new_key_verifies_and_the_old_unnamed_key_still_does(
    gateway: Gateway, mint: Mint
) -> None:
    rotated = mint("ann", "acme", "user", key=NEW_KEY, kid="2026-11")
    assert (await gateway.call("SyncMailbox", SYNC_ANN, rotated)).session
    assert (await gateway.call("SyncMailbox", SYNC_ANN, mint("ann", "acme", "user"))).session
    # The new key without its kid, or the old key under the new kid: refused.
    for token in (
        mint("ann", "acme", "user", key=NEW_KEY),
        mint("ann", "acme", "user", key=KEY, kid="2026-11"),
    ):
        failure = from_rpc_error(await gateway.error("SyncMailbox", SYNC_ANN, token=token))
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_a_token_not_valid_yet_is_refused(gateway: Gateway, mint: Mint) -> None:
    early = mint("ann", "acme", "user", nbf=int(time.time()) + 3600)
    failure = from_rpc_error(await gateway.error("SyncMailbox", SYNC_ANN, token=early))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_another_orgs_settings_are_denied_without_asking_the_reconciler(
    gateway: Gateway,
) -> None:
    for method, request in (
        ("GetOrgSettings", pb.GetOrgSettingsRequest(name="orgs/globex/settings")),
        (
            "UpdateOrgSettings",
            pb.UpdateOrgSettingsRequest(
                settings=settings_pb2.OrgSettings(
                    name="orgs/globex/settings", locked_user_fields=["blacklist"]
                ),
                request_id="r-1",
            ),
        ),
        ("GetOrgHealth", pb.GetOrgHealthRequest(org="orgs/globex")),
    ):
        failure = from_rpc_error(await gateway.error(method, request, gateway.admin))
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ORG_ACCESS_DENIED",
        )
    assert gateway.forwarded() == []


async def test_an_admin_locks_a_user_setting_for_the_org(gateway: Gateway) -> None:
    change = pb.UpdateOrgSettingsRequest(
        settings=settings_pb2.OrgSettings(
            name="orgs/acme/settings", locked_user_fields=["sharing", "blacklist"]
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["locked_user_fields"]),
        request_id="lock-1",
    )
    denied = from_rpc_error(await gateway.error("UpdateOrgSettings", change))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
    response = await gateway.call("UpdateOrgSettings", change, gateway.admin)
    assert list(response.settings.locked_user_fields) == ["sharing", "blacklist"]
    (forwarded,) = gateway.forwarded()
    assert list(forwarded.update_mask.paths) == ["locked_user_fields"]


async def test_a_replayed_mutation_answers_the_first_time_and_acts_once(gateway: Gateway) -> None:
    suspend = pb.SuspendMailboxRequest(mailbox="mailboxes/ann", reason="holiday", request_id="r1")
    first = await gateway.call("SuspendMailbox", suspend)
    again = await gateway.call(
        "SuspendMailbox",
        pb.SuspendMailboxRequest(mailbox="mailboxes/ann", reason="changed", request_id="r1"),
    )
    assert again == first
    assert first.mailbox.suspended_reason == "holiday"
    assert gateway.reconciler.acted["SuspendMailbox"] == 1
    # Bob choosing the same id gets his own mailbox suspended, not ann's answer.
    bobs = await gateway.call(
        "SuspendMailbox",
        pb.SuspendMailboxRequest(mailbox="mailboxes/bob", request_id="r1"),
        gateway.bob,
    )
    assert bobs.mailbox.name == "mailboxes/bob"
    assert gateway.reconciler.acted["SuspendMailbox"] == 2
    # So does an admin acting on ann's mailbox with that id: another caller, another request.
    await gateway.call("SuspendMailbox", suspend, gateway.admin)
    assert gateway.reconciler.acted["SuspendMailbox"] == 3


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("SyncMailbox", pb.SyncMailboxRequest(mailbox="mailboxes/ann", request_id="q")),
        ("ResumeMailbox", pb.ResumeMailboxRequest(mailbox="mailboxes/ann", request_id="q")),
        ("RetryItem", pb.RetryItemRequest(name="mailboxes/ann/itemErrors/e1", request_id="q")),
        (
            "ResolveConflict",
            pb.ResolveConflictRequest(name="mailboxes/ann/conflicts/l1", request_id="q"),
        ),
        (
            "UpdateUserSettings",
            pb.UpdateUserSettingsRequest(
                settings=settings_pb2.MailboxSettings(name="mailboxes/ann/settings"),
                request_id="q",
            ),
        ),
        ("ShareEmail", pb.ShareEmailRequest(mailbox="mailboxes/ann", request_id="q")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_every_mutation_replays(gateway: Gateway, method: str, request_: Any) -> None:
    first = await gateway.call(method, request_)
    assert await gateway.call(method, request_) == first
    assert sum(gateway.reconciler.acted.values()) == 1


async def test_an_unusable_request_id_is_invalid_argument(gateway: Gateway) -> None:
    for bad in ("x" * 129, "line\nbreak"):
        failure = from_rpc_error(
            await gateway.error(
                "SuspendMailbox", pb.SuspendMailboxRequest(mailbox="mailboxes/ann", request_id=bad)
            )
        )
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST_ID",
        )
    assert gateway.reconciler.acted == {}


async def test_peers_see_the_caller_signed_by_the_gateway(gateway: Gateway) -> None:
    await gateway.call("GetMailboxStatus", pb.GetMailboxStatusRequest(mailbox="mailboxes/ann"))
    await gateway.call(
        "InitialSearch", pb.InitialSearchRequest(mailbox="mailboxes/bob"), gateway.sidebar
    )
    ann = Identity(subject="ann", org="acme", role="user")
    sidebar = Identity(subject="sidebar", org="acme", role="service")
    # GetMailbox, ListSessions, ListItemErrors for ann; GetMailbox, GetMailboxSettings for the
    # sidebar.
    assert set(gateway.callers(gateway.reconciler)) == {ann, sidebar}
    assert gateway.callers(gateway.reconciler)[:3] == [ann, ann, ann]
    assert gateway.callers(gateway.linker) == [sidebar]


async def test_share_email_is_forwarded_and_the_reconcilers_refusal_reaches_the_caller(
    gateway: Gateway,
) -> None:
    request = pb.ShareEmailRequest(
        mailbox="mailboxes/ann",
        message=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id="AAMk1"),
        request_id="share-1",
    )
    response = await gateway.call("ShareEmail", request)
    assert response.session.mailbox == "mailboxes/ann"
    (forwarded,) = gateway.forwarded()
    assert forwarded.message.native_id == "AAMk1"

    class NotAnEmail(FailedPrecondition):
        reason = "ITEM_NOT_AN_EMAIL"

    gateway.reconciler.fail_next("ShareEmail", NotAnEmail("the item is not an email"))
    request.request_id = "share-2"
    failure = from_rpc_error(await gateway.error("ShareEmail", request))
    assert (failure.code, failure.reason, failure.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ITEM_NOT_AN_EMAIL",
        "reconciler.concord.dev",
    )


async def test_org_health_is_for_the_orgs_admin(gateway: Gateway) -> None:
    response = await gateway.call(
        "GetOrgHealth", pb.GetOrgHealthRequest(org="orgs/acme"), gateway.admin
    )
    assert (response.health.org, response.health.quarantined_items) == ("orgs/acme", 2)
    failure = from_rpc_error(
        await gateway.error("GetOrgHealth", pb.GetOrgHealthRequest(org="orgs/acme"))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")


async def test_conflicts_are_listed_and_resolved_through_the_reconciler(gateway: Gateway) -> None:
    listed = await gateway.call(
        "ListConflicts", pb.ListConflictsRequest(parent="mailboxes/ann", page_size=1)
    )
    (conflict,) = listed.conflicts
    assert conflict.name == "mailboxes/ann/conflicts/l1"
    assert [
        (f.field, f.mail_value.string_value, f.crm_value.string_value) for f in conflict.fields
    ] == [("Subject", "Kick-off (mailbox)", "Kick-off (salesforce)")]
    assert listed.next_page_token == "o1"
    choice = pb.ResolveConflictRequest(
        name=conflict.name,
        take=res.SYNC_SIDE_CRM,
        fields=[pb.ConflictChoice(field="Subject", take=res.SYNC_SIDE_MAIL)],
        request_id="choice",
    )
    resolved = await gateway.call("ResolveConflict", choice)
    assert resolved.conflict.resolution_pending
    assert resolved.session.state == rres.SESSION_STATE_QUEUED
    forwarded = gateway.reconciler.received("ResolveConflict")
    (sent,) = forwarded
    assert (sent.name, sent.take, [(c.field, c.take) for c in sent.fields]) == (
        conflict.name,
        res.SYNC_SIDE_CRM,
        [("Subject", res.SYNC_SIDE_MAIL)],
    )
    # The caller's id is scoped to the caller and the conflict, like every mutation's.
    assert sent.request_id not in ("", "choice")
    bad = await gateway.error(
        "ResolveConflict", pb.ResolveConflictRequest(name="mailboxes/ann/other/l1")
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
