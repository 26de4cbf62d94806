"""Change events as Concord reads them, and what they become (no I/O).

A change event is a hint, never the truth: the session that follows reads the records through
`ListChanges` and its cursor. So a hint names only whose mailboxes to sync — the records'
owners, and the records themselves (a mailbox that mirrors a record the owner gave away or
deleted is found by its links in the reconciler) — and anything the stream cannot vouch for
(a gap, an overflow, a replay id Salesforce no longer keeps) becomes a hint for every mailbox
of the org, with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "CHANNELS",
    "ChangeEvent",
    "CrmHint",
    "StreamMode",
    "StreamReport",
    "StreamState",
    "channel_of",
    "hints_for",
    "ids_to_look_up",
    "is_concord_origin",
    "observed",
]

# The change event channels of the objects Concord mirrors, and those linking needs to know.
CHANNELS: Mapping[str, str] = {
    "Event": "/data/EventChangeEvent",
    "Task": "/data/TaskChangeEvent",
    "Contact": "/data/ContactChangeEvent",
    "Lead": "/data/LeadChangeEvent",
    "Account": "/data/AccountChangeEvent",
    "Opportunity": "/data/OpportunityChangeEvent",
}
# Objects whose records have owners whose mailboxes mirror them; the others (Lead, Account,
# Opportunity) only change what linking would pick, which the owners' next sessions see.
MIRRORED = frozenset({"Event", "Task", "Contact"})
# The client name Concord sends in Sforce-Call-Options; Salesforce echoes it in changeOrigin.
CONCORD_CLIENT = "client=concord"


def channel_of(sobject_type: str) -> str:
    return CHANNELS[sobject_type]


def is_concord_origin(change_origin: str) -> bool:
    """Whether Concord itself made the change (`com/salesforce/api/rest/62.0;client=concord`)."""
    return any(part.strip() == CONCORD_CLIENT for part in change_origin.split(";"))


@dataclass(frozen=True)
class ChangeEvent:
    """One decoded change event's header, and the owner when the payload carries it."""

    channel: str
    replay_id: bytes
    entity: str
    # CREATE, UPDATE, DELETE, UNDELETE; GAP_* and GAP_OVERFLOW when Salesforce lost detail.
    change_type: str
    record_ids: tuple[str, ...]
    change_origin: str = ""
    commit_time: datetime | None = None
    # OwnerId when the event carries it (creates, and updates that changed the owner).
    owner_id: str = ""

    @property
    def is_gap(self) -> bool:
        return self.change_type.startswith("GAP_")


@dataclass(frozen=True)
class CrmHint:
    """What one batch of events asks of the reconciler for one org."""

    org: str
    # Whose mailboxes to sync: Salesforce user ids, and the mailboxes linked to `record_ids`.
    # With `everyone` set: all of the org's.
    owner_ids: frozenset[str] = frozenset()
    everyone: bool = False
    # Why everyone (a gap, an overflow, a lost replay id), for the session's trigger and logs.
    reason: str = ""
    sobject_types: frozenset[str] = frozenset()
    record_ids: tuple[str, ...] = ()
    latest_commit: datetime | None = None


