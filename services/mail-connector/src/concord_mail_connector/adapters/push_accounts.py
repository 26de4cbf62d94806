"""The mailbox accounts push watches: listed straight from the accounts table (the account store
has no listing; the watcher needs only ids, providers and etags), opened through the store."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.adapters.tables import mailbox_accounts
from concord_mail_connector.domain.model import Provider
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import AccountRef

__all__ = ["SqlPushAccounts"]


class SqlPushAccounts:
    def __init__(self, engine: AsyncEngine, store: SqlAccountStore) -> None:
        self._engine = engine
        self._store = store

    async def list(self) -> list[AccountRef]:
        table = mailbox_accounts
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(select(table.c.mailbox, table.c.provider, table.c.etag))
            ).all()
        return [AccountRef(row.mailbox, Provider(row.provider), row.etag) for row in rows]

    async def access(self, mailbox: str) -> MailboxAccess | None:
        account = await self._store.get(mailbox)
        if account is None:
            return None
        return MailboxAccess(account, await self._store.secret(mailbox))
