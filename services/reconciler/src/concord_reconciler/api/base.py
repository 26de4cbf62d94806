"""What every room's servicer shares: the ports the composition root hands the API, stored
answers of retried requests (AIP-155), and the mailbox and session lookups they all start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.errors import (
    InvalidRequest,
    MailboxNotFound,
    PeerError,
    PeerUnavailable,
)
from concord_reconciler.kernel.kinds import Trigger
from concord_reconciler.kernel.names import mailbox_name
from concord_reconciler.kernel.sql import etag
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mailboxes.domain.ports import HealthFigures, MailAccounts, MailboxStore
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
)
from concord_reconciler.mirror.domain.ports import ConflictStore
from concord_reconciler.sessions.domain.model import SessionRecord
from concord_reconciler.sessions.domain.ports import (
    Answers,
    ScheduleView,
    SessionMessaging,
    SessionRecords,
    SessionStore,
)
from concord_reconciler.sessions.domain.schedule import SchedulePolicy
from concord_reconciler.sessions.domain.sessions import request_session
from concord_reconciler.sharing.domain.ports import EmailSharer
from concord_rpc import FailedPrecondition
from concord_rpc.identity import current_identity, require_org

__all__ = ["NO_SETTINGS_ETAG", "ApiPorts", "Context", "PeerRejected", "RoomApi", "peer_failure"]

M = TypeVar("M", bound=Message)
Context = Any  # grpc.aio.ServicerContext; generic only in the stubs

# The etag of settings never written: the defaults, as version 0.
NO_SETTINGS_ETAG = etag(0)


@dataclass(frozen=True)
class ApiPorts:
    """What the API talks to, each room through its own ports (built by `app.build`)."""

    mailboxes: MailboxStore
    session_store: SessionStore
    sessions: SessionRecords
    answers: Answers
    messaging: SessionMessaging
    accounts: MailAccounts
    conflicts: ConflictStore
    # The scheduler's view, for a mailbox's next sync time.
    schedule: tuple[ScheduleView, SchedulePolicy] | None = None
    # Unset: the Save button answers UNIMPLEMENTED (a process without crm-connector).
    sharing: EmailSharer | None = None
    # Unset: GetOrgHealth answers UNIMPLEMENTED.
    health: HealthFigures | None = None


class PeerRejected(FailedPrecondition):
    reason = "DEPENDENCY_REJECTED"


def peer_failure(error: PeerError, field: str = "") -> Exception:
    """What a client sees when a peer failed a call made for it."""
    metadata = {"peer": error.peer, "peerMethod": error.method, "peerCode": error.code}
    if error.retryable:
        return PeerUnavailable(error.describe(), metadata=metadata)
    if error.code == "INVALID_ARGUMENT" and field:
        return InvalidRequest(field, f"rejected by {error.peer}: {error.message}")
    return PeerRejected(error.describe(), metadata=metadata)


class RoomApi:
    """The base of each room's servicer; `api.servicer.ReconcilerServicer` joins them."""

    def __init__(self, ports: ApiPorts, *, wait_max_seconds: float = 60.0) -> None:
        self.ports = ports
        self.wait_max_seconds = wait_max_seconds

    async def _replay(self, method: str, request_id: str, response_type: type[M]) -> M | None:
        if not request_id:
            return None
        stored = await self.ports.answers.get_response(method, request_id)
        return response_type.FromString(stored) if stored is not None else None

    async def _remember(self, method: str, request_id: str, response: M) -> M:
        if request_id:
            await self.ports.answers.save_response(
                method, request_id, response.SerializeToString(deterministic=True)
            )
        return response

    async def _mailbox(self, mailbox_id: str) -> MailboxRecord:
        """The mailbox, if the vouched caller acts for its org (CALLER_NOT_IN_ORG otherwise)."""
        mailbox = await self.ports.mailboxes.get_mailbox(mailbox_id)
        if mailbox is None:
            raise MailboxNotFound(mailbox_name(mailbox_id))
        require_org(mailbox.org_id)
        return mailbox

    async def _check_mailbox_org(self, mailbox_id: str) -> None:
        """For methods that reach a mailbox's rows without its record: CALLER_NOT_IN_ORG when
        the mailbox is another org's; a missing one is left to the method's own NOT_FOUND.

        The gateway authorises people; this keeps a call vouched for one org (a bug, a mixed-up
        name) out of another org's mailboxes, as crm-connector, the linker and the
        mail-connector do for theirs.
        """
        mailbox = await self.ports.mailboxes.get_mailbox(mailbox_id)
        if mailbox is not None:
            require_org(mailbox.org_id)

    @staticmethod
    def _callers_org(org_id: str) -> str:
        """`org_id`, if the vouched caller acts for it; an empty one is the caller's own."""
        caller = current_identity()
        if not org_id and caller is not None:
            return caller.org
        return require_org(org_id) if org_id else org_id

    async def _request_session(
        self, mailbox_id: str, trigger: Trigger, request_id: str
    ) -> tuple[SessionRecord, bool]:
        return await request_session(
            mailbox_id,
            trigger,
            request_id,
            store=self.ports.session_store,
            queue=self.ports.messaging.queue(),
        )

    async def _org_settings(self, org_id: str) -> st.OrgSettings:
        stored = await self.ports.mailboxes.get_org_settings(org_id)
        if stored is not None:
            return stored
        settings = default_org_settings(org_id)
        settings.etag = NO_SETTINGS_ETAG
        return settings

    async def _effective(self, mailbox: MailboxRecord) -> st.MailboxSettings:
        stored = await self.ports.mailboxes.get_mailbox_settings(mailbox.mailbox_id)
        settings = effective_mailbox_settings(
            mailbox.mailbox_id,
            stored,
            await self._org_settings(mailbox.org_id),
            mailbox.owner_user_id,
        )
        settings.etag = stored.etag if stored is not None else NO_SETTINGS_ETAG
        return settings
