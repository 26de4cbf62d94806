"""One session's work: pull both sides' changes, map them, resolve their participants.

The skeleton stops there (every side is still empty). Issue #5 grows this function: cursors
from the link store instead of full listings, then plan (pure) and execute (journaled writes),
filling the write counts. It stays a function over the four ports so tests drive it in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.domain.errors import PeerError, SessionFailure
from concord_reconciler.domain.executor import PairOutcome, sync_pair
from concord_reconciler.domain.model import SessionCounts, SideCounts
from concord_reconciler.domain.planner import SyncPolicy
from concord_reconciler.domain.ports import CrmPage, LinkStore, MailPage, Peers, SyncSide
from concord_reconciler.domain.settings import CRM_OBJECT_OF_KIND
from concord_reconciler.domain.sync import Side

__all__ = [
    "MAX_PAGES",
    "PulledChanges",
    "SessionScope",
    "SyncPorts",
    "counts_of",
    "participants_of",
    "policies_for",
    "run_session",
    "sync_mailbox",
]

T = TypeVar("T")

# A connector that keeps answering has_more is broken; stop rather than loop for ever.
MAX_PAGES = 1000

# Kinds whose items are activities linked to people (contacts are the people themselves).
_ACTIVITY_KINDS = (res.OBJECT_KIND_CALENDAR_ITEM, res.OBJECT_KIND_TASK, res.OBJECT_KIND_EMAIL)


@dataclass(frozen=True)
class SessionScope:
    """What one session covers."""

    session_id: str
    mailbox: str  # mailboxes/{mailbox}
    org: str  # orgs/{org}
    crm_user_id: str
    kinds: tuple[int, ...]  # ObjectKind values, in listing order
    # The two-way pairs' settings, read once at the session's start.
    policies: tuple[SyncPolicy, ...] = ()

    @property
    def crm_objects(self) -> tuple[str, ...]:
        return tuple(CRM_OBJECT_OF_KIND[k] for k in self.kinds if k in CRM_OBJECT_OF_KIND)


@dataclass(frozen=True)
class PulledChanges:
    mail: tuple[res.MailChange, ...]
    crm: tuple[res.CrmChange, ...]


@dataclass(frozen=True)
class SyncPorts:
    """The sync engine's ports: both sides in mapped terms, and the link store."""

    mail: SyncSide
    crm: SyncSide
    links: LinkStore


def policies_for(
    kinds: Iterable[int], org: st.OrgSettings, mailbox: st.MailboxSettings
) -> tuple[SyncPolicy, ...]:
    """One policy per two-way kind the mailbox shares; emails go one way, exactly once, and
    are not mirrored pairs."""
    sharing: dict[int, st.ObjectSharing] = {int(s.kind): s for s in mailbox.sharing}
    return tuple(
        SyncPolicy.from_settings(kind, org, sharing.get(kind))
        for kind in kinds
        if kind in CRM_OBJECT_OF_KIND
    )


async def sync_mailbox(
    mailbox_id: str, policies: Sequence[SyncPolicy], ports: SyncPorts, now: datetime
) -> SessionCounts:
    """Sync every pair of a mailbox in turn; a pair the guard stops does not stop the others."""
    outcomes: list[PairOutcome] = []
    for policy in policies:
        try:
            outcomes.append(
                await sync_pair(mailbox_id, policy, ports.mail, ports.crm, ports.links, now)
            )
        except PeerError as error:
            raise SessionFailure.from_peer(error) from error
    return counts_of(outcomes)


def counts_of(outcomes: Iterable[PairOutcome]) -> SessionCounts:
    """A session's counts from its pairs' outcomes; writes are counted by the side written."""
    done = list(outcomes)

    def side(which: Side) -> SideCounts:
        return SideCounts(
            created=sum(o.created[which] for o in done),
            updated=sum(o.updated[which] for o in done),
            deleted=sum(o.deleted[which] for o in done),
            errors=sum(o.errors[which] for o in done),
        )

    return SessionCounts(
        mail_changes_seen=sum(o.mail_seen for o in done),
        crm_changes_seen=sum(o.crm_seen for o in done),
        mail=side(Side.MAIL),
        crm=side(Side.CRM),
        conflicts=sum(o.conflicts for o in done),
        quarantined=sum(o.quarantined for o in done),
        guarded=sum(o.guarded for o in done),
    )


