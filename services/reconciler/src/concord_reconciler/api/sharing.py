"""The sharing room on the wire: The Save button: share one email now, exactly once."""

from __future__ import annotations

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord_reconciler.api.base import Context, RoomApi, peer_failure
from concord_reconciler.kernel.errors import (
    InvalidRequest,
    PeerError,
)
from concord_reconciler.kernel.names import (
    parse_mailbox_name,
)
from concord_reconciler.sharing.domain.ports import ShareError
from concord_reconciler.sharing.domain.sharing import (
    EmailNotFound,
    EmailNotShareable,
    EmailShareBusy,
)
from concord_rpc import Unimplemented

__all__ = ["SharingApi"]


class SharingApi(RoomApi):
    async def ShareEmail(
        self, request: api.ShareEmailRequest, context: Context
    ) -> api.ShareEmailResponse:
        """The Save button: share one email now, exactly once, whatever the user's selection."""
        method = "ShareEmail"
        sharing = self.ports.sharing
        if sharing is None:
            raise Unimplemented("ShareEmail", 7)
        mailbox_id = parse_mailbox_name(request.mailbox, "mailbox")
        await self._check_mailbox_org(mailbox_id)
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
            found = await self.ports.accounts.get_items(mailbox.name, [wanted])
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
            outcome = await sharing.share_item(
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
