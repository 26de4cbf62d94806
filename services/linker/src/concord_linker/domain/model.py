"""The linker's domain: participants, resolutions, blacklists, names."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from concord_rpc import InvalidArgument

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


_ORG = re.compile(r"orgs/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)")


def parse_org_name(name: str, field: str = "org") -> str:
    match = _ORG.fullmatch(name)
    if match is None:
        problem = "is required" if not name else "must look like `orgs/{org}`"
        raise InvalidRequest(f"{field} {problem}", field_violations=[(field, problem)])
    return match.group(1)
