"""Exclusive, expiring leases on the JetStream KV bucket LEASES.

`acquire` is a compare-and-set create, so exactly one owner wins. The bucket's TTL (max age)
removes a value that was not rewritten in time, so a lease whose holder died frees itself;
`renew` rewrites the value only if nobody else wrote since our revision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any

from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

_log = logging.getLogger(__name__)

# JetStream's "wrong last sequence" codes: the key moved since the revision we hold.
_WRONG_LAST_SEQUENCE = {10071, 10164}


class LeaseLost(Exception):
    """The lease expired or another owner took it; work done under it is no longer exclusive."""

    def __init__(self, key: str, owner: str) -> None:
        super().__init__(f"lease {key!r} held by {owner!r} was lost")
        self.key = key
        self.owner = owner


class Lease:
    """A lease this process holds. Use `async with lease:` to renew it while the body runs.

    If renewal finds the lease lost, the body is cancelled and `LeaseLost` is raised from the
    `async with`; on exit the lease is released so the next owner does not wait for the TTL.
    """

    def __init__(self, kv: KeyValue, key: str, owner: str, revision: int, ttl: float) -> None:
        self.kv = kv
        self.key = key
        self.owner = owner
        self.revision = revision
        self.ttl = ttl
        self._renewed_at = time.monotonic()
        self._renewer: asyncio.Task[None] | None = None
        self._body: asyncio.Task[Any] | None = None
        self._lost = False
        self._cancelled_body = False

    @property
    def lost(self) -> bool:
        return self._lost

    async def renew(self) -> None:
        """Extend the lease by one TTL; LeaseLost if it expired or someone else holds it."""
        if self._lost:
            raise LeaseLost(self.key, self.owner)
        try:
            self.revision = await self.kv.update(self.key, self.owner.encode(), last=self.revision)
        except KeyWrongLastSequenceError as error:
            self._lost = True
            raise LeaseLost(self.key, self.owner) from error
        self._renewed_at = time.monotonic()

    async def release(self) -> None:
        """Give the lease up now; a no-op if it was already lost (never delete another's)."""
        if self._lost:
            return
        self._lost = True
        try:
            await self.kv.delete(self.key, last=self.revision)
        except APIError as error:
            if error.err_code not in _WRONG_LAST_SEQUENCE:
                raise

    async def _renew_until_lost(self) -> None:
        interval = self.ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except LeaseLost:
                break
            except Exception:
                # A NATS hiccup: retry at the next tick while the lease can still be alive.
                if time.monotonic() - self._renewed_at < self.ttl:
                    _log.warning("lease renewal failed; retrying", exc_info=True)
                    continue
                self._lost = True
                break
        if self._body is not None and not self._body.done():
            self._cancelled_body = True
            self._body.cancel()

    async def __aenter__(self) -> Lease:
        self._body = asyncio.current_task()
        self._renewer = asyncio.create_task(
            self._renew_until_lost(), name=f"lease-renewal:{self.key}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and not renewer.done():
            renewer.cancel()
            await asyncio.wait({renewer})
        if self._cancelled_body:
            body = self._body
            assert body is not None
            # Our cancel is consumed here; any other pending cancel (shutdown) still wins.
            if body.uncancel() > 0 and exc_type is asyncio.CancelledError:
                return
            raise LeaseLost(self.key, self.owner) from exc
        if self._lost:
            raise LeaseLost(self.key, self.owner) from exc
        await self.release()


class LeaseStore:
    """Leases on one KV bucket, all with the bucket's TTL."""

    def __init__(self, kv: KeyValue, ttl: float) -> None:
        self.kv = kv
        self.ttl = ttl

    async def acquire(self, key: str, owner: str, *, reclaim: bool = False) -> Lease | None:
        """The lease on `key` for `owner`, or None while another owner holds it.

        With `reclaim`, a lease still held under `owner`'s own name is taken back at once: for
        an owner id that names one replica instance across restarts (a pod's name), whose
        previous run died holding it — waiting out the TTL would only delay its own work. The
        caller must hold each key once per process (two holders of one name are one holder).
        """
        try:
            revision = await self.kv.create(key, owner.encode())
        except KeyWrongLastSequenceError:
            if not reclaim:
                return None
            try:
                entry = await self.kv.get(key)
            except NotFoundError:  # released or expired meanwhile: the next try creates it
                return None
            if entry.value != owner.encode() or entry.revision is None:
                return None
            try:
                revision = await self.kv.update(key, owner.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                return None
        return Lease(self.kv, key, owner, revision, self.ttl)

    async def holder(self, key: str) -> str | None:
        """Who holds `key` now, if anyone (for diagnostics; racy by nature)."""
        try:
            entry = await self.kv.get(key)
        except NotFoundError:  # also raised for a deleted key
            return None
        return entry.value.decode() if entry.value else None
