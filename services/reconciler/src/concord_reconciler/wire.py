"""Domain records as the shared protos (concord.common.v1), for the API, events and store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.domain.model import (
    ItemErrorRecord,
    KindCounts,
    MailboxRecord,
    SessionCounts,
    SessionRecord,
    SideCounts,
)
from concord_reconciler.domain.names import item_error_name

__all__ = [
    "counts_from_proto",
    "counts_to_proto",
    "item_error_to_proto",
    "mailbox_to_proto",
    "session_to_proto",
    "timestamp",
]


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def _side(side: SideCounts) -> res.SideCounts:
    return res.SideCounts(
        created=side.created, updated=side.updated, deleted=side.deleted, errors=side.errors
    )


def _numbers(counts: SessionCounts | KindCounts) -> dict[str, Any]:
    """The numbers a session's counts and each kind's counts have in common."""
    return {
        "mail_changes_seen": counts.mail_changes_seen,
        "crm_changes_seen": counts.crm_changes_seen,
        "mail": _side(counts.mail),
        "crm": _side(counts.crm),
        "conflicts": counts.conflicts,
        "quarantined": counts.quarantined,
        "skipped": counts.skipped,
    }


def counts_to_proto(counts: SessionCounts) -> res.SessionCounts:
    return res.SessionCounts(
        **_numbers(counts),
        guarded=counts.guarded,
        kinds=[
            res.KindCounts(kind=k.kind, guarded=k.guarded, **_numbers(k))  # type: ignore[arg-type]
            for k in counts.kinds
        ],
    )


def _numbers_from(counts: res.SessionCounts | res.KindCounts) -> dict[str, Any]:
    def side(value: res.SideCounts) -> SideCounts:
        return SideCounts(value.created, value.updated, value.deleted, value.errors)

    return {
        "mail_changes_seen": counts.mail_changes_seen,
        "crm_changes_seen": counts.crm_changes_seen,
        "mail": side(counts.mail),
        "crm": side(counts.crm),
        "conflicts": counts.conflicts,
        "quarantined": counts.quarantined,
        "skipped": counts.skipped,
    }


def counts_from_proto(counts: res.SessionCounts) -> SessionCounts:
    return SessionCounts(
        **_numbers_from(counts),
        guarded=counts.guarded,
        kinds=tuple(
            KindCounts(kind=k.kind, guarded=k.guarded, **_numbers_from(k)) for k in counts.kinds
        ),
    )


def session_to_proto(session: SessionRecord) -> res.Session:
    message = res.Session(
        name=session.name,
        session_id=session.session_id,
        mailbox=session.mailbox,
        state=session.state.value,  # type: ignore[arg-type]
        trigger=session.trigger,  # type: ignore[arg-type]
        failure_reason=session.failure_reason,
        failure_code=session.failure_code,
        counts=counts_to_proto(session.counts),
        request_time=timestamp(session.request_time),
        trace_id=session.trace_id,
    )
    if session.start_time is not None:
        message.start_time.CopyFrom(timestamp(session.start_time))
    if session.end_time is not None:
        message.end_time.CopyFrom(timestamp(session.end_time))
    return message


def mailbox_to_proto(mailbox: MailboxRecord) -> res.Mailbox:
    message = res.Mailbox(
        name=mailbox.name,
        mailbox_id=mailbox.mailbox_id,
        org=mailbox.org,
        owner_user_id=mailbox.owner_user_id,
        crm_user_id=mailbox.crm_user_id,
        address=mailbox.address,
        provider=mailbox.provider,  # type: ignore[arg-type]
        state=mailbox.state.value,  # type: ignore[arg-type]
        suspended_reason=mailbox.suspended_reason,
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


def item_error_to_proto(error: ItemErrorRecord) -> res.ItemError:
    return res.ItemError(
        name=item_error_name(error.mailbox_id, error.item_error_id),
        mailbox=f"mailboxes/{error.mailbox_id}",
        ref=res.ItemRef(
            kind=error.kind,  # type: ignore[arg-type]
            native_id=error.native_id,
            version=error.version,
            link_id=error.link_id,
            collection=error.collection,
        ),
        crm_record_id=error.crm_record_id,
        side=error.side,  # type: ignore[arg-type]
        reason=error.reason,
        message=error.message,
        first_seen_time=timestamp(error.first_seen_time),
        last_seen_time=timestamp(error.last_seen_time),
        attempts=error.attempts,
        quarantined=error.quarantined,
    )
