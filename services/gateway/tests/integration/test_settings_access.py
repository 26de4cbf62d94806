"""A user whose access to settings the org admin turned off (issue #8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from concord.common.v1 import settings_pb2
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord_rpc import from_rpc_error

if TYPE_CHECKING:
    from conftest import Gateway  # type: ignore[import-not-found]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

NAME = "mailboxes/ann/settings"
GET = pb.GetUserSettingsRequest(name=NAME)
UPDATE = pb.UpdateUserSettingsRequest(
    settings=settings_pb2.MailboxSettings(name=NAME, blacklist=["rival.test"]),
    update_mask=field_mask_pb2.FieldMask(paths=["blacklist"]),
)


@pytest.mark.parametrize(
    ("method", "request_"), [("GetUserSettings", GET), ("UpdateUserSettings", UPDATE)]
)
async def test_the_owner_is_refused_when_the_admin_turned_access_off(
    gateway: Gateway, method: str, request_: object
) -> None:
    gateway.reconciler.org("orgs/acme").settings_access_disabled_users.append("ann")
    for token in (gateway.ann, gateway.sidebar):
        error = await gateway.error(method, request_, token)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert from_rpc_error(error).reason == "SETTINGS_ACCESS_DISABLED"
    assert gateway.reconciler.acted["UpdateMailboxSettings"] == 0


async def test_the_admin_still_reads_and_changes_them(gateway: Gateway) -> None:
    gateway.reconciler.org("orgs/acme").settings_access_disabled_users.append("ann")
    got = await gateway.call("GetUserSettings", GET, gateway.admin)
    assert got.settings.settings_access_disabled
    await gateway.call("UpdateUserSettings", UPDATE, gateway.admin)
    assert gateway.reconciler.acted["UpdateMailboxSettings"] == 1


async def test_other_users_keep_their_access(gateway: Gateway) -> None:
    gateway.reconciler.org("orgs/acme").settings_access_disabled_users.append("bob")
    got = await gateway.call("GetUserSettings", GET)
    assert not got.settings.settings_access_disabled
    updated = await gateway.call("UpdateUserSettings", UPDATE)
    assert list(updated.settings.blacklist) == ["rival.test"]
