"""Sessions, their counts and item errors as the shared protos (concord.common.v1)."""

from __future__ import annotations

from typing import Any

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.kernel.counts import KindCounts, SessionCounts, SideCounts
from concord_reconciler.kernel.names import item_error_name
from concord_reconciler.kernel.wire import shown_reason, timestamp
from concord_reconciler.sessions.domain.model import ItemErrorRecord, SessionRecord


def _side(side: SideCounts) -> rres.SideCounts:
    return rres.SideCounts(
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


def counts_to_proto(counts: SessionCounts) -> rres.SessionCounts:
    return rres.SessionCounts(
        **_numbers(counts),
        guarded=counts.guarded,
        kinds=[
            rres.KindCounts(kind=k.kind, guarded=k.guarded, **_numbers(k)) for k in counts.kinds
        ],
    )


def _numbers_from(counts: rres.SessionCounts | rres.KindCounts) -> dict[str, Any]:
    def side(value: rres.SideCounts) -> SideCounts:
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


def counts_from_proto(counts: rres.SessionCounts) -> SessionCounts:
    return SessionCounts(
        **_numbers_from(counts),
        guarded=counts.guarded,
        kinds=tuple(
            KindCounts(kind=k.kind, guarded=k.guarded, **_numbers_from(k)) for k in counts.kinds
        ),
    )


def session_to_proto(session: SessionRecord) -> rres.Session:
    message = rres.Session(
        name=session.name,
        session_id=session.session_id,
        mailbox=session.mailbox,
        state=session.state.value,  # type: ignore[arg-type]
        trigger=session.trigger,
        failure_reason=shown_reason(session.failure_reason),
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


def item_error_to_proto(error: ItemErrorRecord) -> rres.ItemError:
    return rres.ItemError(
        name=item_error_name(error.mailbox_id, error.item_error_id),
        mailbox=f"mailboxes/{error.mailbox_id}",
        ref=res.ItemRef(
            kind=error.kind,
            native_id=error.native_id,
            version=error.version,
            link_id=error.link_id,
            collection=error.collection,
        ),
        crm_record_id=error.crm_record_id,
        side=error.side,
        reason=error.reason,
        message=error.message,
        first_seen_time=timestamp(error.first_seen_time),
        last_seen_time=timestamp(error.last_seen_time),
        attempts=error.attempts,
        quarantined=error.quarantined,
    )
