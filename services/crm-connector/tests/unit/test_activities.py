"""Activities as Salesforce keeps them: links into fields, relations once, cancelled once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord_crm_connector.domain.activities import (
    CANCELLED_PREFIX,
    cancelled_subject,
    event_relations,
    marks_to_read,
    salesforce_writes,
)
from concord_crm_connector.domain.model import (
    ActivityLinks,
    RecordWrite,
    WriteOperation,
    WriteOutcome,
    WriteStatus,
)

pytestmark = pytest.mark.unit

ANN, BOB, ACME = "003000000000001AAA", "003000000000002AAA", "001000000000001AAA"


@given(st.text())
def test_cancelling_is_idempotent_and_keeps_the_subject(subject: str) -> None:
    once = cancelled_subject(subject)
    assert once.startswith(CANCELLED_PREFIX)
    assert cancelled_subject(once) == once
    assert once.endswith(subject) or subject.startswith(CANCELLED_PREFIX)


def _event(operation: WriteOperation = WriteOperation.UPSERT, **links: object) -> RecordWrite:
    return RecordWrite(
        operation,
        "Event",
        link_id="l1",
        fields={"Subject": "Review"},
        links=ActivityLinks(**links) if links else None,  # type: ignore[arg-type]
    )


def test_links_become_who_and_what_on_creates_only() -> None:
    (planned,) = salesforce_writes([_event(who_id=ANN, what_id=ACME)], {})
    assert isinstance(planned, RecordWrite)
    assert planned.fields == {"Subject": "Review", "WhoId": ANN, "WhatId": ACME}
    update = RecordWrite(WriteOperation.UPDATE, "Event", id="00U1", links=ActivityLinks(ANN))
    assert salesforce_writes([update], {}) == [update]


def test_a_mark_reads_the_subject_and_one_not_read_is_not_found() -> None:
    marks = [
        RecordWrite(WriteOperation.MARK_CANCELLED, "Event", id="00U1"),
        RecordWrite(WriteOperation.MARK_CANCELLED, "Task", id="00T2"),
    ]
    assert marks_to_read(marks) == {"Event": ["00U1"], "Task": ["00T2"]}
    first, second = salesforce_writes(marks, {"00U1": "Offsite"})
    assert isinstance(first, RecordWrite)
    assert first.operation is WriteOperation.UPDATE
    assert first.fields == {"Subject": "Cancelled: Offsite"}
    assert second == WriteOutcome(WriteStatus.NOT_FOUND, "00T2")


def test_relations_only_for_events_this_batch_created() -> None:
    writes = [_event(who_id=ANN, invitee_ids=(ANN, BOB, BOB)), _event(invitee_ids=(BOB,))]
    created = WriteOutcome(WriteStatus.OK, "00U1", "l1", created=True)
    found = WriteOutcome(WriteStatus.OK, "00U2", "l1", created=False)
    rows = event_relations(writes, [created, found])
    assert [(r.sobject_type, r.fields) for r in rows] == [
        ("EventRelation", {"EventId": "00U1", "RelationId": BOB})
    ]
