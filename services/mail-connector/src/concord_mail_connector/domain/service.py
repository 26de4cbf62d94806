"""The mail connector's use cases, over a store and provider adapters (ports)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from concord_mail_connector.domain.errors import AccountNotFound, ProviderNotImplemented
from concord_mail_connector.domain.model import (
    AccountUpdate,
    ChangePage,
    Cursor,
    Kind,
    MailboxAccount,
    Provider,
    default_collection,
)

__all__ = ["AccountStore", "MailConnector", "ProviderAdapter"]


class AccountStore(Protocol):
    async def get(self, mailbox: str) -> MailboxAccount | None: ...

    async def upsert(self, update: AccountUpdate) -> MailboxAccount:
        """Raises EtagMismatch when `update.expected_etag` is set and stale."""

    async def delete(self, mailbox: str, etag: str | None) -> None:
        """Also forgets the mailbox's cursors and subscriptions; raises AccountNotFound."""

    async def cursor(self, mailbox: str, collection: str) -> Cursor | None: ...


class ProviderAdapter(Protocol):
    """One mail system (EWS, Graph, Google, DAV); the adapters arrive with issue #4 and later."""

    async def list_changes(
        self, account: MailboxAccount, kind: Kind, cursor: Cursor, page_size: int
    ) -> ChangePage: ...


class MailConnector:
    def __init__(self, store: AccountStore, providers: Mapping[Provider, ProviderAdapter]) -> None:
        self._store = store
        self._providers = providers

    async def upsert_account(self, update: AccountUpdate) -> MailboxAccount:
        return await self._store.upsert(update)

    async def get_account(self, mailbox: str) -> MailboxAccount:
        account = await self._store.get(mailbox)
        if account is None:
            raise AccountNotFound(mailbox)
        return account

    async def delete_account(self, mailbox: str, etag: str | None) -> None:
        await self._store.delete(mailbox, etag)

    async def list_changes(
        self, mailbox: str, kind: Kind, collection: str, cursor_token: str, page_size: int
    ) -> ChangePage:
        key = collection or default_collection(kind)
        account = await self._store.get(mailbox)
        if account is None:
            # Nothing to reach yet: no changes, and the cursor stays where it was, so the
            # caller commits nothing new and a later account starts from the same point.
            stored = await self._store.cursor(mailbox, key)
            return ChangePage(next_cursor=stored or Cursor(key, cursor_token))
        adapter = self._providers.get(account.provider)
        if adapter is None:
            raise ProviderNotImplemented(
                account.provider.label, account.provider.value, account.provider.issue
            )
        return await adapter.list_changes(account, kind, Cursor(key, cursor_token), page_size)
