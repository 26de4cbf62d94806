"""Mailboxes, settings, item errors and sessions over gRPC (no consumer running)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.sessions.domain.model import ItemErrorRecord, SessionState
from concord_rpc import from_rpc_error

from .conftest import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def _create(mailbox_id: str = "ann", request_id: str = "") -> api.CreateMailboxRequest:
    return api.CreateMailboxRequest(
        mailbox_id=mailbox_id,
        mailbox=rres.Mailbox(
            org="orgs/acme",
            owner_user_id="user-1",
            crm_user_id="005000000000001AAA",
            address="ann@example.com",
            provider=res.MAIL_PROVIDER_DAV,
        ),
        account=mail.MailboxAccount(
            dav=mail.DavSettings(caldav_url="https://dav.example.com", username="ann"),
            secret=b"hunter2",
        ),
        request_id=request_id,
    )


async def _other_orgs_mailbox(reconciler: Reconciler, mailbox_id: str, org_id: str) -> None:
    """Written straight to the store: the API refuses the test's caller (of acme) another org."""
    await reconciler.store.insert_mailbox(
        MailboxRecord(
            mailbox_id=mailbox_id,
            org_id=org_id,
            owner_user_id="user-1",
            crm_user_id="005000000000001AAA",
            address=f"{mailbox_id}@example.com",
            provider=res.MAIL_PROVIDER_GRAPH,
        )
    )


