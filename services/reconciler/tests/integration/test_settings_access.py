"""An org admin turns one user's access to their settings off (issue #8)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from concord.common.v1 import settings_pb2 as st
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord_rpc import from_rpc_error

from .conftest import Reconciler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

NAME = "mailboxes/demo/settings"


async def _disable_access_for(reconciler: Reconciler, *user_ids: str) -> st.OrgSettings:
    response = await reconciler.stub.UpdateOrgSettings(
        api.UpdateOrgSettingsRequest(
            settings=st.OrgSettings(
                name="orgs/acme/settings", settings_access_disabled_users=list(user_ids)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["settings_access_disabled_users"]),
        )
    )
    return response.settings


def _blacklist(entries: list[str]) -> api.UpdateMailboxSettingsRequest:
    return api.UpdateMailboxSettingsRequest(
        settings=st.MailboxSettings(name=NAME, blacklist=entries),
        update_mask=field_mask_pb2.FieldMask(paths=["blacklist"]),
    )


async def test_the_owner_without_access_gets_org_values_and_cannot_change_them(
    reconciler: Reconciler,
) -> None:
    await reconciler.add_mailbox()  # owned by user-1
    await reconciler.stub.UpdateMailboxSettings(_blacklist(["rival.com"]))
    org = await _disable_access_for(reconciler, "user-1")
    assert list(org.settings_access_disabled_users) == ["user-1"]

    got = await reconciler.stub.GetMailboxSettings(api.GetMailboxSettingsRequest(name=NAME))
    assert got.settings.settings_access_disabled
    assert sorted(got.settings.locked_fields) == ["blacklist", "sharing"]
    assert list(got.settings.blacklist) == []

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reconciler.stub.UpdateMailboxSettings(_blacklist([]))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(raised.value).reason == "SETTINGS_ACCESS_DISABLED"

    await _disable_access_for(reconciler)
    restored = await reconciler.stub.GetMailboxSettings(api.GetMailboxSettingsRequest(name=NAME))
    assert not restored.settings.settings_access_disabled
    assert list(restored.settings.blacklist) == ["rival.com"]


async def test_another_users_access_leaves_this_mailbox_alone(reconciler: Reconciler) -> None:
    await reconciler.add_mailbox()
    await _disable_access_for(reconciler, "carol")
    updated = await reconciler.stub.UpdateMailboxSettings(_blacklist(["rival.com"]))
    assert not updated.settings.settings_access_disabled
    assert list(updated.settings.blacklist) == ["rival.com"]
