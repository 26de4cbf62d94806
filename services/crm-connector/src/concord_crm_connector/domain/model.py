"""The CRM connector's domain: org connections, change cursors, the API budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from concord_crm_connector.domain.errors import InvalidRequest

__all__ = [
    "AuthFlow",
    "Budget",
    "ChangePage",
    "ConnectionUpdate",
    "Cursor",
    "OrgConnection",
    "parse_connection_name",
    "parse_org_name",
]


class AuthFlow(StrEnum):
    JWT_BEARER = "jwt-bearer"
    CLIENT_CREDENTIALS = "client-credentials"
    REFRESH_TOKEN = "refresh-token"
    PASSWORD = "password"


@dataclass(frozen=True)
class OrgConnection:
    """How Concord reaches an org, as stored; the secret itself never leaves the store."""

    org: str
    login_url: str
    auth_flow: AuthFlow
    client_id: str
    username: str
    api_version: str
    has_secret: bool
    update_time: datetime
    etag: str
    # Learned at login, which comes with the Salesforce adapter (issue #3).
    instance_url: str = ""
    organization_id: str = ""


@dataclass(frozen=True)
class ConnectionUpdate:
    org: str
    login_url: str
    auth_flow: AuthFlow
    client_id: str
    username: str
    api_version: str
    # None keeps the stored secret.
    secret: bytes | None
    expected_etag: str | None = None
    # A retry with the request id of the last applied update returns that result unchanged.
    request_id: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a listing of one sObject type stopped; `token` is opaque outside this service."""

    sobject_type: str
    token: str


@dataclass(frozen=True)
class ChangePage:
    """A page of changes; the changes themselves come with the Salesforce adapter (issue #3)."""

    next_cursor: Cursor
    has_more: bool = False
    full_resync_required: bool = False


@dataclass(frozen=True)
class Budget:
    """An org's API use in the current 24-hour window, as last measured."""

    used: int = 0
    limit: int = 0
    concord_used: int = 0
    measure_time: datetime | None = None


# AIP-122 style ids: lowercase letters, digits and `-`.
_ID = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORG = re.compile(rf"orgs/({_ID})")
_CONNECTION = re.compile(rf"orgs/({_ID})/connection")
# Salesforce API names: `Event`, `Concord_Thing__c`.
SOBJECT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")


def _parse(pattern: re.Pattern[str], name: str, field: str, shape: str) -> str:
    match = pattern.fullmatch(name)
    if match is None:
        problem = "is required" if not name else f"must look like `{shape}`, got {name!r}"
        raise InvalidRequest(f"{field} {problem}", field_violations=[(field, problem)])
    return match.group(1)


def parse_org_name(name: str, field: str = "org") -> str:
    """`orgs/{org}` -> the org id; InvalidRequest naming `field` otherwise."""
    return _parse(_ORG, name, field, "orgs/{org}")


def parse_connection_name(name: str, field: str = "name") -> str:
    """`orgs/{org}/connection` -> the org id."""
    return _parse(_CONNECTION, name, field, "orgs/{org}/connection")
