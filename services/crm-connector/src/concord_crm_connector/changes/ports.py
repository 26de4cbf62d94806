"""What the change stream needs from the outside world."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from concord_crm_connector.changes.model import ChangeEvent, CrmHint, StreamReport, StreamState

__all__ = [
    "ChangeBatch",
    "ChangeSource",
    "HintSink",
    "OrgLeases",
    "OwnerLookup",
    "ReplayStore",
    "ReplayTooOld",
    "StreamReports",
]


class ReplayTooOld(Exception):
    """Salesforce no longer keeps events from the stored replay id (72 hours' retention):
    whatever happened since is unknown, so every mailbox of the org syncs."""


@dataclass(frozen=True)
class ChangeBatch:
    """What one response of the stream brought: events, and how far the stream has read
    (`latest_replay_id`), which an empty batch (a keepalive) moves too."""

    events: Sequence[ChangeEvent] = ()
    latest_replay_id: bytes = b""


class ChangeSource(Protocol):
    """Salesforce's Pub/Sub API for one org: batches of decoded change events on a channel."""

    def subscribe(
        self, org: str, channel: str, replay_id: bytes | None
    ) -> AsyncIterator[ChangeBatch]:
        """Events after `replay_id` (None: from now on), in batches as they arrive. Raises
        ReplayTooOld when `replay_id` has expired."""
        ...


class ReplayStore(Protocol):
    """Where each org's stream stopped, per channel; moved only after its hints went out."""

    async def get(self, org: str, channel: str) -> bytes | None: ...

    async def put(self, org: str, channel: str, replay_id: bytes) -> None: ...


class OwnerLookup(Protocol):
    """The owners of live records, by object type (one query per object)."""

    async def owners(
        self, org: str, ids_by_type: Mapping[str, Sequence[str]]
    ) -> dict[str, str]: ...


class HintSink(Protocol):
    async def publish(self, hint: CrmHint) -> None: ...


class OrgLeases(Protocol):
    """One subscriber per org across replicas."""

    async def hold(self, org: str) -> bool:
        """Take or renew the org's lease; False while another replica holds it."""
        ...

    async def release(self, org: str) -> None: ...


class StreamReports(Protocol):
    """Each org's stream state as its holder last reported it, readable by every replica (the
    dashboard may ask any of them)."""

    async def put(self, org: str, state: StreamState) -> None: ...

    async def get(self, org: str) -> StreamReport | None: ...
