"""GatewayService: validate names, authorise the caller, delegate to reconciler or linker.

Every call to a peer runs as the authenticated caller (concord_rpc.acting_as, set by the
Authenticator), so the peer channels sign that identity into the call's metadata.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from concord.common.v1 import resources_pb2, settings_pb2
from concord.gateway.v1 import gateway_service_pb2 as pb
from concord.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from concord.linker.v1 import linker_service_pb2 as linker_pb
from concord.reconciler.v1 import reconciler_service_pb2 as rec_pb
from concord.reconciler.v1 import resources_pb2 as rres
from concord_gateway.adapters.peers import Peers, ask
from concord_gateway.api.authentication import current_principal
from concord_gateway.domain import names
from concord_gateway.domain.access import (
    MailboxOwnership,
    authorize_mailbox,
    authorize_org_admin,
    authorize_settings,
    may_see_mailbox,
    visible_org,
)
from concord_gateway.domain.errors import MailboxAccessDenied
from concord_gateway.domain.principal import Role
from concord_gateway.domain.requests import scoped_request_id
from concord_gateway.domain.routes import ROUTES, Scope, target_of
from concord_gateway.settings import GatewaySettings
from concord_rpc import from_rpc_error
from concord_rpc.identity import CallerNotInOrg

__all__ = ["GatewayServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

RECONCILER = "reconciler"
LINKER = "linker"
# Kept back from the caller's deadline so the answer (timed_out) arrives before it expires.
_DEADLINE_MARGIN = 0.5
_DEFAULT_SESSION_COUNT = 10
_DEFAULT_ITEM_ERROR_PAGE = 20
_LIST_PAGE = 100
CALLER_NOT_IN_ORG = CallerNotInOrg.reason


def _not_callers_org(err: grpc.aio.AioRpcError) -> bool:
    """The reconciler refused the caller a mailbox or org that is not theirs."""
    failure = from_rpc_error(err)
    return (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, CALLER_NOT_IN_ORG)


def _request_id(method: str, target: str, given: str) -> str:
    return scoped_request_id(current_principal(), method, target, given)


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    def __init__(self, peers: Peers, settings: GatewaySettings) -> None:
        self._reconciler = peers.reconciler
        self._linker = peers.linker
        self._settings = settings

    # -- helpers ---------------------------------------------------------------------------

    def _timeout(self, context: Context, wanted: float | None = None) -> float:
        timeout = wanted if wanted is not None else self._settings.peer_timeout_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        return timeout

    async def _mailbox(self, name: str, context: Context) -> rres.Mailbox:
        """The mailbox, once the caller is known to be allowed to act on it."""
        try:
            response = await ask(
                RECONCILER,
                self._reconciler.GetMailbox(
                    rec_pb.GetMailboxRequest(name=name), timeout=self._timeout(context)
                ),
            )
        except grpc.aio.AioRpcError as err:
            # Another org's mailbox is refused by the reconciler itself (CALLER_NOT_IN_ORG):
            # to the caller, the same as a missing one.
            if err.code() != grpc.StatusCode.NOT_FOUND and not _not_callers_org(err):
                raise
            found = None
        else:
            found = response.mailbox
        # One answer for "missing" and "not yours" (authorize_mailbox), word for word.
        authorize_mailbox(
            current_principal(), name, None if found is None else _ownership(found, name)
        )
        assert found is not None  # authorize_mailbox refused a missing one
        return found

    async def _route(
        self, method: str, request: Message, context: Context
    ) -> tuple[str, rres.Mailbox | None]:
        """What `method`'s request names, once the route table says the caller may act on it:
        (the mailbox and its record, or the org and None; nothing for Scope.CALLER)."""
        route = ROUTES[method]
        principal = current_principal()
        if route.scope is Scope.CALLER:
            return "", None
        target = target_of(route, request)
        if route.scope is Scope.ORG_ADMIN:
            org = target or principal.org_name
            authorize_org_admin(principal, org)
            return org, None
        mailbox = await self._mailbox(target, context)
        if route.scope is Scope.MAILBOX_ADMIN:
            authorize_org_admin(principal, mailbox.org)
        return target, mailbox

    async def _routed_mailbox(
        self, method: str, request: Message, context: Context
    ) -> tuple[str, rres.Mailbox]:
        """`_route` for a method whose route names a mailbox, with the mailbox's record."""
        name, mailbox = await self._route(method, request, context)
        if mailbox is None:
            raise AssertionError(f"{method}'s route names no mailbox")
        return name, mailbox

    def _wait_seconds(self, requested: duration_pb2.Duration, context: Context) -> float:
        settings = self._settings
        wait = requested.ToTimedelta().total_seconds() if requested.ByteSize() else 0.0
        if wait <= 0:
            wait = settings.sync_wait_default_seconds
        wait = min(wait, settings.sync_wait_max_seconds)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(remaining - _DEADLINE_MARGIN, 0.0))
        return wait

    # -- sync control ----------------------------------------------------------------------

    async def SyncMailbox(
        self, request: pb.SyncMailboxRequest, context: Context
    ) -> pb.SyncMailboxResponse:
        name, _ = await self._route("SyncMailbox", request, context)
        requested = await ask(
            RECONCILER,
            self._reconciler.RequestSession(
                rec_pb.RequestSessionRequest(
                    mailbox=name,
                    trigger=resources_pb2.SESSION_TRIGGER_FORCE,
                    request_id=_request_id("SyncMailbox", name, request.request_id),
                ),
                timeout=self._timeout(context),
            ),
        )
        if not request.wait:
            return pb.SyncMailboxResponse(session=requested.session, coalesced=requested.coalesced)
        wait = self._wait_seconds(request.wait_timeout, context)
        timeout = duration_pb2.Duration()
        timeout.FromNanoseconds(int(wait * 1e9))
        waited = await ask(
            RECONCILER,
            self._reconciler.WaitSession(
                rec_pb.WaitSessionRequest(name=requested.session.name, timeout=timeout),
                # The reconciler answers at `wait`; the margin covers the way back.
                timeout=self._timeout(context, wait + self._settings.peer_timeout_seconds),
            ),
        )
        return pb.SyncMailboxResponse(
            session=waited.session, coalesced=requested.coalesced, timed_out=waited.timed_out
        )

    async def SuspendMailbox(
        self, request: pb.SuspendMailboxRequest, context: Context
    ) -> pb.SuspendMailboxResponse:
        name, _ = await self._route("SuspendMailbox", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.SuspendMailbox(
                rec_pb.SuspendMailboxRequest(
                    name=name,
                    reason=request.reason,
                    request_id=_request_id("SuspendMailbox", name, request.request_id),
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.SuspendMailboxResponse(mailbox=response.mailbox)

    async def ResumeMailbox(
        self, request: pb.ResumeMailboxRequest, context: Context
    ) -> pb.ResumeMailboxResponse:
        name, _ = await self._route("ResumeMailbox", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.ResumeMailbox(
                rec_pb.ResumeMailboxRequest(
                    name=name, request_id=_request_id("ResumeMailbox", name, request.request_id)
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.ResumeMailboxResponse(mailbox=response.mailbox, session=response.session)

    # -- mailboxes -------------------------------------------------------------------------

    async def RegisterMailbox(
        self, request: pb.RegisterMailboxRequest, context: Context
    ) -> pb.RegisterMailboxResponse:
        # An admin registers into their own org; leaving it out means exactly that.
        org, _ = await self._route("RegisterMailbox", request, context)
        mailbox = rres.Mailbox()
        mailbox.CopyFrom(request.mailbox)
        mailbox.org = org
        if request.mailbox_id:
            names.check_mailbox_id(request.mailbox_id, "mailbox_id")
        create = rec_pb.CreateMailboxRequest(
            mailbox=mailbox,
            mailbox_id=request.mailbox_id,  # empty: the reconciler generates one
            request_id=_request_id("RegisterMailbox", org, request.request_id),
        )
        # Optional until the mail providers arrive (issue #4); forwarded when given.
        if request.HasField("account"):
            create.account.CopyFrom(request.account)
        try:
            response = await ask(
                RECONCILER, self._reconciler.CreateMailbox(create, timeout=self._timeout(context))
            )
        except grpc.aio.AioRpcError as err:
            if not _not_callers_org(err):
                raise
            # An id another org holds (mailbox ids are one namespace): answered as any mailbox
            # the caller may not act on, never "already exists", which would tell one org
            # another's mailbox ids (docs/adr/0004-mailbox-ids-across-orgs.md).
            raise MailboxAccessDenied.named(f"mailboxes/{request.mailbox_id}") from None
        return pb.RegisterMailboxResponse(mailbox=response.mailbox)

    async def DeleteMailbox(
        self, request: pb.DeleteMailboxRequest, context: Context
    ) -> pb.DeleteMailboxResponse:
        # Like registration, disconnecting is the org admin's (Scope.MAILBOX_ADMIN): a user
        # cannot drop their mailbox out of the org's sync on their own.
        name, _ = await self._route("DeleteMailbox", request, context)
        await ask(
            RECONCILER,
            self._reconciler.DeleteMailbox(
                rec_pb.DeleteMailboxRequest(
                    name=name,
                    etag=request.etag,
                    request_id=_request_id("DeleteMailbox", name, request.request_id),
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.DeleteMailboxResponse()

    async def ListMailboxes(
        self, request: pb.ListMailboxesRequest, context: Context
    ) -> pb.ListMailboxesResponse:
        await self._route("ListMailboxes", request, context)
        principal = current_principal()
        org = visible_org(principal, names.org_name(request.org, "org") if request.org else "")
        response = await ask(
            RECONCILER,
            self._reconciler.ListMailboxes(
                rec_pb.ListMailboxesRequest(
                    org=org,
                    page_size=request.page_size or _LIST_PAGE,
                    page_token=request.page_token,
                ),
                timeout=self._timeout(context),
            ),
        )
        # The reconciler lists by org; a user's own mailboxes are picked out here, so a user's
        # page may be shorter than page_size (the next page token still continues the listing).
        visible = [m for m in response.mailboxes if may_see_mailbox(principal, _ownership(m))]
        return pb.ListMailboxesResponse(mailboxes=visible, next_page_token=response.next_page_token)

    async def GetMailboxStatus(
        self, request: pb.GetMailboxStatusRequest, context: Context
    ) -> pb.GetMailboxStatusResponse:
        name, mailbox = await self._routed_mailbox("GetMailboxStatus", request, context)
        sessions, errors = await asyncio.gather(
            ask(
                RECONCILER,
                self._reconciler.ListSessions(
                    rec_pb.ListSessionsRequest(
                        parent=name, page_size=request.session_count or _DEFAULT_SESSION_COUNT
                    ),
                    timeout=self._timeout(context),
                ),
            ),
            ask(
                RECONCILER,
                self._reconciler.ListItemErrors(
                    rec_pb.ListItemErrorsRequest(
                        parent=name,
                        page_size=request.item_error_page_size or _DEFAULT_ITEM_ERROR_PAGE,
                    ),
                    timeout=self._timeout(context),
                ),
            ),
        )
        status = pb.MailboxStatus(
            mailbox=mailbox,
            recent_sessions=sessions.sessions,
            item_error_count=errors.total_size,
            item_errors=errors.item_errors,
            item_errors_next_page_token=errors.next_page_token,
            push_state=mailbox.push_state,
        )
        if mailbox.HasField("next_sync_time"):
            status.next_sync_time.CopyFrom(mailbox.next_sync_time)
        return pb.GetMailboxStatusResponse(status=status)

    # -- sessions and item errors ----------------------------------------------------------

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        name, _ = await self._route("ListSessions", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.ListSessions(
                rec_pb.ListSessionsRequest(
                    parent=name, page_size=request.page_size, page_token=request.page_token
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.ListSessionsResponse(
            sessions=response.sessions, next_page_token=response.next_page_token
        )

    async def GetSession(
        self, request: pb.GetSessionRequest, context: Context
    ) -> pb.GetSessionResponse:
        await self._route("GetSession", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.GetSession(
                rec_pb.GetSessionRequest(name=request.name), timeout=self._timeout(context)
            ),
        )
        return pb.GetSessionResponse(session=response.session)

    async def ListItemErrors(
        self, request: pb.ListItemErrorsRequest, context: Context
    ) -> pb.ListItemErrorsResponse:
        name, _ = await self._route("ListItemErrors", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.ListItemErrors(
                rec_pb.ListItemErrorsRequest(
                    parent=name,
                    page_size=request.page_size,
                    page_token=request.page_token,
                    quarantined_only=request.quarantined_only,
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.ListItemErrorsResponse(
            item_errors=response.item_errors,
            next_page_token=response.next_page_token,
            total_size=response.total_size,
        )

    async def RetryItem(
        self, request: pb.RetryItemRequest, context: Context
    ) -> pb.RetryItemResponse:
        await self._route("RetryItem", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.RetryItem(
                rec_pb.RetryItemRequest(
                    name=request.name,
                    request_id=_request_id("RetryItem", request.name, request.request_id),
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.RetryItemResponse(item_error=response.item_error, session=response.session)

    # -- conflicts held for the user -------------------------------------------------------

    async def ListConflicts(
        self, request: pb.ListConflictsRequest, context: Context
    ) -> pb.ListConflictsResponse:
        name, _ = await self._route("ListConflicts", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.ListConflicts(
                rec_pb.ListConflictsRequest(
                    parent=name, page_size=request.page_size, page_token=request.page_token
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.ListConflictsResponse(
            conflicts=response.conflicts, next_page_token=response.next_page_token
        )

    async def ResolveConflict(
        self, request: pb.ResolveConflictRequest, context: Context
    ) -> pb.ResolveConflictResponse:
        await self._route("ResolveConflict", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.ResolveConflict(
                rec_pb.ResolveConflictRequest(
                    name=request.name,
                    take=request.take,
                    fields=[
                        rec_pb.ConflictChoice(field=c.field, take=c.take) for c in request.fields
                    ],
                    request_id=_request_id("ResolveConflict", request.name, request.request_id),
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.ResolveConflictResponse(conflict=response.conflict, session=response.session)

    # -- settings --------------------------------------------------------------------------

    async def GetUserSettings(
        self, request: pb.GetUserSettingsRequest, context: Context
    ) -> pb.GetUserSettingsResponse:
        await self._route("GetUserSettings", request, context)
        settings = await self._mailbox_settings(request.name, context)
        authorize_settings(current_principal(), request.name, settings.settings_access_disabled)
        return pb.GetUserSettingsResponse(settings=settings)

    async def _mailbox_settings(self, name: str, context: Context) -> settings_pb2.MailboxSettings:
        response = await ask(
            RECONCILER,
            self._reconciler.GetMailboxSettings(
                rec_pb.GetMailboxSettingsRequest(name=name), timeout=self._timeout(context)
            ),
        )
        return response.settings

    async def UpdateUserSettings(
        self, request: pb.UpdateUserSettingsRequest, context: Context
    ) -> pb.UpdateUserSettingsResponse:
        await self._route("UpdateUserSettings", request, context)
        principal = current_principal()
        if principal.role is not Role.ADMIN:
            # The reconciler refuses the change too (FAILED_PRECONDITION), but a user is told
            # the same PERMISSION_DENIED as on a read: the switch is about who, not what.
            current = await self._mailbox_settings(request.settings.name, context)
            authorize_settings(principal, request.settings.name, current.settings_access_disabled)
        # Locked fields are the reconciler's to refuse: it owns the org's locks (issue #8).
        response = await ask(
            RECONCILER,
            self._reconciler.UpdateMailboxSettings(
                rec_pb.UpdateMailboxSettingsRequest(
                    settings=request.settings,
                    update_mask=request.update_mask,
                    request_id=_request_id(
                        "UpdateUserSettings", request.settings.name, request.request_id
                    ),
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.UpdateUserSettingsResponse(settings=response.settings)

    async def GetOrgSettings(
        self, request: pb.GetOrgSettingsRequest, context: Context
    ) -> pb.GetOrgSettingsResponse:
        await self._route("GetOrgSettings", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.GetOrgSettings(
                rec_pb.GetOrgSettingsRequest(name=request.name), timeout=self._timeout(context)
            ),
        )
        return pb.GetOrgSettingsResponse(settings=response.settings)

    async def UpdateOrgSettings(
        self, request: pb.UpdateOrgSettingsRequest, context: Context
    ) -> pb.UpdateOrgSettingsResponse:
        org, _ = await self._route("UpdateOrgSettings", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.UpdateOrgSettings(
                rec_pb.UpdateOrgSettingsRequest(
                    settings=request.settings,
                    update_mask=request.update_mask,
                    request_id=_request_id("UpdateOrgSettings", org, request.request_id),
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.UpdateOrgSettingsResponse(settings=response.settings)

    # -- sidebar ---------------------------------------------------------------------------

    async def ShareEmail(
        self, request: pb.ShareEmailRequest, context: Context
    ) -> pb.ShareEmailResponse:
        name, _ = await self._route("ShareEmail", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.ShareEmail(
                rec_pb.ShareEmailRequest(
                    mailbox=name,
                    message=request.message,
                    request_id=_request_id("ShareEmail", name, request.request_id),
                    related_record_ids=request.related_record_ids,
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.ShareEmailResponse(
            session=response.session,
            already_shared=response.already_shared,
            email_message_id=response.email_message_id,
        )

    async def InitialSearch(
        self, request: pb.InitialSearchRequest, context: Context
    ) -> pb.InitialSearchResponse:
        name, mailbox = await self._routed_mailbox("InitialSearch", request, context)
        # The user's blacklist (org entries filled in) is honoured in search results too.
        settings = await ask(
            RECONCILER,
            self._reconciler.GetMailboxSettings(
                rec_pb.GetMailboxSettingsRequest(name=f"{name}/settings"),
                timeout=self._timeout(context),
            ),
        )
        response = await ask(
            LINKER,
            self._linker.InitialSearch(
                linker_pb.InitialSearchRequest(
                    org=mailbox.org,
                    user_id=mailbox.crm_user_id,
                    email=request.email,
                    sobject_types=request.sobject_types,
                    page_size=request.page_size,
                    blacklist=settings.settings.blacklist,
                ),
                timeout=self._timeout(context),
            ),
        )
        return pb.InitialSearchResponse(
            records=[
                pb.RelatedRecord(
                    sobject_type=r.sobject_type,
                    id=r.id,
                    name=r.name,
                    score=r.score,
                    explanation=r.explanation,
                )
                for r in response.records
            ]
        )

    async def GetOrgHealth(
        self, request: pb.GetOrgHealthRequest, context: Context
    ) -> pb.GetOrgHealthResponse:
        org, _ = await self._route("GetOrgHealth", request, context)
        response = await ask(
            RECONCILER,
            self._reconciler.GetOrgHealth(
                rec_pb.GetOrgHealthRequest(org=org), timeout=self._timeout(context)
            ),
        )
        return pb.GetOrgHealthResponse(health=response.health)


def _ownership(mailbox: rres.Mailbox, name: str = "") -> MailboxOwnership:
    return MailboxOwnership(
        name=name or mailbox.name, org=mailbox.org, owner_user_id=mailbox.owner_user_id
    )
