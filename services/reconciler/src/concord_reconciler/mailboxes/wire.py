"""A mailbox as the shared proto (concord.reconciler.v1.Mailbox)."""

from __future__ import annotations

from google.protobuf import duration_pb2

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.kernel.wire import shown_reason, timestamp
from concord_reconciler.mailboxes.domain.model import MailboxRecord


def mailbox_to_proto(mailbox: MailboxRecord) -> rres.Mailbox:
    message = rres.Mailbox(
        name=mailbox.name,
        mailbox_id=mailbox.mailbox_id,
        org=mailbox.org,
        owner_user_id=mailbox.owner_user_id,
        crm_user_id=mailbox.crm_user_id,
        address=mailbox.address,
        provider=mailbox.provider,
        state=mailbox.state.value,  # type: ignore[arg-type]
        suspended_reason=shown_reason(mailbox.suspended_reason),
        # Unknown here: GetMailbox asks the mail-connector (ListSubscriptions) for it.
        push_state=res.PUSH_STATE_UNSPECIFIED,
        create_time=timestamp(mailbox.create_time),
        update_time=timestamp(mailbox.update_time),
        etag=mailbox.etag,
    )
    if mailbox.sync_interval_seconds:
        message.sync_interval.CopyFrom(
            duration_pb2.Duration(seconds=int(mailbox.sync_interval_seconds))
        )
    return message
