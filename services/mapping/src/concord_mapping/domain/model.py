"""The mapping service's domain: versioned per-org mapping tables and their names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from concord_rpc import Aborted, FailedPrecondition, InvalidArgument, NotFound
from concord_rpc.requests import RESOURCE_ID, ResourceName

__all__ = [
    "InvalidRequest",
    "InvalidTable",
    "Kind",
    "MappingTableNotFound",
    "OrgSchemaUnavailable",
    "StaleTable",
    "TableName",
    "TableVersion",
    "parse_org_name",
    "parse_table_name",
]


class InvalidRequest(InvalidArgument):
    """A malformed request; `field_violations` say which fields, as BadRequest."""


class InvalidTable(InvalidArgument):
    """A table refused by its schema or the org's describe; the version in force stays."""

    reason = "INVALID_MAPPING_TABLE"


class OrgSchemaUnavailable(FailedPrecondition):
    """crm-connector cannot describe the org (no connection): a table cannot be checked, so it
    is refused rather than checked against the shipped describes."""

    reason = "ORG_SCHEMA_UNAVAILABLE"


class StaleTable(Aborted):
    reason = "MAPPING_TABLE_ETAG_MISMATCH"


class MappingTableNotFound(NotFound):
    reason = "MAPPING_TABLE_NOT_FOUND"

    def __init__(self, name: TableName, version: int) -> None:
        which = f"version {version} of " if version else ""
        # Only a pinned version can be missing: without an override the default is in force.
        super().__init__(
            f"{which}mapping table {name} does not exist", metadata={"name": str(name)}
        )


class Kind(StrEnum):
    CALENDAR_ITEM = "calendar-item"
    TASK = "task"
    CONTACT = "contact"
    EMAIL = "email"

    @property
    def payload(self) -> str:
        """The MailItem payload field this kind travels in."""
        return self.value.replace("-", "_")


@dataclass(frozen=True)
class TableName:
    org: str
    kind: Kind

    def __str__(self) -> str:
        return f"orgs/{self.org}/mappingTables/{self.kind.value}"


@dataclass(frozen=True)
class TableVersion:
    """One stored version of an org's table (or the built-in default, version 0); `content` is
    the table's rules as JSON."""

    name: TableName
    version: int
    content: Mapping[str, Any]
    etag: str
    create_time: datetime | None
    update_user_id: str
    is_default: bool = False


_ORG = ResourceName("orgs/{org}", error=InvalidRequest)
_TABLE = re.compile(rf"orgs/({RESOURCE_ID})/mappingTables/([a-z-]+)")
_KINDS = {kind.value: kind for kind in Kind}


def parse_org_name(name: str, field: str = "org") -> str:
    return _ORG.parse(name, field)


def parse_table_name(name: str, field: str = "name") -> TableName:
    """`orgs/{org}/mappingTables/{kind}`, kind one of calendar-item, task, contact, email."""
    match = _TABLE.fullmatch(name)
    if match is None or match.group(2) not in _KINDS:
        shape = "must look like `orgs/{org}/mappingTables/{calendar-item|task|contact|email}`"
        problem = "is required" if not name else shape
        raise InvalidRequest(f"{field} {problem}", field_violations=[(field, problem)])
    return TableName(match.group(1), _KINDS[match.group(2)])
