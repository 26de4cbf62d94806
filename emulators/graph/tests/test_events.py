"""Events: writes, versions, series and their instances, calendarView and its delta."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import WINDOW, Graph

pytestmark = pytest.mark.integration

WEEKLY = {
    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
    "range": {"type": "numbered", "startDate": "2031-06-02", "numberOfOccurrences": 3},
}


def delta_round(graph: Graph, link: str | None = None, page: int = 100) -> tuple[list[Any], str]:
    """Every page of one delta round: the entries and the deltaLink."""
    entries: list[Any] = []
    url = link or f"{graph.user}/calendarView/delta"
    params = None if link else WINDOW
    while True:
        answer = graph.http.get(url, params=params, headers={"Prefer": f"odata.maxpagesize={page}"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        entries += body["value"]
        if "@odata.deltaLink" in body:
            return entries, body["@odata.deltaLink"]
        url, params = body["@odata.nextLink"], None


def test_an_event_is_stored_in_its_zone_and_read_in_the_asked_one(graph: Graph) -> None:
    made = graph.event()
    assert made["originalStartTimeZone"] == "Romance Standard Time"
    assert made["start"] == {"dateTime": "2031-06-02T08:00:00.0000000", "timeZone": "UTC"}
    paris = graph.http.get(
        f"{graph.user}/events/{made['id']}", headers={"Prefer": 'outlook.timezone="Europe/Paris"'}
    ).json()
    assert paris["start"] == {"dateTime": "2031-06-02T10:00:00.0000000", "timeZone": "Europe/Paris"}


def test_all_day_events_are_floating_dates(graph: Graph) -> None:
    made = graph.event(
        isAllDay=True,
        start={"dateTime": "2031-06-02T00:00:00", "timeZone": "Pacific Standard Time"},
        end={"dateTime": "2031-06-03T00:00:00", "timeZone": "Pacific Standard Time"},
    )
    tokyo = graph.http.get(
        f"{graph.user}/events/{made['id']}", headers={"Prefer": 'outlook.timezone="Asia/Tokyo"'}
    ).json()
    assert tokyo["start"]["dateTime"] == "2031-06-02T00:00:00.0000000"
    assert tokyo["end"]["dateTime"] == "2031-06-03T00:00:00.0000000"


def test_an_unknown_zone_and_an_end_before_the_start_are_refused(graph: Graph) -> None:
    bad_zone = {"dateTime": "2031-06-02T10:00:00", "timeZone": "Mars/Olympus_Mons"}
    answer = graph.http.post(
        f"{graph.user}/events", json={"subject": "x", "start": bad_zone, "end": bad_zone}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "TimeZoneNotSupportedException"
    backwards = graph.http.post(
        f"{graph.user}/events",
        json={
            "start": {"dateTime": "2031-06-02T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-06-01T10:00:00", "timeZone": "UTC"},
        },
    )
    assert backwards.status_code == 400


def test_if_match_with_a_stale_etag_is_412(graph: Graph) -> None:
    made = graph.event()
    url = f"{graph.user}/events/{made['id']}"
    first = graph.http.patch(url, json={"subject": "a"}, headers={"If-Match": made["@odata.etag"]})
    assert first.status_code == 200
    assert first.json()["changeKey"] != made["changeKey"]
    stale = graph.http.patch(url, json={"subject": "b"}, headers={"If-Match": made["@odata.etag"]})
    assert stale.status_code == 412
    assert graph.http.get(url).json()["subject"] == "a"


def test_extended_properties_are_written_filtered_and_expanded(graph: Graph) -> None:
    prop = "String {7d1b4a5e-1f7b-4c5e-9a51-6b3e1c2f0a11} Name concordLinkId"
    made = graph.event(singleValueExtendedProperties=[{"id": prop, "value": "link-1"}])
    graph.event("other")
    flt = f"singleValueExtendedProperties/any(ep: ep/id eq '{prop}' and ep/value eq 'link-1')"
    found = graph.http.get(
        f"{graph.user}/events",
        params={
            "$filter": flt,
            "$expand": f"singleValueExtendedProperties($filter=id eq '{prop}')",
        },
    ).json()["value"]
    assert [e["id"] for e in found] == [made["id"]]
    assert found[0]["singleValueExtendedProperties"] == [{"id": prop, "value": "link-1"}]
    # An id that is no property id is refused.
    answer = graph.http.post(
        f"{graph.user}/events",
        json={**_times(), "singleValueExtendedProperties": [{"id": "nonsense", "value": "x"}]},
    )
    assert answer.status_code == 400


def test_a_patch_sets_the_extended_properties_it_names_and_keeps_the_others(
    graph: Graph,
) -> None:
    link = "String {7d1b4a5e-1f7b-4c5e-9a51-6b3e1c2f0a11} Name concordLinkId"
    other = "String {00020329-0000-0000-c000-000000000046} Name Keep"
    made = graph.event(
        singleValueExtendedProperties=[
            {"id": link, "value": "link-1"},
            {"id": other, "value": "kept"},
        ]
    )
    url = f"{graph.user}/events/{made['id']}"
    patched = graph.http.patch(
        url, json={"singleValueExtendedProperties": [{"id": link, "value": "link-2"}]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["subject"] == "Kick-off"
    assert patched.json()["@odata.etag"] != made["@odata.etag"]
    # Extended properties are answered when asked for, never as a property of the event.
    assert "singleValueExtendedProperties" not in graph.http.get(url).json()
    expand = f"singleValueExtendedProperties($filter=id eq '{link}' or id eq '{other}')"
    read = graph.http.get(url, params={"$expand": expand}).json()
    assert sorted((p["id"], p["value"]) for p in read["singleValueExtendedProperties"]) == sorted(
        [(link, "link-2"), (other, "kept")]
    )


def _times() -> dict[str, Any]:
    return {
        "start": {"dateTime": "2031-06-02T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2031-06-02T11:00:00", "timeZone": "UTC"},
    }


def test_a_repeated_transaction_id_answers_with_the_first_event(graph: Graph) -> None:
    first = graph.event(transactionId="t-1")
    again = graph.event(transactionId="t-1")
    assert again["id"] == first["id"]
    assert len(graph.http.get(f"{graph.user}/events").json()["value"]) == 1


def test_a_series_has_instances_and_an_edited_one_becomes_an_exception(graph: Graph) -> None:
    series = graph.event("Stand-up", recurrence=WEEKLY)
    assert series["type"] == "seriesMaster"
    instances = graph.http.get(
        f"{graph.user}/events/{series['id']}/instances", params=WINDOW
    ).json()["value"]
    assert [i["type"] for i in instances] == ["occurrence"] * 3
    assert [i["originalStart"] for i in instances] == [
        "2031-06-02T08:00:00Z",
        "2031-06-09T08:00:00Z",
        "2031-06-16T08:00:00Z",
    ]
    second = instances[1]
    moved = graph.http.patch(
        f"{graph.user}/events/{second['id']}",
        json={"subject": "Moved", "start": {"dateTime": "2031-06-10T09:00:00", "timeZone": "UTC"},
              "end": {"dateTime": "2031-06-10T09:30:00", "timeZone": "UTC"}},
    )  # fmt: skip
    assert moved.status_code == 200, moved.text
    assert graph.http.delete(f"{graph.user}/events/{instances[2]['id']}").status_code == 204
    view = graph.http.get(f"{graph.user}/calendarView", params=WINDOW).json()["value"]
    assert [(v["type"], v["subject"]) for v in view] == [
        ("occurrence", "Stand-up"),
        ("exception", "Moved"),
    ]
    assert view[1]["originalStart"] == "2031-06-09T08:00:00Z"
    master = graph.http.get(
        f"{graph.user}/events/{series['id']}", params={"$select": "subject,cancelledOccurrences"}
    ).json()
    assert master["cancelledOccurrences"] == [f"OID.{series['id']}.2031-06-16"]


def test_calendar_view_delta_pages_then_lists_only_changes(graph: Graph) -> None:
    made = [graph.event(f"e{n}") for n in range(3)]
    entries, link = delta_round(graph, page=2)
    assert sorted(e["subject"] for e in entries) == ["e0", "e1", "e2"]
    graph.http.patch(f"{graph.user}/events/{made[0]['id']}", json={"subject": "e0!"})
    graph.http.delete(f"{graph.user}/events/{made[1]['id']}")
    entries, link = delta_round(graph, link)
    assert sorted((e.get("subject", ""), "@removed" in e) for e in entries) == [
        ("", True),
        ("e0!", False),
    ]
    assert delta_round(graph, link)[0] == []


def test_a_stale_delta_token_is_410_sync_state_not_found(graph: Graph) -> None:
    graph.event()
    _, link = delta_round(graph)
    graph.emu.admin("POST", f"users/{graph.address}/expire-delta")
    answer = graph.http.get(link)
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "syncStateNotFound"
    mangled = graph.http.get(f"{graph.user}/calendarView/delta", params={"$deltatoken": "x!"})
    assert mangled.status_code == 410


def test_a_series_in_delta_is_its_instances(graph: Graph) -> None:
    graph.event("Stand-up", recurrence=WEEKLY)
    entries, _ = delta_round(graph)
    assert [e["type"] for e in entries] == ["occurrence"] * 3
    assert len({e["seriesMasterId"] for e in entries}) == 1
