"""Mailboxes and their settings in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.answers import SqlAnswers
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.errors import EtagMismatch, MailboxAlreadyExists, MailboxNotFound
from concord_reconciler.kernel.names import mailbox_name
from concord_reconciler.kernel.schema import (
    item_errors,
    mailbox_settings,
    mailboxes,
    org_settings,
    sessions,
)
from concord_reconciler.kernel.sql import etag, from_us, to_us
from concord_reconciler.kernel.wire import timestamp
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState


@dataclass(frozen=True)
class SqlMailboxStore(SqlAnswers):
    """Mailboxes and their settings; creating a mailbox stores its request's answer in the same
    transaction."""

    # -- mailboxes -----------------------------------------------------------------------

    async def get_mailbox(self, mailbox_id: str) -> MailboxRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(mailboxes).where(mailboxes.c.mailbox_id == mailbox_id)))
                .mappings()
                .first()
            )
        return mailbox_of(row) if row else None

    async def insert_mailbox(
        self, mailbox: MailboxRecord, *, response: tuple[str, str, bytes] | None = None
    ) -> None:
        """Store a new mailbox (and, in the same transaction, the response to its request id).

        MailboxAlreadyExists if the id is taken, also when a concurrent request took it.
        """
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(mailboxes).values(
                        mailbox_id=mailbox.mailbox_id,
                        org_id=mailbox.org_id,
                        owner_user_id=mailbox.owner_user_id,
                        crm_user_id=mailbox.crm_user_id,
                        address=mailbox.address,
                        provider=mailbox.provider,
                        state=int(mailbox.state),
                        suspended_reason=mailbox.suspended_reason,
                        sync_interval_seconds=mailbox.sync_interval_seconds,
                        create_time_us=to_us(mailbox.create_time),
                        update_time_us=to_us(mailbox.update_time),
                        version=mailbox.version,
                    )
                )
                if response is not None:
                    await self._save_response(conn, *response)
        except IntegrityError:
            raise MailboxAlreadyExists(mailbox.name) from None

    async def list_mailboxes(
        self, *, org_id: str | None, state: MailboxState | None, after: str | None, limit: int
    ) -> list[MailboxRecord]:
        query = select(mailboxes).order_by(mailboxes.c.mailbox_id).limit(limit)
        if org_id is not None:
            query = query.where(mailboxes.c.org_id == org_id)
        if state is not None:
            query = query.where(mailboxes.c.state == int(state))
        if after is not None:
            query = query.where(mailboxes.c.mailbox_id > after)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [mailbox_of(row) for row in rows]

    async def delete_mailbox(self, mailbox_id: str, *, expected_etag: str = "") -> None:
        """Delete a mailbox with its sessions, settings and item errors."""
        async with self.engine.begin() as conn:
            version = await conn.scalar(
                select(mailboxes.c.version).where(mailboxes.c.mailbox_id == mailbox_id)
            )
            if version is None:
                raise MailboxNotFound(mailbox_name(mailbox_id))
            if expected_etag and expected_etag != etag(version):
                raise EtagMismatch(mailbox_name(mailbox_id))
            # Children explicitly, not only by ON DELETE CASCADE: SQLite enforces it only with
            # the foreign_keys pragma, which another client of the file may not set.
            for table in (sessions, item_errors, mailbox_settings):
                await conn.execute(delete(table).where(table.c.mailbox_id == mailbox_id))
            await conn.execute(delete(mailboxes).where(mailboxes.c.mailbox_id == mailbox_id))

    async def set_mailbox_state(
        self, mailbox_id: str, state: MailboxState, reason: str
    ) -> MailboxRecord:
        now = to_us(utcnow())
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(mailboxes)
                .where(mailboxes.c.mailbox_id == mailbox_id)
                .values(
                    state=int(state),
                    suspended_reason=reason,
                    update_time_us=now,
                    version=mailboxes.c.version + 1,
                )
            )
            if result.rowcount == 0:
                raise MailboxNotFound(mailbox_name(mailbox_id))
            row = (
                (await conn.execute(select(mailboxes).where(mailboxes.c.mailbox_id == mailbox_id)))
                .mappings()
                .one()
            )
        return mailbox_of(row)

    # -- settings ------------------------------------------------------------------------

    async def get_org_settings(self, org_id: str) -> st.OrgSettings | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(org_settings).where(org_settings.c.org_id == org_id)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return org_settings_of(row["settings"], row["update_time_us"], row["version"])

    async def put_org_settings(
        self, org_id: str, settings: st.OrgSettings, *, expected_etag: str
    ) -> st.OrgSettings:
        await self._put_settings(
            org_settings, org_settings.c.org_id, org_id, settings, expected_etag, org_id
        )
        stored = await self.get_org_settings(org_id)
        assert stored is not None
        return stored

    async def get_mailbox_settings(self, mailbox_id: str) -> st.MailboxSettings | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(mailbox_settings).where(mailbox_settings.c.mailbox_id == mailbox_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return mailbox_settings_of(row["settings"], row["update_time_us"], row["version"])

    async def put_mailbox_settings(
        self, mailbox_id: str, settings: st.MailboxSettings, *, expected_etag: str
    ) -> None:
        await self._put_settings(
            mailbox_settings,
            mailbox_settings.c.mailbox_id,
            mailbox_id,
            settings,
            expected_etag,
            f"{mailbox_name(mailbox_id)}/settings",
        )

    async def _put_settings(
        self,
        table: Any,
        key_column: Any,
        key: str,
        settings: st.OrgSettings | st.MailboxSettings,
        expected_etag: str,
        name: str,
    ) -> None:
        """Write settings with compare-and-set on their version (etag `W/"0"`: none stored)."""
        stored = type(settings).FromString(settings.SerializeToString())
        # Output-only fields are recomputed on read.
        stored.ClearField("update_time")
        stored.ClearField("etag")
        if isinstance(stored, st.MailboxSettings):
            stored.ClearField("locked_fields")
        data = stored.SerializeToString(deterministic=True)
        now = to_us(utcnow())
        try:
            async with self.engine.begin() as conn:
                version = await conn.scalar(select(table.c.version).where(key_column == key))
                if expected_etag and expected_etag != etag(version or 0):
                    raise EtagMismatch(name)
                if version is None:
                    await conn.execute(
                        insert(table).values(
                            {
                                key_column.name: key,
                                "settings": data,
                                "update_time_us": now,
                                "version": 1,
                            }
                        )
                    )
                    return
                result = await conn.execute(
                    update(table)
                    .where(key_column == key, table.c.version == version)
                    .values(settings=data, update_time_us=now, version=version + 1)
                )
                if result.rowcount != 1:
                    raise EtagMismatch(name)
        except IntegrityError:
            # Another writer created the row first: as if our etag no longer matched.
            raise EtagMismatch(name) from None


def org_settings_of(blob: bytes, update_time_us: int, version: int) -> st.OrgSettings:
    """Stored org settings as the API shows them (with their update time and etag)."""
    settings = st.OrgSettings.FromString(blob)
    settings.update_time.CopyFrom(timestamp(from_us(update_time_us)))
    settings.etag = etag(version)
    return settings


def mailbox_settings_of(blob: bytes, update_time_us: int, version: int) -> st.MailboxSettings:
    """Stored mailbox settings as the API shows them (with their update time and etag)."""
    settings = st.MailboxSettings.FromString(blob)
    settings.update_time.CopyFrom(timestamp(from_us(update_time_us)))
    settings.etag = etag(version)
    return settings


def mailbox_of(row: RowMapping) -> MailboxRecord:
    return MailboxRecord(
        mailbox_id=row["mailbox_id"],
        org_id=row["org_id"],
        owner_user_id=row["owner_user_id"],
        crm_user_id=row["crm_user_id"],
        address=row["address"],
        provider=row["provider"],
        state=MailboxState(row["state"]),
        suspended_reason=row["suspended_reason"],
        sync_interval_seconds=row["sync_interval_seconds"],
        create_time=from_us(row["create_time_us"]),
        update_time=from_us(row["update_time_us"]),
        version=row["version"],
    )
