"""The mailbox's push state as the dashboard shows it."""

from __future__ import annotations

import pytest

from concord.common.v1 import resources_pb2 as r
from concord_mail_connector.api.push import push_state
from concord_mail_connector.domain.push import PushMode, WatchState

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("state", "enabled", "expected"),
    [
        (None, False, r.PUSH_STATE_UNAVAILABLE),
        (WatchState(PushMode.STREAMING), False, r.PUSH_STATE_UNAVAILABLE),
        (None, True, r.PUSH_STATE_UNSPECIFIED),
        (WatchState(PushMode.STARTING), True, r.PUSH_STATE_UNSPECIFIED),
        (WatchState(PushMode.STREAMING), True, r.PUSH_STATE_ACTIVE),
        (WatchState(PushMode.PULLING), True, r.PUSH_STATE_ACTIVE),
        (WatchState(PushMode.DEGRADED, reason="ErrorServerBusy"), True, r.PUSH_STATE_DEGRADED),
    ],
)
def test_push_state_follows_the_watch(
    state: WatchState | None, enabled: bool, expected: int
) -> None:
    got, reason = push_state(state, enabled=enabled)
    assert got == expected
    assert (reason == "") == (expected == r.PUSH_STATE_ACTIVE)


def test_a_degraded_watch_says_why() -> None:
    _, reason = push_state(WatchState(PushMode.DEGRADED, reason="ErrorServerBusy"), enabled=True)
    assert reason == "ErrorServerBusy"
