from __future__ import annotations

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.errors import InvalidRequest, SettingLocked
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
    merge_mailbox_settings,
    merge_org_settings,
    synced_kinds,
)

pytestmark = pytest.mark.unit

ALL = [
    res.OBJECT_KIND_CALENDAR_ITEM,
    res.OBJECT_KIND_TASK,
    res.OBJECT_KIND_CONTACT,
    res.OBJECT_KIND_EMAIL,
]


def test_org_defaults_follow_the_contract() -> None:
    org = default_org_settings("acme")
    assert org.name == "orgs/acme/settings"
    assert org.crm_delete_action == st.CRM_DELETE_ACTION_UNSHARE_ITEM
    assert org.private_item_policy == st.PRIVATE_ITEM_POLICY_SKIP
    assert org.sync_interval.seconds == 30 * 60
    assert org.delete_guard_ratio == 0.5
    assert org.delete_guard_min_items == 20
    assert [s.kind for s in org.default_sharing] == ALL
    email = org.default_sharing[3]
    assert email.direction == res.SYNC_DIRECTION_MAIL_TO_CRM


def test_a_user_without_settings_gets_the_org_defaults() -> None:
    settings = effective_mailbox_settings("demo", None, default_org_settings("acme"), "")
    assert settings.name == "mailboxes/demo/settings"
    assert synced_kinds(settings) == tuple(ALL)


def test_user_entries_replace_the_default_of_their_kind_only() -> None:
    own = st.MailboxSettings(sharing=[st.ObjectSharing(kind=res.OBJECT_KIND_TASK, enabled=False)])
    settings = effective_mailbox_settings("demo", own, default_org_settings("acme"), "")
    assert synced_kinds(settings) == (
        res.OBJECT_KIND_CALENDAR_ITEM,
        res.OBJECT_KIND_CONTACT,
        res.OBJECT_KIND_EMAIL,
    )


def test_a_locked_field_shows_the_org_value() -> None:
    org = default_org_settings("acme")
    org.locked_user_fields.append("sharing")
    own = st.MailboxSettings(sharing=[st.ObjectSharing(kind=res.OBJECT_KIND_TASK, enabled=False)])
    settings = effective_mailbox_settings("demo", own, org, "")
    assert list(settings.locked_fields) == ["sharing"]
    assert synced_kinds(settings) == tuple(ALL)


def test_the_mask_limits_what_changes() -> None:
    current = st.MailboxSettings(blacklist=["a.com"])
    change = st.MailboxSettings(
        blacklist=["b.com"], sharing=[st.ObjectSharing(kind=res.OBJECT_KIND_TASK)]
    )
    merged = merge_mailbox_settings(current, change, ["blacklist"], [])
    assert list(merged.blacklist) == ["b.com"]
    assert not merged.sharing
    # An empty mask replaces every field the user may change.
    replaced = merge_mailbox_settings(current, change, [], [])
    assert len(replaced.sharing) == 1


@pytest.mark.parametrize("path", ["etag", "locked_fields", "nonsense"])
def test_bad_mask_paths_are_invalid(path: str) -> None:
    with pytest.raises(InvalidRequest):
        merge_mailbox_settings(st.MailboxSettings(), st.MailboxSettings(), [path], [])


def test_locked_fields_cannot_be_changed() -> None:
    with pytest.raises(SettingLocked):
        merge_mailbox_settings(
            st.MailboxSettings(), st.MailboxSettings(), ["blacklist"], ["blacklist"]
        )


def test_emails_cannot_flow_from_crm() -> None:
    change = st.MailboxSettings(
        sharing=[st.ObjectSharing(kind=res.OBJECT_KIND_EMAIL, direction=res.SYNC_DIRECTION_TWO_WAY)]
    )
    with pytest.raises(InvalidRequest):
        merge_mailbox_settings(st.MailboxSettings(), change, ["sharing"], [])


def test_org_update_honours_the_mask_and_validates() -> None:
    current = default_org_settings("acme")
    change = st.OrgSettings(conflict_policy=st.CONFLICT_POLICY_MANUAL, delete_guard_ratio=0.9)
    merged = merge_org_settings(current, change, ["conflict_policy"])
    assert merged.conflict_policy == st.CONFLICT_POLICY_MANUAL
    assert merged.delete_guard_ratio == 0.5
    assert merged.sync_interval.seconds == 30 * 60
    with pytest.raises(InvalidRequest):
        merge_org_settings(current, st.OrgSettings(delete_guard_ratio=2), ["delete_guard_ratio"])


def _org_without_access_for(*user_ids: str) -> st.OrgSettings:
    org = default_org_settings("acme")
    org.settings_access_disabled_users.extend(user_ids)
    return org


def test_a_user_without_access_runs_on_the_org_values() -> None:
    org = _org_without_access_for("carol")
    own = st.MailboxSettings(
        sharing=[st.ObjectSharing(kind=res.OBJECT_KIND_TASK, enabled=False)],
        blacklist=["rival.com"],
    )
    settings = effective_mailbox_settings("demo", own, org, "carol")
    assert settings.settings_access_disabled
    assert sorted(settings.locked_fields) == ["blacklist", "sharing"]
    assert list(settings.sharing) == list(org.default_sharing)
    assert list(settings.blacklist) == []
    assert synced_kinds(settings) == tuple(ALL)


def test_other_users_keep_their_own_settings() -> None:
    own = st.MailboxSettings(blacklist=["rival.com"])
    settings = effective_mailbox_settings("demo", own, _org_without_access_for("carol"), "dave")
    assert not settings.settings_access_disabled
    assert list(settings.locked_fields) == []
    assert list(settings.blacklist) == ["rival.com"]


def test_access_disabled_users_are_set_with_the_org_settings() -> None:
    change = st.OrgSettings(settings_access_disabled_users=["carol", "dave"])
    merged = merge_org_settings(
        default_org_settings("acme"), change, ["settings_access_disabled_users"]
    )
    assert list(merged.settings_access_disabled_users) == ["carol", "dave"]


@pytest.mark.parametrize("users", [["carol", "carol"], [""], [" carol"]])
def test_access_disabled_users_are_distinct_user_ids(users: list[str]) -> None:
    change = st.OrgSettings(settings_access_disabled_users=users)
    with pytest.raises(InvalidRequest) as raised:
        merge_org_settings(default_org_settings("acme"), change, ["settings_access_disabled_users"])
    assert str(raised.value).startswith("settings.settings_access_disabled_users[")


def test_the_access_flag_is_output_only() -> None:
    with pytest.raises(InvalidRequest):
        merge_mailbox_settings(
            st.MailboxSettings(), st.MailboxSettings(), ["settings_access_disabled"], []
        )
