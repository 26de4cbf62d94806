"""The Google provider against the Google emulator: what the contract suite does not cover
(recurrence keys, all-day dates, privacy, selections, tasks, resyncs, quotas, refused keys)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from concord.common.v1 import resources_pb2 as r
from concord_google_emulator.testing import RunningEmulator, build_service
from concord_mail_connector.adapters.google import GoogleProvider
from concord_mail_connector.domain.errors import MailboxAccessDenied, ProviderThrottled
from concord_mail_connector.domain.model import Cursor, Kind, MailboxAccount, Provider
from concord_mail_connector.domain.provider import MailboxAccess, Write, WriteOperation

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("google")).start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def key(emulator: RunningEmulator) -> dict[str, Any]:
    return emulator.service_account()


@pytest.fixture
async def provider(emulator: RunningEmulator) -> AsyncIterator[GoogleProvider]:
    made = GoogleProvider(
        max_workers=2, max_back_off=1, base_back_off=0.05, ca_file=emulator.ca_file
    )
    yield made
    await made.close()
    emulator.admin("DELETE", "faults")
    assert emulator.admin("DELETE", "violations") == []


def mailbox_for(emulator: RunningEmulator, key: dict[str, Any], **settings: str) -> MailboxAccess:
    address = emulator.add_user(f"t-{uuid.uuid4().hex[:10]}@concord.test")
    now = datetime.now(UTC)
    account = MailboxAccount(
        address.split("@")[0],
        address,
        Provider.GOOGLE,
        {"service_account_email": key["client_email"], "api_url": emulator.base, **settings},
        True,
        now,
        now,
        "e",
    )
    return MailboxAccess(account, json.dumps(key).encode())


@pytest.fixture
def mailbox(emulator: RunningEmulator, key: dict[str, Any]) -> MailboxAccess:
    return mailbox_for(emulator, key)


@pytest.fixture
def calendar(
    emulator: RunningEmulator, key: dict[str, Any], mailbox: MailboxAccess
) -> Iterator[Any]:
    service = build_service(emulator, key, "calendar", mailbox.account.address)
    yield service.events()
    service.close()


@pytest.fixture
def people(emulator: RunningEmulator, key: dict[str, Any], mailbox: MailboxAccess) -> Iterator[Any]:
    service = build_service(emulator, key, "people", mailbox.account.address)
    yield service.people()
    service.close()


async def listing(
    provider: GoogleProvider, mailbox: MailboxAccess, kind: Kind, token: str = ""
) -> tuple[list[r.MailChange], str]:
    changes: list[r.MailChange] = []
    while True:
        page = await provider.list_changes(mailbox, kind, Cursor(kind.value, token), 3)
        assert not page.full_resync_required
        changes += page.changes
        token = page.next_cursor.token
        if not page.has_more:
            return changes, token


def timed(summary: str, **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": "2031-06-02T10:00:00+02:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2031-06-02T11:00:00+02:00", "timeZone": "Europe/Paris"},
        **extra,
    }


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def test_series_occurrences_and_exceptions_are_keyed_by_series_and_original_start(
    provider: GoogleProvider, mailbox: MailboxAccess, calendar: Any
) -> None:
    master = calendar.insert(
        calendarId="primary",
        body=timed(
            "weekly",
            recurrence=["RRULE:FREQ=WEEKLY;COUNT=5", "EXDATE;TZID=Europe/Paris:20310609T100000"],
        ),
    ).execute()
    _, token = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    third = f"{master['id']}_20310616T080000Z"
    fourth = f"{master['id']}_20310623T080000Z"
    calendar.patch(calendarId="primary", eventId=third, body={"summary": "moved"}).execute()
    calendar.delete(calendarId="primary", eventId=fourth).execute()
    changes, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM, token)
    by_id = {c.ref.native_id: c for c in changes}
    exception = by_id[third].item.calendar_item
    assert (exception.series_id, exception.subject) == (master["id"], "moved")
    assert exception.original_start.ToDatetime(UTC) == datetime(2031, 6, 16, 8, tzinfo=UTC)
    assert by_id[fourth].type == r.CHANGE_TYPE_DELETE
    series = by_id[master["id"]].item.calendar_item
    assert list(series.recurrence.rules) == ["RRULE:FREQ=WEEKLY;COUNT=5"]
    assert series.recurrence.time_zone == "Europe/Paris"
    assert sorted(s.ToDatetime(UTC) for s in series.recurrence.excluded_starts) == [
        datetime(2031, 6, 9, 8, tzinfo=UTC),
        datetime(2031, 6, 23, 8, tzinfo=UTC),
    ]


async def test_all_day_dates_keep_their_exclusive_end_and_private_events_stay_private(
    provider: GoogleProvider, mailbox: MailboxAccess, calendar: Any
) -> None:
    calendar.insert(
        calendarId="primary",
        body={
            "summary": "offsite",
            "start": {"date": "2031-06-02"},
            "end": {"date": "2031-06-04"},
            "visibility": "private",
        },
    ).execute()
    [change], _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    item = change.item.calendar_item
    assert (item.all_day, item.start_date, item.end_date) == (True, "2031-06-02", "2031-06-04")
    assert not item.HasField("start")
    assert (item.is_private, item.sensitivity) == (True, r.SENSITIVITY_PRIVATE)
    # Written back, the dates stay dates (never through UTC) and the event stays private.
    [written] = await provider.apply_items(
        mailbox, [Write(WriteOperation.CREATE, "allday", r.ItemRef(), change.item)]
    )
    assert written.ref is not None
    stored = calendar.get(calendarId="primary", eventId=written.ref.native_id).execute()
    assert (stored["start"], stored["end"], stored["visibility"]) == (
        {"date": "2031-06-02"},
        {"date": "2031-06-04"},
        "private",
    )
    assert stored["extendedProperties"]["private"]["concord_link_id"] == "allday"


async def test_an_event_in_an_unknown_zone_is_quarantined_with_the_reason(
    provider: GoogleProvider, emulator: RunningEmulator, mailbox: MailboxAccess
) -> None:
    emulator.admin(
        "POST",
        f"users/{mailbox.account.address}/events",
        {
            "event": timed("zoned")
            | {"start": {"dateTime": "2031-06-02T10:00:00", "timeZone": "Mars/Olympus"}}
        },
    )
    [change], _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    assert change.problem.reason == "UNKNOWN_TIME_ZONE"
    assert "Mars/Olympus" in change.problem.message


async def test_an_event_no_reader_foresaw_is_quarantined_and_the_page_goes_on(
    provider: GoogleProvider, emulator: RunningEmulator, mailbox: MailboxAccess
) -> None:
    # Issue #17, case 2, for Google: a reader failing otherwise than it foresees
    # (UnreadableItem) failed the whole listing, so nothing else of the mailbox synced. Here a
    # reminder past what the item's field holds (Google documents 0 to 40320 minutes; any
    # surprise in one item must stay with that item).
    address = mailbox.account.address
    too_far = {"useDefault": False, "overrides": [{"method": "popup", "minutes": 2**31}]}
    for summary, extra in (("before", {}), ("poison", {"reminders": too_far}), ("after", {})):
        emulator.admin("POST", f"users/{address}/events", {"event": timed(summary, **extra)})
    changes, token = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    good = sorted(c.item.calendar_item.subject for c in changes if not c.HasField("problem"))
    assert good == ["after", "before"]
    [bad] = [c for c in changes if c.HasField("problem")]
    assert (bad.problem.reason, bad.problem.message) == (
        "CONVERSION_FAILED",
        "the item could not be converted (ValueError)",
    )
    assert bad.ref.native_id
    again, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM, token)
    assert again == []


async def test_a_stale_sync_token_asks_for_a_full_resync(
    provider: GoogleProvider, emulator: RunningEmulator, mailbox: MailboxAccess
) -> None:
    address = mailbox.account.address
    for kind, what in [
        (Kind.CALENDAR_ITEM, "calendar-sync-tokens"),
        (Kind.CONTACT, "people-sync-tokens"),
        (Kind.EMAIL, "gmail-history"),
    ]:
        _, token = await listing(provider, mailbox, kind)
        emulator.admin("POST", f"users/{address}/invalidate/{what}")
        page = await provider.list_changes(mailbox, kind, Cursor(kind.value, token), 10)
        assert page.full_resync_required, kind
        assert page.next_cursor.token == ""
    garbled = await provider.list_changes(
        mailbox, Kind.TASK, Cursor(Kind.TASK.value, "not a cursor"), 10
    )
    assert garbled.full_resync_required


def task(subject: str, due: str = "") -> r.MailItem:
    return r.MailItem(
        ref=r.ItemRef(kind=r.OBJECT_KIND_TASK),
        task=r.TaskItem(subject=subject, due_date=due, body_text="call back"),
    )


async def test_tasks_mirror_both_ways_and_deletes_are_listed_from_updated_min(
    provider: GoogleProvider, mailbox: MailboxAccess
) -> None:
    _, token = await listing(provider, mailbox, Kind.TASK)
    made = Write(WriteOperation.CREATE, "t1", r.ItemRef(), task("Send quote", "2031-06-02"))
    [created] = await provider.apply_items(mailbox, [made])
    [again] = await provider.apply_items(mailbox, [made])
    assert created.ref is not None
    assert (again.already_applied, again.ref) == (True, created.ref)
    changes, token = await listing(provider, mailbox, Kind.TASK, token)
    [listed] = [c for c in changes if c.ref.native_id == created.ref.native_id]
    assert (listed.ref.link_id, listed.item.task.due_date, listed.item.task.body_text) == (
        "t1",
        "2031-06-02",
        "call back",
    )
    done = task("Send quote")
    done.task.status = r.TASK_STATUS_COMPLETED
    [updated] = await provider.apply_items(
        mailbox, [Write(WriteOperation.UPDATE, "t1", created.ref, done, update_mask=["status"])]
    )
    assert updated.status == r.WRITE_STATUS_OK
    [stale] = await provider.apply_items(
        mailbox, [Write(WriteOperation.UPDATE, "t1", created.ref, done, update_mask=["status"])]
    )
    assert stale.status == r.WRITE_STATUS_CONFLICT
    assert updated.ref is not None
    [deleted] = await provider.apply_items(
        mailbox, [Write(WriteOperation.DELETE, "t1", updated.ref, r.MailItem())]
    )
    assert deleted.status == r.WRITE_STATUS_OK
    changes, token = await listing(provider, mailbox, Kind.TASK, token)
    assert [(c.type, c.ref.native_id) for c in changes] == [
        (r.CHANGE_TYPE_DELETE, created.ref.native_id)
    ]
    # Quiet: what the boundary instant held is not listed again.
    assert (await listing(provider, mailbox, Kind.TASK, token))[0] == []


async def test_quota_errors_back_off_per_mailbox_then_throttle(
    provider: GoogleProvider, emulator: RunningEmulator, mailbox: MailboxAccess
) -> None:
    emulator.admin(
        "POST", "faults", {"kind": "rate_limit", "method": "calendar.events.list", "times": 2}
    )
    changes, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    assert changes == []
    assert emulator.admin("GET", "faults") == []
    emulator.admin(
        "POST", "faults", {"kind": "rate_limit", "method": "calendar.events.list", "times": 50}
    )
    with pytest.raises(ProviderThrottled):
        await provider.list_changes(mailbox, Kind.CALENDAR_ITEM, Cursor("calendar-item", ""), 10)


async def test_a_scope_not_delegated_denies_the_mailbox(
    provider: GoogleProvider, emulator: RunningEmulator
) -> None:
    narrow = emulator.service_account(scopes=["https://www.googleapis.com/auth/calendar"])
    mailbox = mailbox_for(emulator, narrow)
    with pytest.raises(MailboxAccessDenied) as caught:
        await provider.list_changes(mailbox, Kind.CALENDAR_ITEM, Cursor("calendar-item", ""), 10)
    assert caught.value.reason == "MAILBOX_ACCESS_DENIED"
    assert caught.value.metadata["provider_code"] == "unauthorized_client"
    other = mailbox_for(emulator, emulator.service_account())
    forged = MailboxAccess(other.account, b"{not json")
    with pytest.raises(MailboxAccessDenied):
        await provider.list_changes(forged, Kind.CALENDAR_ITEM, Cursor("calendar-item", ""), 10)


async def test_selections_outside_attendees_and_colour(
    provider: GoogleProvider, emulator: RunningEmulator, key: dict[str, Any]
) -> None:
    outside = mailbox_for(emulator, key, calendar_selection="external")
    service = build_service(emulator, key, "calendar", outside.account.address)
    events = service.events()
    own = outside.account.address.rpartition("@")[2]
    events.insert(
        calendarId="primary", body=timed("internal", attendees=[{"email": f"x@{own}"}])
    ).execute()
    events.insert(
        calendarId="primary", body=timed("customer", attendees=[{"email": "ada@acme.example"}])
    ).execute()
    events.insert(calendarId="primary", body=timed("red", colorId="11")).execute()
    changes, _ = await listing(provider, outside, Kind.CALENDAR_ITEM)
    assert [c.item.calendar_item.subject for c in changes] == ["customer"]
    coloured = MailboxAccess(
        MailboxAccount(
            outside.account.mailbox,
            outside.account.address,
            Provider.GOOGLE,
            dict(outside.account.settings) | {"calendar_selection": "color", "color_id": "11"},
            True,
            outside.account.update_time,
            outside.account.update_time,
            "e",
        ),
        outside.secret,
    )
    changes, _ = await listing(provider, coloured, Kind.CALENDAR_ITEM)
    assert [c.item.calendar_item.subject for c in changes] == ["red"]
    service.close()


async def test_listing_a_thousand_events_costs_the_call_floor(
    provider: GoogleProvider, mailbox: MailboxAccess, calendar: Any
) -> None:
    for n in range(30):
        calendar.insert(calendarId="primary", body=timed(f"e{n}")).execute()
    before = provider.calls_made(mailbox.account.mailbox)
    page = await provider.list_changes(
        mailbox, Kind.CALENDAR_ITEM, Cursor("calendar-item", ""), 250
    )
    assert len(page.changes) == 30
    # One events.list for the page; no per-event reads for single events.
    assert provider.calls_made(mailbox.account.mailbox) - before == 1


async def test_the_google_selection_shows_as_the_share_category(
    provider: GoogleProvider, mailbox: MailboxAccess, calendar: Any
) -> None:
    # Made by another client: in the selection ("every meeting"), so it carries the category
    # the reconciler shares by; an unshared event written by Concord keeps no category.
    calendar.insert(calendarId="primary", body=timed("foreign")).execute()
    unshared = event_item_with("unshared", [])
    await provider.apply_items(mailbox, [Write(WriteOperation.CREATE, "u1", r.ItemRef(), unshared)])
    changes, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    categories = {
        c.item.calendar_item.subject: list(c.item.calendar_item.categories) for c in changes
    }
    assert categories == {"foreign": ["Salesforce"], "unshared": []}


def event_item_with(subject: str, categories: list[str]) -> r.MailItem:
    start = datetime(2031, 6, 2, 8, tzinfo=UTC)
    item = r.MailItem(
        calendar_item=r.CalendarItem(
            subject=subject, time_zone="Europe/Paris", categories=categories
        )
    )
    item.calendar_item.start.FromDatetime(start)
    item.calendar_item.end.FromDatetime(start.replace(hour=9))
    return item


async def test_a_chosen_calendar_is_the_selection(
    provider: GoogleProvider, emulator: RunningEmulator, key: dict[str, Any]
) -> None:
    probe = mailbox_for(emulator, key)
    chosen = emulator.admin(
        "POST", f"users/{probe.account.address}/calendars", {"summary": "Customers"}
    )
    mailbox = MailboxAccess(
        MailboxAccount(
            probe.account.mailbox,
            probe.account.address,
            Provider.GOOGLE,
            dict(probe.account.settings)
            | {"calendar_selection": "calendar", "calendar_id": chosen["id"]},
            True,
            probe.account.update_time,
            probe.account.update_time,
            "e",
        ),
        probe.secret,
    )
    service = build_service(emulator, key, "calendar", probe.account.address)
    service.events().insert(calendarId="primary", body=timed("on primary")).execute()
    service.events().insert(calendarId=chosen["id"], body=timed("for customers")).execute()
    changes, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    assert [c.item.calendar_item.subject for c in changes] == ["for customers"]
    [written] = await provider.apply_items(
        mailbox, [Write(WriteOperation.CREATE, "c1", r.ItemRef(), event_item_with("from crm", []))]
    )
    assert written.status == r.WRITE_STATUS_OK
    stored = service.events().list(calendarId=chosen["id"]).execute()["items"]
    assert sorted(e["summary"] for e in stored) == ["for customers", "from crm"]
    service.close()


async def test_collections_are_the_calendars_the_task_lists_the_group_and_the_label(
    provider: GoogleProvider, emulator: RunningEmulator, mailbox: MailboxAccess
) -> None:
    emulator.admin("POST", f"users/{mailbox.account.address}/calendars", {"summary": "Customers"})
    found = await provider.list_collections(mailbox, None)
    assert sorted((c.kind.value, c.display_name, c.is_default) for c in found) == [
        ("calendar-item", "Customers", False),
        ("calendar-item", mailbox.account.address, True),
        ("contact", "Salesforce", True),
        ("email", "Salesforce Emails", True),
        ("task", "My Tasks", True),
    ]
    only = await provider.list_collections(mailbox, Kind.TASK)
    assert [c.id for c in only] == ["task"]


async def test_contacts_known_new_are_created_without_listing_every_contact(
    provider: GoogleProvider, mailbox: MailboxAccess
) -> None:
    """People has no query by client data: a create that may be a replay lists every contact
    first, once per call; creates the caller proved new skip that listing."""

    def contact(n: int, known_new: bool) -> Write:
        item = r.MailItem(
            ref=r.ItemRef(kind=r.OBJECT_KIND_CONTACT),
            contact=r.ContactItem(
                given_name=f"Ada {n}",
                family_name="Lovelace",
                email_addresses=[r.ContactEmailAddress(address=f"ada{n}@acme.example")],
            ),
        )
        return Write(WriteOperation.CREATE, f"c{n}", r.ItemRef(), item, known_new=known_new)

    listings = f"{mailbox.account.mailbox}:people.people.connections.list"
    made = await provider.apply_items(mailbox, [contact(n, True) for n in range(3)])
    assert {x.status for x in made} == {r.WRITE_STATUS_OK}
    assert provider.calls.get(listings, 0) == 0
    again = await provider.apply_items(mailbox, [contact(0, False), contact(3, True)])
    assert [x.already_applied for x in again] == [True, False]
    assert provider.calls[listings] == 1


def _contact_write(n: int, birthday: str = "") -> Write:
    item = r.MailItem(
        ref=r.ItemRef(kind=r.OBJECT_KIND_CONTACT),
        contact=r.ContactItem(
            given_name=f"Grace {n}",
            family_name="Hopper",
            birthday=birthday,
            email_addresses=[r.ContactEmailAddress(address=f"grace{n}@acme.example")],
        ),
    )
    return Write(WriteOperation.CREATE, f"g{n}", r.ItemRef(), item, known_new=True)


def _people_calls(provider: GoogleProvider, mailbox: MailboxAccess) -> dict[str, int]:
    prefix = f"{mailbox.account.mailbox}:people.people."
    return {k.removeprefix(prefix): v for k, v in provider.calls.items() if k.startswith(prefix)}


async def test_250_contact_creates_cost_two_people_calls(
    provider: GoogleProvider, mailbox: MailboxAccess
) -> None:
    """People takes 200 contacts a batchCreateContacts call: 250 creates are two calls, each
    contact with its link id and in the share group."""
    made = await provider.apply_items(mailbox, [_contact_write(n) for n in range(250)])
    assert {x.status for x in made} == {r.WRITE_STATUS_OK}
    assert _people_calls(provider, mailbox) == {"batchCreateContacts": 2}
    changes, _ = await listing(provider, mailbox, Kind.CONTACT)
    assert sorted(c.ref.link_id for c in changes) == sorted(x.link_id for x in made)
    assert {c.ref.native_id for c in changes} == {x.ref.native_id for x in made if x.ref}


async def test_a_contact_google_cannot_take_fails_alone_in_its_batch(
    provider: GoogleProvider, mailbox: MailboxAccess
) -> None:
    writes = [_contact_write(0), _contact_write(1, birthday="1906-13-45"), _contact_write(2)]
    made = await provider.apply_items(mailbox, writes)
    assert [x.status for x in made] == [
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_INVALID,
        r.WRITE_STATUS_OK,
    ]
    assert _people_calls(provider, mailbox) == {"batchCreateContacts": 1}


async def test_a_contact_google_refuses_fails_alone_and_the_rest_are_sent_again(
    provider: GoogleProvider, emulator: RunningEmulator, mailbox: MailboxAccess
) -> None:
    """A batch with a contact Google refuses writes nothing and names it: the others go in a
    second call, and the refused one is INVALID on its own."""
    emulator.admin(
        "POST",
        "faults",
        {
            "kind": "refuse_contact",
            "method": "people.people.batchCreateContacts",
            "user": mailbox.account.address,
            "contact": 1,
        },
    )
    made = await provider.apply_items(mailbox, [_contact_write(n) for n in range(3)])
    assert [x.status for x in made] == [
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_INVALID,
        r.WRITE_STATUS_OK,
    ]
    assert _people_calls(provider, mailbox) == {"batchCreateContacts": 2}
    changes, _ = await listing(provider, mailbox, Kind.CONTACT)
    assert sorted(c.ref.link_id for c in changes) == ["g0", "g2"]


def _rename(ref: r.ItemRef, given: str) -> Write:
    item = r.MailItem(ref=ref, contact=r.ContactItem(given_name=given))
    return Write(WriteOperation.UPDATE, ref.link_id, ref, item, update_mask=("given_name",))


async def test_contact_updates_batch_and_a_stale_or_missing_one_fails_alone(
    provider: GoogleProvider, mailbox: MailboxAccess
) -> None:
    made = await provider.apply_items(mailbox, [_contact_write(n) for n in range(4)])
    refs = [x.ref for x in made if x.ref is not None]
    assert len(refs) == 4
    [moved] = await provider.apply_items(mailbox, [_rename(refs[1], "Elsewhere")])
    [gone] = await provider.apply_items(
        mailbox, [Write(WriteOperation.DELETE, refs[3].link_id, refs[3], r.MailItem())]
    )
    assert (moved.status, gone.status) == (r.WRITE_STATUS_OK, r.WRITE_STATUS_OK)
    before = _people_calls(provider, mailbox)
    # refs[1] still carries the etag from before `moved`: Google refuses it as stale.
    results = await provider.apply_items(
        mailbox, [_rename(ref, f"Renamed {n}") for n, ref in enumerate(refs)]
    )
    assert [x.status for x in results] == [
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_CONFLICT,
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_NOT_FOUND,
    ]
    after = _people_calls(provider, mailbox)
    assert after["getBatchGet"] - before.get("getBatchGet", 0) == 1
    # The first batch names the stale contact and writes nothing; the second writes the rest.
    assert after["batchUpdateContacts"] - before.get("batchUpdateContacts", 0) == 2
    changes, _ = await listing(provider, mailbox, Kind.CONTACT)
    names = {c.ref.link_id: c.item.contact.given_name for c in changes}
    assert names == {"g0": "Renamed 0", "g1": "Elsewhere", "g2": "Renamed 2"}
    assert all(c.item.contact.family_name == "Hopper" for c in changes)


async def test_contact_deletes_batch_and_a_missing_one_is_not_found_alone(
    provider: GoogleProvider, mailbox: MailboxAccess
) -> None:
    made = await provider.apply_items(mailbox, [_contact_write(n) for n in range(3)])
    refs = [x.ref for x in made if x.ref is not None]

    def delete(ref: r.ItemRef) -> Write:
        return Write(WriteOperation.DELETE, ref.link_id, ref, r.MailItem())

    assert [x.status for x in await provider.apply_items(mailbox, [delete(refs[0])])] == [
        r.WRITE_STATUS_OK
    ]
    results = await provider.apply_items(mailbox, [delete(ref) for ref in refs])
    assert [x.status for x in results] == [
        r.WRITE_STATUS_NOT_FOUND,
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_OK,
    ]
    calls = _people_calls(provider, mailbox)
    # The batch deletes nothing when one is gone; each then goes on its own.
    assert (calls["batchDeleteContacts"], calls["deleteContact"]) == (1, 4)
    changes, _ = await listing(provider, mailbox, Kind.CONTACT)
    assert changes == []
    three = await provider.apply_items(mailbox, [_contact_write(n) for n in range(5, 8)])
    done = await provider.apply_items(mailbox, [delete(x.ref) for x in three if x.ref])
    assert {x.status for x in done} == {r.WRITE_STATUS_OK}
    assert _people_calls(provider, mailbox)["batchDeleteContacts"] == 2


async def test_event_updates_and_deletes_batch_and_a_stale_or_missing_one_fails_alone(
    provider: GoogleProvider, mailbox: MailboxAccess, emulator: RunningEmulator
) -> None:
    """60 event updates or deletes cost 2 HTTP requests each (50 a batch), one call per event
    all the same; a stale etag or a missing event fails alone."""
    made = await provider.apply_items(
        mailbox,
        [
            Write(WriteOperation.CREATE, f"e{n}", r.ItemRef(), event_item_with(f"m{n}", []))
            for n in range(60)
        ],
    )
    refs = [x.ref for x in made if x.ref is not None]
    assert len(refs) == 60
    # refs[1] is then stale (its etag is from before this rename), refs[2] gone.
    rename = event_item_with("moved", [])
    [moved] = await provider.apply_items(
        mailbox, [Write(WriteOperation.UPDATE, "e1", refs[1], rename, update_mask=("subject",))]
    )
    [gone] = await provider.apply_items(
        mailbox, [Write(WriteOperation.DELETE, "e2", refs[2], r.MailItem())]
    )
    assert (moved.status, gone.status) == (r.WRITE_STATUS_OK, r.WRITE_STATUS_OK)
    emulator.admin("DELETE", "requests")
    updates = [
        Write(
            WriteOperation.UPDATE,
            ref.link_id,
            ref,
            event_item_with(f"renamed {n}", []),
            update_mask=("subject",),
        )
        for n, ref in enumerate(refs)
    ]
    updated = await provider.apply_items(mailbox, updates)
    assert [x.status for x in updated[:3]] == [
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_CONFLICT,
        r.WRITE_STATUS_NOT_FOUND,
    ]
    assert {x.status for x in updated[3:]} == {r.WRITE_STATUS_OK}
    assert sum(emulator.admin("GET", "requests").values()) == 2
    changes, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    subjects = {c.ref.link_id: c.item.calendar_item.subject for c in changes}
    assert (subjects["e0"], subjects["e1"], subjects["e59"]) == ("renamed 0", "moved", "renamed 59")
    assert "e2" not in subjects
    emulator.admin("DELETE", "requests")
    fresh = [x.ref for x in updated if x.ref is not None and x.status == r.WRITE_STATUS_OK]
    deletes = [Write(WriteOperation.DELETE, ref.link_id, ref, r.MailItem()) for ref in fresh]
    deletes.append(Write(WriteOperation.DELETE, "e2", refs[2], r.MailItem()))
    deleted = await provider.apply_items(mailbox, deletes)
    assert {x.status for x in deleted[:-1]} == {r.WRITE_STATUS_OK}
    assert deleted[-1].status == r.WRITE_STATUS_NOT_FOUND
    assert sum(emulator.admin("GET", "requests").values()) == 2
    changes, _ = await listing(provider, mailbox, Kind.CALENDAR_ITEM)
    assert {c.ref.link_id for c in changes if c.item.HasField("calendar_item")} == {"e1"}


def _alone(ref: r.ItemRef, payload: str, link_id: str) -> Write:
    """An update of `ref` whose mask is the link id alone (the reconciler's relink)."""
    item = r.MailItem(ref=ref)
    getattr(item, payload).SetInParent()
    return Write(WriteOperation.UPDATE, link_id, ref, item, update_mask=["link_id"])


async def test_an_event_update_stores_its_link_id_and_a_link_id_alone_replaces_a_copys(
    provider: GoogleProvider, mailbox: MailboxAccess, calendar: Any
) -> None:
    """A copy of an event Concord wrote (another client's, private properties and all)
    carries its link id. An update of the link id alone gives it its own, its content and
    its other private keys (the categories) as they were; every update stores its link id."""
    [made] = await provider.apply_items(
        mailbox,
        [Write(WriteOperation.CREATE, "orig", r.ItemRef(), event_item_with("Kick-off", []))],
    )
    assert made.ref is not None
    private = {"concord_link_id": "orig", "concord_categories": json.dumps(["Clients"])}
    copy = calendar.insert(
        calendarId="primary",
        body=timed("Kick-off (copy)", extendedProperties={"private": private}),
    ).execute()
    ref = r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM, native_id=copy["id"], version=copy["etag"])

    async def read(native_id: str) -> tuple[str, str, list[str]]:
        found = await provider.get_items(
            mailbox, [r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM, native_id=native_id)]
        )
        [item] = found.items
        c = item.calendar_item
        return item.ref.link_id, c.subject, sorted(c.categories)

    [relinked] = await provider.apply_items(mailbox, [_alone(ref, "calendar_item", "copy")])
    assert relinked.status == r.WRITE_STATUS_OK
    assert relinked.ref is not None
    assert relinked.ref.link_id == "copy"
    assert await read(copy["id"]) == ("copy", "Kick-off (copy)", ["Clients"])
    assert await read(made.ref.native_id) == ("orig", "Kick-off", [])
    [moved] = await provider.apply_items(
        mailbox,
        [
            Write(
                WriteOperation.UPDATE,
                "moved",
                relinked.ref,
                event_item_with("Moved", []),
                update_mask=["subject"],
            )
        ],
    )
    assert moved.status == r.WRITE_STATUS_OK
    assert await read(copy["id"]) == ("moved", "Moved", ["Clients"])


