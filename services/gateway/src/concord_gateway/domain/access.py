"""Who may do what: the authorisation rules, one function per kind of target.

- user: the mailboxes they own, in their org; their own settings, unless the org admin turned
  that user's access to settings off (OrgSettings.settings_access_disabled_users).
- admin: every mailbox of their org, the org's settings (locks included) and health.
- service (the sidebar backend): every mailbox of the one org its token names, acting for that
  org's users; no org administration.

A refusal never says whether the target exists: a mailbox that is missing, another user's and
another org's all get the same PERMISSION_DENIED, word for word. Every RPC goes through one of
these functions, so a rule changes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord_gateway.domain.errors import (
    AdminRequired,
    MailboxAccessDenied,
    OrgAccessDenied,
    SettingsAccessDisabled,
)
from concord_gateway.domain.principal import Principal, Role

__all__ = [
    "MailboxOwnership",
    "authorize_mailbox",
    "authorize_org_admin",
    "authorize_settings",
    "may_see_mailbox",
    "visible_org",
]


@dataclass(frozen=True)
class MailboxOwnership:
    """What authorisation needs to know about a mailbox."""

    name: str  # mailboxes/{mailbox}
    org: str  # orgs/{org}
    owner_user_id: str


def may_see_mailbox(principal: Principal, mailbox: MailboxOwnership) -> bool:
    if mailbox.org != principal.org_name:
        return False
    return principal.role in (Role.ADMIN, Role.SERVICE) or (
        mailbox.owner_user_id == principal.user_id
    )


def authorize_mailbox(principal: Principal, name: str, mailbox: MailboxOwnership | None) -> None:
    """A user acts on the mailboxes they own; admins and service callers on their org's.

    `mailbox` is None when it does not exist: refused exactly like one the caller may not see,
    so nobody can probe for names.
    """
    if mailbox is None or not may_see_mailbox(principal, mailbox):
        raise MailboxAccessDenied.named(name)


def authorize_org_admin(principal: Principal, org: str) -> None:
    """Org administration (registering mailboxes, org settings and health): admins of `org`."""
    if principal.role is not Role.ADMIN:
        raise AdminRequired("this needs the admin role", metadata={"org": org})
    if org != principal.org_name:
        raise OrgAccessDenied("admins administer their own org only", metadata={"org": org})


def authorize_settings(principal: Principal, name: str, access_disabled: bool) -> None:
    """Mailbox settings whose owner's access the admin turned off are the admin's alone.

    Service callers act for users, so they are refused like the user would be.
    """
    if access_disabled and principal.role is not Role.ADMIN:
        raise SettingsAccessDisabled(
            "the org admin turned off access to these settings", metadata={"name": name}
        )


def visible_org(principal: Principal, requested: str) -> str:
    """The org a listing covers: the caller's own; asking for another is denied."""
    if requested and requested != principal.org_name:
        raise OrgAccessDenied("callers see their own org only", metadata={"org": requested})
    return principal.org_name
