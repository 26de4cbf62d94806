"""Stored answers of mutating requests, by (method, request id): a retried request gets the
first answer again instead of acting twice (AIP-155)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.schema import (
    requests,
)
from concord_reconciler.kernel.sql import to_us


@dataclass(frozen=True)
class SqlAnswers:
    """The `requests` table: one stored answer per (method, request id)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

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
