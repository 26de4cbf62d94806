"""The session flow's SQL store: sessions, item errors and stored request answers, with the
mailboxes and settings a session reads (`SqlStore`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Update, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.errors import MailboxNotFound
from concord_reconciler.kernel.names import mailbox_name
from concord_reconciler.kernel.schema import (
    item_errors,
    mailbox_settings,
    mailboxes,
    org_settings,
    sessions,
)
from concord_reconciler.kernel.sql import from_us, to_us
from concord_reconciler.mailboxes.adapters.store import (
    SqlMailboxStore,
    mailbox_of,
    mailbox_settings_of,
    org_settings_of,
)
from concord_reconciler.mailboxes.domain.model import MailboxState
from concord_reconciler.sessions.domain.model import (
    ItemErrorRecord,
    MailboxContext,
    SessionRecord,
    SessionState,
)
from concord_reconciler.sessions.domain.ports import SessionKey
from concord_reconciler.sessions.wire import counts_from_proto, counts_to_proto


class SqlSessionStore:
    """Sessions and item errors in SQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- sessions ------------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(sessions).where(sessions.c.session_id == session_id)))
                .mappings()
                .first()
            )
        return _session(row) if row else None

    async def queued_session(self, mailbox_id: str) -> SessionRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(sessions).where(
                            sessions.c.mailbox_id == mailbox_id,
                            sessions.c.state == int(SessionState.QUEUED),
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _session(row) if row else None

    async def enqueue_session(self, session: SessionRecord) -> tuple[SessionRecord, bool]:
        # The partial unique index decides between concurrent requests; the loser reads the
        # winner's row. If that row left QUEUED in between (a consumer took it), try again.
        for _ in range(5):
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(insert(sessions).values(**_session_values(session)))
                return session, True
            except IntegrityError:
                pass
            queued = await self.queued_session(session.mailbox_id)
            if queued is not None:
                return queued, False
            async with self.engine.connect() as conn:
                exists = await conn.scalar(
                    select(mailboxes.c.mailbox_id).where(
                        mailboxes.c.mailbox_id == session.mailbox_id
                    )
                )
            if exists is None:
                raise MailboxNotFound(mailbox_name(session.mailbox_id))
        raise RuntimeError(f"could not queue a session for {session.mailbox_id}")

    async def save_session(self, session: SessionRecord, expected: SessionState) -> bool:
        values = _session_values(session)
        del values["session_id"], values["mailbox_id"]
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(sessions)
                .where(
                    sessions.c.session_id == session.session_id,
                    sessions.c.state == int(expected),
                )
                .values(**values)
            )
        return bool(result.rowcount == 1)

    async def complete_session(self, session: SessionRecord) -> tuple[bool, bool]:
        values = _session_values(session)
        del values["session_id"], values["mailbox_id"]
        async with self.engine.begin() as conn:
            saved = await conn.execute(
                update(sessions)
                .where(
                    sessions.c.session_id == session.session_id,
                    sessions.c.state == int(SessionState.RUNNING),
                )
                .values(**values)
            )
            if saved.rowcount != 1:
                return False, False
            ended = await conn.execute(_end_back_off(session.mailbox_id))
        return True, bool(ended.rowcount == 1)

    async def end_back_off(self, mailbox_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(_end_back_off(mailbox_id))
        return bool(result.rowcount == 1)

    async def list_sessions(
        self, mailbox_id: str, *, after: SessionKey | None, limit: int
    ) -> list[SessionRecord]:
        query = (
            select(sessions)
            .where(sessions.c.mailbox_id == mailbox_id)
            .order_by(sessions.c.request_time_us.desc(), sessions.c.session_id.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                or_(
                    sessions.c.request_time_us < after.request_time_us,
                    and_(
                        sessions.c.request_time_us == after.request_time_us,
                        sessions.c.session_id < after.session_id,
                    ),
                )
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_session(row) for row in rows]

    # -- item errors ---------------------------------------------------------------------

    async def record_item_error(self, error: ItemErrorRecord) -> None:
        """Insert or replace an item error (the session engine records them; issue #5)."""
        values = {
            "item_error_id": error.item_error_id,
            "mailbox_id": error.mailbox_id,
            "kind": error.kind,
            "native_id": error.native_id,
            "version": error.version,
            "link_id": error.link_id,
            "collection": error.collection,
            "crm_record_id": error.crm_record_id,
            "side": error.side,
            "reason": error.reason,
            "message": error.message,
            "first_seen_time_us": to_us(error.first_seen_time),
            "last_seen_time_us": to_us(error.last_seen_time),
            "attempts": error.attempts,
            "quarantined": error.quarantined,
        }
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(item_errors).where(item_errors.c.item_error_id == error.item_error_id)
            )
            await conn.execute(insert(item_errors).values(**values))

    async def get_item_error(self, mailbox_id: str, item_error_id: str) -> ItemErrorRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(item_errors).where(
                            item_errors.c.item_error_id == item_error_id,
                            item_errors.c.mailbox_id == mailbox_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _item_error(row) if row else None

    async def release_item_error(self, mailbox_id: str, item_error_id: str) -> None:
        """Take an item out of quarantine so the next session tries it again."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(item_errors)
                .where(
                    item_errors.c.item_error_id == item_error_id,
                    item_errors.c.mailbox_id == mailbox_id,
                )
                .values(quarantined=False)
            )

    async def list_item_errors(
        self,
        mailbox_id: str,
        *,
        quarantined_only: bool,
        after: tuple[int, str] | None,
        limit: int,
    ) -> tuple[list[ItemErrorRecord], int]:
        """A page of a mailbox's item errors, most recent first, and how many there are."""
        where: list[Any] = [item_errors.c.mailbox_id == mailbox_id]
        if quarantined_only:
            where.append(item_errors.c.quarantined.is_(True))
        query = (
            select(item_errors)
            .where(*where)
            .order_by(item_errors.c.last_seen_time_us.desc(), item_errors.c.item_error_id.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                or_(
                    item_errors.c.last_seen_time_us < after[0],
                    and_(
                        item_errors.c.last_seen_time_us == after[0],
                        item_errors.c.item_error_id < after[1],
                    ),
                )
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = await conn.scalar(select(func.count()).select_from(item_errors).where(*where))
        return [_item_error(row) for row in rows], int(total or 0)


class SqlStore(SqlSessionStore, SqlMailboxStore):
    """The session flow's store (`SessionStore`): its own rows, and the mailboxes and settings
    a session reads."""

    async def mailbox_context(self, mailbox_id: str) -> MailboxContext | None:
        # One statement where a session made three (the mailbox, then each settings row).
        query = (
            select(
                mailboxes,
                mailbox_settings.c.settings.label("mailbox_settings"),
                mailbox_settings.c.update_time_us.label("mailbox_settings_update_time_us"),
                mailbox_settings.c.version.label("mailbox_settings_version"),
                org_settings.c.settings.label("org_settings"),
                org_settings.c.update_time_us.label("org_settings_update_time_us"),
                org_settings.c.version.label("org_settings_version"),
            )
            .select_from(
                mailboxes.outerjoin(
                    mailbox_settings, mailbox_settings.c.mailbox_id == mailboxes.c.mailbox_id
                ).outerjoin(org_settings, org_settings.c.org_id == mailboxes.c.org_id)
            )
            .where(mailboxes.c.mailbox_id == mailbox_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return MailboxContext(
            mailbox=mailbox_of(row),
            org_settings=(
                org_settings_of(
                    row["org_settings"],
                    row["org_settings_update_time_us"],
                    row["org_settings_version"],
                )
                if row["org_settings"] is not None
                else None
            ),
            mailbox_settings=(
                mailbox_settings_of(
                    row["mailbox_settings"],
                    row["mailbox_settings_update_time_us"],
                    row["mailbox_settings_version"],
                )
                if row["mailbox_settings"] is not None
                else None
            ),
        )


def _end_back_off(mailbox_id: str) -> Update:
    """BACKING_OFF -> ACTIVE, if the mailbox is still backing off (a suspend in between wins)."""
    return (
        update(mailboxes)
        .where(
            mailboxes.c.mailbox_id == mailbox_id,
            mailboxes.c.state == int(MailboxState.BACKING_OFF),
        )
        .values(
            state=int(MailboxState.ACTIVE),
            suspended_reason="",
            update_time_us=to_us(utcnow()),
            version=mailboxes.c.version + 1,
        )
    )


def _session_values(session: SessionRecord) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "mailbox_id": session.mailbox_id,
        "state": int(session.state),
        "trigger": session.trigger,
        "request_id": session.request_id,
        "failure_reason": session.failure_reason,
        "failure_code": session.failure_code,
        "counts": counts_to_proto(session.counts).SerializeToString(deterministic=True),
        "request_time_us": to_us(session.request_time),
        "start_time_us": to_us(session.start_time) if session.start_time else None,
        "end_time_us": to_us(session.end_time) if session.end_time else None,
        "trace_id": session.trace_id,
        "retry_not_before_us": (
            to_us(session.retry_not_before) if session.retry_not_before else None
        ),
    }


def _session(row: RowMapping) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        mailbox_id=row["mailbox_id"],
        trigger=row["trigger"],
        state=SessionState(row["state"]),
        request_id=row["request_id"],
        failure_reason=row["failure_reason"],
        failure_code=row["failure_code"],
        counts=counts_from_proto(rres.SessionCounts.FromString(row["counts"])),
        request_time=from_us(row["request_time_us"]),
        start_time=from_us(row["start_time_us"]) if row["start_time_us"] is not None else None,
        end_time=from_us(row["end_time_us"]) if row["end_time_us"] is not None else None,
        trace_id=row["trace_id"],
        retry_not_before=(
            from_us(row["retry_not_before_us"]) if row["retry_not_before_us"] is not None else None
        ),
    )


def _item_error(row: RowMapping) -> ItemErrorRecord:
    return ItemErrorRecord(
        item_error_id=row["item_error_id"],
        mailbox_id=row["mailbox_id"],
        kind=row["kind"],
        native_id=row["native_id"],
        side=row["side"],
        reason=row["reason"],
        message=row["message"],
        version=row["version"],
        link_id=row["link_id"],
        collection=row["collection"],
        crm_record_id=row["crm_record_id"],
        first_seen_time=from_us(row["first_seen_time_us"]),
        last_seen_time=from_us(row["last_seen_time_us"]),
        attempts=row["attempts"],
        quarantined=bool(row["quarantined"]),
    )
