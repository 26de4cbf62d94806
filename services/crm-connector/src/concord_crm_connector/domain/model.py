"""The CRM connector's domain: org connections, change cursors, the API budget."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from concord_crm_connector.domain.errors import InvalidRequest
from concord_rpc.requests import ResourceName

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


_ORG = ResourceName("orgs/{org}", error=InvalidRequest)
_CONNECTION = ResourceName("orgs/{org}/connection", error=InvalidRequest)
# Salesforce API names: `Event`, `Concord_Thing__c`.
SOBJECT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")


def parse_org_name(name: str, field: str = "org") -> str:
    """`orgs/{org}` -> the org id; InvalidRequest naming `field` otherwise."""
    return _ORG.parse(name, field)


def parse_connection_name(name: str, field: str = "name") -> str:
    """`orgs/{org}/connection` -> the org id."""
    return _CONNECTION.parse(name, field)
