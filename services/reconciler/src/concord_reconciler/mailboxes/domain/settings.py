"""Org and mailbox settings: built-in defaults, what is in force, and masked updates."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.errors import InvalidRequest, SettingLocked
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.kernel.names import mailbox_name, org_name

__all__ = [
    "CRM_OBJECT_OF_KIND",
    "default_org_settings",
    "effective_mailbox_settings",
    "locked_mailbox_fields",
    "merge_mailbox_settings",
    "merge_org_settings",
    "settings_access_disabled",
    "synced_kinds",
]

# The Salesforce object each two-way kind mirrors; emails are shared one way and never listed
# back from Salesforce.
CRM_OBJECT_OF_KIND: dict[Kind, str] = {
    res.OBJECT_KIND_CALENDAR_ITEM: "Event",
    res.OBJECT_KIND_TASK: "Task",
    res.OBJECT_KIND_CONTACT: "Contact",
}

_ALL_KINDS = (
    res.OBJECT_KIND_CALENDAR_ITEM,
    res.OBJECT_KIND_TASK,
    res.OBJECT_KIND_CONTACT,
    res.OBJECT_KIND_EMAIL,
)

_MINUTE = 60

_MAILBOX_USER_FIELDS = ("sharing", "blacklist")


def _duration(seconds: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds)


def _default_sharing() -> list[st.ObjectSharing]:
    two_way = res.SYNC_DIRECTION_TWO_WAY
    return [
        st.ObjectSharing(
            kind=res.OBJECT_KIND_CALENDAR_ITEM,
            enabled=True,
            direction=two_way,
            selection_modes=[st.SELECTION_MODE_CATEGORY],
            category="Salesforce",
        ),
        st.ObjectSharing(
            kind=res.OBJECT_KIND_TASK,
            enabled=True,
            direction=two_way,
            selection_modes=[st.SELECTION_MODE_CATEGORY],
            category="Salesforce",
        ),
        st.ObjectSharing(
            kind=res.OBJECT_KIND_CONTACT,
            enabled=True,
            direction=two_way,
            selection_modes=[st.SELECTION_MODE_FOLDER],
            folder="Salesforce Contacts",
        ),
        st.ObjectSharing(
            kind=res.OBJECT_KIND_EMAIL,
            enabled=True,
            direction=res.SYNC_DIRECTION_MAIL_TO_CRM,
            selection_modes=[st.SELECTION_MODE_FOLDER, st.SELECTION_MODE_CATEGORY],
            category="Salesforce",
            folder="Salesforce Emails",
        ),
    ]


def default_org_settings(org_id: str) -> st.OrgSettings:
    """What an org gets before its admin changes anything (the proto comments' defaults)."""
    return st.OrgSettings(
        name=f"{org_name(org_id)}/settings",
        # Safe as a default because a change is a content change (an item merely opened in
        # Outlook bumps its version, not its content hash), so only real edits compete.
        conflict_policy=st.CONFLICT_POLICY_NEWEST_WINS,
        mail_delete_action=st.MAIL_DELETE_ACTION_DELETE_RECORD,
        crm_delete_action=st.CRM_DELETE_ACTION_UNSHARE_ITEM,
        private_item_policy=st.PRIVATE_ITEM_POLICY_SKIP,
        past_window=_duration(30 * 24 * 60 * _MINUTE),
        future_window=_duration(365 * 24 * 60 * _MINUTE),
        auto_resolve=st.AutoResolve(unknown_address_action=st.UNKNOWN_ADDRESS_ACTION_NONE),
        sync_interval=_duration(30 * _MINUTE),
        default_sharing=_default_sharing(),
        email_target=st.EMAIL_TARGET_EMAIL_MESSAGE,
        send_invitations_from_crm=False,
        delete_guard_ratio=0.5,
        delete_guard_min_items=20,
    )


def settings_access_disabled(org: st.OrgSettings, owner_user_id: str) -> bool:
    """Whether the org admin turned the owner's access to their settings off."""
    return owner_user_id in org.settings_access_disabled_users


def locked_mailbox_fields(org: st.OrgSettings, owner_user_id: str) -> list[str]:
    """The MailboxSettings fields the owner may not change: all of them when access is off."""
    if settings_access_disabled(org, owner_user_id):
        return list(_MAILBOX_USER_FIELDS)
    return list(org.locked_user_fields)


def effective_mailbox_settings(
    mailbox_id: str,
    stored: st.MailboxSettings | None,
    org: st.OrgSettings,
    owner_user_id: str,
) -> st.MailboxSettings:
    """The user's settings with the org's defaults for every kind the user left out.

    When the admin turned `owner_user_id`'s access to settings off, every field is the org's
    (required, so no caller can forget the switch).
    """
    settings = st.MailboxSettings()
    if stored is not None:
        settings.CopyFrom(stored)
    settings.name = f"{mailbox_name(mailbox_id)}/settings"
    own = {sharing.kind for sharing in settings.sharing}
    settings.sharing.extend(s for s in org.default_sharing if s.kind not in own)
    settings.sharing.sort(key=lambda s: s.kind)
    locked = locked_mailbox_fields(org, owner_user_id)
    settings.settings_access_disabled = settings_access_disabled(org, owner_user_id)
    del settings.locked_fields[:]
    settings.locked_fields.extend(locked)
    for field in locked:
        # A locked field shows (and uses) the org's value, whatever the user stored.
        if field == "sharing":
            del settings.sharing[:]
            settings.sharing.extend(org.default_sharing)
        elif field == "blacklist":
            del settings.blacklist[:]
    return settings


def synced_kinds(settings: st.MailboxSettings) -> tuple[Kind, ...]:
    """The object kinds a session lists, in a stable order."""
    enabled = {
        s.kind
        for s in settings.sharing
        if s.enabled and s.direction != res.SYNC_DIRECTION_NONE and s.kind in _ALL_KINDS
    }
    return tuple(kind for kind in _ALL_KINDS if kind in enabled)


_MAILBOX_OUTPUT_FIELDS = (
    "name",
    "locked_fields",
    "update_time",
    "etag",
    "settings_access_disabled",
)


def _validate_sharing(sharing: Sequence[st.ObjectSharing], field: str) -> None:
    seen: set[int] = set()
    for index, entry in enumerate(sharing):
        path = f"{field}[{index}]"
        if entry.kind not in _ALL_KINDS:
            raise InvalidRequest(f"{path}.kind", "required")
        if entry.kind in seen:
            raise InvalidRequest(f"{path}.kind", "one entry per object kind")
        seen.add(entry.kind)
        if entry.kind == res.OBJECT_KIND_EMAIL and entry.direction not in (
            res.SYNC_DIRECTION_UNSPECIFIED,
            res.SYNC_DIRECTION_MAIL_TO_CRM,
            res.SYNC_DIRECTION_NONE,
        ):
            raise InvalidRequest(f"{path}.direction", "emails are shared mail to CRM only")


def _mask_paths(paths: Sequence[str], allowed: Sequence[str], output: Sequence[str]) -> list[str]:
    for path in paths:
        if path in output:
            raise InvalidRequest("update_mask", f"{path} is output only")
        if path not in allowed:
            raise InvalidRequest("update_mask", f"unknown field {path!r}")
    return list(paths) or list(allowed)


def merge_mailbox_settings(
    current: st.MailboxSettings,
    change: st.MailboxSettings,
    paths: Sequence[str],
    locked: Sequence[str],
) -> st.MailboxSettings:
    """`current` with the fields named by `paths` (all user fields if empty) taken from `change`."""
    fields = _mask_paths(paths, _MAILBOX_USER_FIELDS, _MAILBOX_OUTPUT_FIELDS)
    for field in fields:
        if field in locked:
            raise SettingLocked(field)
    _validate_sharing(change.sharing, "settings.sharing")
    merged = st.MailboxSettings()
    merged.CopyFrom(current)
    for field in fields:
        merged.ClearField(field)  # type: ignore[arg-type]
        getattr(merged, field).extend(getattr(change, field))
    return merged


_ORG_OUTPUT_FIELDS = ("name", "update_time", "etag")
_ORG_FIELDS = tuple(
    f.name for f in st.OrgSettings.DESCRIPTOR.fields if f.name not in _ORG_OUTPUT_FIELDS
)


def _validate_org(settings: st.OrgSettings) -> None:
    if not 0.0 <= settings.delete_guard_ratio <= 1.0:
        raise InvalidRequest("settings.delete_guard_ratio", "must be between 0 and 1")
    if settings.delete_guard_min_items < 0:
        raise InvalidRequest("settings.delete_guard_min_items", "must not be negative")
    for field in ("past_window", "future_window", "sync_interval"):
        if getattr(settings, field).seconds < 0:
            raise InvalidRequest(f"settings.{field}", "must not be negative")
    if settings.HasField("sync_interval") and 0 < settings.sync_interval.seconds < _MINUTE:
        raise InvalidRequest("settings.sync_interval", "must be at least one minute")
    _validate_sharing(settings.default_sharing, "settings.default_sharing")
    unknown = set(settings.locked_user_fields) - set(_MAILBOX_USER_FIELDS)
    if unknown:
        raise InvalidRequest(
            "settings.locked_user_fields", f"unknown MailboxSettings fields {sorted(unknown)}"
        )
    users = settings.settings_access_disabled_users
    for index, user_id in enumerate(users):
        path = f"settings.settings_access_disabled_users[{index}]"
        if not user_id.strip() or user_id != user_id.strip():
            raise InvalidRequest(path, "a user id, without surrounding spaces")
        if user_id in users[:index]:
            raise InvalidRequest(path, f"{user_id!r} is listed twice")


def merge_org_settings(
    current: st.OrgSettings, change: st.OrgSettings, paths: Sequence[str]
) -> st.OrgSettings:
    """`current` with the fields named by `paths` (all but output-only ones if empty) changed."""
    fields = _mask_paths(paths, _ORG_FIELDS, _ORG_OUTPUT_FIELDS)
    merged = st.OrgSettings()
    merged.CopyFrom(current)
    for field in fields:
        merged.ClearField(field)  # type: ignore[arg-type]
        descriptor = st.OrgSettings.DESCRIPTOR.fields_by_name[field]
        if descriptor.is_repeated:
            getattr(merged, field).extend(getattr(change, field))
        elif descriptor.message_type is not None:
            if change.HasField(field):  # type: ignore[arg-type]
                getattr(merged, field).CopyFrom(getattr(change, field))
        else:
            setattr(merged, field, getattr(change, field))
    _validate_org(merged)
    return merged
