"""The mail connector's domain: mailbox accounts, object kinds, change cursors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from concord_mail_connector.domain.errors import InvalidRequest
from concord_rpc.requests import ResourceName

__all__ = [
    "AccountUpdate",
    "Cursor",
    "Kind",
    "MailboxAccount",
    "Provider",
    "parse_account_name",
    "parse_mailbox_name",
]


class Provider(StrEnum):
    EXCHANGE_EWS = "exchange-ews"
    GRAPH = "graph"
    GOOGLE = "google"
    DAV = "dav"

    @property
    def label(self) -> str:
        return _PROVIDER_LABELS[self]

    @property
    def issue(self) -> int | None:
        """The issue that brings this provider's adapter, where one is filed."""
        return _PROVIDER_ISSUES.get(self)


_PROVIDER_LABELS = {
    Provider.EXCHANGE_EWS: "Exchange (EWS)",
    Provider.GRAPH: "Microsoft Graph",
    Provider.GOOGLE: "Google",
    Provider.DAV: "IMAP/CalDAV/CardDAV",
}
_PROVIDER_ISSUES = {Provider.EXCHANGE_EWS: 4, Provider.GRAPH: 13, Provider.GOOGLE: 14}


class Kind(StrEnum):
    CALENDAR_ITEM = "calendar-item"
    TASK = "task"
    CONTACT = "contact"
    EMAIL = "email"


@dataclass(frozen=True)
class MailboxAccount:
    """How Concord reaches a mailbox, as stored; the secret itself never leaves the store."""

    mailbox: str
    address: str
    provider: Provider
    settings: Mapping[str, Any]
    has_secret: bool
    secret_update_time: datetime | None
    update_time: datetime
    etag: str
    # The org the account belongs to; empty when no vouched caller has written it yet.
    org_id: str = ""


@dataclass(frozen=True)
class AccountUpdate:
    mailbox: str
    address: str
    provider: Provider
    settings: Mapping[str, Any]
    # None keeps the stored secret.
    secret: bytes | None
    # When set, the update applies only to the account with this etag.
    expected_etag: str | None = None
    # A retry with the request id of the last applied update returns that result unchanged.
    request_id: str | None = None
    # The writing caller's org: recorded when the account has none; never changes one.
    org_id: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a listing of one collection stopped; `token` is the provider's, opaque to others."""

    collection: str
    token: str


def default_collection(kind: Kind) -> str:
    """The cursor key of a kind's default collection (primary calendar, contacts, ...)."""
    return kind.value


_MAILBOX = ResourceName("mailboxes/{mailbox}", error=InvalidRequest)
_ACCOUNT = ResourceName("mailboxes/{mailbox}/account", error=InvalidRequest)


def parse_mailbox_name(name: str, field: str = "mailbox") -> str:
    """`mailboxes/{mailbox}` -> the mailbox id; InvalidRequest naming `field` otherwise."""
    return _MAILBOX.parse(name, field)


def parse_account_name(name: str, field: str = "name") -> str:
    """`mailboxes/{mailbox}/account` -> the mailbox id."""
    return _ACCOUNT.parse(name, field)
