"""An org's health: which figures make it degraded or failing, and saying why."""

from __future__ import annotations

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.mailboxes.domain.health import OrgFigures, org_health
from concord_reconciler.mailboxes.domain.model import MailboxState

pytestmark = pytest.mark.unit


def budget(used: int = 100, concord_used: int = 40) -> res.ApiBudget:
    return res.ApiBudget(used=used, limit=15_000, concord_share=0.5, concord_used=concord_used)


def figures(**changes: object) -> OrgFigures:
    base: dict[str, object] = {
        "org_id": "acme",
        "mailboxes": {MailboxState.ACTIVE: 3},
        "failed_sessions_24h": 0,
        "quarantined_items": 2,
        "budget": budget(),
    }
    base.update(changes)
    return OrgFigures(**base)  # type: ignore[arg-type]


def test_active_mailboxes_with_budget_to_spare_are_healthy() -> None:
    health = org_health(figures())
    assert health.state == rres.HEALTH_STATE_HEALTHY
    assert list(health.reasons) == []
    assert [(m.state, m.count) for m in health.mailboxes] == [(rres.MAILBOX_STATE_ACTIVE, 3)]
    assert health.quarantined_items == 2  # item problems are shown, not an org problem
    assert health.budget.concord_used == 40


def test_suspended_or_backing_off_mailboxes_and_failed_sessions_degrade_it() -> None:
    health = org_health(
        figures(
            mailboxes={
                MailboxState.ACTIVE: 1,
                MailboxState.SUSPENDED: 1,
                MailboxState.BACKING_OFF: 2,
            },
            failed_sessions_24h=5,
        )
    )
    assert health.state == rres.HEALTH_STATE_DEGRADED
    assert len(health.reasons) == 3
    assert any("5 session(s) failed" in r for r in health.reasons)


def test_a_nearly_used_budget_degrades_and_a_used_up_one_fails() -> None:
    nearly = org_health(figures(budget=budget(concord_used=6_100)))
    assert nearly.state == rres.HEALTH_STATE_DEGRADED
    assert "81%" in nearly.reasons[0]
    used_up = org_health(figures(budget=budget(concord_used=7_500)))
    assert used_up.state == rres.HEALTH_STATE_FAILING
    org_limit = org_health(figures(budget=budget(used=15_000, concord_used=10)))
    assert org_limit.state == rres.HEALTH_STATE_FAILING


@pytest.mark.parametrize(
    ("failure", "says"),
    [("SALESFORCE_LOGIN_FAILED", "reconnect the org"), ("UNAVAILABLE", "could not be reached")],
)
def test_an_unreadable_budget_fails_it_and_says_why(failure: str, says: str) -> None:
    health = org_health(figures(budget=None, budget_failure=failure))
    assert health.state == rres.HEALTH_STATE_FAILING
    assert says in health.reasons[0]
    assert not health.HasField("budget")


def stream(
    state: res.ChangeStreamState.ValueType, lag_s: int = 0, reason: str = ""
) -> res.ChangeStream:
    message = res.ChangeStream(org="orgs/acme", state=state, reason=reason)
    message.lag.FromSeconds(lag_s)
    return message


@pytest.mark.parametrize(
    ("change_stream", "state", "says"),
    [
        (None, rres.HEALTH_STATE_HEALTHY, None),
        (stream(res.CHANGE_STREAM_STATE_STREAMING, lag_s=2), rres.HEALTH_STATE_HEALTHY, None),
        (stream(res.CHANGE_STREAM_STATE_OFF), rres.HEALTH_STATE_HEALTHY, None),
        (stream(res.CHANGE_STREAM_STATE_STARTING), rres.HEALTH_STATE_HEALTHY, None),
        (
            stream(res.CHANGE_STREAM_STATE_STREAMING, lag_s=95),
            rres.HEALTH_STATE_DEGRADED,
            "Salesforce changes reach Concord 95 s late",
        ),
        (
            stream(res.CHANGE_STREAM_STATE_FAILING, reason="/data/EventChangeEvent: AioRpcError"),
            rres.HEALTH_STATE_DEGRADED,
            "the change stream fails (/data/EventChangeEvent: AioRpcError)",
        ),
        (
            stream(res.CHANGE_STREAM_STATE_SILENT, reason="no report for 41 s"),
            rres.HEALTH_STATE_DEGRADED,
            "wait for the schedule: the change stream is silent (no report for 41 s)",
        ),
    ],
)
def test_the_change_stream_is_shown_and_a_failing_silent_or_late_one_degrades_it(
    change_stream: res.ChangeStream | None, state: rres.HealthState.ValueType, says: str | None
) -> None:
    health = org_health(figures(change_stream=change_stream))
    assert health.state == state
    if says is None:
        assert list(health.reasons) == []
    else:
        assert [says in reason for reason in health.reasons] == [True]
    assert health.HasField("change_stream") is (change_stream is not None)
    if change_stream is not None:
        assert health.change_stream == change_stream
