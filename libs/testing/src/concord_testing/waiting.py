"""Waiting for a condition a test can only observe by asking (over the network, a store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Until `check()` is true; TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        # Polling on purpose: what is checked has no event to wait on (a peer's calls, health).
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
