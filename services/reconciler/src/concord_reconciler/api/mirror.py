"""The mirror room on the wire: conflicts held for the user (org policy `manual`): list them,
choose a side."""

from __future__ import annotations

from dataclasses import replace

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord_reconciler.api.base import Context, RoomApi
from concord_reconciler.api.paging import decode_token, encode_token, page_size
from concord_reconciler.kernel.errors import (
    MailboxSuspended,
)
from concord_reconciler.kernel.names import (
    parse_mailbox_name,
)
from concord_reconciler.mirror.domain.conflicts import (
    ConflictNotFound,
    parse_conflict_name,
    resolution_for,
)
from concord_reconciler.mirror.domain.sync import LinkState
from concord_reconciler.mirror.wire import conflict_to_proto, side_from_proto
from concord_reconciler.sessions.wire import session_to_proto

__all__ = ["MirrorApi"]


class MirrorApi(RoomApi):
    async def ListConflicts(
        self, request: api.ListConflictsRequest, context: Context
    ) -> api.ListConflictsResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.parent, "parent"))
        limit = page_size(request.page_size)
        after = decode_token("conflicts", request.page_token)
        found = await self.ports.conflicts.list_conflicts(
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
        await self._check_mailbox_org(mailbox_id)
        replay = await self._replay(method, request.request_id, api.ResolveConflictResponse)
        if replay is not None:
            return replay
        take = (
            side_from_proto(request.take, "take")
            if request.take != res.SYNC_SIDE_UNSPECIFIED
            else None
        )
        choices = [(c.field, side_from_proto(c.take, "fields")) for c in request.fields]
        links = self.ports.conflicts
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