async def run_session(
    scope: SessionScope,
    peers: Peers,
    sync: SyncPorts | None = None,
    policies: Sequence[SyncPolicy] = (),
    now: datetime | None = None,
) -> SessionCounts:
    """Run one session; SessionFailure says why it could not finish.

    With `sync` (the engine's ports), the session plans and writes every pair. Without, it is
    the walking skeleton: it lists, maps and resolves over the peers' gRPC ports, which is
    all the connectors answer until their SyncSide adapters land (issues #3, #4, #6).
    Independent calls run concurrently so a session with nothing to do costs two round trips.
    """
    if sync is not None:
        return await sync_mailbox(
            scope.mailbox.removeprefix("mailboxes/"),
            policies or scope.policies,
            sync,
            now or datetime.now(UTC),
        )
    pulled = await pull_changes(scope, peers)
    items = [c.item for c in pulled.mail if c.type == res.CHANGE_TYPE_UPSERT and c.HasField("item")]
    await _all(
        [
            peers.mapping.map_to_crm(scope.org, items, scope.crm_user_id),
            *(
                # One call per activity kind resolves every address of the session at once;
                # issue #5 turns this into one resolution per activity, for its WhoId/WhatId.
                peers.linker.resolve_participants(
                    scope.org,
                    scope.crm_user_id,
                    kind,
                    participants_of(i for i in items if i.ref.kind == kind),
                    f"{scope.session_id}:{kind}",
                )
                for kind in _ACTIVITY_KINDS
                if kind in scope.kinds
            ),
        ]
    )
    return SessionCounts(mail_changes_seen=len(pulled.mail), crm_changes_seen=len(pulled.crm))


async def pull_changes(scope: SessionScope, peers: Peers) -> PulledChanges:
    mail_pages = [_pull_mail(peers, scope.mailbox, kind) for kind in scope.kinds]
    crm_pages = [_pull_crm(peers, scope, sobject) for sobject in scope.crm_objects]
    async with _concurrently() as group:
        mail_tasks = [group.create_task(pull) for pull in mail_pages]
        crm_tasks = [group.create_task(pull) for pull in crm_pages]
    return PulledChanges(
        mail=tuple(c for task in mail_tasks for c in task.result()),
        crm=tuple(c for task in crm_tasks for c in task.result()),
    )


async def _pull_mail(peers: Peers, mailbox: str, kind: int) -> list[res.MailChange]:
    # No cursor store yet: every session lists in full (issue #5 keeps cursors with the links).
    cursor = res.Cursor()
    changes: list[res.MailChange] = []
    for _ in range(MAX_PAGES):
        page: MailPage = await peers.mail.list_changes(mailbox, kind, cursor)
        changes.extend(page.changes)
        if not page.has_more:
            return changes
        cursor = page.next_cursor
    raise SessionFailure(
        f"mail-connector listed more than {MAX_PAGES} pages of kind {kind}",
        "TOO_MANY_PAGES",
        retryable=False,
    )


async def _pull_crm(peers: Peers, scope: SessionScope, sobject: str) -> list[res.CrmChange]:
    cursor = res.Cursor()
    changes: list[res.CrmChange] = []
    for _ in range(MAX_PAGES):
        page: CrmPage = await peers.crm.list_changes(scope.org, sobject, cursor, scope.crm_user_id)
        changes.extend(page.changes)
        if not page.has_more:
            return changes
        cursor = page.next_cursor
    raise SessionFailure(
        f"crm-connector listed more than {MAX_PAGES} pages of {sobject}",
        "TOO_MANY_PAGES",
        retryable=False,
    )


def participants_of(items: Iterable[res.MailItem]) -> list[res.Participant]:
    """Every distinct address of the activities, with its strongest role first seen."""
    found: dict[str, res.Participant] = {}

    def add(address: res.EmailAddress | res.Attendee, role: res.ParticipantRole.ValueType) -> None:
        email = address.address if isinstance(address, res.EmailAddress) else address.email
        key = email.strip().lower()
        if key and key not in found:
            found[key] = res.Participant(
                email=email.strip(), display_name=address.display_name, role=role
            )

    attendee_roles: dict[int, res.ParticipantRole.ValueType] = {
        res.ATTENDEE_ROLE_REQUIRED: res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE,
        res.ATTENDEE_ROLE_OPTIONAL: res.PARTICIPANT_ROLE_OPTIONAL_ATTENDEE,
        res.ATTENDEE_ROLE_RESOURCE: res.PARTICIPANT_ROLE_RESOURCE,
    }
    for item in items:
        payload = item.WhichOneof("payload")
        if payload == "calendar_item":
            event = item.calendar_item
            if event.HasField("organizer"):
                add(event.organizer, res.PARTICIPANT_ROLE_ORGANIZER)
            for attendee in event.attendees:
                role = attendee_roles.get(attendee.role, res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE)
                add(attendee, role)
        elif payload == "email":
            email = item.email
            if email.HasField("from_address"):
                add(email.from_address, res.PARTICIPANT_ROLE_SENDER)
            for to in email.to:
                add(to, res.PARTICIPANT_ROLE_TO_RECIPIENT)
            for cc in email.cc:
                add(cc, res.PARTICIPANT_ROLE_CC_RECIPIENT)
    return list(found.values())


async def _all(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    async with _concurrently() as group:
        tasks = [group.create_task(call) for call in calls]
    return [task.result() for task in tasks]


@contextlib.asynccontextmanager
async def _concurrently() -> AsyncIterator[asyncio.TaskGroup]:
    """A task group whose first failure cancels the others and is raised alone.

    A peer error becomes the session's SessionFailure, naming the peer and its status.
    """
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failed:
        # The first failure is the cause; the others are usually its echo (cancelled siblings).
        leaf = _leaves(failed)[0]
        if isinstance(leaf, PeerError):
            raise SessionFailure.from_peer(leaf) from leaf
        raise leaf from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        else:
            leaves.append(error)
    return leaves
