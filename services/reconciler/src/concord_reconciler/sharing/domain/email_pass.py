"""A session's email pass: list the mailbox's emails since the cursor and share what is selected.

Emails are not mirrored pairs: they go one way, exactly once per org (the sharing adapter
claims each email by its Message-ID), so this pass only pages through the listing and moves
the EMAIL cursor (kept with the links) past what was shared. A page with a failure that a
retry may fix (throttling, a lost answer) stops the pass without moving the cursor, so the
next session lists it again; sharing it twice is harmless, the claim makes it a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.kernel.counts import KindCounts, SessionCounts, SideCounts
from concord_reconciler.kernel.errors import SessionFailure
from concord_reconciler.mirror.domain.ports import LinkStore, MailPage
from concord_reconciler.mirror.domain.sync import Side

__all__ = ["MAX_EMAIL_PAGES", "EmailOutcome", "EmailShare", "share_pass", "with_kind"]

# A connector that keeps answering has_more is broken; stop rather than loop for ever.
MAX_EMAIL_PAGES = 1000
EMAIL = res.OBJECT_KIND_EMAIL


@dataclass(frozen=True)
class EmailOutcome:
    counts: KindCounts
    # Some email failed in a way a later attempt may fix: keep the cursor where it was.
    retry_later: bool = False


class EmailShare(Protocol):
    """One mailbox's emails: their listing, and the sharing of what was listed."""

    async def list_emails(self, cursor: str) -> MailPage: ...

    async def share(self, changes: Sequence[res.MailChange]) -> EmailOutcome: ...


async def share_pass(mailbox_id: str, emails: EmailShare, links: LinkStore) -> KindCounts:
    """Share the emails listed since the last pass; the counts of the EMAIL kind."""
    cursor = (await links.load_cursors(mailbox_id, EMAIL)).get(Side.MAIL, "")
    total = KindCounts(kind=EMAIL)
    restarted = False
    for _ in range(MAX_EMAIL_PAGES):
        page = await emails.list_emails(cursor)
        if page.full_resync_required:
            if restarted:
                raise SessionFailure(
                    "the mail-connector asked twice in a row to list the emails again",
                    "EMAIL_LISTING_LOOPS",
                    retryable=True,
                )
            # The connector lost track: list everything again; already shared emails are
            # recognised by their Message-ID and cost no write.
            cursor, restarted = "", True
            continue
        outcome = await emails.share(page.changes)
        total = _add(total, outcome.counts)
        if outcome.retry_later:
            return total
        cursor = page.next_cursor.token
        await links.commit(mailbox_id, EMAIL, (), (), cursors={Side.MAIL: cursor})
        if not page.has_more:
            return total
    raise SessionFailure(
        f"mail-connector listed more than {MAX_EMAIL_PAGES} pages of emails",
        "TOO_MANY_PAGES",
        retryable=False,
    )


def _side(a: SideCounts, b: SideCounts) -> SideCounts:
    return SideCounts(
        created=a.created + b.created,
        updated=a.updated + b.updated,
        deleted=a.deleted + b.deleted,
        errors=a.errors + b.errors,
    )


def _add(a: KindCounts, b: KindCounts) -> KindCounts:
    return replace(
        a,
        mail_changes_seen=a.mail_changes_seen + b.mail_changes_seen,
        crm_changes_seen=a.crm_changes_seen + b.crm_changes_seen,
        mail=_side(a.mail, b.mail),
        crm=_side(a.crm, b.crm),
        conflicts=a.conflicts + b.conflicts,
        quarantined=a.quarantined + b.quarantined,
        skipped=a.skipped + b.skipped,
        guarded=a.guarded or b.guarded,
    )


def with_kind(counts: SessionCounts, kind: KindCounts) -> SessionCounts:
    """The session's counts with one more kind's line, its numbers added to the totals."""
    return replace(
        counts,
        mail_changes_seen=counts.mail_changes_seen + kind.mail_changes_seen,
        crm_changes_seen=counts.crm_changes_seen + kind.crm_changes_seen,
        mail=_side(counts.mail, kind.mail),
        crm=_side(counts.crm, kind.crm),
        conflicts=counts.conflicts + kind.conflicts,
        quarantined=counts.quarantined + kind.quarantined,
        guarded=counts.guarded + int(kind.guarded),
        skipped=counts.skipped + kind.skipped,
        kinds=(*counts.kinds, kind),
    )
