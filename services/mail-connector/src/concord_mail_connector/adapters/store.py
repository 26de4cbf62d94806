"""Mailbox accounts and cursors in SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, Update, delete, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_mail_connector.adapters.tables import mailbox_accounts, subscriptions, sync_cursors
from concord_mail_connector.domain.errors import AccountNotFound, EtagMismatch
from concord_mail_connector.domain.model import AccountUpdate, Cursor, MailboxAccount, Provider
from concord_secrets import SecretBox

__all__ = ["SqlAccountStore"]

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlAccountStore:
    def __init__(self, engine: AsyncEngine, cipher: SecretBox, clock: Clock = _utc_now) -> None:
        self._engine = engine
        self._cipher = cipher
        self._clock = clock

    async def get(self, mailbox: str) -> MailboxAccount | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(mailbox_accounts).where(mailbox_accounts.c.mailbox == mailbox)
                )
            ).first()
        return _account(row) if row else None

    async def upsert(self, change: AccountUpdate) -> MailboxAccount:
        table = mailbox_accounts
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(table).where(table.c.mailbox == change.mailbox).with_for_update()
                )
            ).first()
            if row is not None and change.request_id and row.request_id == change.request_id:
                return _account(row)
            if change.expected_etag and (row is None or row.etag != change.expected_etag):
                raise EtagMismatch(change.mailbox)
            now = self._clock()
            values: dict[str, Any] = {
                "address": change.address,
                "provider": change.provider.value,
                "provider_settings": dict(change.settings),
                "update_time": now,
                "etag": uuid.uuid4().hex,
                "request_id": change.request_id or None,
            }
            if change.org_id and (row is None or row.org_id is None):
                values["org_id"] = change.org_id
            if change.secret is not None:
                values["secret_ciphertext"] = self._cipher.seal(change.secret)
                values["secret_update_time"] = now
            statement: Insert | Update
            if row is None:
                statement = insert(table).values(mailbox=change.mailbox, **values)
            else:
                statement = update(table).where(table.c.mailbox == change.mailbox).values(values)
            await conn.execute(statement)
            stored = (
                await conn.execute(select(table).where(table.c.mailbox == change.mailbox))
            ).one()
        return _account(stored)

    async def delete(self, mailbox: str, etag: str | None) -> None:
        table = mailbox_accounts
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(table.c.etag).where(table.c.mailbox == mailbox).with_for_update()
                )
            ).first()
            if row is None:
                raise AccountNotFound(mailbox)
            if etag and row.etag != etag:
                raise EtagMismatch(mailbox)
            for owned in (sync_cursors, subscriptions, table):
                await conn.execute(delete(owned).where(owned.c.mailbox == mailbox))

    async def cursor(self, mailbox: str, collection: str) -> Cursor | None:
        async with self._engine.connect() as conn:
            token = (
                await conn.execute(
                    select(sync_cursors.c.token).where(
                        sync_cursors.c.mailbox == mailbox, sync_cursors.c.collection == collection
                    )
                )
            ).scalar_one_or_none()
        return Cursor(collection, token) if token is not None else None

    async def secret(self, mailbox: str) -> bytes | None:
        """The decrypted secret, for the provider adapters only; never for an API answer."""
        async with self._engine.connect() as conn:
            token = (
                await conn.execute(
                    select(mailbox_accounts.c.secret_ciphertext).where(
                        mailbox_accounts.c.mailbox == mailbox
                    )
                )
            ).scalar_one_or_none()
        return self._cipher.open(token) if token is not None else None


def _account(row: Row[Any]) -> MailboxAccount:
    return MailboxAccount(
        mailbox=row.mailbox,
        address=row.address,
        provider=Provider(row.provider),
        settings=dict(row.provider_settings),
        has_secret=row.secret_ciphertext is not None,
        secret_update_time=row.secret_update_time,
        update_time=row.update_time,
        etag=row.etag,
        org_id=row.org_id or "",
    )
