"""Push state as the API shows it: one `Subscription` per kind the mailbox's provider
subscription covers right now. A degraded watch (polled, no provider subscription) lists none."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord_mail_connector.domain.model import Kind
from concord_mail_connector.domain.push import PushMode, WatchState

__all__ = ["PUSH_ISSUE", "push_state", "subscriptions"]

# Choosing subscriptions per collection by API (Create/DeleteSubscription) comes with sessions
# on push; until then every account is watched on the folders Concord syncs.
PUSH_ISSUE = 8

_KINDS = {
    Kind.CALENDAR_ITEM: r.OBJECT_KIND_CALENDAR_ITEM,
    Kind.TASK: r.OBJECT_KIND_TASK,
    Kind.CONTACT: r.OBJECT_KIND_CONTACT,
    Kind.EMAIL: r.OBJECT_KIND_EMAIL,
}


def push_state(state: WatchState | None, *, enabled: bool) -> tuple[r.PushState.ValueType, str]:
    """The mailbox's push for the dashboard, and why it is not active."""
    if not enabled:
        return r.PUSH_STATE_UNAVAILABLE, "push is turned off"
    if state is None:
        # Accounts are picked up at the watcher's next rescan.
        return r.PUSH_STATE_UNSPECIFIED, "not watched yet"
    if state.mode in (PushMode.STREAMING, PushMode.PULLING):
        return r.PUSH_STATE_ACTIVE, ""
    if state.mode == PushMode.DEGRADED:
        return r.PUSH_STATE_DEGRADED, state.reason or "no subscription could be kept; polled"
    return r.PUSH_STATE_UNSPECIFIED, "starting"


def subscriptions(mailbox: str, state: WatchState | None) -> list[pb.Subscription]:
    if state is None:
        return []
    listed = []
    for kind in sorted(state.kinds):
        subscription = pb.Subscription(
            name=f"mailboxes/{mailbox}/subscriptions/{kind.value}", kind=_KINDS[kind]
        )
        if state.create_time is not None:
            subscription.create_time.CopyFrom(_timestamp(state.create_time))
        if state.expire_time is not None:
            subscription.expire_time.CopyFrom(_timestamp(state.expire_time))
        listed.append(subscription)
    return listed


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