async def _status(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_create_mailbox_forwards_the_account_and_is_idempotent(
    reconciler: Reconciler,
) -> None:
    created = await reconciler.stub.CreateMailbox(_create(request_id="req-1"))
    mailbox = created.mailbox
    assert mailbox.name == "mailboxes/ann"
    assert mailbox.state == rres.MAILBOX_STATE_ACTIVE
    assert mailbox.etag
    forwarded = [r for n, r in reconciler.peer_calls() if n == "mail.UpsertMailboxAccount"]
    assert len(forwarded) == 1
    account = forwarded[0].account
    assert account.name == "mailboxes/ann/account"
    assert account.address == "ann@example.com"
    assert account.provider == res.MAIL_PROVIDER_DAV
    assert account.secret == b"hunter2"
    # A retry with the same request id gets the same answer, not ALREADY_EXISTS.
    again = await reconciler.stub.CreateMailbox(_create(request_id="req-1"))
    assert again == created
    error = await _status(reconciler.stub.CreateMailbox(_create(request_id="req-2")))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert from_rpc_error(error).reason == "MAILBOX_ALREADY_EXISTS"
    got = await reconciler.stub.GetMailbox(api.GetMailboxRequest(name="mailboxes/ann"))
    # Reading one mailbox adds its live push state, as the mail-connector reports it.
    assert got.mailbox.push_state == res.PUSH_STATE_ACTIVE
    got.mailbox.push_state = mailbox.push_state
    # ...and when the schedule will next sync it (the process's wiring, as served).
    assert got.mailbox.HasField("next_sync_time")
    got.mailbox.ClearField("next_sync_time")
    assert got.mailbox == mailbox


async def test_create_mailbox_validates(reconciler: Reconciler) -> None:
    request = _create()
    request.mailbox.address = "not-an-address"
    error = await _status(reconciler.stub.CreateMailbox(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in from_rpc_error(error).field_violations] == ["mailbox.address"]
    assert not reconciler.peer_calls()


async def test_create_mailbox_with_the_mail_connector_down_is_unavailable(
    reconciler: Reconciler,
) -> None:
    await reconciler.peers.stop("mail-connector")
    error = await _status(reconciler.stub.CreateMailbox(_create()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    failure = from_rpc_error(error)
    assert failure.reason == "DEPENDENCY_UNAVAILABLE"
    assert failure.metadata["peer"] == "mail-connector"
    # Nothing half-created: the mailbox is not there.
    missing = await _status(reconciler.stub.GetMailbox(api.GetMailboxRequest(name="mailboxes/ann")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_list_mailboxes_pages_and_filters(reconciler: Reconciler) -> None:
    for name in ("a", "b", "c", "d"):
        await reconciler.add_mailbox(name)
    await _other_orgs_mailbox(reconciler, "e", "other")
    seen: list[str] = []
    token = ""
    while True:
        page = await reconciler.stub.ListMailboxes(
            api.ListMailboxesRequest(org="orgs/acme", page_size=2, page_token=token)
        )
        seen += [m.mailbox_id for m in page.mailboxes]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d"]
    error = await _status(reconciler.stub.ListMailboxes(api.ListMailboxesRequest(page_token="x")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_delete_mailbox_forgets_it_and_its_account(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox("gone")
    stale = await _status(
        reconciler.stub.DeleteMailbox(api.DeleteMailboxRequest(name="mailboxes/gone", etag="x"))
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    await reconciler.stub.DeleteMailbox(api.DeleteMailboxRequest(name="mailboxes/gone"))
    assert "mail.DeleteMailboxAccount" in reconciler.peer_call_names()
    missing = await _status(
        reconciler.stub.GetMailbox(api.GetMailboxRequest(name="mailboxes/gone"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_org_settings_default_then_update_with_a_mask(reconciler: Reconciler) -> None:
    name = "orgs/acme/settings"
    got = (await reconciler.stub.GetOrgSettings(api.GetOrgSettingsRequest(name=name))).settings
    assert got.conflict_policy == st.CONFLICT_POLICY_NEWEST_WINS
    assert got.sync_interval.seconds == 1800
    change = st.OrgSettings(name=name, conflict_policy=st.CONFLICT_POLICY_CRM_WINS, etag=got.etag)
    change.sync_interval.seconds = 60
    updated = await reconciler.stub.UpdateOrgSettings(
        api.UpdateOrgSettingsRequest(
            settings=change, update_mask=field_mask_pb2.FieldMask(paths=["conflict_policy"])
        )
    )
    assert updated.settings.conflict_policy == st.CONFLICT_POLICY_CRM_WINS
    assert updated.settings.sync_interval.seconds == 1800
    assert updated.settings.etag != got.etag
    stale = await _status(
        reconciler.stub.UpdateOrgSettings(
            api.UpdateOrgSettingsRequest(
                settings=change, update_mask=field_mask_pb2.FieldMask(paths=["conflict_policy"])
            )
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    again = await reconciler.stub.GetOrgSettings(api.GetOrgSettingsRequest(name=name))
    assert again.settings == updated.settings


async def test_mailbox_settings_fill_in_org_defaults_and_honour_locks(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()
    name = "mailboxes/demo/settings"
    got = await reconciler.stub.GetMailboxSettings(api.GetMailboxSettingsRequest(name=name))
    assert len(got.settings.sharing) == 4
    updated = await reconciler.stub.UpdateMailboxSettings(
        api.UpdateMailboxSettingsRequest(
            settings=st.MailboxSettings(name=name, blacklist=["rival.com"]),
            update_mask=field_mask_pb2.FieldMask(paths=["blacklist"]),
        )
    )
    assert list(updated.settings.blacklist) == ["rival.com"]
    assert len(updated.settings.sharing) == 4
    await reconciler.stub.UpdateOrgSettings(
        api.UpdateOrgSettingsRequest(
            settings=st.OrgSettings(name="orgs/acme/settings", locked_user_fields=["blacklist"]),
            update_mask=field_mask_pb2.FieldMask(paths=["locked_user_fields"]),
        )
    )
    locked = await _status(
        reconciler.stub.UpdateMailboxSettings(
            api.UpdateMailboxSettingsRequest(
                settings=st.MailboxSettings(name=name, blacklist=[]),
                update_mask=field_mask_pb2.FieldMask(paths=["blacklist"]),
            )
        )
    )
    assert locked.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(locked).reason == "SETTING_LOCKED"


async def test_item_errors_list_and_retry(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    listed = await reconciler.stub.ListItemErrors(
        api.ListItemErrorsRequest(parent="mailboxes/demo")
    )
    assert not listed.item_errors
    assert listed.total_size == 0
    unknown = f"mailboxes/demo/itemErrors/{uuid.uuid4()}"
    error = await _status(reconciler.stub.RetryItem(api.RetryItemRequest(name=unknown)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(error).reason == "ITEM_ERROR_NOT_FOUND"
    item_error_id = str(uuid.uuid4())
    await reconciler.store.record_item_error(
        ItemErrorRecord(
            item_error_id=item_error_id,
            mailbox_id="demo",
            kind=res.OBJECT_KIND_CALENDAR_ITEM,
            native_id="AAMk1",
            side=res.SYNC_SIDE_CRM,
            reason="UNKNOWN_TIME_ZONE",
            message="the item's time zone is unknown",
            quarantined=True,
        )
    )
    listed = await reconciler.stub.ListItemErrors(
        api.ListItemErrorsRequest(parent="mailboxes/demo", quarantined_only=True)
    )
    assert [e.reason for e in listed.item_errors] == ["UNKNOWN_TIME_ZONE"]
    assert listed.total_size == 1
    retried = await reconciler.stub.RetryItem(
        api.RetryItemRequest(name=f"mailboxes/demo/itemErrors/{item_error_id}")
    )
    assert not retried.item_error.quarantined
    assert retried.session.trigger == res.SESSION_TRIGGER_RETRY


async def test_sessions_list_newest_first_in_pages(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    ids = []
    for _ in range(3):
        # Each request queues a new session once the previous one is no longer queued.
        requested = await reconciler.stub.RequestSession(
            api.RequestSessionRequest(mailbox="mailboxes/demo", trigger=res.SESSION_TRIGGER_FORCE)
        )
        ids.append(requested.session.session_id)
        session = await reconciler.store.get_session(requested.session.session_id)
        assert session is not None
        await reconciler.store.save_session(session.to(SessionState.RUNNING), SessionState.QUEUED)
    first = await reconciler.stub.ListSessions(
        api.ListSessionsRequest(parent="mailboxes/demo", page_size=2)
    )
    second = await reconciler.stub.ListSessions(
        api.ListSessionsRequest(
            parent="mailboxes/demo", page_size=2, page_token=first.next_page_token
        )
    )
    assert [s.session_id for s in [*first.sessions, *second.sessions]] == ids[::-1]
    assert not second.next_page_token


async def test_share_email_without_sharing_answers_unimplemented(reconciler: Reconciler) -> None:
    error = await _status(
        reconciler.stub.ShareEmail(api.ShareEmailRequest(mailbox="mailboxes/demo"))
    )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert from_rpc_error(error).metadata["issue"] == "7"


async def test_org_health_counts_the_orgs_mailboxes_and_reads_the_budget(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox("ann")
    await reconciler.add_mailbox("bob")
    await _other_orgs_mailbox(reconciler, "other", "globex")
    await reconciler.stub.SuspendMailbox(api.SuspendMailboxRequest(name="mailboxes/bob"))
    got = await reconciler.stub.GetOrgHealth(api.GetOrgHealthRequest(org="orgs/acme"))
    health = got.health
    assert health.org == "orgs/acme"
    assert health.state == rres.HEALTH_STATE_DEGRADED
    assert [(m.state, m.count) for m in health.mailboxes] == [
        (rres.MAILBOX_STATE_ACTIVE, 1),
        (rres.MAILBOX_STATE_SUSPENDED, 1),
    ]
    assert any("suspended" in reason for reason in health.reasons)
    assert health.budget.org == "orgs/acme"
    assert health.budget.limit == 15000
    budget_calls = [r for n, r in reconciler.peer_calls() if n == "crm.GetBudget"]
    assert [r.org for r in budget_calls] == ["orgs/acme"]


async def test_org_health_fails_when_salesforce_cannot_be_reached(reconciler: Reconciler) -> None:
    await reconciler.peers.stop("crm-connector")
    got = await reconciler.stub.GetOrgHealth(api.GetOrgHealthRequest(org="orgs/acme"))
    assert got.health.state == rres.HEALTH_STATE_FAILING
    assert "could not be reached" in got.health.reasons[0]
