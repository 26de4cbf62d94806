"""In-memory sides and stores: the domain driven with no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.linker.v1 import linker_service_pb2 as linker
from concord.mapping.v1 import mapping_service_pb2 as mapping
from concord_reconciler.domain.errors import PeerError
from concord_reconciler.domain.model import MailboxRecord, SessionRecord, SessionState
from concord_reconciler.domain.ports import CrmPage, MailPage, Peers


@dataclass
class Calls:
    log: list[tuple[str, object]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def enter(self, name: str, arg: object) -> None:
        self.log.append((name, arg))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        # Yield so concurrent calls overlap, as real network calls would.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.in_flight -= 1


class FakeMail:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.pages: dict[int, list[MailPage]] = {}
        self.error: PeerError | None = None

    async def list_changes(self, mailbox: str, kind: int, cursor: res.Cursor) -> MailPage:
        await self.calls.enter("mail.list_changes", (kind, cursor.token))
        if self.error is not None:
            raise self.error
        pages = self.pages.get(kind, [])
        index = int(cursor.token or 0)
        return pages[index] if index < len(pages) else MailPage(changes=[])


class FakeCrm:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.changes: dict[str, list[res.CrmChange]] = {}
        self.error: PeerError | None = None

    async def list_changes(
        self, org: str, sobject_type: str, cursor: res.Cursor, owner_id: str
    ) -> CrmPage:
        await self.calls.enter("crm.list_changes", sobject_type)
        if self.error is not None:
            raise self.error
        return CrmPage(changes=self.changes.get(sobject_type, []))


class FakeMapping:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def map_to_crm(
        self, org: str, items: Sequence[res.MailItem], owner_id: str
    ) -> Sequence[mapping.MappedRecord]:
        await self.calls.enter("mapping.map_to_crm", len(items))
        return [mapping.MappedRecord(ref=item.ref) for item in items]


class FakeLinker:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.error: PeerError | None = None

    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: int,
        participants: Sequence[res.Participant],
        request_id: str,
    ) -> linker.ResolveParticipantsResponse:
        await self.calls.enter("linker.resolve_participants", (kind, len(participants)))
        if self.error is not None:
            raise self.error
        return linker.ResolveParticipantsResponse()


@dataclass
class FakePeers:
    calls: Calls
    mail: FakeMail
    crm: FakeCrm
    mapping: FakeMapping
    linker: FakeLinker

    def ports(self) -> Peers:
        return Peers(mail=self.mail, crm=self.crm, mapping=self.mapping, linker=self.linker)


@pytest.fixture
def peers() -> FakePeers:
    calls = Calls()
    return FakePeers(calls, FakeMail(calls), FakeCrm(calls), FakeMapping(calls), FakeLinker(calls))


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

    def suspend(self, mailbox_id: str, reason: str) -> None:
        from concord_reconciler.domain.model import MailboxState

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

    async def enqueue(self, session: SessionRecord, org: str) -> None:
        if self.broken:
            raise ConnectionError("nats down")
        self.queued.append(session.session_id)


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
