"""One session's work: every two-way pair of the mailbox through the sync engine.

For each pair (mailbox, object kind): list both sides since the cursors kept with the links,
plan (pure), write in journalled batches, commit links and cursors together
(`domain/executor.py`). The sides are the engine's ports, built per session (`SyncEngine`):
over the connectors' gRPC APIs in production (`adapters/sync_sides.py`), in memory in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.kernel.counts import KindCounts, SessionCounts, SideCounts
from concord_reconciler.kernel.errors import PeerError, SessionFailure
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mailboxes.domain.settings import CRM_OBJECT_OF_KIND
from concord_reconciler.mirror.domain.executor import PairOutcome, sync_pair
from concord_reconciler.mirror.domain.hints import PushHints
from concord_reconciler.mirror.domain.planner import SyncPolicy
from concord_reconciler.mirror.domain.ports import LinkStore, SyncSide
from concord_reconciler.mirror.domain.sync import Side
from concord_reconciler.sharing.domain.email_pass import EmailShare, share_pass, with_kind


@dataclass(frozen=True)
class SessionScope:
    """What one session covers."""

    session_id: str
    mailbox: str  # mailboxes/{mailbox}
    org: str  # orgs/{org}
    crm_user_id: str
    kinds: tuple[Kind, ...]  # ObjectKind values, in listing order
    # The two-way pairs' settings, read once at the session's start.
    policies: tuple[SyncPolicy, ...] = ()
    # Kind -> the category that shares a mailbox item of that kind (SELECTION_MODE_CATEGORY).
    categories: Mapping[Kind, str] = field(default_factory=dict)
    # What the linker may create and must ignore when it links new activities.
    resolution: linker.ResolutionPolicy | None = None
    # As read at the session's start, for the email pass (which shares by the user's
    # selection and the org's policy); None where a test engine needs none.
    mailbox_record: MailboxRecord | None = None
    org_settings: st.OrgSettings | None = None
    mailbox_settings: st.MailboxSettings | None = None

    @property
    def crm_objects(self) -> tuple[str, ...]:
        return tuple(CRM_OBJECT_OF_KIND[k] for k in self.kinds if k in CRM_OBJECT_OF_KIND)


@dataclass(frozen=True)
class SyncPorts:
    """The sync engine's ports: both sides in mapped terms, and the link store."""

    mail: SyncSide
    crm: SyncSide
    links: LinkStore
    # The one-way email pass; None when the engine does not share emails.
    emails: EmailShare | None = None


class SyncEngine(Protocol):
    """The ports of one session (the sides are bound to its mailbox, org and user)."""

    def ports(self, scope: SessionScope) -> SyncPorts: ...


def policies_for(
    kinds: Iterable[Kind], org: st.OrgSettings, mailbox: st.MailboxSettings
) -> tuple[SyncPolicy, ...]:
    """One policy per two-way kind the mailbox shares; emails go one way, exactly once, and
    are not mirrored pairs."""
    sharing: dict[Kind, st.ObjectSharing] = {s.kind: s for s in mailbox.sharing}
    return tuple(
        SyncPolicy.from_settings(kind, org, sharing.get(kind))
        for kind in kinds
        if kind in CRM_OBJECT_OF_KIND
    )


def categories_of(mailbox: st.MailboxSettings) -> dict[Kind, str]:
    """The category each kind is shared by, where sharing goes by category alone.

    A kind shared by folder is already selected by the collection the connector lists, and
    one that auto-shares every new item takes everything.
    """
    found: dict[Kind, str] = {}
    for sharing in mailbox.sharing:
        modes = set(sharing.selection_modes)
        if st.SELECTION_MODE_CATEGORY in modes and not modes & {
            st.SELECTION_MODE_FOLDER,
            st.SELECTION_MODE_ALL_NEW,
        }:
            found[sharing.kind] = sharing.category or "Salesforce"
    return found


