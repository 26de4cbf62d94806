"""What email sharing needs of crm-connector and the linker, and what it answers: outcomes,
reports and the errors that stop one email."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.kernel.counts import KindCounts, SideCounts
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.sharing.domain.sharing import (
    FieldLoss,
)


class SharingCrm(Protocol):
    """What sharing needs of crm-connector (adapters.peers.GrpcCrmSide provides it)."""

    async def apply_batch(
        self, org: str, writes: Sequence[crm.CrmWrite]
    ) -> Sequence[crm.CrmWriteResult]: ...

    async def query_records(self, request: crm.QueryRecordsRequest) -> crm.QueryRecordsResponse: ...

    async def describe(self, org: str, sobject_type: str) -> crm.ObjectDescription: ...


class SharingLinker(Protocol):
    async def resolve_participants(
        self,
        org: str,
        user_id: str,
        kind: Kind,
        participants: Sequence[res.Participant],
        request_id: str,
        policy: linker.ResolutionPolicy | None = None,
    ) -> linker.ResolveParticipantsResponse: ...


@dataclass(frozen=True)
class ShareFailure:
    """One email not shared, with why. `quarantine`: retrying will not help until it changes."""

    ref: res.ItemRef
    reason: str
    message: str
    retryable: bool = False
    quarantine: bool = False
    # MAIL when the email could not be read (malformed MIME), CRM when the write failed.
    side: int = res.SYNC_SIDE_CRM


@dataclass(frozen=True)
class ShareOutcome:
    """What sharing one email did."""

    # `created`: this call wrote the EmailMessage; `related`: it existed (another mailbox, an
    # earlier try) and this mailbox's relations were added; `already`: this mailbox had shared
    # it before, nothing was written.
    status: str
    email_message_id: str
    relations_created: int = 0
    attachments_created: int = 0
    losses: tuple[FieldLoss, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class ShareReport:
    """Counts for the session and the dashboard, and every email that failed."""

    seen: int = 0
    selected: int = 0
    # Listed with a problem instead of content (malformed MIME at the connector).
    unreadable: int = 0
    created: int = 0
    related: int = 0
    already_shared: int = 0
    relations_created: int = 0
    attachments_created: int = 0
    failures: list[ShareFailure] = field(default_factory=list)
    # Per native id: fields that lost information, and remarks such as a hashed key.
    losses: dict[str, tuple[FieldLoss, ...]] = field(default_factory=dict)
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return sum(1 for f in self.failures if f.quarantine)

    @property
    def errors(self) -> int:
        return len(self.failures)

    def kind_counts(self) -> KindCounts:
        """The session's EMAIL line: a new EmailMessage is a create, relations added to one
        that existed an update; emails nobody selected are skipped on purpose."""
        return KindCounts(
            kind=res.OBJECT_KIND_EMAIL,
            mail_changes_seen=self.seen,
            crm=SideCounts(created=self.created, updated=self.related, errors=self.errors),
            quarantined=self.quarantined,
            skipped=self.seen - self.selected - self.unreadable,
        )


class ShareError(Exception):
    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retryable: bool = False,
        quarantine: bool = False,
        side: int = res.SYNC_SIDE_CRM,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.quarantine = quarantine
        self.side = side


class EmailSharer(Protocol):
    """Shares one email now, whatever the selection (the Save button path)."""

    async def share_item(
        self,
        mailbox: MailboxRecord,
        ref: res.ItemRef,
        item: res.EmailItem,
        org_settings: st.OrgSettings,
        mailbox_settings: st.MailboxSettings,
        chosen: Sequence[str] = (),
    ) -> ShareOutcome: ...
