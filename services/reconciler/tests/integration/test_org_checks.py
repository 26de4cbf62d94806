"""The reconciler's methods act for the vouched caller's org only (issue #17, case 6).

The gateway authorises people; the reconciler refuses on its own a call vouched for one org
that names another org's mailbox, settings or health (CALLER_NOT_IN_ORG), as crm-connector,
the linker and the mail-connector do. The fixture's caller is an admin of `acme`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState
from concord_rpc import from_rpc_error

from .conftest import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

THEIRS = "mailboxes/carol"
SOME_ID = "0b7c6a56-3f0e-4c55-9a3e-2f3c8f0d1e2a"
# The request id of a mutation globex made, whose answer is stored: a call naming globex's
# mailbox with it must be refused before any replay.
RETRY = "globex-retry"


async def _globex_mailbox(reconciler: Reconciler) -> None:
    # Written straight to the store: no caller of acme could create it.
    await reconciler.store.insert_mailbox(
        MailboxRecord(
            mailbox_id="carol",
            org_id="globex",
            owner_user_id="carol",
            crm_user_id="005000000000009AAA",
            address="carol@globex.example",
            provider=res.MAIL_PROVIDER_GRAPH,
        )
    )


def _calls(stub: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Every method that names another org's mailbox or the org itself."""
    return {
        "GetMailbox": lambda: stub.GetMailbox(api.GetMailboxRequest(name=THEIRS)),
        "DeleteMailbox": lambda: stub.DeleteMailbox(
            api.DeleteMailboxRequest(name=THEIRS, request_id=RETRY)
        ),
        "SuspendMailbox": lambda: stub.SuspendMailbox(
            api.SuspendMailboxRequest(name=THEIRS, reason="mine now", request_id=RETRY)
        ),
        "ResumeMailbox": lambda: stub.ResumeMailbox(
            api.ResumeMailboxRequest(name=THEIRS, request_id=RETRY)
        ),
        "GetMailboxSettings": lambda: stub.GetMailboxSettings(
            api.GetMailboxSettingsRequest(name=f"{THEIRS}/settings")
        ),
        "UpdateMailboxSettings": lambda: stub.UpdateMailboxSettings(
            api.UpdateMailboxSettingsRequest(
                settings=st.MailboxSettings(name=f"{THEIRS}/settings", blacklist=["x.example"]),
                request_id=RETRY,
            )
        ),
        "RequestSession": lambda: stub.RequestSession(
            api.RequestSessionRequest(
                mailbox=THEIRS, trigger=res.SESSION_TRIGGER_FORCE, request_id=RETRY
            )
        ),
        "GetSession": lambda: stub.GetSession(
            api.GetSessionRequest(name=f"{THEIRS}/sessions/{SOME_ID}")
        ),
        "WaitSession": lambda: stub.WaitSession(
            api.WaitSessionRequest(name=f"{THEIRS}/sessions/{SOME_ID}")
        ),
        "ListSessions": lambda: stub.ListSessions(api.ListSessionsRequest(parent=THEIRS)),
        "ListItemErrors": lambda: stub.ListItemErrors(api.ListItemErrorsRequest(parent=THEIRS)),
        "RetryItem": lambda: stub.RetryItem(
            api.RetryItemRequest(name=f"{THEIRS}/itemErrors/{SOME_ID}", request_id=RETRY)
        ),
        "ListConflicts": lambda: stub.ListConflicts(api.ListConflictsRequest(parent=THEIRS)),
        "ResolveConflict": lambda: stub.ResolveConflict(
            api.ResolveConflictRequest(
                name=f"{THEIRS}/conflicts/c1", take=res.SYNC_SIDE_MAIL, request_id=RETRY
            )
        ),
        "ListMailboxes": lambda: stub.ListMailboxes(api.ListMailboxesRequest(org="orgs/globex")),
        "GetOrgSettings": lambda: stub.GetOrgSettings(
            api.GetOrgSettingsRequest(name="orgs/globex/settings")
        ),
        "UpdateOrgSettings": lambda: stub.UpdateOrgSettings(
            api.UpdateOrgSettingsRequest(
                settings=st.OrgSettings(name="orgs/globex/settings"), request_id=RETRY
            )
        ),
        "GetOrgHealth": lambda: stub.GetOrgHealth(api.GetOrgHealthRequest(org="orgs/globex")),
    }


async def _refusal(call: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str]:
    try:
        await call()
    except grpc.aio.AioRpcError as err:
        return err.code(), from_rpc_error(err).reason
    return grpc.StatusCode.OK, ""


async def test_every_method_refuses_a_caller_vouched_for_another_org(
    reconciler: Reconciler,
) -> None:
    await _globex_mailbox(reconciler)
    calls = _calls(reconciler.stub)
    for method in calls:
        await reconciler.store.save_response(method, RETRY, b"")
    refused = {name: await _refusal(call) for name, call in calls.items()}
    allowed = {
        name: answer
        for name, answer in refused.items()
        if answer != (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_IN_ORG")
    }
    assert allowed == {}
    # Nothing of globex's was touched.
    carol = await reconciler.store.get_mailbox("carol")
    assert carol is not None
    assert carol.state is MailboxState.ACTIVE
    assert await reconciler.store.get_mailbox_settings("carol") is None


async def test_registering_an_id_another_org_holds_does_not_say_it_exists(
    reconciler: Reconciler,
) -> None:
    await _globex_mailbox(reconciler)
    create = api.CreateMailboxRequest(
        mailbox_id="carol",
        mailbox=rres.Mailbox(
            org="orgs/acme",
            owner_user_id="user-1",
            crm_user_id="005000000000001AAA",
            address="carol@acme.example",
            provider=res.MAIL_PROVIDER_GRAPH,
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reconciler.stub.CreateMailbox(create)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert from_rpc_error(raised.value).reason == "CALLER_NOT_IN_ORG"
    assert "exist" not in (raised.value.details() or "")
    assert "globex" not in (raised.value.details() or "")
    # Within the caller's own org an id taken is still said to be taken.
    create.mailbox_id = "ann"
    await reconciler.stub.CreateMailbox(create)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await reconciler.stub.CreateMailbox(create)
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_mailbox_cannot_be_registered_into_another_org(reconciler: Reconciler) -> None:
    create = api.CreateMailboxRequest(
        mailbox_id="dan",
        mailbox=rres.Mailbox(
            org="orgs/globex",
            owner_user_id="user-1",
            crm_user_id="005000000000001AAA",
            address="dan@globex.example",
            provider=res.MAIL_PROVIDER_GRAPH,
        ),
    )
    assert await _refusal(lambda: reconciler.stub.CreateMailbox(create)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_IN_ORG",
    )
    assert await reconciler.store.get_mailbox("dan") is None


async def test_a_listing_without_an_org_covers_the_callers_own(reconciler: Reconciler) -> None:
    await _globex_mailbox(reconciler)
    await reconciler.add_mailbox("ann")
    listed = await reconciler.stub.ListMailboxes(api.ListMailboxesRequest())
    assert [m.name for m in listed.mailboxes] == ["mailboxes/ann"]
