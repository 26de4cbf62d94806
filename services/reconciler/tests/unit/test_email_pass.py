"""The session's email pass: pages, the EMAIL cursor, retries and re-listing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.counts import KindCounts, SessionCounts, SideCounts
from concord_reconciler.kernel.errors import SessionFailure
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore
from concord_reconciler.mirror.domain.ports import MailPage
from concord_reconciler.mirror.domain.sync import Side
from concord_reconciler.sharing.domain.email_pass import EmailOutcome, share_pass, with_kind

pytestmark = pytest.mark.unit

EMAIL = res.OBJECT_KIND_EMAIL


def change(n: int) -> res.MailChange:
    return res.MailChange(
        type=res.CHANGE_TYPE_UPSERT, ref=res.ItemRef(kind=EMAIL, native_id=f"e{n}")
    )


@dataclass
class Mailbox:
    """Pages of two emails; `pages[cursor]` is what a listing from `cursor` answers."""

    pages: dict[str, MailPage]
    retry_on: set[str] = field(default_factory=set)
    listed: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)

    async def list_emails(self, cursor: str) -> MailPage:
        self.listed.append(cursor)
        return self.pages[cursor]

    async def share(self, changes: Sequence[res.MailChange]) -> EmailOutcome:
        ids = [c.ref.native_id for c in changes]
        self.shared.extend(ids)
        counts = KindCounts(
            kind=EMAIL, mail_changes_seen=len(ids), crm=SideCounts(created=len(ids))
        )
        return EmailOutcome(counts, retry_later=bool(self.retry_on & set(ids)))


def page(first: int, next_cursor: str, *, more: bool) -> MailPage:
    return MailPage(
        changes=[change(first), change(first + 1)],
        next_cursor=res.Cursor(token=next_cursor),
        has_more=more,
    )


THREE_PAGES = {
    "": page(0, "c1", more=True),
    "c1": page(2, "c2", more=True),
    "c2": page(4, "c3", more=False),
}


async def test_every_page_is_shared_and_the_cursor_moves_past_it() -> None:
    links = MemoryLinkStore()
    mailbox = Mailbox(dict(THREE_PAGES))
    counts = await share_pass("m1", mailbox, links)
    assert mailbox.listed == ["", "c1", "c2"]
    assert counts.mail_changes_seen == 6
    assert counts.crm.created == 6
    assert (await links.load_cursors("m1", EMAIL))[Side.MAIL] == "c3"


async def test_a_retryable_failure_keeps_the_cursor_before_its_page() -> None:
    links = MemoryLinkStore()
    mailbox = Mailbox(dict(THREE_PAGES), retry_on={"e2"})
    await share_pass("m1", mailbox, links)
    assert (await links.load_cursors("m1", EMAIL))[Side.MAIL] == "c1"
    # The next session lists that page again, and goes on once it is shared.
    mailbox.retry_on.clear()
    await share_pass("m1", mailbox, links)
    assert mailbox.listed == ["", "c1", "c1", "c2"]
    assert (await links.load_cursors("m1", EMAIL))[Side.MAIL] == "c3"


async def test_a_lost_cursor_lists_everything_again() -> None:
    links = MemoryLinkStore()
    pages = dict(THREE_PAGES)
    pages["stale"] = MailPage(changes=[], full_resync_required=True)
    await links.commit("m1", EMAIL, (), (), cursors={Side.MAIL: "stale"})
    mailbox = Mailbox(pages)
    await share_pass("m1", mailbox, links)
    assert mailbox.listed == ["stale", "", "c1", "c2"]


async def test_a_connector_that_never_stops_asking_to_relist_fails_the_session() -> None:
    links = MemoryLinkStore()
    mailbox = Mailbox({"": MailPage(changes=[], full_resync_required=True)})
    with pytest.raises(SessionFailure) as failed:
        await share_pass("m1", mailbox, links)
    assert failed.value.code == "EMAIL_LISTING_LOOPS"


def test_the_email_line_adds_to_the_session_totals() -> None:
    session = SessionCounts(
        mail_changes_seen=3,
        crm=SideCounts(created=1),
        kinds=(KindCounts(kind=res.OBJECT_KIND_CALENDAR_ITEM),),
    )
    emails = KindCounts(
        kind=EMAIL, mail_changes_seen=4, crm=SideCounts(created=2, errors=1), quarantined=1
    )
    total = with_kind(session, emails)
    assert total.mail_changes_seen == 7
    assert total.crm == SideCounts(created=3, errors=1)
    assert total.quarantined == 1
    assert [k.kind for k in total.kinds] == [1, EMAIL]
