"""A mailbox as the reconciler holds it, and its states.

Enum values equal the proto enums' numbers (concord.common.v1), so the API converts by value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.kinds import Provider
from concord_reconciler.kernel.names import mailbox_name, org_name


class MailboxState(enum.IntEnum):
    ACTIVE = 1
    SUSPENDED = 2
    BACKING_OFF = 3
    DELETING = 4

    @property
    def accepts_sessions(self) -> bool:
        # BACKING_OFF still accepts a forced session: the back-off policy (issue #8) decides
        # whether a scheduled one runs.
        return self in (MailboxState.ACTIVE, MailboxState.BACKING_OFF)


@dataclass(frozen=True)
class MailboxRecord:
    mailbox_id: str
    org_id: str
    owner_user_id: str
    crm_user_id: str
    address: str
    provider: Provider  # concord.common.v1.MailProvider
    state: MailboxState = MailboxState.ACTIVE
    suspended_reason: str = ""
    sync_interval_seconds: float = 0.0  # 0: the org's interval
    create_time: datetime = field(default_factory=utcnow)
    update_time: datetime = field(default_factory=utcnow)
    version: int = 1

    @property
    def name(self) -> str:
        return mailbox_name(self.mailbox_id)

    @property
    def org(self) -> str:
        return org_name(self.org_id)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'
