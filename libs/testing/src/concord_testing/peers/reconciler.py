"""The reconciler's API in memory: mailboxes, sessions, item errors, conflicts and settings.

For the services in front of it (the gateway, and the CLI through the gateway). Kept honest
where they depend on it: a mutation with a request id is carried out once and its first answer
replayed; a missing resource is NOT_FOUND with the reconciler's reason; lists page; a session
moves on by itself (QUEUED, RUNNING, then `outcome`) as it is read; a user setting the org
admin locked cannot be changed; org health is counted from the state held.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.reconciler.v1 import reconciler_service_pb2 as rec
from concord.reconciler.v1 import reconciler_service_pb2_grpc as rec_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_rpc import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    current_identity,
)
from concord_rpc.identity import CallerNotInOrg
from concord_testing.peers.base import Peer

__all__ = ["ReconcilerPeer"]

T = TypeVar("T")


class MailboxNotFound(NotFound):
    reason = "MAILBOX_NOT_FOUND"


class MailboxExists(AlreadyExists):
    reason = "MAILBOX_ALREADY_EXISTS"


class SessionNotFound(NotFound):
    reason = "SESSION_NOT_FOUND"


class ItemErrorNotFound(NotFound):
    reason = "ITEM_ERROR_NOT_FOUND"


class ConflictNotFound(NotFound):
    reason = "CONFLICT_NOT_FOUND"


class SettingLocked(FailedPrecondition):
    reason = "SETTING_LOCKED"


def _page(found: Sequence[T], page_size: int, token: str) -> tuple[list[T], str]:
    """One page of `found` and the token of the next (an offset; empty after the last)."""
    try:
        start = int(token.removeprefix("o")) if token else 0
    except ValueError:
        raise InvalidArgument(f"bad page token {token!r}") from None
    end = start + (page_size or 50)
    return list(found[start:end]), f"o{end}" if end < len(found) else ""


class ReconcilerPeer(Peer, rec_grpc.ReconcilerServiceServicer):
    """The reconciler's resources in memory, seeded by the test (`add_mailbox`,
    `add_item_error`, `add_conflict`, `user_settings`, `org`), steered by `outcome` and
    `failure_reason` (how sessions end; None: they stay RUNNING) and `budget`.

    `acted` counts the mutations carried out (a replay by request id is not one);
    `resolutions` keeps each ResolveConflict request carried out.
    """

    service = "reconciler"
    full_name = rec.DESCRIPTOR.services_by_name["ReconcilerService"].full_name
    _add_to_server = rec_grpc.add_ReconcilerServiceServicer_to_server

    def __init__(self, mailboxes: Iterable[rres.Mailbox] = ()) -> None:
        super().__init__()
        self.reset()
        for mailbox in mailboxes:
            self.add_mailbox(mailbox)

    def reset(self) -> None:
        """Forget every resource and call: a fresh reconciler at the same address."""
        self.calls.clear()
        self.down = False
        self._failures.clear()
        self.outcome: rres.SessionState.ValueType | None = rres.SESSION_STATE_COMPLETED
        self.failure_reason = ""
        self.counts = rres.SessionCounts(mail_changes_seen=2, crm=rres.SideCounts(created=2))
        self.budget = res.ApiBudget(limit=15000, concord_share=0.5)
        self.mailboxes: dict[str, rres.Mailbox] = {}
        self.sessions: dict[str, rres.Session] = {}
        self.item_errors: dict[str, rres.ItemError] = {}
        self.conflicts: dict[str, rres.Conflict] = {}
        self.resolutions: list[rec.ResolveConflictRequest] = []
        self.user_settings: dict[str, st.MailboxSettings] = {}
        self.org_settings: dict[str, st.OrgSettings] = {}
        self.acted: collections.Counter[str] = collections.Counter()
        self._answers: dict[tuple[str, str], Any] = {}
        self._ids = itertools.count(1)

    # -- the test's side -------------------------------------------------------------------

    def add_mailbox(self, mailbox: rres.Mailbox) -> rres.Mailbox:
        self.mailboxes[mailbox.name] = mailbox
        return mailbox

    def add_session(self, session: rres.Session) -> rres.Session:
        self.sessions[session.name] = session
        return session

    def add_item_error(self, error: rres.ItemError) -> rres.ItemError:
        self.item_errors[error.name] = error
        return error

    def add_conflict(self, conflict: rres.Conflict) -> rres.Conflict:
        self.conflicts[conflict.name] = conflict
        return conflict

    def org(self, org: str) -> st.OrgSettings:
        """The org's settings (`orgs/{org}`), created with the defaults on first use."""
        return self.org_settings.setdefault(
            org,
            st.OrgSettings(name=f"{org}/settings", conflict_policy=st.CONFLICT_POLICY_NEWEST_WINS),
        )

    # -- plumbing --------------------------------------------------------------------------

    def _mailbox(self, name: str) -> rres.Mailbox:
        if name not in self.mailboxes:
            raise MailboxNotFound(f"no {name}", metadata={"mailbox": name})
        return self.mailboxes[name]

    @staticmethod
    def _in_callers_org(mailbox: rres.Mailbox) -> rres.Mailbox:
        """As the reconciler: a caller vouched for another org is refused (#17, case 6)."""
        caller = current_identity()
        if caller is not None and mailbox.org != f"orgs/{caller.org}":
            raise CallerNotInOrg("the caller does not act for this mailbox's org")
        return mailbox

    def _once(self, method: str, request: Any, act: Callable[[], T]) -> T:
        """Carry out a mutation once per request id; a retry gets the first answer."""
        self._enter(method, request)
        key = (method, request.request_id)
        if request.request_id and key in self._answers:
            answer: T = self._answers[key]
            return answer
        answer = act()
        self.acted[method] += 1
        if request.request_id:
            self._answers[key] = answer
        return answer

    def _new_session(self, mailbox: str, trigger: res.SessionTrigger.ValueType) -> rres.Session:
        session_id = f"s-{next(self._ids)}"
        session = rres.Session(
            name=f"{mailbox}/sessions/{session_id}",
            session_id=session_id,
            mailbox=mailbox,
            state=rres.SESSION_STATE_QUEUED,
            trigger=trigger,
            request_time=timestamp_pb2.Timestamp(seconds=int(time.time())),
        )
        self.sessions[session.name] = session
        return session

    def _advance(self, session: rres.Session) -> None:
        """One step of a session's life: QUEUED -> RUNNING -> `outcome`."""
        if session.state == rres.SESSION_STATE_QUEUED:
            session.state = rres.SESSION_STATE_RUNNING
            session.start_time.GetCurrentTime()
        elif session.state == rres.SESSION_STATE_RUNNING and self.outcome is not None:
            session.state = self.outcome
            session.end_time.GetCurrentTime()
            session.failure_reason = self.failure_reason
            session.counts.CopyFrom(self.counts)

    # -- mailboxes -------------------------------------------------------------------------

    async def CreateMailbox(self, request: rec.CreateMailboxRequest, context: Any) -> Any:
        def act() -> rec.CreateMailboxResponse:
            mailbox_id = request.mailbox_id or f"m-{next(self._ids)}"
            name = f"mailboxes/{mailbox_id}"
            if name in self.mailboxes:
                # Another org's id is not the caller's to know of; their own org's is taken.
                self._in_callers_org(self.mailboxes[name])
                raise MailboxExists(f"{name} exists", metadata={"mailbox": name})
            created = rres.Mailbox()
            created.CopyFrom(request.mailbox)
            created.name, created.mailbox_id = name, mailbox_id
            created.state = rres.MAILBOX_STATE_ACTIVE
            self.mailboxes[name] = created
            return rec.CreateMailboxResponse(mailbox=created)

        return self._once("CreateMailbox", request, act)

    async def GetMailbox(self, request: rec.GetMailboxRequest, context: Any) -> Any:
        self._enter("GetMailbox", request)
        return rec.GetMailboxResponse(mailbox=self._in_callers_org(self._mailbox(request.name)))

    async def ListMailboxes(self, request: rec.ListMailboxesRequest, context: Any) -> Any:
        self._enter("ListMailboxes", request)
        found = [
            m
            for m in self.mailboxes.values()
            if m.org == request.org and request.state in (rres.MAILBOX_STATE_UNSPECIFIED, m.state)
        ]
        page, token = _page(found, request.page_size, request.page_token)
        return rec.ListMailboxesResponse(mailboxes=page, next_page_token=token)

    async def DeleteMailbox(self, request: rec.DeleteMailboxRequest, context: Any) -> Any:
        def act() -> rec.DeleteMailboxResponse:
            self._mailbox(request.name)
            del self.mailboxes[request.name]
            return rec.DeleteMailboxResponse()

        return self._once("DeleteMailbox", request, act)

    async def SuspendMailbox(self, request: rec.SuspendMailboxRequest, context: Any) -> Any:
        def act() -> rec.SuspendMailboxResponse:
            mailbox = self._mailbox(request.name)
            mailbox.state = rres.MAILBOX_STATE_SUSPENDED
            mailbox.suspended_reason = request.reason or "suspended on request"
            return rec.SuspendMailboxResponse(mailbox=mailbox)

        return self._once("SuspendMailbox", request, act)

    async def ResumeMailbox(self, request: rec.ResumeMailboxRequest, context: Any) -> Any:
        def act() -> rec.ResumeMailboxResponse:
            mailbox = self._mailbox(request.name)
            mailbox.state, mailbox.suspended_reason = rres.MAILBOX_STATE_ACTIVE, ""
            session = self._new_session(request.name, res.SESSION_TRIGGER_FORCE)
            return rec.ResumeMailboxResponse(mailbox=mailbox, session=session)

        return self._once("ResumeMailbox", request, act)

    # -- sessions --------------------------------------------------------------------------

    async def RequestSession(self, request: rec.RequestSessionRequest, context: Any) -> Any:
        def act() -> rec.RequestSessionResponse:
            self._mailbox(request.mailbox)
            waiting = [
                s
                for s in self.sessions.values()
                if s.mailbox == request.mailbox and s.state == rres.SESSION_STATE_QUEUED
            ]
            if waiting:  # a session not started yet takes this request too
                return rec.RequestSessionResponse(session=waiting[0], coalesced=True)
            session = self._new_session(request.mailbox, request.trigger)
            return rec.RequestSessionResponse(session=session)

        return self._once("RequestSession", request, act)

    async def GetSession(self, request: rec.GetSessionRequest, context: Any) -> Any:
        self._enter("GetSession", request)
        session = self.sessions.get(request.name)
        if session is None:
            raise SessionNotFound(f"no {request.name}", metadata={"session": request.name})
        answer = rres.Session()
        answer.CopyFrom(session)
        self._advance(session)
        return rec.GetSessionResponse(session=answer)

    async def ListSessions(self, request: rec.ListSessionsRequest, context: Any) -> Any:
        self._enter("ListSessions", request)
        newest_first = [s for s in self.sessions.values() if s.mailbox == request.parent][::-1]
        page, token = _page(newest_first, request.page_size, request.page_token)
        return rec.ListSessionsResponse(sessions=page, next_page_token=token)

    async def WaitSession(self, request: rec.WaitSessionRequest, context: Any) -> Any:
        """The session to its end, unless sessions do not end (`outcome` None): timed out."""
        self._enter("WaitSession", request)
        session = self.sessions.get(request.name)
        if session is None:
            raise SessionNotFound(f"no {request.name}", metadata={"session": request.name})
        while self.outcome is not None and session.state in (
            rres.SESSION_STATE_QUEUED,
            rres.SESSION_STATE_RUNNING,
        ):
            self._advance(session)
        if self.outcome is None:
            self._advance(session)
        return rec.WaitSessionResponse(session=session, timed_out=self.outcome is None)

    # -- item errors and conflicts ---------------------------------------------------------

    async def ListItemErrors(self, request: rec.ListItemErrorsRequest, context: Any) -> Any:
        self._enter("ListItemErrors", request)
        mine = [e for e in self.item_errors.values() if e.mailbox == request.parent]
        if request.quarantined_only:
            mine = [e for e in mine if e.quarantined]
        page, token = _page(mine, request.page_size, request.page_token)
        return rec.ListItemErrorsResponse(
            item_errors=page, total_size=len(mine), next_page_token=token
        )

    async def RetryItem(self, request: rec.RetryItemRequest, context: Any) -> Any:
        def act() -> rec.RetryItemResponse:
            error = self.item_errors.get(request.name)
            if error is None:
                raise ItemErrorNotFound(f"no {request.name}")
            error.quarantined = False
            session = self._new_session(error.mailbox, res.SESSION_TRIGGER_RETRY)
            return rec.RetryItemResponse(item_error=error, session=session)

        return self._once("RetryItem", request, act)

    async def ListConflicts(self, request: rec.ListConflictsRequest, context: Any) -> Any:
        self._enter("ListConflicts", request)
        mine = [c for n, c in self.conflicts.items() if n.startswith(request.parent + "/")]
        page, token = _page(mine, request.page_size, request.page_token)
        return rec.ListConflictsResponse(conflicts=page, next_page_token=token)

    async def ResolveConflict(self, request: rec.ResolveConflictRequest, context: Any) -> Any:
        def act() -> rec.ResolveConflictResponse:
            conflict = self.conflicts.get(request.name)
            if conflict is None:
                raise ConflictNotFound(f"no {request.name}")
            self.resolutions.append(request)
            conflict.resolution_pending = True
            mailbox = request.name.split("/conflicts/")[0]
            session = self._new_session(mailbox, res.SESSION_TRIGGER_RETRY)
            return rec.ResolveConflictResponse(conflict=conflict, session=session)

        return self._once("ResolveConflict", request, act)

    async def ShareEmail(self, request: rec.ShareEmailRequest, context: Any) -> Any:
        def act() -> rec.ShareEmailResponse:
            self._mailbox(request.mailbox)
            session = self._new_session(request.mailbox, res.SESSION_TRIGGER_FORCE)
            return rec.ShareEmailResponse(session=session)

        return self._once("ShareEmail", request, act)

    # -- settings and health ---------------------------------------------------------------

    def _effective(self, name: str) -> st.MailboxSettings:
        mailbox = self._mailbox(name.removesuffix("/settings"))
        settings = st.MailboxSettings()
        settings.CopyFrom(self.user_settings.get(name, st.MailboxSettings(name=name)))
        org = self.org(mailbox.org)
        settings.locked_fields[:] = org.locked_user_fields
        settings.settings_access_disabled = (
            mailbox.owner_user_id in org.settings_access_disabled_users
        )
        return settings

    async def GetMailboxSettings(self, request: rec.GetMailboxSettingsRequest, context: Any) -> Any:
        self._enter("GetMailboxSettings", request)
        return rec.GetMailboxSettingsResponse(settings=self._effective(request.name))

    async def UpdateMailboxSettings(
        self, request: rec.UpdateMailboxSettingsRequest, context: Any
    ) -> Any:
        def act() -> rec.UpdateMailboxSettingsResponse:
            name = request.settings.name
            current = self._effective(name)
            for path in request.update_mask.paths:
                if path in current.locked_fields:
                    raise SettingLocked(f"{path} is locked by the org admin")
            request.update_mask.MergeMessage(request.settings, current, replace_repeated_field=True)
            self.user_settings[name] = current
            return rec.UpdateMailboxSettingsResponse(settings=current)

        return self._once("UpdateMailboxSettings", request, act)

    async def GetOrgSettings(self, request: rec.GetOrgSettingsRequest, context: Any) -> Any:
        self._enter("GetOrgSettings", request)
        return rec.GetOrgSettingsResponse(settings=self.org(request.name.removesuffix("/settings")))

    async def UpdateOrgSettings(self, request: rec.UpdateOrgSettingsRequest, context: Any) -> Any:
        def act() -> rec.UpdateOrgSettingsResponse:
            settings = self.org(request.settings.name.removesuffix("/settings"))
            request.update_mask.MergeMessage(
                request.settings, settings, replace_repeated_field=True
            )
            return rec.UpdateOrgSettingsResponse(settings=settings)

        return self._once("UpdateOrgSettings", request, act)

    async def GetOrgHealth(self, request: rec.GetOrgHealthRequest, context: Any) -> Any:
        self._enter("GetOrgHealth", request)
        mailboxes = [m for m in self.mailboxes.values() if m.org == request.org]
        names = {m.name for m in mailboxes}
        by_state = collections.Counter(m.state for m in mailboxes)
        suspended = by_state[rres.MAILBOX_STATE_SUSPENDED]
        budget = res.ApiBudget()
        budget.CopyFrom(self.budget)
        budget.org = request.org
        return rec.GetOrgHealthResponse(
            health=rres.OrgHealth(
                org=request.org,
                state=rres.HEALTH_STATE_DEGRADED if suspended else rres.HEALTH_STATE_HEALTHY,
                reasons=[f"{suspended} mailbox suspended"] if suspended else [],
                mailboxes=[
                    rres.MailboxStateCount(state=state, count=count)
                    for state, count in sorted(by_state.items())
                ],
                quarantined_items=sum(
                    1 for e in self.item_errors.values() if e.quarantined and e.mailbox in names
                ),
                budget=budget,
            )
        )
