"""The reconciler checks what reaches it against the public API's limits too (issue #17, case 4).

The gateway refuses such requests first; this is the defence in depth: a 20 MiB suspension
reason once stored made every later status read of the org fail, and its answer stayed in the
`requests` table.
"""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
import pytest
from sqlalchemy import func, select

from concord.common.v1 import settings_pb2 as st
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.kernel.schema import requests
from concord_reconciler.kernel.wire import REASON_SHOWN
from concord_reconciler.mailboxes.domain.model import MailboxState
from concord_rpc import from_rpc_error

from .conftest import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _violations(call: object) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    failure = from_rpc_error(raised.value)
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_LIMIT_VIOLATED",
    )
    return [field for field, _ in failure.field_violations]


async def _stored_answers(reconciler: Reconciler) -> int:
    async with reconciler.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(requests))).scalar_one())


async def test_a_huge_or_nul_suspension_reason_is_refused_and_nothing_is_stored(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox("ann")
    stored = await _stored_answers(reconciler)
    for reason in ("x" * (20 * 1024 * 1024), "on\x00hold"):
        suspend = api.SuspendMailboxRequest(name="mailboxes/ann", reason=reason, request_id="r1")
        assert await _violations(reconciler.stub.SuspendMailbox(suspend)) == ["reason"]
    mailbox = await reconciler.store.get_mailbox("ann")
    assert mailbox is not None
    assert mailbox.suspended_reason == ""
    assert await _stored_answers(reconciler) == stored
    # A reason within the limits, with its line breaks, is taken.
    fine = api.SuspendMailboxRequest(name="mailboxes/ann", reason="on leave\nback in May")
    assert (await reconciler.stub.SuspendMailbox(fine)).mailbox.suspended_reason


async def test_blacklist_entries_must_name_an_address_or_a_domain(reconciler: Reconciler) -> None:
    def update(*entries: str) -> Awaitable[api.UpdateOrgSettingsResponse]:
        return reconciler.stub.UpdateOrgSettings(
            api.UpdateOrgSettingsRequest(
                settings=st.OrgSettings(name="orgs/acme/settings", blacklist=list(entries))
            )
        )

    assert await _violations(update("", "*", "a\x00.example", "x" * 1_000_000)) == [
        "settings.blacklist[0]",
        "settings.blacklist[1]",
        "settings.blacklist[2]",
        "settings.blacklist[3]",
    ]
    many = [f"d{n}.example" for n in range(20_000)]
    assert await _violations(update(*many)) == ["settings.blacklist"]
    stored = await update("rival.example", "ann@partner.example", "*.spam.example")
    assert list(stored.settings.blacklist) == [
        "rival.example",
        "ann@partner.example",
        "*.spam.example",
    ]


async def test_a_huge_reason_stored_before_the_limits_no_longer_breaks_the_orgs_status(
    reconciler: Reconciler,
) -> None:
    # Written straight to the store, as a reconciler without the limits stored it.
    await reconciler.add_mailbox("ann")
    await reconciler.store.set_mailbox_state("ann", MailboxState.SUSPENDED, "x" * (20 << 20))
    # The test's channel takes gRPC's default 4 MiB answers, as the CLI's does.
    listed = await reconciler.stub.ListMailboxes(api.ListMailboxesRequest(org="orgs/acme"))
    [ann] = listed.mailboxes
    assert ann.state == rres.MAILBOX_STATE_SUSPENDED
    assert 0 < len(ann.suspended_reason) <= REASON_SHOWN
    got = await reconciler.stub.GetMailbox(api.GetMailboxRequest(name="mailboxes/ann"))
    assert got.mailbox.suspended_reason == ann.suspended_reason
