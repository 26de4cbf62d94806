"""The figures behind an org's health: three queries over the org's mailboxes, sessions and
item errors, and the Salesforce API budget and change stream from crm-connector."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.schema import SESSION_FAILED, item_errors, mailboxes, sessions
from concord_reconciler.kernel.sql import to_us
from concord_reconciler.mailboxes.domain.health import OrgFigures
from concord_reconciler.mailboxes.domain.model import MailboxState

__all__ = ["CrmFigures", "SqlHealthFigures", "org_figures"]

DAY = timedelta(hours=24)


class CrmFigures(Protocol):
    async def get_budget(self, org: str) -> res.ApiBudget: ...

    async def get_change_stream(self, org: str) -> res.ChangeStream: ...


async def org_figures(engine: AsyncEngine, crm: CrmFigures, org_id: str) -> OrgFigures:
    of_org = select(mailboxes.c.mailbox_id).where(mailboxes.c.org_id == org_id)
    since = to_us(utcnow() - DAY)
    async with engine.connect() as conn:
        by_state = {
            MailboxState(state): count
            for state, count in await conn.execute(
                select(mailboxes.c.state, func.count())
                .where(mailboxes.c.org_id == org_id)
                .group_by(mailboxes.c.state)
            )
        }
        failed = await conn.scalar(
            select(func.count())
            .select_from(sessions)
            .where(
                sessions.c.mailbox_id.in_(of_org),
                sessions.c.state == SESSION_FAILED,
                sessions.c.end_time_us >= since,
            )
        )
        quarantined = await conn.scalar(
            select(func.count())
            .select_from(item_errors)
            .where(item_errors.c.mailbox_id.in_(of_org), item_errors.c.quarantined.is_(True))
        )
    budget: res.ApiBudget | None = None
    failure = ""
    try:
        budget = await crm.get_budget(f"orgs/{org_id}")
    except PeerError as error:
        failure = error.reason or error.code
    stream: res.ChangeStream | None = None
    if budget is not None:
        try:
            stream = await crm.get_change_stream(f"orgs/{org_id}")
        except PeerError:
            # An older crm-connector, or one that cannot tell: the dashboard shows no stream
            # rather than a false alarm (Salesforce's reachability is the budget's to report).
            stream = None
    return OrgFigures(
        org_id=org_id,
        mailboxes=by_state,
        failed_sessions_24h=int(failed or 0),
        quarantined_items=int(quarantined or 0),
        budget=budget,
        budget_failure=failure,
        change_stream=stream,
    )


class SqlHealthFigures:
    """`HealthFigures` over the reconciler's database and crm-connector's budget."""

    def __init__(self, engine: AsyncEngine, crm: CrmFigures) -> None:
        self.engine = engine
        self.crm = crm

    async def figures(self, org_id: str) -> OrgFigures:
        return await org_figures(self.engine, self.crm, org_id)
