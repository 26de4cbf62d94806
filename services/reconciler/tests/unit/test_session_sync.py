"""A whole session through the sync engine: every two-way pair of the mailbox, its counts in
the session row, a guarded pair that does not stop the others, and a failing peer."""

from __future__ import annotations

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.errors import PeerError
from concord_reconciler.kernel.names import new_session_id
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
)
from concord_reconciler.sessions.domain.model import SessionRecord, SessionState
from concord_reconciler.sessions.domain.runner import policies_for
from concord_reconciler.sessions.domain.sessions import execute_session

from .conftest import MemoryEngine, MemoryStore, RecordedEvents

pytestmark = pytest.mark.unit

EVENT, TASK, CONTACT = (
    res.OBJECT_KIND_CALENDAR_ITEM,
    res.OBJECT_KIND_TASK,
    res.OBJECT_KIND_CONTACT,
)


async def _run(store: MemoryStore, events: RecordedEvents, engine: MemoryEngine) -> SessionRecord:
    session = SessionRecord(new_session_id(), "demo", res.SESSION_TRIGGER_FORCE)
    store.sessions[session.session_id] = session
    await execute_session(
        session.session_id, store=store, events=events, engine=engine, deadline_seconds=5
    )
    return store.sessions[session.session_id]


async def test_a_session_syncs_every_pair_and_records_its_counts(
    store: MemoryStore, events: RecordedEvents, engine: MemoryEngine
) -> None:
    mail, crm = engine.mail, engine.crm
    for n in range(30):
        mail.kinds[EVENT].create({"subject": f"meeting {n}"})
    mail.kinds[CONTACT].create({"name": "Ann"})
    crm.kinds[TASK].create({"subject": "call"})
    first = await _run(store, events, engine)
    assert first.state is SessionState.COMPLETED
    assert (first.counts.crm.created, first.counts.mail.created) == (31, 1)
    assert first.counts.mail_changes_seen == 31

    # Events: 25 of 30 deleted trips the guard; contacts and tasks still sync.
    for native in sorted(mail.kinds[EVENT].items)[:25]:
        mail.kinds[EVENT].delete(native)
    mail.kinds[CONTACT].edit("mail-contact-1", "name", "Ann B.")
    crm.kinds[CONTACT].edit("crm-contact-1", "name", "Ann C.")
    second = await _run(store, events, engine)
    assert second.counts.guarded == 1
    assert second.counts.crm.deleted == 0
    assert second.counts.conflicts == 1
    assert second.counts.crm.updated + second.counts.mail.updated == 1
    assert len(crm.kinds[EVENT].items) == 30

    # Nothing changed: zero writes, and the guard still holds the events.
    third = await _run(store, events, engine)
    c = third.counts
    assert (c.mail.created, c.mail.updated, c.crm.created, c.crm.updated, c.crm.deleted) == (
        0,
        0,
        0,
        0,
        0,
    )


async def test_a_peer_failure_fails_the_session_with_its_reason(
    store: MemoryStore, events: RecordedEvents, engine: MemoryEngine
) -> None:
    engine.crm.broken = PeerError("crm-connector", "ListChanges", "UNAVAILABLE", "down")
    failed = await _run(store, events, engine)
    assert failed.state is SessionState.FAILED
    assert failed.failure_code == "DEPENDENCY_UNAVAILABLE"


def test_policies_cover_the_two_way_kinds_with_the_users_directions() -> None:
    org = default_org_settings("acme")
    org.conflict_policy = st.CONFLICT_POLICY_CRM_WINS
    mine = st.MailboxSettings(
        sharing=[
            st.ObjectSharing(kind=TASK, enabled=True, direction=res.SYNC_DIRECTION_MAIL_TO_CRM)
        ]
    )
    settings = effective_mailbox_settings("demo", mine, org, "")
    policies = policies_for((EVENT, TASK, CONTACT, res.OBJECT_KIND_EMAIL), org, settings)
    assert [p.kind for p in policies] == [EVENT, TASK, CONTACT]
    assert [p.direction for p in policies] == [
        res.SYNC_DIRECTION_TWO_WAY,
        res.SYNC_DIRECTION_MAIL_TO_CRM,
        res.SYNC_DIRECTION_TWO_WAY,
    ]
    assert {p.conflict.name for p in policies} == {"CRM_WINS"}
