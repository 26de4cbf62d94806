"""The CRM connector's use cases, over a store and the Salesforce adapter (ports)."""

from __future__ import annotations

from typing import Protocol

from concord_crm_connector.domain.errors import ConnectionNotFound
from concord_crm_connector.domain.model import (
    Budget,
    ChangePage,
    ConnectionUpdate,
    Cursor,
    OrgConnection,
)
from concord_rpc import Unimplemented

__all__ = ["SALESFORCE_ISSUE", "CrmConnector", "OrgStore", "Salesforce"]

SALESFORCE_ISSUE = 3


class OrgStore(Protocol):
    async def get(self, org: str) -> OrgConnection | None: ...

    async def upsert(self, update: ConnectionUpdate) -> OrgConnection:
        """Raises EtagMismatch when `update.expected_etag` is set and stale."""

    async def cursor(self, org: str, sobject_type: str) -> Cursor | None: ...

    async def budget(self, org: str) -> Budget | None: ...


class Salesforce(Protocol):
    """The Salesforce adapter (REST, Collections, SOQL/SOSL), arriving with issue #3."""

    async def list_changes(
        self, connection: OrgConnection, cursor: Cursor, page_size: int
    ) -> ChangePage: ...


class CrmConnector:
    def __init__(self, store: OrgStore, salesforce: Salesforce | None) -> None:
        self._store = store
        self._salesforce = salesforce

    async def upsert_connection(self, update: ConnectionUpdate) -> OrgConnection:
        return await self._store.upsert(update)

    async def get_connection(self, org: str) -> OrgConnection:
        connection = await self._store.get(org)
        if connection is None:
            raise ConnectionNotFound(org)
        return connection

    async def list_changes(
        self, org: str, sobject_type: str, cursor_token: str, page_size: int
    ) -> ChangePage:
        connection = await self._store.get(org)
        if connection is None:
            # Nothing to reach yet: no changes, and the cursor stays where it was.
            stored = await self._store.cursor(org, sobject_type)
            return ChangePage(next_cursor=stored or Cursor(sobject_type, cursor_token))
        if self._salesforce is None:
            raise Unimplemented("listing Salesforce changes", issue=SALESFORCE_ISSUE)
        return await self._salesforce.list_changes(
            connection, Cursor(sobject_type, cursor_token), page_size
        )

    async def budget(self, org: str) -> Budget:
        # Nothing measured yet (no call made to the org) reads as zero use of a zero limit.
        return await self._store.budget(org) or Budget()
