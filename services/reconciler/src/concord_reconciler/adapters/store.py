"""The reconciler's SQL store: mailboxes, sessions, item errors, settings, request ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.adapters.tables import (
    item_errors,
    mailbox_settings,
    mailboxes,
    org_settings,
    requests,
    sessions,
)
from concord_reconciler.domain.errors import (
    EtagMismatch,
    MailboxAlreadyExists,
    MailboxNotFound,
)
from concord_reconciler.domain.model import (
    ItemErrorRecord,
    MailboxRecord,
    MailboxState,
    SessionRecord,
    SessionState,
    utcnow,
)
from concord_reconciler.domain.names import mailbox_name
from concord_reconciler.wire import counts_from_proto, counts_to_proto, timestamp

__all__ = ["SessionKey", "SqlStore", "etag", "from_us", "to_us"]


def to_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


def etag(version: int) -> str:
    return f'W/"{version}"'


@dataclass(frozen=True)
class SessionKey:
    """Where a page of sessions (newest first) continues: strictly older than this."""

    request_time_us: int
    session_id: str


class SqlStore:
    """Implements the domain's SessionStore and everything the API reads and writes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- request ids ---------------------------------------------------------------------

    async def get_response(self, method: str, request_id: str) -> bytes | None:
        async with self.engine.connect() as conn:
            found = await conn.scalar(
                select(requests.c.response).where(
                    requests.c.method == method, requests.c.request_id == request_id
                )
            )
        return bytes(found) if found is not None else None

    async def save_response(self, method: str, request_id: str, response: bytes) -> None:
        """Remember the first response to (method, request_id); a later one does not replace it."""
        try:
            async with self.engine.begin() as conn:
                await self._save_response(conn, method, request_id, response)
        except IntegrityError:
            pass

    @staticmethod
    async def _save_response(
        conn: AsyncConnection, method: str, request_id: str, response: bytes
    ) -> None:
        await conn.execute(
            insert(requests).values(
                method=method,
                request_id=request_id,
                response=response,
                create_time_us=to_us(utcnow()),
            )
        )

    # -- mailboxes -----------------------------------------------------------------------

    async def get_mailbox(self, mailbox_id: str) -> MailboxRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(mailboxes).where(mailboxes.c.mailbox_id == mailbox_id)))
                .mappings()
                .first()
            )
        return _mailbox(row) if row else None

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
        return [_mailbox(row) for row in rows]

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
        return _mailbox(row)

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
            if await self.get_mailbox(session.mailbox_id) is None:
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
        settings = st.OrgSettings.FromString(row["settings"])
        settings.update_time.CopyFrom(timestamp(from_us(row["update_time_us"])))
        settings.etag = etag(row["version"])
        return settings

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
        settings = st.MailboxSettings.FromString(row["settings"])
        settings.update_time.CopyFrom(timestamp(from_us(row["update_time_us"])))
        settings.etag = etag(row["version"])
        return settings

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


def _mailbox(row: RowMapping) -> MailboxRecord:
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
        counts=counts_from_proto(res.SessionCounts.FromString(row["counts"])),
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
