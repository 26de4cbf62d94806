"""Activities the way Salesforce keeps them (no I/O): who and what an Event or Task concerns,
the people an Event is with, and what "cancelled" looks like.

Callers say what (`ActivityLinks`, `WriteOperation.MARK_CANCELLED`); this module says how, so
that WhoId, WhatId, EventRelation and the cancelled subject are spelled in crm-connector only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from concord_crm_connector.domain.model import (
    RecordError,
    RecordWrite,
    WriteOperation,
    WriteOutcome,
    WriteStatus,
)

__all__ = [
    "CANCELLED_PREFIX",
    "cancelled_subject",
    "event_relations",
    "invitees",
    "marks_to_read",
    "salesforce_writes",
]

# Salesforce's Event and Task have no cancelled flag; the subject is what every list view and
# calendar shows, so a cancelled activity's subject says so.
CANCELLED_PREFIX = "Cancelled: "
ACTIVITIES = ("Event", "Task")


def cancelled_subject(subject: str) -> str:
    """The subject of a cancelled activity; marking twice changes nothing."""
    return subject if subject.startswith(CANCELLED_PREFIX) else CANCELLED_PREFIX + subject


def marks_to_read(writes: Sequence[RecordWrite]) -> dict[str, list[str]]:
    """The records whose subject a batch's MARK_CANCELLED writes need, by object type."""
    wanted: dict[str, list[str]] = {}
    for write in writes:
        if write.operation is WriteOperation.MARK_CANCELLED and write.id:
            wanted.setdefault(write.sobject_type, []).append(write.id)
    return wanted


def salesforce_writes(
    writes: Sequence[RecordWrite], subjects: Mapping[str, str]
) -> list[RecordWrite | WriteOutcome]:
    """Each write as Salesforce takes it, or the outcome it already has.

    `subjects`: the current Subject of every record a MARK_CANCELLED names that could be read;
    one that could not is NOT_FOUND rather than a blind overwrite of a subject nobody saw.
    """
    planned: list[RecordWrite | WriteOutcome] = []
    for write in writes:
        if write.operation is WriteOperation.MARK_CANCELLED:
            if write.sobject_type not in ACTIVITIES:
                planned.append(_refused(write, "only an Event or a Task can be cancelled"))
            elif not write.id:
                planned.append(_refused(write, "Id not specified", code="MISSING_ARGUMENT"))
            elif write.id not in subjects:
                planned.append(WriteOutcome(WriteStatus.NOT_FOUND, write.id, write.link_id))
            else:
                planned.append(
                    replace(
                        write,
                        operation=WriteOperation.UPDATE,
                        fields={"Subject": cancelled_subject(subjects[write.id])},
                        links=None,
                    )
                )
        elif write.links is not None and write.operation in (
            WriteOperation.CREATE,
            WriteOperation.UPSERT,
        ):
            if write.sobject_type not in ACTIVITIES:
                planned.append(_refused(write, "only an Event or a Task has activity links"))
                continue
            fields = dict(write.fields)
            # Set at creation only: the user may relink the activity in Salesforce later.
            if write.links.who_id:
                fields["WhoId"] = write.links.who_id
            if write.links.what_id:
                fields["WhatId"] = write.links.what_id
            planned.append(replace(write, fields=fields))
        else:
            planned.append(write)
    return planned


def event_relations(
    writes: Sequence[RecordWrite], outcomes: Sequence[WriteOutcome]
) -> list[RecordWrite]:
    """EventRelation rows for the invitees of each Event this batch created.

    Only for an Event the batch created: an upsert that found its Event (a replay after a lost
    answer) wrote its relations the first time, and Salesforce refuses a second row anyway.
    """
    rows: list[RecordWrite] = []
    for write, outcome in zip(writes, outcomes, strict=True):
        if outcome.status is not WriteStatus.OK or not outcome.created or not outcome.id:
            continue
        for invitee in invitees(write):
            rows.append(
                RecordWrite(
                    operation=WriteOperation.CREATE,
                    sobject_type="EventRelation",
                    fields={"EventId": outcome.id, "RelationId": invitee},
                )
            )
    return rows


def invitees(write: RecordWrite) -> list[str]:
    """Whom an Event write is with beyond its WhoId: an EventRelation each, once it is made."""
    links = write.links
    if links is None or write.sobject_type != "Event":
        return []
    return [i for i in dict.fromkeys(links.invitee_ids) if i and i != links.who_id]


def _refused(write: RecordWrite, message: str, code: str = "INVALID_OPERATION") -> WriteOutcome:
    return WriteOutcome(
        WriteStatus.INVALID, write.id, write.link_id, errors=(RecordError(code, message),)
    )
