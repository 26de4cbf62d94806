"""What the mapping domain needs from outside: the org's own Salesforce schema."""

from __future__ import annotations

from typing import Protocol

from concord_mapping.domain.describe import SObjectDescribe

__all__ = ["OrgSchema"]


class OrgSchema(Protocol):
    async def describe(self, org: str, sobject: str) -> SObjectDescribe:
        """The org's live describe of `sobject` (`live=True`); raises OrgSchemaUnavailable when
        the org cannot be described (no connection)."""
