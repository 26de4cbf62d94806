"""Calendar v3 as the unmodified client sees it."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

import httplib2  # type: ignore[import-untyped]
import pytest
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]

from concord_google_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration

Builder = Callable[..., Any]


def meeting(summary: str, **extra: object) -> dict[str, object]:
    return {
        "summary": summary,
        "start": {"dateTime": "2031-06-02T10:00:00+02:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2031-06-02T11:00:00+02:00", "timeZone": "Europe/Paris"},
        **extra,
    }


def full_listing(events: Any, **params: Any) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = events.list(calendarId="primary", pageToken=token, maxResults=2, **params).execute()
        items += page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            return items, page["nextSyncToken"]


def test_sync_token_lists_only_what_changed_including_deletes(client: Builder) -> None:
    events = client("calendar").events()
    made = [events.insert(calendarId="primary", body=meeting(f"m{n}")).execute() for n in range(3)]
    listed, token = full_listing(events)
    assert sorted(e["summary"] for e in listed) == ["m0", "m1", "m2"]
    events.patch(calendarId="primary", eventId=made[0]["id"], body={"summary": "m0!"}).execute()
    events.delete(calendarId="primary", eventId=made[1]["id"]).execute()
    changed, token = full_listing(events, syncToken=token)
    assert sorted((e["id"], e["status"]) for e in changed) == sorted(
        [(made[0]["id"], "confirmed"), (made[1]["id"], "cancelled")]
    )
    assert full_listing(events, syncToken=token)[0] == []


def test_a_stale_sync_token_is_410_full_sync_required(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    events = client("calendar").events()
    _, token = full_listing(events)
    emulator.admin("POST", f"users/{user}/invalidate/calendar-sync-tokens")
    with pytest.raises(HttpError) as caught:
        events.list(calendarId="primary", syncToken=token).execute()
    assert caught.value.status_code == 410
    assert caught.value.error_details[0]["reason"] == "fullSyncRequired"


def test_a_client_chosen_id_cannot_be_created_twice(client: Builder) -> None:
    events = client("calendar").events()
    body = meeting("once", id="concord0link0001")
    assert events.insert(calendarId="primary", body=body).execute()["id"] == "concord0link0001"
    with pytest.raises(HttpError) as caught:
        events.insert(calendarId="primary", body=body).execute()
    assert caught.value.status_code == 409
    with pytest.raises(HttpError) as bad:
        events.insert(calendarId="primary", body=meeting("x", id="NOT_BASE32HEX")).execute()
    assert bad.value.status_code == 400


def test_if_match_with_a_stale_etag_is_412(client: Builder) -> None:
    service = client("calendar")
    events = service.events()
    made = events.insert(calendarId="primary", body=meeting("etag")).execute()
    events.patch(calendarId="primary", eventId=made["id"], body={"summary": "theirs"}).execute()
    stale = events.patch(calendarId="primary", eventId=made["id"], body={"summary": "ours"})
    stale.headers["If-Match"] = made["etag"]
    with pytest.raises(HttpError) as caught:
        stale.execute()
    assert caught.value.status_code == 412
    assert events.get(calendarId="primary", eventId=made["id"]).execute()["summary"] == "theirs"


def test_recurring_masters_instances_exceptions_and_cancelled_instances(client: Builder) -> None:
    events = client("calendar").events()
    master = events.insert(
        calendarId="primary",
        body=meeting(
            "weekly",
            recurrence=["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;TZID=Europe/Paris:20310616T100000"],
        ),
    ).execute()
    _, token = full_listing(events)
    instances = events.instances(calendarId="primary", eventId=master["id"]).execute()["items"]
    assert [i["originalStartTime"]["dateTime"][:10] for i in instances] == [
        "2031-06-02",
        "2031-06-09",
        "2031-06-23",
    ]
    second, third = instances[1], instances[2]
    assert second["id"] == f"{master['id']}_20310609T080000Z"
    moved = events.patch(
        calendarId="primary",
        eventId=second["id"],
        body={
            "start": {"dateTime": "2031-06-09T14:00:00+02:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2031-06-09T15:00:00+02:00", "timeZone": "Europe/Paris"},
        },
    ).execute()
    assert moved["recurringEventId"] == master["id"]
    assert moved["originalStartTime"]["dateTime"].startswith("2031-06-09T10:00")
    events.delete(calendarId="primary", eventId=third["id"]).execute()
    changed, _ = full_listing(events, syncToken=token)
    assert sorted((e["id"], e["status"]) for e in changed) == sorted(
        [(second["id"], "confirmed"), (third["id"], "cancelled")]
    )
    [cancelled] = [e for e in changed if e["status"] == "cancelled"]
    assert cancelled["recurringEventId"] == master["id"]
    after = events.instances(calendarId="primary", eventId=master["id"]).execute()["items"]
    assert [i["start"]["dateTime"][:16] for i in after] == ["2031-06-02T10:00", "2031-06-09T14:00"]
    singles, _ = full_listing(events, singleEvents=True)
    assert len(singles) == 2


def test_all_day_events_keep_dates_with_an_exclusive_end(client: Builder) -> None:
    events = client("calendar").events()
    body = {"summary": "offsite", "start": {"date": "2031-06-02"}, "end": {"date": "2031-06-04"}}
    made = events.insert(calendarId="primary", body=body).execute()
    assert (made["start"], made["end"]) == ({"date": "2031-06-02"}, {"date": "2031-06-04"})
    with pytest.raises(HttpError) as empty:
        events.insert(calendarId="primary", body=body | {"end": {"date": "2031-06-02"}}).execute()
    assert empty.value.error_details[0]["reason"] == "timeRangeEmpty"


def test_private_extended_properties_filter_a_listing(client: Builder) -> None:
    events = client("calendar").events()
    tagged = meeting(
        "linked", extendedProperties={"private": {"link_id": "L1"}}, visibility="private"
    )
    events.insert(calendarId="primary", body=tagged).execute()
    events.insert(calendarId="primary", body=meeting("other")).execute()
    found = events.list(calendarId="primary", privateExtendedProperty="link_id=L1").execute()
    assert [(e["summary"], e["visibility"]) for e in found["items"]] == [("linked", "private")]


def test_a_patch_merges_private_properties_key_by_key_and_an_update_replaces_them(
    client: Builder,
) -> None:
    # Patch semantics (Calendar v3 reference, events/patch): objects merge field by field,
    # arrays are replaced; an update (PUT) writes the whole event.
    events = client("calendar").events()
    made = events.insert(
        calendarId="primary",
        body=meeting("linked", extendedProperties={"private": {"link": "L1", "keep": "k"}}),
    ).execute()
    patched = events.patch(
        calendarId="primary",
        eventId=made["id"],
        body={"extendedProperties": {"private": {"link": "L2"}}},
    ).execute()
    assert patched["summary"] == "linked"
    assert patched["extendedProperties"]["private"] == {"link": "L2", "keep": "k"}
    replaced = events.update(
        calendarId="primary",
        eventId=made["id"],
        body=meeting("linked", extendedProperties={"private": {"link": "L3"}}),
    ).execute()
    assert replaced["extendedProperties"]["private"] == {"link": "L3"}


def test_an_unknown_time_zone_is_refused(client: Builder) -> None:
    events = client("calendar").events()
    body = meeting("zone")
    body["start"] = {"dateTime": "2031-06-02T10:00:00", "timeZone": "Mars/Olympus"}
    with pytest.raises(HttpError) as caught:
        events.insert(calendarId="primary", body=body).execute()
    assert caught.value.status_code == 400


def test_a_dropped_answer_still_commits_and_a_second_delete_is_410(
    client: Builder, emulator: RunningEmulator
) -> None:
    events = client("calendar").events()
    emulator.admin("POST", "faults", {"kind": "drop_response", "method": "calendar.events.insert"})
    with pytest.raises((OSError, http.client.HTTPException, httplib2.HttpLib2Error)):
        events.insert(calendarId="primary", body=meeting("cut", id="cut00001")).execute()
    assert events.get(calendarId="primary", eventId="cut00001").execute()["summary"] == "cut"
    stale = events.delete(calendarId="primary", eventId="cut00001")
    stale.headers["If-Match"] = '"1"'
    with pytest.raises(HttpError) as precondition:
        stale.execute()
    assert precondition.value.status_code == 412
    events.delete(calendarId="primary", eventId="cut00001").execute()
    with pytest.raises(HttpError) as gone:
        events.delete(calendarId="primary", eventId="cut00001").execute()
    assert (gone.value.status_code, gone.value.error_details[0]["reason"]) == (410, "deleted")
