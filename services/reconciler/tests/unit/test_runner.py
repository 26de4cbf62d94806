"""The session runner: every pair through the engine's ports, its counts per kind, the
scope read from the settings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord_reconciler.kernel.errors import SessionFailure
from concord_reconciler.kernel.kinds import Kind
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
)
from concord_reconciler.mirror.domain.participants import participants_of
from concord_reconciler.mirror.domain.planner import SyncPolicy
from concord_reconciler.mirror.domain.ports import ChangePage
from concord_reconciler.mirror.domain.sync import Change, Side
from concord_reconciler.sessions.domain.runner import SessionScope, categories_of, run_session

from .conftest import MemoryEngine

pytestmark = pytest.mark.unit

EVENT, TASK, CONTACT = (
    res.OBJECT_KIND_CALENDAR_ITEM,
    res.OBJECT_KIND_TASK,
    res.OBJECT_KIND_CONTACT,
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _scope(*policies: SyncPolicy) -> SessionScope:
    return SessionScope(
        "s1",
        "mailboxes/demo",
        "orgs/acme",
        "005000000000001AAA",
        (EVENT, TASK, CONTACT),
        policies=policies or tuple(SyncPolicy(kind=k) for k in (EVENT, TASK, CONTACT)),
    )


def _event(native_id: str, *attendees: str) -> res.MailChange:
    item = res.MailItem(
        ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id=native_id),
        calendar_item=res.CalendarItem(
            attendees=[res.Attendee(email=a, role=res.ATTENDEE_ROLE_REQUIRED) for a in attendees]
        ),
    )
    return res.MailChange(type=res.CHANGE_TYPE_UPSERT, ref=item.ref, item=item)


async def test_the_session_runs_the_ports_its_engine_builds_for_its_scope(
    engine: MemoryEngine,
) -> None:
    engine.mail.kinds[EVENT].create({"subject": "review"})
    engine.crm.kinds[CONTACT].create({"name": "Ann"})
    scope = _scope()
    counts = await run_session(scope, engine, now=NOW)
    assert engine.scopes == [scope]
    assert (counts.crm.created, counts.mail.created) == (1, 1)
    by_kind = {k.kind: k for k in counts.kinds}
    assert sorted(by_kind) == [EVENT, TASK, CONTACT]
    assert (by_kind[EVENT].crm.created, by_kind[EVENT].mail_changes_seen) == (1, 1)
    assert (by_kind[CONTACT].mail.created, by_kind[CONTACT].crm_changes_seen) == (1, 1)
    assert by_kind[TASK].crm.created == by_kind[TASK].mail.created == 0


async def test_skipped_items_are_counted_per_kind(engine: MemoryEngine) -> None:
    private = engine.mail.kinds[EVENT].create({"subject": "doctor"})
    engine.mail.kinds[EVENT].set_private(private, True)
    engine.mail.kinds[TASK].create({"subject": "call"})
    one_way = SyncPolicy(kind=TASK, direction=res.SYNC_DIRECTION_CRM_TO_MAIL)
    counts = await run_session(
        _scope(SyncPolicy(kind=EVENT), one_way, SyncPolicy(kind=CONTACT)), engine, now=NOW
    )
    assert counts.skipped == 2
    assert {k.kind: k.skipped for k in counts.kinds} == {EVENT: 1, TASK: 1, CONTACT: 0}
    assert counts.crm.created == 0


async def test_unreadable_items_are_quarantined_and_the_session_goes_on(
    engine: MemoryEngine,
) -> None:
    from concord_reconciler.mirror.domain.ports import ItemFailure

    engine.mail.kinds[EVENT].create({"subject": "fine"})
    listing = engine.mail.kinds[EVENT].list_changes

    async def with_a_bad_item(
        kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        page = await listing(kind, cursor, known)
        bad = ItemFailure(kind, Side.MAIL, "mail-bad", "", "UNKNOWN_TIME_ZONE", message="zone")
        return ChangePage(page.changes, page.next_cursor, failures=[bad])

    engine.mail.kinds[EVENT].list_changes = with_a_bad_item  # type: ignore[method-assign]
    counts = await run_session(_scope(SyncPolicy(kind=EVENT)), engine, now=NOW)
    assert counts.quarantined == 1
    assert counts.crm.created == 1
    assert [(f.native_id, f.reason) for f in engine.links.failures] == [
        ("mail-bad", "UNKNOWN_TIME_ZONE")
    ]


async def test_an_unreadable_item_is_not_a_delete_in_a_full_listing(engine: MemoryEngine) -> None:
    from concord_reconciler.mirror.domain.ports import ItemFailure

    native = engine.mail.kinds[EVENT].create({"subject": "fine"})
    await run_session(_scope(SyncPolicy(kind=EVENT)), engine, now=NOW)
    engine.links.cursors.clear()  # a lost cursor: the next listing is a full one

    async def unreadable(
        kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        bad = ItemFailure(kind, Side.MAIL, native, "", "MALFORMED_MIME")
        return ChangePage([], "9", failures=[bad])

    engine.mail.kinds[EVENT].list_changes = unreadable  # type: ignore[method-assign]
    counts = await run_session(_scope(SyncPolicy(kind=EVENT)), engine, now=NOW)
    assert counts.crm.deleted == 0
    assert len(engine.crm.kinds[EVENT].items) == 1


async def test_a_quarantined_item_is_tried_again_only_when_the_user_asks(
    engine: MemoryEngine,
) -> None:
    crm = engine.crm.kinds[EVENT]
    crm.reject_value = "Board meeting"  # e.g. a validation rule in the org
    engine.mail.kinds[EVENT].create({"subject": "Board meeting"})
    scope = _scope(SyncPolicy(kind=EVENT))
    first = await run_session(scope, engine, now=NOW)
    assert (first.quarantined, first.crm.created) == (1, 0)
    crm.reject_value = None  # the admin relaxed the rule
    second = await run_session(scope, engine, now=NOW)
    assert second.crm.created == 0  # unchanged and not asked for: left alone
    engine.links.release()
    third = await run_session(scope, engine, now=NOW)
    assert third.crm.created == 1
    assert engine.links.released_items == []
    fourth = await run_session(scope, engine, now=NOW)
    assert (fourth.crm.created, fourth.mail.created, fourth.mail_changes_seen) == (0, 0, 0)


async def test_a_connector_that_never_stops_paging_fails_the_session(
    engine: MemoryEngine,
) -> None:
    async def endless(
        kind: Kind, cursor: str, known: Mapping[str, str] | None = None
    ) -> ChangePage:
        return ChangePage([Change(Side.CRM, "x", None)], next_cursor="1", has_more=True)

    engine.crm.kinds[EVENT].list_changes = endless  # type: ignore[method-assign]
    with pytest.raises(SessionFailure) as raised:
        await run_session(_scope(SyncPolicy(kind=EVENT)), engine, now=NOW)
    assert raised.value.code == "TOO_MANY_PAGES"


def test_categories_select_only_kinds_shared_by_category_alone() -> None:
    org = default_org_settings("acme")
    mine = st.MailboxSettings(
        sharing=[
            st.ObjectSharing(
                kind=TASK,
                enabled=True,
                direction=res.SYNC_DIRECTION_TWO_WAY,
                selection_modes=[st.SELECTION_MODE_CATEGORY],
                category="CRM",
            )
        ]
    )
    settings = effective_mailbox_settings("demo", mine, org, "")
    # Events by the default category, tasks by the user's; contacts and emails by folder.
    assert categories_of(settings) == {EVENT: "Salesforce", TASK: "CRM"}


def test_participants_are_distinct_addresses_with_their_roles() -> None:
    event = _event("e1", "Ann@Example.com", "bob@example.com").item
    event.calendar_item.organizer.address = "ann@example.com"
    email = res.MailItem(
        ref=res.ItemRef(kind=res.OBJECT_KIND_EMAIL),
        email=res.EmailItem(
            from_address=res.EmailAddress(address="carol@example.com"),
            cc=[res.EmailAddress(address="bob@example.com")],
        ),
    )
    found = participants_of([event, email])
    assert [(p.email, p.role) for p in found] == [
        ("ann@example.com", res.PARTICIPANT_ROLE_ORGANIZER),
        ("bob@example.com", res.PARTICIPANT_ROLE_REQUIRED_ATTENDEE),
        ("carol@example.com", res.PARTICIPANT_ROLE_SENDER),
    ]
