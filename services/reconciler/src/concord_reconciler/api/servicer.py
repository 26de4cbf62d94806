"""ReconcilerService: mailboxes, settings, sessions, item errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_events import EventBus, session_event
from concord_reconciler.adapters.health import BudgetSource, org_figures
from concord_reconciler.adapters.links import SqlLinkStore
from concord_reconciler.adapters.messaging import NatsSessionEvents, NatsSessionQueue
from concord_reconciler.adapters.peers import GrpcMailSide
from concord_reconciler.adapters.scheduler import ScheduleReader
from concord_reconciler.adapters.sharing import EmailSharing, ShareError
from concord_reconciler.adapters.store import SessionKey, SqlStore, etag, to_us
from concord_reconciler.api.conflicts import conflict_to_proto, side_from_proto
from concord_reconciler.api.paging import decode_token, encode_token, page_size
from concord_reconciler.domain.conflicts import (
    ConflictNotFound,
    parse_conflict_name,
    resolution_for,
)
from concord_reconciler.domain.errors import (
    EtagMismatch,
    InvalidRequest,
    ItemErrorNotFound,
    MailboxAlreadyExists,
    MailboxNotFound,
    MailboxSuspended,
    PeerError,
    PeerUnavailable,
    SessionNotFound,
    SettingsAccessDisabled,
)
from concord_reconciler.domain.health import org_health
from concord_reconciler.domain.model import MailboxRecord, MailboxState, SessionRecord, utcnow
from concord_reconciler.domain.names import (
    mailbox_name,
    new_mailbox_id,
    parse_item_error_name,
    parse_mailbox_id,
    parse_mailbox_name,
    parse_mailbox_settings_name,
    parse_org_name,
    parse_org_settings_name,
    parse_session_name,
)
from concord_reconciler.domain.schedule import SchedulePolicy, next_due
from concord_reconciler.domain.sessions import cancel_session, request_session
from concord_reconciler.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
    locked_mailbox_fields,
    merge_mailbox_settings,
    merge_org_settings,
    settings_access_disabled,
)
from concord_reconciler.domain.sharing import EmailNotFound, EmailNotShareable, EmailShareBusy
from concord_reconciler.domain.sync import LinkState
from concord_reconciler.wire import (
    item_error_to_proto,
    mailbox_to_proto,
    session_to_proto,
    timestamp,
)
from concord_rpc import FailedPrecondition, Unimplemented

__all__ = ["SERVICE_NAME", "ReconcilerServicer"]

log = logging.getLogger(__name__)

SERVICE_NAME: str = api.DESCRIPTOR.services_by_name["ReconcilerService"].full_name

M = TypeVar("M", bound=Message)
Context = Any  # grpc.aio.ServicerContext; generic only in the stubs

# WaitSession re-reads the session this often even without an event: core NATS drops
# messages while a connection is re-established, and a lost wake-up must not cost the timeout.
WAIT_POLL_SECONDS = 2.0
_NO_SETTINGS_ETAG = etag(0)


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


class ReconcilerServicer(api_grpc.ReconcilerServiceServicer):
    def __init__(
        self,
        store: SqlStore,
        bus: Callable[[], EventBus],
        mail_accounts: GrpcMailSide,
        *,
        wait_max_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self._bus = bus
        self.mail_accounts = mail_accounts
        self.wait_max_seconds = wait_max_seconds

    # -- helpers -------------------------------------------------------------------------

    async def _replay(self, method: str, request_id: str, response_type: type[M]) -> M | None:
        if not request_id:
            return None
        stored = await self.store.get_response(method, request_id)
        return response_type.FromString(stored) if stored is not None else None

    async def _remember(self, method: str, request_id: str, response: M) -> M:
        if request_id:
            await self.store.save_response(
                method, request_id, response.SerializeToString(deterministic=True)
            )
        return response

    async def _mailbox(self, mailbox_id: str) -> MailboxRecord:
        mailbox = await self.store.get_mailbox(mailbox_id)
        if mailbox is None:
            raise MailboxNotFound(mailbox_name(mailbox_id))
        return mailbox

    async def _request_session(
        self, mailbox_id: str, trigger: int, request_id: str
    ) -> tuple[SessionRecord, bool]:
        bus = self._bus()
        return await request_session(
            mailbox_id, trigger, request_id, store=self.store, queue=NatsSessionQueue(bus)
        )

    async def _org_settings(self, org_id: str) -> st.OrgSettings:
        stored = await self.store.get_org_settings(org_id)
        if stored is not None:
            return stored
        settings = default_org_settings(org_id)
        settings.etag = _NO_SETTINGS_ETAG
        return settings

    # -- mailboxes -----------------------------------------------------------------------

    async def CreateMailbox(
        self, request: api.CreateMailboxRequest, context: Context
    ) -> api.CreateMailboxResponse:
        method = "CreateMailbox"
        replay = await self._replay(method, request.request_id, api.CreateMailboxResponse)
        if replay is not None:
            return replay
        record = _new_mailbox(request)
        if await self.store.get_mailbox(record.mailbox_id) is not None:
            raise MailboxAlreadyExists(record.name)
        response = api.CreateMailboxResponse(mailbox=mailbox_to_proto(record))
        if request.HasField("account"):
            account = mail.MailboxAccount()
            account.CopyFrom(request.account)
            account.name = f"{record.name}/account"
            account.address = account.address or record.address
            account.provider = account.provider or record.provider  # type: ignore[assignment]
            try:
                await self.mail_accounts.upsert_account(account, request.request_id)
            except PeerError as error:
                raise peer_failure(error, "account") from error
        try:
            await self.store.insert_mailbox(
                record,
                response=(method, request.request_id, response.SerializeToString())
                if request.request_id
                else None,
            )
        except MailboxAlreadyExists:
            # A concurrent retry of this very request won the race: answer as it did.
            replay = await self._replay(method, request.request_id, api.CreateMailboxResponse)
            if replay is not None:
                return replay
            raise
        return response

    async def GetMailbox(
        self, request: api.GetMailboxRequest, context: Context
    ) -> api.GetMailboxResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.name))
        message = mailbox_to_proto(mailbox)
        (push, _reason), due = await asyncio.gather(
            self.mail_accounts.push_state(mailbox.name), self._next_sync(mailbox.mailbox_id)
        )
        message.push_state = push
        if due is not None:
            message.next_sync_time.CopyFrom(timestamp(due))
        return api.GetMailboxResponse(mailbox=message)

    async def _next_sync(self, mailbox_id: str) -> datetime | None:
        """When the schedule will next sync the mailbox (None: suspended, or now pending)."""
        if self.schedule is None:
            return None
        reader, policy = self.schedule
        rows = await reader.rows(only=mailbox_id)
        due = next_due(rows[0], policy) if rows else None
        # Overdue means the next tick: never a time in the past.
        return None if due is None else max(due, utcnow())

    async def ListMailboxes(
        self, request: api.ListMailboxesRequest, context: Context
    ) -> api.ListMailboxesResponse:
        org_id = parse_org_name(request.org) if request.org else None
        state = MailboxState(request.state) if request.state else None
        limit = page_size(request.page_size)
        after = decode_token("mailboxes", request.page_token)
        found = await self.store.list_mailboxes(
            org_id=org_id, state=state, after=str(after[0]) if after else None, limit=limit + 1
        )
        response = api.ListMailboxesResponse(mailboxes=[mailbox_to_proto(m) for m in found[:limit]])
        if len(found) > limit:
            response.next_page_token = encode_token("mailboxes", [found[limit - 1].mailbox_id])
        return response

    async def DeleteMailbox(
        self, request: api.DeleteMailboxRequest, context: Context
    ) -> api.DeleteMailboxResponse:
        method = "DeleteMailbox"
        replay = await self._replay(method, request.request_id, api.DeleteMailboxResponse)
        if replay is not None:
            return replay
        mailbox = await self._mailbox(parse_mailbox_name(request.name))
        if request.etag and request.etag != mailbox.etag:
            raise EtagMismatch(mailbox.name)
        try:
            await self.mail_accounts.delete_account(mailbox.name)
        except PeerError as error:
            raise peer_failure(error) from error
        await self.store.delete_mailbox(mailbox.mailbox_id, expected_etag=request.etag)
        return await self._remember(method, request.request_id, api.DeleteMailboxResponse())

    async def SuspendMailbox(
        self, request: api.SuspendMailboxRequest, context: Context
    ) -> api.SuspendMailboxResponse:
        method = "SuspendMailbox"
        replay = await self._replay(method, request.request_id, api.SuspendMailboxResponse)
        if replay is not None:
            return replay
        mailbox_id = parse_mailbox_name(request.name)
        reason = request.reason.strip() or "suspended on request"
        mailbox = await self.store.set_mailbox_state(mailbox_id, MailboxState.SUSPENDED, reason)
        queued = await self.store.queued_session(mailbox_id)
        if queued is not None:
            await self._cancel(queued, mailbox)
        response = api.SuspendMailboxResponse(mailbox=mailbox_to_proto(mailbox))
        return await self._remember(method, request.request_id, response)

    async def _cancel(self, session: SessionRecord, mailbox: MailboxRecord) -> None:
        try:
            events = NatsSessionEvents(self._bus())
            await cancel_session(
                session,
                mailbox,
                reason=f"{mailbox.name} was suspended: {mailbox.suspended_reason}",
                code="MAILBOX_SUSPENDED",
                store=self.store,
                events=events,
            )
        except Exception:
            # The suspension stands without it: the consumer cancels the session when it
            # comes to it, and WaitSession re-reads without an event.
            log.warning("could not cancel session %s now", session.session_id, exc_info=True)

    async def ResumeMailbox(
        self, request: api.ResumeMailboxRequest, context: Context
    ) -> api.ResumeMailboxResponse:
        method = "ResumeMailbox"
        replay = await self._replay(method, request.request_id, api.ResumeMailboxResponse)
        if replay is not None:
            return replay
        mailbox_id = parse_mailbox_name(request.name)
        mailbox = await self.store.set_mailbox_state(mailbox_id, MailboxState.ACTIVE, "")
        session, _ = await self._request_session(
            mailbox_id, res.SESSION_TRIGGER_FORCE, request.request_id
        )
        response = api.ResumeMailboxResponse(
            mailbox=mailbox_to_proto(mailbox), session=session_to_proto(session)
        )
        return await self._remember(method, request.request_id, response)

    # -- settings ------------------------------------------------------------------------

    async def GetMailboxSettings(
        self, request: api.GetMailboxSettingsRequest, context: Context
    ) -> api.GetMailboxSettingsResponse:
        mailbox = await self._mailbox(parse_mailbox_settings_name(request.name))
        return api.GetMailboxSettingsResponse(settings=await self._effective(mailbox))

    async def _effective(self, mailbox: MailboxRecord) -> st.MailboxSettings:
        stored = await self.store.get_mailbox_settings(mailbox.mailbox_id)
        settings = effective_mailbox_settings(
            mailbox.mailbox_id,
            stored,
            await self._org_settings(mailbox.org_id),
            mailbox.owner_user_id,
        )
        settings.etag = stored.etag if stored is not None else _NO_SETTINGS_ETAG
        return settings

    async def UpdateMailboxSettings(
        self, request: api.UpdateMailboxSettingsRequest, context: Context
    ) -> api.UpdateMailboxSettingsResponse:
        method = "UpdateMailboxSettings"
        replay = await self._replay(method, request.request_id, api.UpdateMailboxSettingsResponse)
        if replay is not None:
            return replay
        mailbox = await self._mailbox(
            parse_mailbox_settings_name(request.settings.name, "settings.name")
        )
        org = await self._org_settings(mailbox.org_id)
        if settings_access_disabled(org, mailbox.owner_user_id):
            raise SettingsAccessDisabled(request.settings.name)
        stored = await self.store.get_mailbox_settings(mailbox.mailbox_id)
        current_etag = stored.etag if stored is not None else _NO_SETTINGS_ETAG
        if request.settings.etag and request.settings.etag != current_etag:
            raise EtagMismatch(request.settings.name)
        merged = merge_mailbox_settings(
            stored or st.MailboxSettings(),
            request.settings,
            list(request.update_mask.paths),
            locked_mailbox_fields(org, mailbox.owner_user_id),
        )
        await self.store.put_mailbox_settings(
            mailbox.mailbox_id, merged, expected_etag=current_etag
        )
        response = api.UpdateMailboxSettingsResponse(settings=await self._effective(mailbox))
        return await self._remember(method, request.request_id, response)

    async def GetOrgSettings(
        self, request: api.GetOrgSettingsRequest, context: Context
    ) -> api.GetOrgSettingsResponse:
        org_id = parse_org_settings_name(request.name)
        return api.GetOrgSettingsResponse(settings=await self._org_settings(org_id))

    async def UpdateOrgSettings(
        self, request: api.UpdateOrgSettingsRequest, context: Context
    ) -> api.UpdateOrgSettingsResponse:
        method = "UpdateOrgSettings"
        replay = await self._replay(method, request.request_id, api.UpdateOrgSettingsResponse)
        if replay is not None:
            return replay
        org_id = parse_org_settings_name(request.settings.name, "settings.name")
        current = await self._org_settings(org_id)
        if request.settings.etag and request.settings.etag != current.etag:
            raise EtagMismatch(request.settings.name)
        merged = merge_org_settings(current, request.settings, list(request.update_mask.paths))
        stored = await self.store.put_org_settings(org_id, merged, expected_etag=current.etag)
        response = api.UpdateOrgSettingsResponse(settings=stored)
        return await self._remember(method, request.request_id, response)

    # -- sessions ------------------------------------------------------------------------

    async def RequestSession(
        self, request: api.RequestSessionRequest, context: Context
    ) -> api.RequestSessionResponse:
        method = "RequestSession"
        mailbox_id = parse_mailbox_name(request.mailbox, "mailbox")
        if request.trigger == res.SESSION_TRIGGER_UNSPECIFIED:
            raise InvalidRequest("trigger", "required")
        if request.trigger not in res.SessionTrigger.values():
            raise InvalidRequest("trigger", f"unknown trigger {request.trigger}")
        replay = await self._replay(method, request.request_id, api.RequestSessionResponse)
        if replay is not None:
            return replay
        session, coalesced = await self._request_session(
            mailbox_id, request.trigger, request.request_id
        )
        response = api.RequestSessionResponse(
            session=session_to_proto(session), coalesced=coalesced
        )
        return await self._remember(method, request.request_id, response)

    async def _session(self, name: str) -> SessionRecord:
        mailbox_id, session_id = parse_session_name(name)
        session = await self.store.get_session(session_id)
        if session is None or session.mailbox_id != mailbox_id:
            raise SessionNotFound(name)
        return session

    async def GetSession(
        self, request: api.GetSessionRequest, context: Context
    ) -> api.GetSessionResponse:
        return api.GetSessionResponse(session=session_to_proto(await self._session(request.name)))

    async def ListSessions(
        self, request: api.ListSessionsRequest, context: Context
    ) -> api.ListSessionsResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.parent, "parent"))
        limit = page_size(request.page_size)
        after = decode_token("sessions", request.page_token)
        key = SessionKey(int(after[0]), str(after[1])) if after and len(after) == 2 else None
        found = await self.store.list_sessions(mailbox.mailbox_id, after=key, limit=limit + 1)
        response = api.ListSessionsResponse(sessions=[session_to_proto(s) for s in found[:limit]])
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = encode_token(
                "sessions", [to_us(last.request_time), last.session_id]
            )
        return response

    async def WaitSession(
        self, request: api.WaitSessionRequest, context: Context
    ) -> api.WaitSessionResponse:
        parse_session_name(request.name)
        timeout = self.wait_max_seconds
        if request.HasField("timeout"):
            requested = request.timeout.ToTimedelta().total_seconds()
            if requested < 0:
                raise InvalidRequest("timeout", "must not be negative")
            timeout = min(requested, timeout)
        remaining = context.time_remaining()
        if remaining is not None:
            # Answer (timed out) before the client's own deadline cuts the call off.
            timeout = max(0.0, min(timeout, remaining - 0.1))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        session_id = request.name.rsplit("/", 1)[1]
        # Subscribe before reading, so an outcome published in between still wakes us.
        async with self._bus().watch(session_event(session_id, "*")) as watch:
            session = await self._session(request.name)
            while not session.state.terminal:
                left = deadline - loop.time()
                if left <= 0:
                    return api.WaitSessionResponse(
                        session=session_to_proto(session), timed_out=True
                    )
                try:
                    async with asyncio.timeout(min(left, WAIT_POLL_SECONDS)):
                        await watch.next()
                except TimeoutError:
                    pass
                session = await self._session(request.name)
        return api.WaitSessionResponse(session=session_to_proto(session))

    # -- item errors ---------------------------------------------------------------------

    async def ListItemErrors(
        self, request: api.ListItemErrorsRequest, context: Context
    ) -> api.ListItemErrorsResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.parent, "parent"))
        limit = page_size(request.page_size)
        after = decode_token("itemErrors", request.page_token)
        key = (int(after[0]), str(after[1])) if after and len(after) == 2 else None
        found, total = await self.store.list_item_errors(
            mailbox.mailbox_id,
            quarantined_only=request.quarantined_only,
            after=key,
            limit=limit + 1,
        )
        response = api.ListItemErrorsResponse(
            item_errors=[item_error_to_proto(e) for e in found[:limit]], total_size=total
        )
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = encode_token(
                "itemErrors", [to_us(last.last_seen_time), last.item_error_id]
            )
        return response

    async def RetryItem(
        self, request: api.RetryItemRequest, context: Context
    ) -> api.RetryItemResponse:
        method = "RetryItem"
        mailbox_id, item_error_id = parse_item_error_name(request.name)
        replay = await self._replay(method, request.request_id, api.RetryItemResponse)
        if replay is not None:
            return replay
        if await self.store.get_item_error(mailbox_id, item_error_id) is None:
            raise ItemErrorNotFound(request.name)
        await self.store.release_item_error(mailbox_id, item_error_id)
        released = await self.store.get_item_error(mailbox_id, item_error_id)
        if released is None:  # the mailbox was deleted in between
            raise ItemErrorNotFound(request.name)
        session, _ = await self._request_session(
            mailbox_id, res.SESSION_TRIGGER_RETRY, request.request_id
        )
        response = api.RetryItemResponse(
            item_error=item_error_to_proto(released), session=session_to_proto(session)
        )
        return await self._remember(method, request.request_id, response)

    # -- conflicts held for the user ----------------------------------------------------

    async def ListConflicts(
        self, request: api.ListConflictsRequest, context: Context
    ) -> api.ListConflictsResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.parent, "parent"))
        limit = page_size(request.page_size)
        after = decode_token("conflicts", request.page_token)
        found = await SqlLinkStore(self.store.engine).list_conflicts(
            mailbox.mailbox_id, str(after[0]) if after else "", limit + 1
        )
        response = api.ListConflictsResponse(
            conflicts=[conflict_to_proto(link) for link in found[:limit]]
        )
        if len(found) > limit:
            response.next_page_token = encode_token("conflicts", [found[limit - 1].link_id])
        return response

    async def ResolveConflict(
        self, request: api.ResolveConflictRequest, context: Context
    ) -> api.ResolveConflictResponse:
        method = "ResolveConflict"
        mailbox_id, link_id = parse_conflict_name(request.name)
        replay = await self._replay(method, request.request_id, api.ResolveConflictResponse)
        if replay is not None:
            return replay
        take = (
            side_from_proto(request.take, "take")
            if request.take != res.SYNC_SIDE_UNSPECIFIED
            else None
        )
        choices = [(c.field, side_from_proto(c.take, "fields")) for c in request.fields]
        links = SqlLinkStore(self.store.engine)
        link = await links.get_link(link_id)
        if link is None or link.mailbox_id != mailbox_id or link.state is not LinkState.CONFLICT:
            raise ConflictNotFound(request.name)
        resolution = resolution_for(link, take, choices)
        if not await links.resolve(link_id, resolution):  # a session settled it meanwhile
            raise ConflictNotFound(request.name)
        response = api.ResolveConflictResponse(
            conflict=conflict_to_proto(replace(link, resolution=resolution))
        )
        try:
            session, _ = await self._request_session(
                mailbox_id, res.SESSION_TRIGGER_RETRY, request.request_id
            )
            response.session.CopyFrom(session_to_proto(session))
        except MailboxSuspended:
            pass  # the choice stands; the first session after a resume applies it
        return await self._remember(method, request.request_id, response)

    # -- later issues --------------------------------------------------------------------

    # Set by the process once crm-connector and linker channels exist (issue #7); unset, the
    # Save button answers UNIMPLEMENTED as before.
    email_sharing: EmailSharing | None = None
    # Where the org's Salesforce API budget is read (crm-connector); set by the process.
    crm_budget: BudgetSource | None = None
    # The scheduler's view, for a mailbox's next sync time; set by the process.
    schedule: tuple[ScheduleReader, SchedulePolicy] | None = None

    async def ShareEmail(
        self, request: api.ShareEmailRequest, context: Context
    ) -> api.ShareEmailResponse:
        """The Save button: share one email now, exactly once, whatever the user's selection."""
        method = "ShareEmail"
        if self.email_sharing is None:
            raise Unimplemented("ShareEmail", 7)
        mailbox_id = parse_mailbox_name(request.mailbox, "mailbox")
        ref = request.message
        if ref.kind not in (res.OBJECT_KIND_UNSPECIFIED, res.OBJECT_KIND_EMAIL):
            raise InvalidRequest("message.kind", "must be OBJECT_KIND_EMAIL")
        if not ref.native_id.strip():
            raise InvalidRequest("message.native_id", "required")
        replay = await self._replay(method, request.request_id, api.ShareEmailResponse)
        if replay is not None:
            return replay
        mailbox = await self._mailbox(mailbox_id)
        wanted = res.ItemRef()
        wanted.CopyFrom(ref)
        wanted.kind = res.OBJECT_KIND_EMAIL
        try:
            found = await self.mail_accounts.get_items(mailbox.name, [wanted])
        except PeerError as error:
            raise peer_failure(error, "message") from error
        for failure in found.failures:
            raise EmailNotShareable(mailbox.name, failure.problem.reason, failure.problem.message)
        emails = [i for i in found.items if i.WhichOneof("payload") == "email"]
        if not emails:
            raise EmailNotFound(mailbox.name, ref.native_id)
        org = await self._org_settings(mailbox.org_id)
        if org.email_target == st.EMAIL_TARGET_TASK:
            raise EmailNotShareable(
                mailbox.name, "EMAIL_TARGET_TASK", "the org keeps emails as Tasks (not built yet)"
            )
        try:
            outcome = await self.email_sharing.share_item(
                mailbox,
                emails[0].ref,
                emails[0].email,
                org,
                await self._effective(mailbox),
                chosen=list(request.related_record_ids),
            )
        except ShareError as error:
            if error.retryable:
                raise EmailShareBusy(error.message, metadata={"cause": error.reason}) from error
            raise EmailNotShareable(mailbox.name, error.reason, error.message) from error
        except PeerError as error:
            raise peer_failure(error) from error
        # Written now, outside any session: `session` stays unset. `already_shared` covers an
        # EmailMessage another mailbox (or an earlier Save) wrote; this mailbox's relations
        # were added to it.
        response = api.ShareEmailResponse(
            already_shared=outcome.status != "created", email_message_id=outcome.email_message_id
        )
        return await self._remember(method, request.request_id, response)

    async def GetOrgHealth(
        self, request: api.GetOrgHealthRequest, context: Context
    ) -> api.GetOrgHealthResponse:
        """The org's state for its admin: mailboxes, failures, quarantine, API budget."""
        org_id = parse_org_name(request.org)
        if self.crm_budget is None:
            raise Unimplemented("GetOrgHealth without crm-connector", 8)
        figures = await org_figures(self.store.engine, self.crm_budget, org_id)
        return api.GetOrgHealthResponse(health=org_health(figures))