async def sync_mailbox(
    mailbox_id: str,
    policies: Sequence[SyncPolicy],
    ports: SyncPorts,
    now: datetime,
    hints: PushHints | None = None,
) -> SessionCounts:
    """Sync every pair of a mailbox in turn; a pair the guard stops does not stop the others.

    A push hint heard meanwhile is served by the pair in progress between its chunks (its own
    kind's delta); a change of another kind is listed when its pair's turn comes. A hint
    still pending when the pairs are done (it came during a pair's last chunk) is served by
    one more round of the pairs since their new cursors, not left to the next session.
    """
    outcomes: dict[Kind, PairOutcome] = {}
    for round_ in range(1 + FINAL_ROUNDS):
        if round_ and (hints is None or not hints.take()):
            break
        # Each pair's walk past its own writes runs while the next pair lists; a round ends
        # once every walk of it has.
        walks: list[asyncio.Task[None]] = []
        try:
            for policy in policies:
                outcome = await sync_pair(
                    mailbox_id,
                    policy,
                    ports.mail,
                    ports.crm,
                    ports.links,
                    now,
                    hints=hints,
                    walks=walks,
                )
                if policy.kind in outcomes:
                    _add(outcomes[policy.kind], outcome)
                else:
                    outcomes[policy.kind] = outcome
            await asyncio.gather(*walks)
        except PeerError as error:
            raise SessionFailure.from_peer(error) from error
        finally:
            for walk in walks:
                walk.cancel()
            await asyncio.gather(*walks, return_exceptions=True)
    return counts_of(outcomes.values())


# Rounds of the pairs after the first for hints still pending; bounded, as the session's own
# writes come back as hints too.
FINAL_ROUNDS = 2


def _add(total: PairOutcome, more: PairOutcome) -> None:
    """`more` (a later round of the same pair) counted into `total`."""
    total.mail_seen += more.mail_seen
    total.crm_seen += more.crm_seen
    for mine, theirs in (
        (total.created, more.created),
        (total.updated, more.updated),
        (total.deleted, more.deleted),
        (total.errors, more.errors),
    ):
        for side in Side:
            mine[side] += theirs[side]
    total.conflicts += more.conflicts
    total.quarantined += more.quarantined
    total.skipped += more.skipped
    total.guarded = total.guarded or more.guarded
    total.guard_reason = total.guard_reason or more.guard_reason
    total.recovered += more.recovered
    total.cursors_committed = more.cursors_committed


def _sides(done: Sequence[PairOutcome], which: Side) -> SideCounts:
    return SideCounts(
        created=sum(o.created[which] for o in done),
        updated=sum(o.updated[which] for o in done),
        deleted=sum(o.deleted[which] for o in done),
        errors=sum(o.errors[which] for o in done),
    )


def counts_of(outcomes: Iterable[PairOutcome]) -> SessionCounts:
    """A session's counts from its pairs' outcomes; writes are counted by the side written."""
    done = list(outcomes)
    return SessionCounts(
        mail_changes_seen=sum(o.mail_seen for o in done),
        crm_changes_seen=sum(o.crm_seen for o in done),
        mail=_sides(done, Side.MAIL),
        crm=_sides(done, Side.CRM),
        conflicts=sum(o.conflicts for o in done),
        quarantined=sum(o.quarantined for o in done),
        guarded=sum(o.guarded for o in done),
        skipped=sum(o.skipped for o in done),
        kinds=tuple(
            KindCounts(
                kind=o.kind,
                mail_changes_seen=o.mail_seen,
                crm_changes_seen=o.crm_seen,
                mail=_sides([o], Side.MAIL),
                crm=_sides([o], Side.CRM),
                conflicts=o.conflicts,
                quarantined=o.quarantined,
                skipped=o.skipped,
                guarded=o.guarded,
            )
            for o in done
        ),
    )


async def run_session(
    scope: SessionScope,
    engine: SyncEngine,
    policies: Sequence[SyncPolicy] = (),
    now: datetime | None = None,
    hints: PushHints | None = None,
) -> SessionCounts:
    """Run one session; SessionFailure says why it could not finish.

    The two-way pairs first, then the emails the mailbox shares (one way, exactly once).
    """
    mailbox_id = scope.mailbox.removeprefix("mailboxes/")
    ports = engine.ports(scope)
    counts = await sync_mailbox(
        mailbox_id, policies or scope.policies, ports, now or datetime.now(UTC), hints
    )
    if ports.emails is not None and res.OBJECT_KIND_EMAIL in scope.kinds:
        try:
            emails = await share_pass(mailbox_id, ports.emails, ports.links)
        except PeerError as error:
            raise SessionFailure.from_peer(error) from error
        counts = with_kind(counts, emails)
    # The cursors the link store held back (those of commits with nothing else in them), in
    # one transaction; a session that failed before here leaves them where they were.
    await ports.links.flush()
    return counts
