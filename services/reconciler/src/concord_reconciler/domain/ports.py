"""What the session runner needs from the outside world, as small interfaces.

The gRPC adapters (`concord_reconciler.adapters.peers`) implement the four sides for real;
unit tests implement them in memory. Messages are the shared protos (plain data, no gRPC).
Failures are :class:`~concord_reconciler.domain.errors.PeerError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from concord.common.v1 import resources_pb2, settings_pb2
from concord.linker.v1 import linker_service_pb2
from concord.mapping.v1 import mapping_service_pb2
from concord_reconciler.domain.model import MailboxRecord, SessionRecord, SessionState

__all__ = [
    "CrmPage",
    "CrmSide",
    "Linker",
    "MailPage",
    "MailSide",
    "Mapping",
    "Peers",
    "SessionEvents",
    "SessionQueue",
    "SessionStore",
]


@dataclass(frozen=True)
class MailPage:
    changes: Sequence[resources_pb2.MailChange]
    next_cursor: resources_pb2.Cursor = field(default_factory=resources_pb2.Cursor)
    full_resync_required: bool = False
    has_more: bool = False


@dataclass(frozen=True)
class CrmPage:
    changes: Sequence[resources_pb2.CrmChange]
    next_cursor: resources_pb2.Cursor = field(default_factory=resources_pb2.Cursor)
    full_resync_required: bool = False
    has_more: bool = False


class MailSide(Protocol):
    async def list_changes(
        self, mailbox: str, kind: int, cursor: resources_pb2.Cursor
    ) -> MailPage: ...


class CrmSide(Protocol):
    async def list_changes(
        self, org: str, sobject_type: str, cursor: resources_pb2.Cursor, owner_id: str
    ) -> CrmPage: ...


class Mapping(Protocol):
    async def map_to_crm(
        self, org: str, items: Sequence[resources_pb2.MailItem], owner_id: str
    ) -> Sequence[mapping_service_pb2.MappedRecord]: ...


class Linker(Protocol):
    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: int,
        participants: Sequence[resources_pb2.Participant],
        request_id: str,
    ) -> linker_service_pb2.ResolveParticipantsResponse: ...


@dataclass(frozen=True)
class Peers:
    mail: MailSide
    crm: CrmSide
    mapping: Mapping
    linker: Linker


class SessionStore(Protocol):
    """The part of the reconciler's store the session flow uses."""

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def get_mailbox(self, mailbox_id: str) -> MailboxRecord | None: ...

    async def get_org_settings(self, org_id: str) -> settings_pb2.OrgSettings | None: ...

    async def get_mailbox_settings(
        self, mailbox_id: str
    ) -> settings_pb2.MailboxSettings | None: ...

    async def enqueue_session(self, session: SessionRecord) -> tuple[SessionRecord, bool]:
        """Insert `session` (QUEUED), or return the mailbox's QUEUED session instead.

        Atomic across replicas; the bool says whether `session` was inserted.
        """
        ...

    async def save_session(self, session: SessionRecord, expected: SessionState) -> bool:
        """Write `session` if the stored row is still in state `expected` (compare-and-set)."""
        ...


class SessionEvents(Protocol):
    """Outcomes published for watchers (WaitSession, the gateway, the dashboard)."""

    async def started(self, session: SessionRecord, org: str) -> None: ...

    async def completed(self, session: SessionRecord, org: str) -> None: ...

    async def failed(
        self, session: SessionRecord, org: str, reason: str, code: str, retryable: bool
    ) -> None: ...


class SessionQueue(Protocol):
    """Where requested sessions wait for a reconciler (SESSIONS); re-queuing is harmless."""

    async def enqueue(self, session: SessionRecord, org: str) -> None: ...
