"""In-memory sides and stores: the domain driven with no sockets."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.mirror.domain.sync import Side, Snapshot, Write, WriteResult
from concord_reconciler.sessions.domain.model import MailboxContext, SessionRecord, SessionState
from concord_reconciler.sessions.domain.runner import SessionScope, SyncPorts

KIND_NAMES = {
    res.OBJECT_KIND_CALENDAR_ITEM: "event",
    res.OBJECT_KIND_TASK: "task",
    res.OBJECT_KIND_CONTACT: "contact",
}


class ByKind:
    """One SyncSide over a memory side per object kind; `broken` fails its listings."""

    def __init__(self, side: Side) -> None:
        ticks = itertools.count(1)
        self.side = side
        self.kinds: dict[int, MemorySide] = {
            k: MemorySide(side, lambda: next(ticks), prefix=f"{side.value}-{KIND_NAMES[k]}")
            for k in (res.OBJECT_KIND_CALENDAR_ITEM, res.OBJECT_KIND_TASK, res.OBJECT_KIND_CONTACT)
        }
        self.broken: Exception | None = None

    async def list_changes(
        self, kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        if self.broken is not None:
            raise self.broken
        return await self.kinds[kind].list_changes(kind, cursor, known)

    async def apply(self, kind: Kind, writes: Sequence[Write]) -> Sequence[WriteResult]:
        return await self.kinds[kind].apply(kind, writes)

    async def find(
        self, kind: Kind, link_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, Snapshot]]]:
        return await self.kinds[kind].find(kind, link_ids)

    async def fetch(self, kind: Kind, native_ids: Sequence[str]) -> dict[str, Snapshot]:
        return await self.kinds[kind].fetch(kind, native_ids)


@dataclass
class MemoryEngine:
    """The SyncEngine port over memory sides, remembering the scopes it was asked for."""

    mail: ByKind = field(default_factory=lambda: ByKind(Side.MAIL))
    crm: ByKind = field(default_factory=lambda: ByKind(Side.CRM))
    links: MemoryLinkStore = field(default_factory=MemoryLinkStore)
    scopes: list[SessionScope] = field(default_factory=list)

    def ports(self, scope: SessionScope) -> SyncPorts:
        self.scopes.append(scope)
        return SyncPorts(self.mail, self.crm, self.links)


@pytest.fixture
def engine() -> MemoryEngine:
    return MemoryEngine()


class MemoryStore:
    """SessionStore in memory, with the SQL store's rules (one QUEUED session per mailbox)."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, MailboxRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.org_settings: dict[str, st.OrgSettings] = {}
        self.mailbox_settings: dict[str, st.MailboxSettings] = {}

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return self.sessions.get(session_id)

    async def get_mailbox(self, mailbox_id: str) -> MailboxRecord | None:
        return self.mailboxes.get(mailbox_id)

    async def get_org_settings(self, org_id: str) -> st.OrgSettings | None:
        return self.org_settings.get(org_id)

    async def get_mailbox_settings(self, mailbox_id: str) -> st.MailboxSettings | None:
        return self.mailbox_settings.get(mailbox_id)

    async def mailbox_context(self, mailbox_id: str) -> MailboxContext | None:
        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is None:
            return None
        return MailboxContext(
            mailbox, self.org_settings.get(mailbox.org_id), self.mailbox_settings.get(mailbox_id)
        )

    async def enqueue_session(self, session: SessionRecord) -> tuple[SessionRecord, bool]:
        for queued in self.sessions.values():
            if queued.mailbox_id == session.mailbox_id and queued.state is SessionState.QUEUED:
                return queued, False
        self.sessions[session.session_id] = session
        return session, True

    async def save_session(self, session: SessionRecord, expected: SessionState) -> bool:
        stored = self.sessions.get(session.session_id)
        if stored is None or stored.state is not expected:
            return False
        self.sessions[session.session_id] = session
        return True

    async def complete_session(self, session: SessionRecord) -> tuple[bool, bool]:
        if not await self.save_session(session, SessionState.RUNNING):
            return False, False
        return True, await self.end_back_off(session.mailbox_id)

    async def end_back_off(self, mailbox_id: str) -> bool:
        from concord_reconciler.mailboxes.domain.model import MailboxState

        mailbox = self.mailboxes.get(mailbox_id)
        if mailbox is None or mailbox.state is not MailboxState.BACKING_OFF:
            return False
        self.mailboxes[mailbox_id] = replace(
            mailbox, state=MailboxState.ACTIVE, suspended_reason=""
        )
        return True

    def suspend(self, mailbox_id: str, reason: str) -> None:
        from concord_reconciler.mailboxes.domain.model import MailboxState

        self.mailboxes[mailbox_id] = replace(
            self.mailboxes[mailbox_id], state=MailboxState.SUSPENDED, suspended_reason=reason
        )


@dataclass
class RecordedEvents:
    published: list[tuple[str, SessionRecord, str]] = field(default_factory=list)

    async def started(self, session: SessionRecord, org: str) -> None:
        self.published.append(("started", session, ""))

    async def completed(self, session: SessionRecord, org: str) -> None:
        self.published.append(("completed", session, ""))

    async def failed(
        self, session: SessionRecord, org: str, reason: str, code: str, retryable: bool
    ) -> None:
        self.published.append(("failed", session, code))

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.published]


@dataclass
class RecordingQueue:
    queued: list[str] = field(default_factory=list)
    broken: bool = False
    # (session id, republish) of every enqueue.
    attempts: list[tuple[str, str]] = field(default_factory=list)

    async def enqueue(self, session: SessionRecord, org: str, *, republish: str = "") -> None:
        if self.broken:
            raise ConnectionError("nats down")
        self.queued.append(session.session_id)
        self.attempts.append((session.session_id, republish))


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.mailboxes["demo"] = MailboxRecord(
        mailbox_id="demo",
        org_id="acme",
        owner_user_id="u1",
        crm_user_id="005000000000001AAA",
        address="demo@example.com",
        provider=res.MAIL_PROVIDER_GRAPH,
    )
    return store


@pytest.fixture
def events() -> RecordedEvents:
    return RecordedEvents()


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()
