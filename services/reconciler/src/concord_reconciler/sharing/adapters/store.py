"""Email sharing's rows: one claim per email per org (the exactly-once key), and who shared it.

Compare-and-set on plain rows, no row locks, so SQLite and PostgreSQL behave alike.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.schema import email_share_mailboxes, email_shares, item_errors
from concord_reconciler.sharing.domain.ports import (
    ShareError,
    ShareFailure,
)
from concord_reconciler.sharing.domain.sharing import (
    ShareKey,
)


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class ShareRow:
    email_message_id: str | None
    attempts: int
    attachments_done: bool


class EmailShareStore:
    """The `email_shares` rows and their claims (compare-and-set; SQLite and PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, claim_seconds: float = 120.0) -> None:
        self.engine = engine
        self.claim_us = int(claim_seconds * 1_000_000)

    def _row(self, key: ShareKey) -> object:
        return and_(email_shares.c.org_id == key.org_id, email_shares.c.share_key == key.digest)

    async def shared_by(self, key: ShareKey, mailbox_id: str) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(email_share_mailboxes.c.mailbox_id).where(
                    email_share_mailboxes.c.org_id == key.org_id,
                    email_share_mailboxes.c.share_key == key.digest,
                    email_share_mailboxes.c.mailbox_id == mailbox_id,
                )
            )
            return found.first() is not None

    async def saved_threads(self, mailbox_id: str) -> set[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    email_share_mailboxes.c.thread, email_share_mailboxes.c.conversation_id
                ).where(email_share_mailboxes.c.mailbox_id == mailbox_id)
            )
            return {value for row in rows for value in row if value}

    async def claim(self, key: ShareKey) -> str | None:
        """A claim token, or None while another writer holds an unexpired claim."""
        token = str(uuid.uuid4())
        now = _now_us()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(email_shares).values(
                        org_id=key.org_id,
                        share_key=key.digest,
                        key_source="message_id" if key.from_message_id else "content_hash",
                        link_id=key.link_id,
                        email_message_id=None,
                        attempts=0,
                        attachments_done=False,
                        claim_token=token,
                        claim_until_us=now + self.claim_us,
                        create_time_us=now,
                        update_time_us=now,
                    )
                )
            return token
        except IntegrityError:
            pass  # the row exists: take its claim if it is free or expired
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                update(email_shares)
                .where(
                    self._row(key),  # type: ignore[arg-type]
                    or_(email_shares.c.claim_token.is_(None), email_shares.c.claim_until_us < now),
                )
                .values(claim_token=token, claim_until_us=now + self.claim_us, update_time_us=now)
            )
            return token if taken.rowcount == 1 else None

    async def _update(self, key: ShareKey, token: str, **values: object) -> None:
        now = _now_us()
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                update(email_shares)
                .where(self._row(key), email_shares.c.claim_token == token)  # type: ignore[arg-type]
                .values(update_time_us=now, claim_until_us=now + self.claim_us, **values)
            )
        if changed.rowcount != 1:
            # Held past its deadline and taken over: the other writer looks up before writing,
            # so stopping here loses nothing.
            raise ShareError(
                "SHARE_CLAIM_LOST", "another writer took this email over", retryable=True
            )

    async def get(self, key: ShareKey) -> ShareRow:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        email_shares.c.email_message_id,
                        email_shares.c.attempts,
                        email_shares.c.attachments_done,
                    ).where(self._row(key))  # type: ignore[arg-type]
                )
            ).one()
        return ShareRow(row.email_message_id, row.attempts, bool(row.attachments_done))

    async def renew(self, key: ShareKey, token: str) -> None:
        await self._update(key, token)

    async def note_attempt(self, key: ShareKey, token: str, attempts: int) -> None:
        await self._update(key, token, attempts=attempts)

    async def record_message(self, key: ShareKey, token: str, email_message_id: str) -> None:
        await self._update(key, token, email_message_id=email_message_id)

    async def finish(
        self,
        key: ShareKey,
        token: str,
        *,
        mailbox_id: str,
        native_id: str,
        thread: str,
        conversation_id: str,
        relations: int,
        attachments_done: bool,
    ) -> None:
        """This mailbox is done with the email; the claim is released in the same commit."""
        now = _now_us()
        async with self.engine.begin() as conn:
            released = await conn.execute(
                update(email_shares)
                .where(self._row(key), email_shares.c.claim_token == token)  # type: ignore[arg-type]
                .values(
                    claim_token=None,
                    claim_until_us=0,
                    update_time_us=now,
                    attachments_done=attachments_done,
                )
            )
            if released.rowcount != 1:
                raise ShareError(
                    "SHARE_CLAIM_LOST", "another writer took this email over", retryable=True
                )
            await conn.execute(
                insert(email_share_mailboxes).values(
                    org_id=key.org_id,
                    share_key=key.digest,
                    mailbox_id=mailbox_id,
                    native_id=native_id,
                    thread=thread[:255],
                    conversation_id=conversation_id,
                    relations=relations,
                    create_time_us=now,
                )
            )

    async def record_failures(
        self, mailbox_id: str, failures: Sequence[ShareFailure], shared: Sequence[str]
    ) -> None:
        """Failed emails as item errors for the dashboard, one row per email and side (a
        repeat counts an attempt); an email shared now has its old errors cleared. A page with
        neither opens no transaction (most pages of a quiet mailbox)."""
        if not failures and not shared:
            return
        now = _now_us()
        email = res.OBJECT_KIND_EMAIL
        async with self.engine.begin() as conn:
            if shared:
                await conn.execute(
                    delete(item_errors).where(
                        item_errors.c.mailbox_id == mailbox_id,
                        item_errors.c.kind == email,
                        item_errors.c.native_id.in_(shared),
                    )
                )
            for failure in failures:
                values = {
                    "reason": failure.reason[:63],
                    "message": failure.message,
                    "version": failure.ref.version,
                    "collection": failure.ref.collection,
                    "last_seen_time_us": now,
                    "quarantined": failure.quarantine,
                }
                repeated = await conn.execute(
                    update(item_errors)
                    .where(
                        item_errors.c.mailbox_id == mailbox_id,
                        item_errors.c.kind == email,
                        item_errors.c.native_id == failure.ref.native_id,
                        item_errors.c.side == failure.side,
                    )
                    .values(attempts=item_errors.c.attempts + 1, **values)
                )
                if repeated.rowcount == 0:
                    await conn.execute(
                        insert(item_errors).values(
                            item_error_id=str(uuid.uuid4()),
                            mailbox_id=mailbox_id,
                            kind=email,
                            native_id=failure.ref.native_id,
                            link_id="",
                            crm_record_id="",
                            side=failure.side,
                            first_seen_time_us=now,
                            attempts=1,
                            **values,
                        )
                    )

    async def release(self, key: ShareKey, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(email_shares)
                .where(self._row(key), email_shares.c.claim_token == token)  # type: ignore[arg-type]
                .values(claim_token=None, claim_until_us=0)
            )
