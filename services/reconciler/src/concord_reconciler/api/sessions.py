"""The sessions room on the wire: request a session, read them, wait for one; item errors and
their retry."""

from __future__ import annotations

import asyncio

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord_reconciler.api.base import Context, RoomApi
from concord_reconciler.api.paging import decode_token, encode_token, page_size
from concord_reconciler.kernel.errors import (
    InvalidRequest,
    ItemErrorNotFound,
    SessionNotFound,
)
from concord_reconciler.kernel.names import (
    parse_item_error_name,
    parse_mailbox_name,
    parse_session_name,
)
from concord_reconciler.kernel.sql import to_us
from concord_reconciler.sessions.domain.model import SessionRecord
from concord_reconciler.sessions.domain.ports import SessionKey
from concord_reconciler.sessions.wire import item_error_to_proto, session_to_proto

__all__ = ["SessionsApi"]


# WaitSession re-reads the session this often even without an event: core NATS drops
# messages while a connection is re-established, and a lost wake-up must not cost the timeout.
WAIT_POLL_SECONDS = 2.0


class SessionsApi(RoomApi):
    async def RequestSession(
        self, request: api.RequestSessionRequest, context: Context
    ) -> api.RequestSessionResponse:
        method = "RequestSession"
        mailbox_id = parse_mailbox_name(request.mailbox, "mailbox")
        await self._check_mailbox_org(mailbox_id)
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
        await self._check_mailbox_org(mailbox_id)
        session = await self.ports.sessions.get_session(session_id)
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
        found = await self.ports.sessions.list_sessions(
            mailbox.mailbox_id, after=key, limit=limit + 1
        )
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
        async with self.ports.messaging.watch(session_id) as watch:
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

    async def ListItemErrors(
        self, request: api.ListItemErrorsRequest, context: Context
    ) -> api.ListItemErrorsResponse:
        mailbox = await self._mailbox(parse_mailbox_name(request.parent, "parent"))
        limit = page_size(request.page_size)
        after = decode_token("itemErrors", request.page_token)
        key = (int(after[0]), str(after[1])) if after and len(after) == 2 else None
        found, total = await self.ports.sessions.list_item_errors(
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
        await self._check_mailbox_org(mailbox_id)
        replay = await self._replay(method, request.request_id, api.RetryItemResponse)
        if replay is not None:
            return replay
        if await self.ports.sessions.get_item_error(mailbox_id, item_error_id) is None:
            raise ItemErrorNotFound(request.name)
        await self.ports.sessions.release_item_error(mailbox_id, item_error_id)
        released = await self.ports.sessions.get_item_error(mailbox_id, item_error_id)
        if released is None:  # the mailbox was deleted in between
            raise ItemErrorNotFound(request.name)
        session, _ = await self._request_session(
            mailbox_id, res.SESSION_TRIGGER_RETRY, request.request_id
        )
        response = api.RetryItemResponse(
            item_error=item_error_to_proto(released), session=session_to_proto(session)
        )
        return await self._remember(method, request.request_id, response)
