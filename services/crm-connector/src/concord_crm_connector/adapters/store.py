"""Org connections, cursors and the API budget in SQL (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Update, case, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from concord_crm_connector.adapters.tables import (
    api_budget,
    change_replays,
    change_streams,
    org_connections,
    sync_cursors,
)
from concord_crm_connector.changes.model import StreamMode, StreamReport, StreamState
from concord_crm_connector.domain.errors import EtagMismatch
from concord_crm_connector.domain.model import (
    AuthFlow,
    Budget,
    ConnectionUpdate,
    Cursor,
    OrgConnection,
)
from concord_secrets import SecretBox

__all__ = ["SqlOrgStore", "SqlReplayStore", "SqlStreamReports"]

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlOrgStore:
    def __init__(self, engine: AsyncEngine, cipher: SecretBox, clock: Clock = _utc_now) -> None:
        self.engine = engine
        self._engine = engine
        self._cipher = cipher
        self._clock = clock

    async def connected(self) -> list[str]:
        """The orgs with a stored secret: those whose changes can be streamed."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(org_connections.c.org)
                .where(org_connections.c.secret_ciphertext.is_not(None))
                .order_by(org_connections.c.org)
            )
            return [str(org) for org in rows.scalars()]

    async def get(self, org: str) -> OrgConnection | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(org_connections).where(org_connections.c.org == org))
            ).first()
        return _connection(row) if row else None

    async def upsert(self, change: ConnectionUpdate) -> OrgConnection:
        table = org_connections
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(select(table).where(table.c.org == change.org).with_for_update())
            ).first()
            if row is not None and change.request_id and row.request_id == change.request_id:
                return _connection(row)
            if change.expected_etag and (row is None or row.etag != change.expected_etag):
                raise EtagMismatch(change.org)
            now = self._clock()
            values: dict[str, Any] = {
                "login_url": change.login_url,
                "auth_flow": change.auth_flow.value,
                "auth_settings": {
                    "client_id": change.client_id,
                    "username": change.username,
                    "api_version": change.api_version,
                },
                "update_time": now,
                "etag": uuid.uuid4().hex,
                "request_id": change.request_id or None,
            }
            if change.secret is not None:
                values["secret_ciphertext"] = self._cipher.seal(change.secret)
                values["secret_update_time"] = now
            statement: Insert | Update
            if row is None:
                statement = insert(table).values(
                    org=change.org, instance_url="", organization_id="", **values
                )
            else:
                statement = update(table).where(table.c.org == change.org).values(values)
            await conn.execute(statement)
            stored = (await conn.execute(select(table).where(table.c.org == change.org))).one()
        return _connection(stored)

    async def cursor(self, org: str, sobject_type: str) -> Cursor | None:
        async with self._engine.connect() as conn:
            token = (
                await conn.execute(
                    select(sync_cursors.c.token).where(
                        sync_cursors.c.org == org, sync_cursors.c.sobject_type == sobject_type
                    )
                )
            ).scalar_one_or_none()
        return Cursor(sobject_type, token) if token is not None else None

    async def budget(self, org: str) -> Budget | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_budget).where(api_budget.c.org == org))).first()
        if row is None:
            return None
        return Budget(row.used, row.limit, row.concord_used, row.update_time)

    async def record_login(self, org: str, instance_url: str, organization_id: str) -> None:
        """What a login taught us about the org; the etag stays, it is not a user's change."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(org_connections)
                .where(org_connections.c.org == org)
                .values(instance_url=instance_url, organization_id=organization_id)
            )

    async def record_usage(self, org: str, used: int, limit: int, calls: int) -> Budget:
        """The org's use as the last response's Sforce-Limit-Info said, plus Concord's calls.

        Concord's own count restarts with each 24-hour window, like the org's allocation. The
        count is incremented in SQL, not read and rewritten, because a session's parallel calls
        record at the same moment; a new org's row is raced for and the loser updates it.
        """
        for attempt in (1, 2):
            try:
                return await self._record_usage(org, used, limit, calls)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _record_usage(self, org: str, used: int, limit: int, calls: int) -> Budget:
        now = self._clock()
        window_start = func.coalesce(api_budget.c.window_start, api_budget.c.update_time)
        expired = window_start <= now - timedelta(days=1)
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                update(api_budget)
                .where(api_budget.c.org == org)
                .values(
                    used=used,
                    limit=limit,
                    concord_used=case((expired, calls), else_=api_budget.c.concord_used + calls),
                    window_start=case((expired, now), else_=window_start),
                    update_time=now,
                )
            )
            if updated.rowcount == 0:
                await conn.execute(
                    insert(api_budget).values(
                        org=org,
                        used=used,
                        limit=limit,
                        concord_used=calls,
                        update_time=now,
                        window_start=now,
                    )
                )
            row = (await conn.execute(select(api_budget).where(api_budget.c.org == org))).one()
        return Budget(row.used, row.limit, row.concord_used, row.update_time)

    async def secret(self, org: str) -> bytes | None:
        """The decrypted secret, for the Salesforce adapter only; never for an API answer."""
        async with self._engine.connect() as conn:
            token = (
                await conn.execute(
                    select(org_connections.c.secret_ciphertext).where(org_connections.c.org == org)
                )
            ).scalar_one_or_none()
        return self._cipher.open(token) if token is not None else None


def _connection(row: Row[Any]) -> OrgConnection:
    auth = row.auth_settings
    return OrgConnection(
        org=row.org,
        login_url=row.login_url,
        auth_flow=AuthFlow(row.auth_flow),
        client_id=auth["client_id"],
        username=auth["username"],
        api_version=auth["api_version"],
        has_secret=row.secret_ciphertext is not None,
        update_time=row.update_time,
        etag=row.etag,
        instance_url=row.instance_url,
        organization_id=row.organization_id,
    )


class SqlReplayStore:
    """`ReplayStore`: each org's change stream position, per channel."""

    def __init__(self, engine: AsyncEngine, clock: Clock = _utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def get(self, org: str, channel: str) -> bytes | None:
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(change_replays.c.replay_id).where(
                    change_replays.c.org == org, change_replays.c.channel == channel
                )
            )
        return bytes(found) if found is not None else None

    async def put(self, org: str, channel: str, replay_id: bytes) -> None:
        table = change_replays
        async with self._engine.begin() as conn:
            moved = await conn.execute(
                update(table)
                .where(table.c.org == org, table.c.channel == channel)
                .values(replay_id=replay_id, update_time=self._clock())
            )
            if moved.rowcount == 0:
                await conn.execute(
                    insert(table).values(
                        org=org, channel=channel, replay_id=replay_id, update_time=self._clock()
                    )
                )


class SqlStreamReports:
    """`StreamReports`: one row per org, rewritten by the replica holding its stream."""

    def __init__(self, engine: AsyncEngine, clock: Clock = _utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def put(self, org: str, state: StreamState) -> None:
        table = change_streams
        values = {
            "mode": state.mode.value,
            "reason": state.reason,
            "last_commit": state.last_commit,
            "last_event": state.last_event,
            "resync_reason": state.resync_reason,
            "resync_time": state.resync_time,
            "report_time": self._clock(),
        }
        async with self._engine.begin() as conn:
            moved = await conn.execute(update(table).where(table.c.org == org).values(**values))
            if moved.rowcount == 0:
                await conn.execute(insert(table).values(org=org, **values))

    async def get(self, org: str) -> StreamReport | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(change_streams).where(change_streams.c.org == org))
            ).first()
        if row is None:
            return None
        state = StreamState(
            StreamMode(row.mode),
            last_commit=row.last_commit,
            last_event=row.last_event,
            reason=row.reason,
            resync_reason=row.resync_reason,
            resync_time=row.resync_time,
        )
        return StreamReport(state, row.report_time)
