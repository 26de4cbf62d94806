"""NATS JetStream for Concord: streams SESSIONS and EVENTS, KV LEASES, traced publish/consume."""

from __future__ import annotations

from concord_events import topology
from concord_events.bus import (
    Delivery,
    Envelope,
    EventBus,
    EventWatch,
    Reject,
    Retry,
    servers,
)
from concord_events.leases import Lease, LeaseLost, LeaseStore
from concord_events.topology import (
    ALL_SESSION_REQUESTS,
    EVENTS,
    LEASES,
    SESSIONS,
    Topology,
    crm_changed,
    mail_changed,
    session_event,
    session_requested,
)

__all__ = [
    "ALL_SESSION_REQUESTS",
    "EVENTS",
    "LEASES",
    "SESSIONS",
    "Delivery",
    "Envelope",
    "EventBus",
    "EventWatch",
    "Lease",
    "LeaseLost",
    "LeaseStore",
    "Reject",
    "Retry",
    "Topology",
    "crm_changed",
    "mail_changed",
    "servers",
    "session_event",
    "session_requested",
    "topology",
]
