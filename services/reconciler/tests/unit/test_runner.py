from __future__ import annotations

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.domain.errors import PeerError, SessionFailure
from concord_reconciler.domain.ports import MailPage
from concord_reconciler.domain.runner import SessionScope, participants_of, run_session

from .conftest import FakePeers

pytestmark = pytest.mark.unit

ALL_KINDS = (
    res.OBJECT_KIND_CALENDAR_ITEM,
    res.OBJECT_KIND_TASK,
    res.OBJECT_KIND_CONTACT,
    res.OBJECT_KIND_EMAIL,
)


def _scope(kinds: tuple[int, ...] = ALL_KINDS) -> SessionScope:
    return SessionScope("s1", "mailboxes/demo", "orgs/acme", "005000000000001AAA", kinds)


def _event(native_id: str, *attendees: str) -> res.MailChange:
    item = res.MailItem(
        ref=res.ItemRef(kind=res.OBJECT_KIND_CALENDAR_ITEM, native_id=native_id),
        calendar_item=res.CalendarItem(
            attendees=[res.Attendee(email=a, role=res.ATTENDEE_ROLE_REQUIRED) for a in attendees]
        ),
    )
    return res.MailChange(type=res.CHANGE_TYPE_UPSERT, ref=item.ref, item=item)


async def test_a_session_with_nothing_to_do_asks_every_side_once(peers: FakePeers) -> None:
    counts = await run_session(_scope(), peers.ports())
    names = [name for name, _ in peers.calls.log]
    assert names.count("mail.list_changes") == 4
    assert sorted(str(a) for n, a in peers.calls.log if n == "crm.list_changes") == [
        "Contact",
        "Event",
        "Task",
    ]
    assert names.count("mapping.map_to_crm") == 1
    # One resolution per activity kind (calendar, task, email), with no participants yet.
    resolved = [a for n, a in peers.calls.log if n == "linker.resolve_participants"]
    assert sorted(resolved, key=str) == sorted(
        [(res.OBJECT_KIND_CALENDAR_ITEM, 0), (res.OBJECT_KIND_TASK, 0), (res.OBJECT_KIND_EMAIL, 0)],
        key=str,
    )
    assert counts.mail_changes_seen == 0
    assert counts.crm_changes_seen == 0


async def test_independent_calls_run_concurrently(peers: FakePeers) -> None:
    await run_session(_scope(), peers.ports())
    # All seven listings are in flight together, not one after the other.
    assert peers.calls.max_in_flight >= 7


async def test_counts_what_both_sides_listed_and_maps_the_upserts(peers: FakePeers) -> None:
    peers.mail.pages[res.OBJECT_KIND_CALENDAR_ITEM] = [
        MailPage(
            changes=[_event("e1", "ann@example.com")],
            next_cursor=res.Cursor(token="1"),
            has_more=True,
        ),
        MailPage(changes=[_event("e2", "bob@example.com", "ann@example.com")]),
    ]
    peers.crm.changes["Event"] = [res.CrmChange(type=res.CHANGE_TYPE_DELETE)]
    counts = await run_session(_scope(), peers.ports())
    assert counts.mail_changes_seen == 2
    assert counts.crm_changes_seen == 1
    # The second page was asked for with the first page's cursor.
    assert (res.OBJECT_KIND_CALENDAR_ITEM, "1") in [a for _, a in peers.calls.log]
    assert ("mapping.map_to_crm", 2) in peers.calls.log
    assert ("linker.resolve_participants", (res.OBJECT_KIND_CALENDAR_ITEM, 2)) in peers.calls.log


async def test_only_the_kinds_in_scope_are_listed(peers: FakePeers) -> None:
    await run_session(_scope((res.OBJECT_KIND_EMAIL,)), peers.ports())
    assert [a for n, a in peers.calls.log if n == "mail.list_changes"] == [
        (res.OBJECT_KIND_EMAIL, "")
    ]
    # Emails are one way: nothing is listed back from Salesforce.
    assert not [n for n, _ in peers.calls.log if n == "crm.list_changes"]


async def test_a_peer_failure_fails_the_session_naming_the_peer(peers: FakePeers) -> None:
    peers.crm.error = PeerError("crm-connector", "ListChanges", "UNAVAILABLE", "connection refused")
    with pytest.raises(SessionFailure) as raised:
        await run_session(_scope(), peers.ports())
    failure = raised.value
    assert failure.reason == "crm-connector unavailable (ListChanges): connection refused"
    assert failure.code == "DEPENDENCY_UNAVAILABLE"
    assert failure.retryable


async def test_a_peer_error_reason_becomes_the_failure_code(peers: FakePeers) -> None:
    peers.linker.error = PeerError(
        "linker", "ResolveParticipants", "FAILED_PRECONDITION", "no org", "ORG_NOT_CONNECTED"
    )
    with pytest.raises(SessionFailure) as raised:
        await run_session(_scope(), peers.ports())
    assert raised.value.code == "ORG_NOT_CONNECTED"
    assert raised.value.reason.startswith("linker failed precondition (ResolveParticipants)")
    assert not raised.value.retryable


async def test_a_connector_that_never_stops_paging_fails_the_session(
    peers: FakePeers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concord_reconciler.domain import runner

    monkeypatch.setattr(runner, "MAX_PAGES", 3)
    endless = MailPage(changes=[], next_cursor=res.Cursor(token="0"), has_more=True)
    peers.mail.pages[res.OBJECT_KIND_TASK] = [endless]
    with pytest.raises(SessionFailure) as raised:
        await run_session(_scope(), peers.ports())
    assert raised.value.code == "TOO_MANY_PAGES"


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
