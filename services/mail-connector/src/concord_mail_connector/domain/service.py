"""The mail connector's use cases, over a store and provider adapters (ports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from concord.common.v1 import resources_pb2
from concord_mail_connector.domain.errors import AccountNotFound, ProviderNotImplemented
from concord_mail_connector.domain.model import (
    AccountUpdate,
    Cursor,
    Kind,
    MailboxAccount,
    Provider,
    default_collection,
)
from concord_mail_connector.domain.own_writes import OwnWrites
from concord_mail_connector.domain.provider import (
    Collection,
    FoundItems,
    MailboxAccess,
    MailProvider,
    ProviderChangePage,
    Write,
    WriteResult,
)
from concord_rpc.identity import current_identity, require_org

__all__ = ["AccountStore", "MailConnector", "ProviderAdapter"]


class AccountStore(Protocol):
    async def get(self, mailbox: str) -> MailboxAccount | None: ...

    async def upsert(self, update: AccountUpdate) -> MailboxAccount:
        """Raises EtagMismatch when `update.expected_etag` is set and stale."""

    async def delete(self, mailbox: str, etag: str | None) -> None:
        """Also forgets the mailbox's cursors and subscriptions; raises AccountNotFound."""

    async def cursor(self, mailbox: str, collection: str) -> Cursor | None: ...

    async def secret(self, mailbox: str) -> bytes | None:
        """The opened secret, for provider adapters only."""


# Kept as the name the skeleton's callers know.
ProviderAdapter = MailProvider


class MailConnector:
    def __init__(
        self,
        store: AccountStore,
        providers: Mapping[Provider, MailProvider],
        own_writes: OwnWrites | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        # What the writes left, for the push path to know their notifications for echoes.
        self._own_writes = own_writes or OwnWrites()

    async def upsert_account(self, update: AccountUpdate) -> MailboxAccount:
        existing = await self._store.get(update.mailbox)
        if existing is not None:
            _owned(existing)
        caller = current_identity()
        return await self._store.upsert(
            replace(update, org_id=caller.org) if caller is not None else update
        )

    async def get_account(self, mailbox: str) -> MailboxAccount:
        account = await self._store.get(mailbox)
        if account is None:
            raise AccountNotFound(mailbox)
        return _owned(account)

    async def delete_account(self, mailbox: str, etag: str | None) -> None:
        await self.get_account(mailbox)
        await self._store.delete(mailbox, etag)

    async def list_changes(
        self,
        mailbox: str,
        kind: Kind,
        collection: str,
        cursor_token: str,
        page_size: int,
        deadline: float | None = None,
        include_content: bool = False,
        refs_only: bool = False,
        known: Mapping[str, str] | None = None,
    ) -> ProviderChangePage:
        key = collection or default_collection(kind)
        account = await self._store.get(mailbox)
        if account is None:
            # Nothing to reach yet: no changes, and the cursor stays where it was, so the
            # caller commits nothing new and a later account starts from the same point.
            stored = await self._store.cursor(mailbox, key)
            return ProviderChangePage(changes=(), next_cursor=stored or Cursor(key, cursor_token))
        provider, access = await self._open(account)
        return await provider.list_changes(
            access,
            kind,
            Cursor(key, cursor_token),
            page_size,
            deadline,
            include_content,
            refs_only=refs_only,
            known=known,
        )

    async def get_items(
        self,
        mailbox: str,
        refs: Sequence[resources_pb2.ItemRef],
        deadline: float | None = None,
        link_ids: Sequence[str] = (),
        kind: Kind | None = None,
    ) -> FoundItems:
        provider, access = await self._open(await self.get_account(mailbox))
        return await provider.get_items(access, refs, deadline, link_ids, kind)

    async def apply_items(
        self, mailbox: str, writes: Sequence[Write], deadline: float | None = None
    ) -> list[WriteResult]:
        account = await self.get_account(mailbox)
        provider, access = await self._open(account)
        token = self._own_writes.begin(account.mailbox)
        results: list[WriteResult] = []
        try:
            results = await provider.apply_items(access, writes, deadline)
        finally:
            self._own_writes.end(account.mailbox, token, writes, results)
        return results

    async def list_collections(
        self, mailbox: str, kind: Kind | None, deadline: float | None = None
    ) -> list[Collection]:
        provider, access = await self._open(await self.get_account(mailbox))
        return await provider.list_collections(access, kind, deadline)

    async def _open(self, account: MailboxAccount) -> tuple[MailProvider, MailboxAccess]:
        _owned(account)
        provider = self._providers.get(account.provider)
        if provider is None:
            raise ProviderNotImplemented(
                account.provider.label, account.provider.value, account.provider.issue
            )
        return provider, MailboxAccess(account, await self._store.secret(account.mailbox))


def _owned(account: MailboxAccount) -> MailboxAccount:
    """The account, if the vouched caller acts for its org (CALLER_NOT_IN_ORG otherwise): a
    call for one org's mailbox never reads or writes another org's."""
    if account.org_id:
        require_org(account.org_id)
    return account
