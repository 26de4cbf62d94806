"""Who may do what: the authorisation rules, one function per kind of target.

Issue #8 extends these (settings locks, access to settings switched off, service tokens scoped
further); every RPC already goes through one of them, so a rule changes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord_gateway.domain.errors import (
    AdminRequired,
    MailboxAccessDenied,
    MailboxNotFound,
    OrgAccessDenied,
)
from concord_gateway.domain.principal import Principal, Role

__all__ = [
    "MailboxOwnership",
    "authorize_mailbox",
    "authorize_org_admin",
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


def authorize_mailbox(principal: Principal, mailbox: MailboxOwnership) -> None:
    """A user acts on the mailboxes they own; admins and service callers on their org's."""
    if mailbox.org != principal.org_name:
        # Exactly what a missing mailbox gives: another org cannot probe for names.
        raise MailboxNotFound.named(mailbox.name)
    if not may_see_mailbox(principal, mailbox):
        raise MailboxAccessDenied(
            "the mailbox belongs to another user", metadata={"mailbox": mailbox.name}
        )


def authorize_org_admin(principal: Principal, org: str) -> None:
    """Org administration (registering mailboxes, org settings and health): admins of `org`."""
    if principal.role is not Role.ADMIN:
        raise AdminRequired("this needs the admin role", metadata={"org": org})
    if org != principal.org_name:
        raise OrgAccessDenied("admins administer their own org only", metadata={"org": org})


def visible_org(principal: Principal, requested: str) -> str:
    """The org a listing covers: the caller's own; asking for another is denied."""
    if requested and requested != principal.org_name:
        raise OrgAccessDenied("callers see their own org only", metadata={"org": requested})
    return principal.org_name
