"""The linker's domain: participants, resolutions, blacklists, names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from concord_rpc import InvalidArgument
from concord_rpc.requests import ResourceName

__all__ = [
    "LINKER_ISSUE",
    "InvalidRequest",
    "LinkedRecord",
    "Participant",
    "Resolution",
    "parse_org_name",
]

LINKER_ISSUE = 7


class InvalidRequest(InvalidArgument):
    """A malformed request; `field_violations` say which fields, as BadRequest."""


@dataclass(frozen=True)
class Participant:
    email: str
    display_name: str = ""


@dataclass(frozen=True)
class LinkedRecord:
    sobject_type: str
    id: str
    name: str = ""


@dataclass(frozen=True)
class Resolution:
    """The links of one activity; empty when no participant resolved."""

    who: LinkedRecord | None = None
    what: LinkedRecord | None = None
    relations: Sequence[LinkedRecord] = field(default_factory=tuple)


_ORG = ResourceName("orgs/{org}", error=InvalidRequest)


def parse_org_name(name: str, field: str = "org") -> str:
    return _ORG.parse(name, field)