def _new_mailbox(request: api.CreateMailboxRequest) -> MailboxRecord:
    """Validate a CreateMailbox request into the record to store."""
    if not request.HasField("mailbox"):
        raise InvalidRequest("mailbox", "required")
    given = request.mailbox
    mailbox_id = (
        parse_mailbox_id(request.mailbox_id, "mailbox_id")
        if request.mailbox_id
        else new_mailbox_id()
    )
    org_id = parse_org_name(given.org, "mailbox.org")
    for field in ("owner_user_id", "crm_user_id"):
        if not getattr(given, field).strip():
            raise InvalidRequest(f"mailbox.{field}", "required")
    local, at, domain = given.address.strip().rpartition("@")
    if not (local and at and "." in domain):
        raise InvalidRequest("mailbox.address", "must be an email address")
    if given.provider == res.MAIL_PROVIDER_UNSPECIFIED:
        raise InvalidRequest("mailbox.provider", "required")
    if given.provider not in res.MailProvider.values():
        raise InvalidRequest("mailbox.provider", f"unknown provider {given.provider}")
    interval = (
        given.sync_interval.ToTimedelta().total_seconds()
        if given.HasField("sync_interval")
        else 0.0
    )
    if interval and interval < 60:
        raise InvalidRequest("mailbox.sync_interval", "must be at least one minute")
    if request.HasField("account"):
        account = request.account
        if account.provider and account.provider != given.provider:
            raise InvalidRequest("account.provider", "must agree with mailbox.provider")
        if account.WhichOneof("provider_settings") is None:
            raise InvalidRequest(
                "account", "provider settings (ews, graph, google or dav) required"
            )
    return MailboxRecord(
        mailbox_id=mailbox_id,
        org_id=org_id,
        owner_user_id=given.owner_user_id.strip(),
        crm_user_id=given.crm_user_id.strip(),
        address=given.address.strip(),
        provider=given.provider,
        sync_interval_seconds=interval,
    )
