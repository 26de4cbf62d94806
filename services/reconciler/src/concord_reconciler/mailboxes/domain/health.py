"""An org's health for its admin's dashboard: one state, and the reasons behind it.

Pure: the caller gathers the numbers (mailboxes by state, failed sessions, quarantined items,
the Salesforce API budget or why it could not be read, the org's change stream) and this
decides what they mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.mailboxes.domain.model import MailboxState

__all__ = [
    "BUDGET_NEARLY_USED",
    "CRM_CREDENTIAL_FAILURES",
    "STREAM_LAG_DEGRADED",
    "OrgFigures",
    "org_health",
]

# Share of Concord's own API allowance past which the org is DEGRADED (sessions will soon be
# held back to leave room for the org's other clients).
BUDGET_NEARLY_USED = 0.8
# Failure reasons of crm-connector that no retry fixes: the org's connection must be repaired.
CRM_CREDENTIAL_FAILURES = frozenset({"SALESFORCE_LOGIN_FAILED", "ORG_CONNECTION_NOT_FOUND"})
# Past this lag, Salesforce changes reach the mailboxes noticeably late (the promise is seconds).
STREAM_LAG_DEGRADED = timedelta(seconds=60)


@dataclass(frozen=True)
class OrgFigures:
    org_id: str
    mailboxes: Mapping[MailboxState, int]
    failed_sessions_24h: int
    quarantined_items: int
    budget: res.ApiBudget | None
    # Why the budget could not be read (crm-connector's reason or status), when it could not.
    budget_failure: str = ""
    # The org's Salesforce change stream, when crm-connector could tell.
    change_stream: res.ChangeStream | None = None


def org_health(figures: OrgFigures) -> rres.OrgHealth:
    failing: list[str] = []
    degraded: list[str] = []
    budget = figures.budget
    if budget is None:
        if figures.budget_failure in CRM_CREDENTIAL_FAILURES:
            failing.append(
                f"Salesforce refuses the org's connection ({figures.budget_failure}); "
                "reconnect the org"
            )
        else:
            failing.append(f"Salesforce could not be reached ({figures.budget_failure})")
    elif budget.limit > 0:
        allowance = budget.limit * (budget.concord_share or 1.0)
        used = budget.concord_used or budget.used
        if used >= allowance:
            failing.append("Concord's share of the Salesforce API budget is used up")
        elif used >= BUDGET_NEARLY_USED * allowance:
            degraded.append(
                f"{used / allowance:.0%} of Concord's share of the Salesforce API budget is used"
            )
        if budget.used >= budget.limit:
            failing.append("the org's Salesforce API limit is reached")
    degraded.extend(_stream_reasons(figures.change_stream))
    suspended = figures.mailboxes.get(MailboxState.SUSPENDED, 0)
    backing_off = figures.mailboxes.get(MailboxState.BACKING_OFF, 0)
    if suspended:
        degraded.append(f"{suspended} mailbox(es) suspended")
    if backing_off:
        degraded.append(f"{backing_off} mailbox(es) backing off after failed sessions")
    if figures.failed_sessions_24h:
        degraded.append(f"{figures.failed_sessions_24h} session(s) failed in the last 24 hours")
    if failing:
        state = rres.HEALTH_STATE_FAILING
    elif degraded:
        state = rres.HEALTH_STATE_DEGRADED
    else:
        state = rres.HEALTH_STATE_HEALTHY
    health = rres.OrgHealth(
        org=f"orgs/{figures.org_id}",
        state=state,
        reasons=[*failing, *degraded],
        mailboxes=[
            rres.MailboxStateCount(state=int(s), count=n)  # type: ignore[arg-type]
            for s, n in sorted(figures.mailboxes.items())
            if n
        ],
        failed_sessions_24h=figures.failed_sessions_24h,
        quarantined_items=figures.quarantined_items,
    )
    if budget is not None:
        health.budget.CopyFrom(budget)
    if figures.change_stream is not None:
        health.change_stream.CopyFrom(figures.change_stream)
    return health


def _stream_reasons(stream: res.ChangeStream | None) -> list[str]:
    """A stream that fails or fell silent costs freshness, never data (the schedule syncs every
    mailbox): DEGRADED, with what the admin would want to know."""
    if stream is None:
        return []
    if stream.state in (res.CHANGE_STREAM_STATE_FAILING, res.CHANGE_STREAM_STATE_SILENT):
        return [f"Salesforce changes wait for the schedule: the change stream {_why(stream)}"]
    lag = stream.lag.ToTimedelta()
    if stream.state == res.CHANGE_STREAM_STATE_STREAMING and lag > STREAM_LAG_DEGRADED:
        return [f"Salesforce changes reach Concord {int(lag.total_seconds())} s late"]
    return []


def _why(stream: res.ChangeStream) -> str:
    verb = "fails" if stream.state == res.CHANGE_STREAM_STATE_FAILING else "is silent"
    return f"{verb} ({stream.reason})" if stream.reason else verb
