from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import grpc
import pytest

from concord_mail_connector.domain.errors import (
    AccountNotFound,
    InvalidRequest,
    ProviderNotImplemented,
)
from concord_mail_connector.domain.model import (
    AccountUpdate,
    ChangePage,
    Cursor,
    Kind,
    MailboxAccount,
    Provider,
    parse_account_name,
    parse_mailbox_name,
)
from concord_mail_connector.domain.service import MailConnector, ProviderAdapter

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def account(provider: Provider = Provider.EXCHANGE_EWS) -> MailboxAccount:
    return MailboxAccount("demo", "ann@example.com", provider, {}, False, None, NOW, "e1")


class MemoryStore:
    def __init__(
        self,
        accounts: Mapping[str, MailboxAccount] | None = None,
        cursors: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self.accounts = dict(accounts or {})
        self.cursors = dict(cursors or {})

    async def get(self, mailbox: str) -> MailboxAccount | None:
        return self.accounts.get(mailbox)

    async def upsert(self, update: AccountUpdate) -> MailboxAccount:
        raise NotImplementedError

    async def delete(self, mailbox: str, etag: str | None) -> None:
        raise NotImplementedError

    async def cursor(self, mailbox: str, collection: str) -> Cursor | None:
        token = self.cursors.get((mailbox, collection))
        return Cursor(collection, token) if token is not None else None


class EchoAdapter:
    async def list_changes(
        self, account: MailboxAccount, kind: Kind, cursor: Cursor, page_size: int
    ) -> ChangePage:
        return ChangePage(Cursor(cursor.collection, cursor.token + "+1"), has_more=True)


@pytest.mark.parametrize("name", ["mailboxes/demo", "mailboxes/a", "mailboxes/ann-1"])
def test_mailbox_names_parse(name: str) -> None:
    assert parse_mailbox_name(name) == name.removeprefix("mailboxes/")


@pytest.mark.parametrize(
    "name", ["", "demo", "mailboxes/", "mailboxes/Demo", "mailboxes/a/b", "mailboxes/-a", "orgs/x"]
)
def test_malformed_mailbox_names_name_the_field(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_mailbox_name(name, "parent")
    assert [field for field, _ in caught.value.field_violations] == ["parent"]


def test_account_name_needs_the_account_segment() -> None:
    assert parse_account_name("mailboxes/demo/account") == "demo"
    with pytest.raises(InvalidRequest):
        parse_account_name("mailboxes/demo")


async def test_no_account_answers_the_stored_cursor() -> None:
    store = MemoryStore(cursors={("demo", "calendar-item"): "t7"})
    page = await MailConnector(store, {}).list_changes("demo", Kind.CALENDAR_ITEM, "", "t5", 0)
    assert page == ChangePage(Cursor("calendar-item", "t7"))


async def test_no_account_and_no_stored_cursor_keeps_the_callers_cursor() -> None:
    page = await MailConnector(MemoryStore(), {}).list_changes("demo", Kind.TASK, "f1", "t5", 0)
    assert page == ChangePage(Cursor("f1", "t5"))


async def test_ews_account_without_adapter_names_issue_4() -> None:
    domain = MailConnector(MemoryStore({"demo": account()}), {})
    with pytest.raises(ProviderNotImplemented) as caught:
        await domain.list_changes("demo", Kind.EMAIL, "", "", 0)
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.message == "the Exchange (EWS) provider is not implemented yet (issue #4)"
    assert caught.value.metadata == {"issue": "4", "provider": "exchange-ews"}


async def test_providers_without_an_issue_say_so_without_a_number() -> None:
    domain = MailConnector(MemoryStore({"demo": account(Provider.GRAPH)}), {})
    with pytest.raises(ProviderNotImplemented) as caught:
        await domain.list_changes("demo", Kind.EMAIL, "", "", 0)
    assert caught.value.message == "the Microsoft Graph provider is not implemented yet"
    assert "issue" not in caught.value.metadata


async def test_an_account_with_an_adapter_lists_through_it() -> None:
    adapters: dict[Provider, ProviderAdapter] = {Provider.DAV: EchoAdapter()}
    domain = MailConnector(MemoryStore({"demo": account(Provider.DAV)}), adapters)
    page = await domain.list_changes("demo", Kind.CONTACT, "", "t1", 0)
    assert page == ChangePage(Cursor("contact", "t1+1"), has_more=True)


async def test_get_missing_account_is_not_found() -> None:
    with pytest.raises(AccountNotFound) as caught:
        await MailConnector(MemoryStore(), {}).get_account("demo")
    assert caught.value.reason == "MAILBOX_ACCOUNT_NOT_FOUND"
