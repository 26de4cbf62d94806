"""Push hints that arrive while a session of the same mailbox runs (issue #18, fairness).

A big session (a first sync of thousands of items) writes in chunks; between chunks it asks
its `PushHints` which sides were hinted since it last asked, and serves those sides' new
changes — the small delta — before it goes on with its backlog. Without this, a meeting saved
in the mailbox waited for the whole session to end (10 to 64 s measured) and the session queued
behind it.

`PendingPushes` is the one implementation: the session consumer notes the hints it hears on
NATS for the mailbox (`sessions/adapters/messaging.py`); tests note them by hand.
"""

from __future__ import annotations

from typing import Protocol

from concord_reconciler.mirror.domain.sync import Side

__all__ = ["PendingPushes", "PushHints"]


class PushHints(Protocol):
    def take(self) -> frozenset[Side]:
        """The sides hinted since the last call; they are forgotten once taken."""
        ...

    def waiting(self) -> bool:
        """Whether a hint waits to be taken (it stays)."""
        ...


class PendingPushes:
    """The sides hinted and not yet served. Taking clears them before the delta is listed, so
    a hint arriving during that listing is served at the next chunk, never lost."""

    def __init__(self) -> None:
        self._sides: set[Side] = set()
        self.noted = 0

    def note(self, side: Side) -> None:
        self._sides.add(side)
        self.noted += 1

    def waiting(self) -> bool:
        return bool(self._sides)

    def take(self) -> frozenset[Side]:
        taken = frozenset(self._sides)
        self._sides.clear()
        return taken
