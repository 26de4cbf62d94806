"""The authenticated caller, as the verified token's claims describe them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from concord_gateway.domain.errors import TokenInvalid
from concord_rpc import Identity

__all__ = ["Principal", "Role", "principal_from_claims"]


class Role(StrEnum):
    #: Acts on the mailboxes they own, in their org.
    USER = "user"
    #: Acts on every mailbox of their org, and on the org's settings.
    ADMIN = "admin"
    #: A backend (the sidebar's) acting for the users of one org; no org administration.
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    user_id: str
    org: str
    role: Role

    @property
    def identity(self) -> Identity:
        """How internal services see this caller (signed into peer calls)."""
        return Identity(subject=self.user_id, org=self.org, role=self.role.value)

    @property
    def org_name(self) -> str:
        """The org as a resource name, `orgs/{org}`, the form mailboxes carry."""
        return f"orgs/{self.org}"


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """`sub` is the user id, `org` the org id, `role` one of :class:`Role`."""
    user_id = _text_claim(claims, "sub")
    org = _text_claim(claims, "org")
    if "/" in org:
        # The claim is the id; accepting `orgs/x` too would make two spellings of one org.
        raise TokenInvalid("its org claim is a resource name, not an org id")
    role = claims.get("role")
    if not isinstance(role, str) or role not in {r.value for r in Role}:
        raise TokenInvalid("its role claim is not one of " + ", ".join(r.value for r in Role))
    return Principal(user_id=user_id, org=org, role=Role(role))


def _text_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip():
        raise TokenInvalid(f"it has no {name} claim")
    return value
