"""Concord's JetStream topology and subject names: the one place that spells them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from nats.js.api import RetentionPolicy, StorageType, StreamConfig

SESSIONS: Final = "SESSIONS"
EVENTS: Final = "EVENTS"
LEASES: Final = "LEASES"

SESSIONS_SUBJECTS: Final = "concord.sessions.>"
EVENTS_SUBJECTS: Final = "concord.events.>"

# Requests for one mailbox within this window carry the same Nats-Msg-Id and coalesce.
SESSIONS_DUPLICATE_WINDOW_SECONDS: Final = 120.0
EVENTS_MAX_AGE_SECONDS: Final = 7 * 24 * 3600.0
DEFAULT_LEASE_TTL_SECONDS: Final = 60.0

# A subject token: no separators, wildcards or whitespace, so an id can never widen a filter.
_TOKEN = re.compile(r"[A-Za-z0-9_\-=]+")


def token(value: str, what: str = "token") -> str:
    """`value` if it is safe as one subject token, else ValueError."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a valid subject token ([A-Za-z0-9_-=]+)")
    return value


def session_requested(mailbox: str) -> str:
    return f"concord.sessions.requested.{token(mailbox, 'mailbox')}"


def session_event(session_id: str, kind: str) -> str:
    """E.g. `concord.events.sessions.<id>.completed`; `kind="*"` matches every kind."""
    kind_token = kind if kind == "*" else token(kind, "kind")
    return f"concord.events.sessions.{token(session_id, 'session id')}.{kind_token}"


#: Every session request, for the reconcilers' work-queue consumer.
ALL_SESSION_REQUESTS: Final = "concord.sessions.requested.*"


# Push hints from either side (the design brief's subjects): a hint that a mailbox or an org
# changed, which the scheduler (issue #8) turns into a session request. Not on EVENTS: a lost
# hint costs only latency, the schedule catches up.
def mail_changed(mailbox: str) -> str:
    return f"concord.mail.changed.{token(mailbox, 'mailbox')}"


def crm_changed(org: str) -> str:
    return f"concord.crm.changed.{token(org, 'org')}"


def sessions_stream(replicas: int = 1) -> StreamConfig:
    """Work queue: each request is delivered to one reconciler and removed once acknowledged."""
    return StreamConfig(
        name=SESSIONS,
        num_replicas=replicas,
        subjects=[SESSIONS_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=SESSIONS_DUPLICATE_WINDOW_SECONDS,
    )


def events_stream(replicas: int = 1) -> StreamConfig:
    """Audit trail of outcomes, kept a week for late readers and replays."""
    return StreamConfig(
        name=EVENTS,
        num_replicas=replicas,
        subjects=[EVENTS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=EVENTS_MAX_AGE_SECONDS,
    )


@dataclass(frozen=True)
class Topology:
    """What `EventBus.ensure_topology` creates; tests shorten the lease TTL."""

    lease_ttl_seconds: float = DEFAULT_LEASE_TTL_SECONDS
    # Copies JetStream keeps of each stream and of the lease bucket: 1 on one embedded server,
    # 3 on a 3-node cluster (production, `make up PROFILE=production`), so losing a node loses
    # nothing and the streams keep a quorum.
    replicas: int = 1

    def streams(self) -> list[StreamConfig]:
        return [sessions_stream(self.replicas), events_stream(self.replicas)]
