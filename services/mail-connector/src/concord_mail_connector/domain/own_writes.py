"""The versions this process's own writes left, so that a mail server's notification of one of
them is not sent on as a change (issue #18, echo suppression).

A write's answer names the version it left (EWS: the ChangeKey), and the server's notification of
that write names the same version. A notification naming an item at a version Concord wrote is
Concord's echo: a hint for it would start a session (or interrupt a running one between chunks)
only to find nothing new. Any other version is someone else's change and goes on as a hint.

A miss costs at most one needless hint, never a change: the record is bounded (per mailbox, the
newest `capacity` writes, none older than `max_age`), and a notification is judged only once the
writes in flight when it came have answered (the server may report a write before its answer is
back), or after `max_wait` at the latest, when it goes on as a change.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from concord.common.v1 import resources_pb2
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.provider import Write, WriteOperation, WriteResult

__all__ = ["ItemEvent", "OwnWrites"]

# The version a delete leaves: the item is gone, so any later notice of its deletion is ours.
_DELETED = "\x00deleted"


@dataclass(frozen=True)
class ItemEvent:
    """One item's change as a notification names it."""

    kind: Kind
    native_id: str
    version: str  # "" when the notification names none: never taken for an echo
    deleted: bool = False


class OwnWrites:
    """Shared by the write path (`begin`/`end` around each provider call) and the push path
    (`is_own`, `answered`); used on the event loop only."""

    def __init__(
        self,
        *,
        capacity: int = 20_000,
        max_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        # Per mailbox: (native id, version) -> when written, oldest first.
        self._written: dict[str, OrderedDict[tuple[str, str], float]] = {}
        self._in_flight: dict[str, set[int]] = {}
        self._tokens = itertools.count(1)

    def begin(self, mailbox: str) -> int:
        token = next(self._tokens)
        self._in_flight.setdefault(mailbox, set()).add(token)
        return token

    def end(
        self,
        mailbox: str,
        token: int,
        writes: Sequence[Write] = (),
        results: Sequence[WriteResult] = (),
    ) -> None:
        """The call `token` answered (or failed: no results); what it wrote is recorded."""
        flying = self._in_flight.get(mailbox)
        if flying is not None:
            flying.discard(token)
            if not flying:
                del self._in_flight[mailbox]
        now = self._clock()
        written = self._written.setdefault(mailbox, OrderedDict())
        for write, result in zip(writes, results, strict=False):
            if result.status != resources_pb2.WRITE_STATUS_OK or result.already_applied:
                continue
            if write.operation == WriteOperation.DELETE:
                key = (write.ref.native_id, _DELETED)
            elif result.ref is not None and result.ref.native_id and result.ref.version:
                key = (result.ref.native_id, result.ref.version)
            else:
                continue
            written.pop(key, None)
            written[key] = now
        self._prune(mailbox, now)

    def in_flight(self, mailbox: str) -> frozenset[int]:
        return frozenset(self._in_flight.get(mailbox, ()))

    def answered(self, mailbox: str, tokens: frozenset[int]) -> bool:
        """Whether every one of these calls has answered."""
        return not tokens & self._in_flight.get(mailbox, set())

    def is_own(self, mailbox: str, event: ItemEvent) -> bool:
        version = _DELETED if event.deleted else event.version
        if not event.native_id or not version:
            return False
        written = self._written.get(mailbox)
        when = written.get((event.native_id, version)) if written else None
        return when is not None and self._clock() - when <= self._max_age

    def _prune(self, mailbox: str, now: float) -> None:
        written = self._written.get(mailbox)
        if written is None:
            return
        while written and (
            len(written) > self._capacity or now - next(iter(written.values())) > self._max_age
        ):
            written.popitem(last=False)
        if not written:
            del self._written[mailbox]
