"""The CRM connector's domain: org connections, change cursors, the API budget."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from concord_crm_connector.domain.errors import InvalidRequest
from concord_rpc.requests import ResourceName

__all__ = [
    "LINK_FIELD",
    "ActivityLinks",
    "AuthFlow",
    "Budget",
    "Change",
    "ChangePage",
    "ConnectionUpdate",
    "Credentials",
    "Cursor",
    "FieldDescription",
    "FieldFilter",
    "ObjectDescription",
    "OrgConnection",
    "PicklistEntry",
    "Record",
    "RecordError",
    "RecordWrite",
    "SearchTarget",
    "WriteOperation",
    "WriteOutcome",
    "WriteStatus",
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
class Record:
    """One Salesforce record as read: JSON values, dates and datetimes as ISO 8601 strings."""

    sobject_type: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    system_modstamp: datetime | None = None
    link_id: str = ""
    is_deleted: bool = False
    # LastModifiedById is the user crm-connector logs in as: the last change was Concord's
    # (SystemModstamp is kept to the second, so only this tells a same-second edit apart).
    last_modified_by_concord: bool = False


@dataclass(frozen=True)
class Change:
    """An upsert carries the record's content; a delete only its type and Id."""

    record: Record
    deleted: bool = False


@dataclass(frozen=True)
class ChangePage:
    """A page of changes and the cursor that covers exactly them."""

    next_cursor: Cursor
    changes: tuple[Change, ...] = ()
    has_more: bool = False
    full_resync_required: bool = False


@dataclass(frozen=True)
class Budget:
    """An org's API use in the current 24-hour window, as last measured."""

    used: int = 0
    limit: int = 0
    concord_used: int = 0
    measure_time: datetime | None = None


@dataclass(frozen=True)
class Credentials:
    """A connection plus its opened secret, held only while logging in."""

    connection: OrgConnection
    secret: bytes


class WriteOperation(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"
    # An activity marked cancelled (`domain.activities`): a read of its subject, then an update.
    MARK_CANCELLED = "mark-cancelled"


@dataclass(frozen=True)
class ActivityLinks:
    """Who and what an activity concerns, by record Id (the linker's answer)."""

    who_id: str = ""
    what_id: str = ""
    # Further people an Event is with, beside `who_id` (EventRelation rows once it exists).
    invitee_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordWrite:
    operation: WriteOperation
    sobject_type: str
    id: str = ""
    link_id: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    fields_to_null: tuple[str, ...] = ()
    expected_system_modstamp: datetime | None = None
    # Creates and upserts of Events and Tasks: set as WhoId/WhatId, and EventRelation rows.
    links: ActivityLinks | None = None


class WriteStatus(StrEnum):
    OK = "ok"
    CONFLICT = "conflict"
    NOT_FOUND = "not-found"
    INVALID = "invalid"
    RETRYABLE = "retryable"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"


@dataclass(frozen=True)
class RecordError:
    """Salesforce's own status code and message for one record."""

    code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteOutcome:
    status: WriteStatus
    id: str = ""
    link_id: str = ""
    created: bool = False
    errors: tuple[RecordError, ...] = ()
    # The record's SystemModstamp after the write (read back: Collections do not answer it).
    system_modstamp: datetime | None = None


@dataclass(frozen=True)
class FieldFilter:
    """`field IN values`; the adapter escapes the values."""

    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class SearchTarget:
    sobject_type: str
    fields: tuple[str, ...] = ()
    limit: int = 0


@dataclass(frozen=True)
class PicklistEntry:
    value: str
    label: str
    active: bool
    default_value: bool


@dataclass(frozen=True)
class FieldDescription:
    name: str
    label: str
    type: str
    length: int
    createable: bool
    updateable: bool
    nillable: bool
    picklist_values: tuple[PicklistEntry, ...]
    reference_to: tuple[str, ...]
    external_id: bool
    unique: bool
    custom: bool


@dataclass(frozen=True)
class ObjectDescription:
    name: str
    label: str
    createable: bool
    updateable: bool
    deletable: bool
    fields: tuple[FieldDescription, ...]


# The unique external-id field every record Concord writes carries: the link's UUID.
LINK_FIELD = "Concord_Link_Id__c"
# Field API names: `Subject`, `Who.Name` (a parent relationship), `Concord_Link_Id__c`.
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}(\.[A-Za-z][A-Za-z0-9_]{0,79}){0,4}")

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
