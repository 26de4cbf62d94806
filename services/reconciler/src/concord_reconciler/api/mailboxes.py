"""The mailboxes room on the wire: Mailboxes, their settings, the org's settings and health."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord_reconciler.api.base import NO_SETTINGS_ETAG, Context, RoomApi, peer_failure
from concord_reconciler.api.paging import decode_token, encode_token, page_size
from concord_reconciler.kernel.clock import utcnow
from concord_reconciler.kernel.errors import (
    EtagMismatch,
    InvalidRequest,
    MailboxAlreadyExists,
    PeerError,
    SettingsAccessDisabled,
)
from concord_reconciler.kernel.names import (
    new_mailbox_id,
    parse_mailbox_id,
    parse_mailbox_name,
    parse_mailbox_settings_name,
    parse_org_name,
    parse_org_settings_name,
)
from concord_reconciler.kernel.wire import timestamp
from concord_reconciler.mailboxes.domain.health import org_health
from concord_reconciler.mailboxes.domain.model import MailboxRecord, MailboxState
from concord_reconciler.mailboxes.domain.settings import (
    locked_mailbox_fields,
    merge_mailbox_settings,
    merge_org_settings,
    settings_access_disabled,
)
from concord_reconciler.mailboxes.wire import mailbox_to_proto
from concord_reconciler.sessions.domain.model import SessionRecord
from concord_reconciler.sessions.domain.schedule import next_due
from concord_reconciler.sessions.domain.sessions import cancel_session
from concord_reconciler.sessions.wire import session_to_proto
from concord_rpc import Unimplemented
from concord_rpc.identity import CallerNotInOrg, require_org

__all__ = ["MailboxesApi"]


log = logging.getLogger(__name__)


class MailboxesApi(RoomApi):
    async def CreateMailbox(
        self, request: api.CreateMailboxRequest, context: Context
    ) -> api.CreateMailboxResponse:
        method = "CreateMailbox"
        record = _new_mailbox(request)
        require_org(record.org_id)
        replay = await self._replay(method, request.request_id, api.CreateMailboxResponse)
        if replay is not None:
            return replay
        await self._refuse_taken(record)
        response = api.CreateMailboxResponse(mailbox=mailbox_to_proto(record))
        if request.HasField("account"):
            account = mail.MailboxAccount()
            account.CopyFrom(request.account)
            account.name = f"{record.name}/account"
            account.address = account.address or record.address
            account.provider = account.provider or record.provider
            try:
                await self.ports.accounts.upsert_account(account, request.request_id)
            except PeerError as error:
                raise peer_failure(error, "account") from error
        try:
            await self.ports.mailboxes.insert_mailbox(
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
            await self._refuse_taken(record)
            raise
        return response

    async def _refuse_taken(self, record: MailboxRecord) -> None:
        """Mailbox ids are one namespace for every org (`mailboxes/{mailbox}`): an id another
        org holds is refused as not the caller's (CALLER_NOT_IN_ORG, which the gateway answers
        like any mailbox the caller may not see), never as "already exists", which would tell
        one org the ids of another's mailboxes (docs/adr/0004-mailbox-ids-across-orgs.md)."""
        existing = await self.ports.mailboxes.get_mailbox(record.mailbox_id)
        if existing is None:
            return
        if existing.org_id != record.org_id:
            raise CallerNotInOrg("the caller does not act for this mailbox's org")
        raise MailboxAlreadyExists(record.name)

    async def GetMailbox(
        self, request: api.GetMailboxRequest, context: Context
    ) -> api.GetMailboxResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.name))
        message = mailbox_to_proto(mailbox)
        (push, _reason), due = await asyncio.gather(
            self.ports.accounts.push_state(mailbox.name), self._next_sync(mailbox.mailbox_id)
        )
        message.push_state = push
        if due is not None:
            message.next_sync_time.CopyFrom(timestamp(due))
        return api.GetMailboxResponse(mailbox=message)

    async def _next_sync(self, mailbox_id: str) -> datetime | None:
        """When the schedule will next sync the mailbox (None: suspended, or now pending)."""
        if self.ports.schedule is None:
            return None
        reader, policy = self.ports.schedule
        rows = await reader.rows(only=mailbox_id)
        due = next_due(rows[0], policy) if rows else None
        # Overdue means the next tick: never a time in the past.
        return None if due is None else max(due, utcnow())

    async def ListMailboxes(
        self, request: api.ListMailboxesRequest, context: Context
    ) -> api.ListMailboxesResponse:
        org_id = self._callers_org(parse_org_name(request.org) if request.org else "") or None
        state = MailboxState(request.state) if request.state else None
        limit = page_size(request.page_size)
        after = decode_token("mailboxes", request.page_token)
        found = await self.ports.mailboxes.list_mailboxes(
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
        mailbox_id = parse_mailbox_name(request.name)
        # Before any stored answer is replayed: a retry is answered to its own org only.
        await self._check_mailbox_org(mailbox_id)
        replay = await self._replay(method, request.request_id, api.DeleteMailboxResponse)
        if replay is not None:
            return replay
        mailbox = await self._mailbox(mailbox_id)
        if request.etag and request.etag != mailbox.etag:
            raise EtagMismatch(mailbox.name)
        try:
            await self.ports.accounts.delete_account(mailbox.name)
        except PeerError as error:
            raise peer_failure(error) from error
        await self.ports.mailboxes.delete_mailbox(mailbox.mailbox_id, expected_etag=request.etag)
        return await self._remember(method, request.request_id, api.DeleteMailboxResponse())

    async def SuspendMailbox(
        self, request: api.SuspendMailboxRequest, context: Context
    ) -> api.SuspendMailboxResponse:
        method = "SuspendMailbox"
        mailbox_id = parse_mailbox_name(request.name)
        await self._check_mailbox_org(mailbox_id)
        replay = await self._replay(method, request.request_id, api.SuspendMailboxResponse)
        if replay is not None:
            return replay
        reason = request.reason.strip() or "suspended on request"
        mailbox = await self.ports.mailboxes.set_mailbox_state(
            mailbox_id, MailboxState.SUSPENDED, reason
        )
        queued = await self.ports.sessions.queued_session(mailbox_id)
        if queued is not None:
            await self._cancel(queued, mailbox)
        response = api.SuspendMailboxResponse(mailbox=mailbox_to_proto(mailbox))
        return await self._remember(method, request.request_id, response)

    async def _cancel(self, session: SessionRecord, mailbox: MailboxRecord) -> None:
        try:
            events = self.ports.messaging.events()
            await cancel_session(
                session,
                mailbox,
                reason=f"{mailbox.name} was suspended: {mailbox.suspended_reason}",
                code="MAILBOX_SUSPENDED",
                store=self.ports.session_store,
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
        mailbox_id = parse_mailbox_name(request.name)
        await self._check_mailbox_org(mailbox_id)
        replay = await self._replay(method, request.request_id, api.ResumeMailboxResponse)
        if replay is not None:
            return replay
        mailbox = await self.ports.mailboxes.set_mailbox_state(mailbox_id, MailboxState.ACTIVE, "")
        session, _ = await self._request_session(
            mailbox_id, res.SESSION_TRIGGER_FORCE, request.request_id
        )
        response = api.ResumeMailboxResponse(
            mailbox=mailbox_to_proto(mailbox), session=session_to_proto(session)
        )
        return await self._remember(method, request.request_id, response)

    async def GetMailboxSettings(
        self, request: api.GetMailboxSettingsRequest, context: Context
    ) -> api.GetMailboxSettingsResponse:
        mailbox = await self._mailbox(parse_mailbox_settings_name(request.name))
        return api.GetMailboxSettingsResponse(settings=await self._effective(mailbox))

    async def UpdateMailboxSettings(
        self, request: api.UpdateMailboxSettingsRequest, context: Context
    ) -> api.UpdateMailboxSettingsResponse:
        method = "UpdateMailboxSettings"
        mailbox_id = parse_mailbox_settings_name(request.settings.name, "settings.name")
        await self._check_mailbox_org(mailbox_id)
        replay = await self._replay(method, request.request_id, api.UpdateMailboxSettingsResponse)
        if replay is not None:
            return replay
        mailbox = await self._mailbox(mailbox_id)
        org = await self._org_settings(mailbox.org_id)
        if settings_access_disabled(org, mailbox.owner_user_id):
            raise SettingsAccessDisabled(request.settings.name)
        stored = await self.ports.mailboxes.get_mailbox_settings(mailbox.mailbox_id)
        current_etag = stored.etag if stored is not None else NO_SETTINGS_ETAG
        if request.settings.etag and request.settings.etag != current_etag:
            raise EtagMismatch(request.settings.name)
        merged = merge_mailbox_settings(
            stored or st.MailboxSettings(),
            request.settings,
            list(request.update_mask.paths),
            locked_mailbox_fields(org, mailbox.owner_user_id),
        )
        await self.ports.mailboxes.put_mailbox_settings(
            mailbox.mailbox_id, merged, expected_etag=current_etag
        )
        response = api.UpdateMailboxSettingsResponse(settings=await self._effective(mailbox))
        return await self._remember(method, request.request_id, response)

    async def GetOrgSettings(
        self, request: api.GetOrgSettingsRequest, context: Context
    ) -> api.GetOrgSettingsResponse:
        org_id = self._callers_org(parse_org_settings_name(request.name))
        return api.GetOrgSettingsResponse(settings=await self._org_settings(org_id))

    async def UpdateOrgSettings(
        self, request: api.UpdateOrgSettingsRequest, context: Context
    ) -> api.UpdateOrgSettingsResponse:
        method = "UpdateOrgSettings"
        org_id = self._callers_org(parse_org_settings_name(request.settings.name, "settings.name"))
        replay = await self._replay(method, request.request_id, api.UpdateOrgSettingsResponse)
        if replay is not None:
            return replay
        current = await self._org_settings(org_id)
        if request.settings.etag and request.settings.etag != current.etag:
            raise EtagMismatch(request.settings.name)
        merged = merge_org_settings(current, request.settings, list(request.update_mask.paths))
        stored = await self.ports.mailboxes.put_org_settings(
            org_id, merged, expected_etag=current.etag
        )
        response = api.UpdateOrgSettingsResponse(settings=stored)
        return await self._remember(method, request.request_id, response)

    async def GetOrgHealth(
        self, request: api.GetOrgHealthRequest, context: Context
    ) -> api.GetOrgHealthResponse:
        """The org's state for its admin: mailboxes, failures, quarantine, API budget."""
        org_id = self._callers_org(parse_org_name(request.org))
        if self.ports.health is None:
            raise Unimplemented("GetOrgHealth without crm-connector", 8)
        figures = await self.ports.health.figures(org_id)
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