def hints_for(org: str, events: Sequence[ChangeEvent], owners: Mapping[str, str]) -> CrmHint | None:
    """The hint a batch of events makes, or None when only Concord's own writes are in it.

    `owners`: the owner of each record id the events do not name one for (read by the caller,
    one query per object, `ids_to_look_up`). A live record whose owner could not be read widens
    the hint to the whole org: better extra sessions than a lost change. A deleted one needs no
    owner: the mailboxes that mirrored it are found by their links.
    """
    relevant = [e for e in events if e.is_gap or not is_concord_origin(e.change_origin)]
    if not relevant:
        return None
    gaps = sorted({e.change_type for e in relevant if e.is_gap})
    owner_ids: set[str] = set()
    unknown = False
    for event in relevant:
        if event.is_gap or event.entity not in MIRRORED:
            continue
        if event.owner_id:
            owner_ids.add(event.owner_id)
            continue
        if event.change_type == "DELETE":
            continue
        for record_id in event.record_ids:
            owner = owners.get(record_id)
            if owner:
                owner_ids.add(owner)
            else:
                unknown = True
    commits = [e.commit_time for e in relevant if e.commit_time is not None]
    everyone = bool(gaps) or unknown
    reason = ", ".join(gaps) if gaps else ("owner unknown" if unknown else "")
    mirrored = [e for e in relevant if e.entity in MIRRORED]
    if not everyone and not mirrored:
        return None  # only objects linking reads changed: the owners' sessions see them
    return CrmHint(
        org=org,
        owner_ids=frozenset() if everyone else frozenset(owner_ids),
        everyone=everyone,
        reason=reason,
        sobject_types=frozenset(e.entity for e in relevant if e.entity),
        record_ids=tuple(dict.fromkeys(r for e in mirrored for r in e.record_ids)),
        latest_commit=max(commits) if commits else None,
    )


def ids_to_look_up(events: Iterable[ChangeEvent]) -> dict[str, list[str]]:
    """The records, by object, whose owner the batch needs to know (not deleted, not Concord's)."""
    wanted: dict[str, list[str]] = {}
    for event in events:
        if (
            event.is_gap
            or event.entity not in MIRRORED
            or event.owner_id
            or event.change_type == "DELETE"
            or is_concord_origin(event.change_origin)
        ):
            continue
        wanted.setdefault(event.entity, []).extend(event.record_ids)
    return {k: list(dict.fromkeys(v)) for k, v in wanted.items()}


class StreamMode(StrEnum):
    STARTING = "starting"
    STREAMING = "streaming"
    # Another replica holds the org's lease: it streams, this one waits to take over.
    STANDBY = "standby"
    # The stream keeps failing (a refused login, an unreachable endpoint): retried with back-off;
    # the schedule still syncs every mailbox.
    FAILING = "failing"
    # Seen from outside only (the dashboard): streams are turned off in the settings, or no
    # replica has reported for a while.
    OFF = "off"
    SILENT = "silent"


@dataclass(frozen=True)
class StreamState:
    mode: StreamMode
    # When the last event's change was committed in Salesforce, and when it was handled here:
    # their difference is the stream's lag.
    last_commit: datetime | None = None
    last_event: datetime | None = None
    reason: str = ""
    channels: tuple[str, ...] = field(default_factory=tuple)
    # The last time the stream could not tell what changed and every mailbox synced, and why.
    resync_reason: str = ""
    resync_time: datetime | None = None

    @property
    def lag(self) -> timedelta | None:
        """How late the newest change handled reached Concord after Salesforce committed it."""
        if self.last_commit is None or self.last_event is None:
            return None
        return max(timedelta(0), self.last_event - self.last_commit)


@dataclass(frozen=True)
class StreamReport:
    """What the replica holding an org's stream last said of it, and when (None: no replica
    ever reported)."""

    state: StreamState
    report_time: datetime | None


def observed(
    report: StreamReport | None, now: datetime, *, enabled: bool, silent_after: timedelta
) -> StreamReport:
    """An org's stream as the dashboard shows it, whichever replica is asked: the holder's
    last report while it is fresh, SILENT once it is older than `silent_after` (the holder died
    and the lease has not passed on, or no replica holds the org)."""
    if not enabled:
        return StreamReport(
            StreamState(StreamMode.OFF, reason="change streams are turned off"), None
        )
    if report is None or report.report_time is None:
        return StreamReport(
            StreamState(StreamMode.SILENT, reason="no replica has streamed this org yet"), None
        )
    age = now - report.report_time
    if age > silent_after:
        silent = replace(
            report.state,
            mode=StreamMode.SILENT,
            reason=f"no report from the streaming replica for {int(age.total_seconds())} s",
        )
        return StreamReport(silent, report.report_time)
    return report
