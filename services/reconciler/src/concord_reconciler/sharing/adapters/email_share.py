"""The email pass's port over gRPC: the mail-connector lists a mailbox's emails (with their
MIME), the sharing adapter shares the selected ones exactly once per org."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mirror.domain.ports import MailPage
from concord_reconciler.sharing.adapters.sharing import EmailSharing
from concord_reconciler.sharing.domain.email_pass import EmailOutcome

__all__ = ["GrpcEmailShare"]


class EmailLister(Protocol):
    async def list_changes(self, mailbox: str, kind: Kind, cursor: res.Cursor) -> MailPage: ...


@dataclass(frozen=True)
class GrpcEmailShare:
    """One session's emails of one mailbox, with the settings read at the session's start."""

    mail: EmailLister
    sharing: EmailSharing
    mailbox: MailboxRecord
    org_settings: st.OrgSettings
    mailbox_settings: st.MailboxSettings

    async def list_emails(self, cursor: str) -> MailPage:
        return await self.mail.list_changes(
            self.mailbox.name, res.OBJECT_KIND_EMAIL, res.Cursor(token=cursor)
        )

    async def share(self, changes: Sequence[res.MailChange]) -> EmailOutcome:
        report = await self.sharing.share_emails(
            self.mailbox,
            changes,
            org_settings=self.org_settings,
            mailbox_settings=self.mailbox_settings,
        )
        # Failures are already recorded as item errors by the sharing adapter.
        return EmailOutcome(
            report.kind_counts(), retry_later=any(f.retryable for f in report.failures)
        )
