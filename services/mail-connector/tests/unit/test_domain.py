from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from concord_mail_connector.domain.errors import (
    AccountNotFound,
    InvalidRequest,
    ProviderNotImplemented,
)
from concord_mail_connector.domain.model import (
    AccountUpdate,
    Cursor,
    Kind,
    MailboxAccount,
    Provider,
    parse_account_name,
    parse_mailbox_name,
)
from concord_mail_connector.domain.provider import (
    Collection,
    FoundItems,
    MailboxAccess,
    ProviderChangePage,
    WriteResult,
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

    async def secret(self, mailbox: str) -> bytes | None:
        return b"s3cret" if mailbox in self.accounts else None


def page(cursor: Cursor, *, has_more: bool = False) -> ProviderChangePage:
    return ProviderChangePage(changes=(), next_cursor=cursor, has_more=has_more)


class EchoAdapter:
    def __init__(self) -> None:
        self.secrets: list[bytes | None] = []

    async def list_changes(
        self,
        mailbox: MailboxAccess,
        kind: Kind,
        cursor: Cursor,
        page_size: int,
        deadline: float | None = None,
        include_content: bool = False,
        refs_only: bool = False,
        known: Mapping[str, str] | None = None,
    ) -> ProviderChangePage:
        self.secrets.append(mailbox.secret)
        return page(Cursor(cursor.collection, cursor.token + "+1"), has_more=True)

    async def get_items(
        self,
        mailbox: MailboxAccess,
        refs: object,
        deadline: float | None = None,
        link_ids: object = (),
        kind: Kind | None = None,
    ) -> FoundItems:
        raise NotImplementedError

    async def apply_items(
        self, mailbox: MailboxAccess, writes: object, deadline: float | None = None
    ) -> list[WriteResult]:
        raise NotImplementedError

    async def list_collections(
        self, mailbox: MailboxAccess, kind: Kind | None, deadline: float | None = None
    ) -> list[Collection]:
        raise NotImplementedError


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
    got = await MailConnector(store, {}).list_changes("demo", Kind.CALENDAR_ITEM, "", "t5", 0)
    assert got == page(Cursor("calendar-item", "t7"))


async def test_no_account_and_no_stored_cursor_keeps_the_callers_cursor() -> None:
    got = await MailConnector(MemoryStore(), {}).list_changes("demo", Kind.TASK, "f1", "t5", 0)
    assert got == page(Cursor("f1", "t5"))


async def test_ews_account_without_adapter_names_issue_4() -> None:
    domain = MailConnector(MemoryStore({"demo": account()}), {})
    with pytest.raises(ProviderNotImplemented) as caught:
        await domain.list_changes("demo", Kind.EMAIL, "", "", 0)
    assert caught.value.code == "UNIMPLEMENTED"
    assert caught.value.message == "the Exchange (EWS) provider is not implemented yet (issue #4)"
    assert caught.value.metadata == {"issue": "4", "provider": "exchange-ews"}


async def test_providers_without_an_issue_say_so_without_a_number() -> None:
    domain = MailConnector(MemoryStore({"demo": account(Provider.DAV)}), {})
    with pytest.raises(ProviderNotImplemented) as caught:
        await domain.list_changes("demo", Kind.EMAIL, "", "", 0)
    assert caught.value.message == "the IMAP/CalDAV/CardDAV provider is not implemented yet"
    assert "issue" not in caught.value.metadata


async def test_an_account_with_an_adapter_lists_through_it() -> None:
    echo = EchoAdapter()
    adapters: dict[Provider, ProviderAdapter] = {Provider.DAV: echo}
    domain = MailConnector(MemoryStore({"demo": account(Provider.DAV)}), adapters)
    got = await domain.list_changes("demo", Kind.CONTACT, "", "t1", 0)
    assert got == page(Cursor("contact", "t1+1"), has_more=True)
    # The adapter gets the opened secret with the account, for this call only.
    assert echo.secrets == [b"s3cret"]


async def test_get_missing_account_is_not_found() -> None:
    with pytest.raises(AccountNotFound) as caught:
        await MailConnector(MemoryStore(), {}).get_account("demo")
    assert caught.value.reason == "MAILBOX_ACCOUNT_NOT_FOUND"