async def test_contact_and_task_updates_store_their_link_id_a_link_id_alone_nothing_else(
    provider: GoogleProvider, mailbox: MailboxAccess, people: Any
) -> None:
    """Contacts keep the link id in clientData, tasks at the end of their notes: an update of
    the link id alone replaces the one they carry and changes nothing else (another client's
    clientData stays), and every update stores its link id. Two contacts in a row go as one
    batch, one alone on its own."""
    made = await provider.apply_items(
        mailbox,
        [
            *(_contact_write(n) for n in range(3)),
            Write(WriteOperation.CREATE, "t1", r.ItemRef(), task("Send quote", "2031-06-02")),
        ],
    )
    assert [x.status for x in made] == [r.WRITE_STATUS_OK] * 4
    refs = [x.ref for x in made if x.ref is not None]

    def client_data(n: int) -> list[tuple[str, str]]:
        found = people.get(resourceName=refs[n].native_id, personFields="clientData").execute()
        return sorted((e["key"], e["value"]) for e in found.get("clientData") or ())

    for n in (0, 2):
        person = people.get(resourceName=refs[n].native_id, personFields="clientData").execute()
        written = people.updateContact(
            resourceName=refs[n].native_id,
            updatePersonFields="clientData",
            body={
                "etag": person["etag"],
                "clientData": [*person["clientData"], {"key": "crm", "value": f"x{n}"}],
            },
        ).execute()
        refs[n].version = written["etag"]
    results = await provider.apply_items(
        mailbox,
        [
            _alone(refs[0], "contact", "c-own0"),
            _alone(refs[1], "contact", "c-own1"),
            Write(WriteOperation.UPDATE, "c-renamed", refs[2], _rename(refs[2], "Ada").item,
                  update_mask=["given_name"]),
            _alone(refs[3], "task", "t-own"),
        ],
    )  # fmt: skip
    assert [x.status for x in results] == [r.WRITE_STATUS_OK] * 4
    assert [x.ref.link_id for x in results if x.ref] == ["c-own0", "c-own1", "c-renamed", "t-own"]
    assert client_data(0) == [("concord_link_id", "c-own0"), ("crm", "x0")]
    assert client_data(2) == [("concord_link_id", "c-renamed"), ("crm", "x2")]

    async def carrying(kind: Kind, *link_ids: str) -> list[tuple[str, str]]:
        found = await provider.get_items(mailbox, [], link_ids=link_ids, kind=kind)
        return sorted(
            (i.ref.link_id, i.contact.given_name if kind == Kind.CONTACT else i.task.body_text)
            for i in found.items
        )

    assert await carrying(Kind.CONTACT, "g0", "g1", "g2", "c-own0", "c-own1", "c-renamed") == [
        ("c-own0", "Grace 0"),
        ("c-own1", "Grace 1"),
        ("c-renamed", "Ada"),
    ]
    assert await carrying(Kind.TASK, "t1", "t-own") == [("t-own", "call back")]
    changes, _ = await listing(provider, mailbox, Kind.TASK)
    [listed] = changes
    got = listed.item.task
    assert (got.subject, got.due_date, got.status) == (
        "Send quote",
        "2031-06-02",
        r.TASK_STATUS_NOT_STARTED,
    )
