from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from concord_crm_connector.domain.errors import ConnectionNotFound, InvalidRequest
from concord_crm_connector.domain.model import (
    AuthFlow,
    Budget,
    ChangePage,
    ConnectionUpdate,
    Cursor,
    OrgConnection,
    parse_connection_name,
    parse_org_name,
)
from concord_crm_connector.domain.service import CrmConnector
from concord_crm_connector.settings import CrmConnectorSettings
from concord_rpc import Unimplemented
from concord_settings import SettingsError

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, tzinfo=UTC)
CONNECTION = OrgConnection(
    "demo", "https://login.example.com", AuthFlow.PASSWORD, "cid", "u", "", True, NOW, "e"
)


class MemoryStore:
    def __init__(
        self,
        connection: OrgConnection | None = None,
        cursor: Cursor | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.connection, self.stored_cursor, self.stored_budget = connection, cursor, budget

    async def get(self, org: str) -> OrgConnection | None:
        return self.connection

    async def upsert(self, update: ConnectionUpdate) -> OrgConnection:
        raise NotImplementedError

    async def cursor(self, org: str, sobject_type: str) -> Cursor | None:
        return self.stored_cursor

    async def budget(self, org: str) -> Budget | None:
        return self.stored_budget

    async def secret(self, org: str) -> bytes | None:
        return None

    async def record_login(self, org: str, instance_url: str, organization_id: str) -> None:
        raise NotImplementedError


def test_org_names() -> None:
    assert parse_org_name("orgs/demo") == "demo"
    assert parse_connection_name("orgs/demo/connection") == "demo"
    for bad in ("", "demo", "orgs/Demo", "orgs/demo/connection"):
        with pytest.raises(InvalidRequest):
            parse_org_name(bad)


async def test_no_connection_lists_nothing_from_the_stored_cursor() -> None:
    domain = CrmConnector(MemoryStore(cursor=Cursor("Event", "t9")), salesforce=None)
    assert await domain.list_changes("demo", "Event", "t1", 0) == ChangePage(Cursor("Event", "t9"))
    domain = CrmConnector(MemoryStore(), salesforce=None)
    assert await domain.list_changes("demo", "Task", "t1", 0) == ChangePage(Cursor("Task", "t1"))


async def test_a_connection_without_the_adapter_names_issue_3() -> None:
    domain = CrmConnector(MemoryStore(CONNECTION), salesforce=None)
    with pytest.raises(Unimplemented) as caught:
        await domain.list_changes("demo", "Event", "", 0)
    assert caught.value.code == "UNIMPLEMENTED"
    assert caught.value.issue == 3


async def test_budget_is_zero_until_measured_and_stored_after() -> None:
    assert await CrmConnector(MemoryStore(), None).budget("demo") == Budget(0, 0, 0, None)
    measured = Budget(10, 100, 4, NOW)
    assert await CrmConnector(MemoryStore(budget=measured), None).budget("demo") == measured


async def test_missing_connection_is_not_found() -> None:
    with pytest.raises(ConnectionNotFound):
        await CrmConnector(MemoryStore(), None).get_connection("demo")


def test_settings_read_the_prefixed_key_and_reject_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRM_CONNECTOR_ENCRYPTION_KEY", Fernet.generate_key().decode())
    assert CrmConnectorSettings.from_env().port == 50053
    monkeypatch.setenv("CRM_CONNECTOR_ENCRYPTION_KEY", "short")
    with pytest.raises(SettingsError, match="CRM_CONNECTOR_ENCRYPTION_KEY"):
        CrmConnectorSettings.from_env()
