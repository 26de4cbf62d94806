"""The route table: for each GatewayService method, what its request names and who may call it.

One table, read by the servicer before any method forwards a call (`api.servicer._route`), so
that who may do what is written once and checked the same way for every method; a repository
test keeps it equal to the service's methods and each field path equal to its request's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from google.protobuf.message import Message

from concord_gateway.domain import names

__all__ = ["ROUTES", "Route", "Scope", "target_of"]


class Scope(StrEnum):
    # The mailbox's owner, or an admin of its org (`access.authorize_mailbox`).
    MAILBOX = "mailbox"
    # An admin of the mailbox's org: registration and disconnection are the org's.
    MAILBOX_ADMIN = "mailbox-admin"
    # An admin of the org the request names (the caller's own when it names none).
    ORG_ADMIN = "org-admin"
    # Anyone signed in: the method narrows what it returns to what the caller may see.
    CALLER = "caller"


@dataclass(frozen=True)
class Route:
    scope: Scope
    # The request field (a dotted path) naming the mailbox or org; empty for CALLER.
    field: str = ""
    # Turns the field's value into `mailboxes/{id}` or `orgs/{id}`, or refuses it.
    target: Callable[[str, str], str] = names.mailbox_name
    # The field may be left empty (then the caller's own org).
    optional: bool = False


_SETTINGS = names.mailbox_of_settings

ROUTES: Mapping[str, Route] = {
    "SyncMailbox": Route(Scope.MAILBOX, "mailbox"),
    "SuspendMailbox": Route(Scope.MAILBOX, "mailbox"),
    "ResumeMailbox": Route(Scope.MAILBOX, "mailbox"),
    "RegisterMailbox": Route(Scope.ORG_ADMIN, "mailbox.org", names.org_name, optional=True),
    "DeleteMailbox": Route(Scope.MAILBOX_ADMIN, "name"),
    "ListMailboxes": Route(Scope.CALLER),
    "GetMailboxStatus": Route(Scope.MAILBOX, "mailbox"),
    "ListSessions": Route(Scope.MAILBOX, "parent"),
    "GetSession": Route(
        Scope.MAILBOX, "name", partial(names.mailbox_of_child, collection="sessions")
    ),
    "ListItemErrors": Route(Scope.MAILBOX, "parent"),
    "RetryItem": Route(
        Scope.MAILBOX, "name", partial(names.mailbox_of_child, collection="itemErrors")
    ),
    "ListConflicts": Route(Scope.MAILBOX, "parent"),
    "ResolveConflict": Route(
        Scope.MAILBOX, "name", partial(names.mailbox_of_child, collection="conflicts")
    ),
    # The settings themselves may be locked for the user (`access.authorize_settings`).
    "GetUserSettings": Route(Scope.MAILBOX, "name", _SETTINGS),
    "UpdateUserSettings": Route(Scope.MAILBOX, "settings.name", _SETTINGS),
    "GetOrgSettings": Route(Scope.ORG_ADMIN, "name", names.org_of_settings),
    "UpdateOrgSettings": Route(Scope.ORG_ADMIN, "settings.name", names.org_of_settings),
    "ShareEmail": Route(Scope.MAILBOX, "mailbox"),
    "InitialSearch": Route(Scope.MAILBOX, "mailbox"),
    "GetOrgHealth": Route(Scope.ORG_ADMIN, "org", names.org_name),
}


def target_of(route: Route, request: Message) -> str:
    """The mailbox or org name the request names, checked; empty for an optional field left
    empty."""
    value: object = request
    for part in route.field.split("."):
        value = getattr(value, part)
    assert isinstance(value, str), route.field
    return "" if route.optional and not value else route.target(value, route.field)
