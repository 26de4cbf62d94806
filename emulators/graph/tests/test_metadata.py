"""The emulator's answers against Graph's published metadata: the interfaces of the npm
package `@microsoft/microsoft-graph-types` (MIT), extracted into data/graph_types.json by
data/extract_graph_types.py. Every property an answer carries must exist on the type (or a
base type) with a value of the declared shape, recursively."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from .conftest import WINDOW, Graph, check

pytestmark = pytest.mark.integration


def test_the_checker_catches_what_does_not_fit() -> None:
    assert check({"subject": 1, "nonsense": True}, "Event") == [
        "$.subject: 1 is not a string",
        "$.nonsense: no such property on Event",
    ]
    assert check({"sensitivity": "secret"}, "Event") == [
        "$.sensitivity: 'secret' is not one of Sensitivity"
    ]


def test_answers_fit_graphs_published_types(graph: Graph) -> None:
    prop = "String {7d1b4a5e-1f7b-4c5e-9a51-6b3e1c2f0a11} Name concordLinkId"
    expand = {"$expand": f"singleValueExtendedProperties($filter=id eq '{prop}')"}
    single = graph.event(
        "Review",
        categories=["Salesforce"],
        sensitivity="private",
        attendees=[{"emailAddress": {"address": "ada@acme.example", "name": "Ada"}}],
        location={"displayName": "Berlin"},
        singleValueExtendedProperties=[{"id": prop, "value": "l1"}],
    )
    series = graph.event(
        "Stand-up",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
            "range": {"type": "numbered", "startDate": "2031-06-02", "numberOfOccurrences": 3},
        },
    )
    instances = graph.http.get(
        f"{graph.user}/events/{series['id']}/instances", params=WINDOW
    ).json()["value"]
    graph.http.patch(f"{graph.user}/events/{instances[1]['id']}", json={"subject": "Moved"})
    graph.http.delete(f"{graph.user}/events/{instances[2]['id']}")
    folder = graph.http.post(f"{graph.user}/contactFolders", json={"displayName": "F"}).json()
    contact = graph.http.post(
        f"{graph.user}/contactFolders/{folder['id']}/contacts",
        json={"givenName": "Ada", "businessPhones": ["+44 20"], "birthday": "1815-12-10T00:00:00Z",
              "emailAddresses": [{"address": "ada@acme.example", "name": "Ada"}],
              "businessAddress": {"city": "London", "countryOrRegion": "UK"}},
    ).json()  # fmt: skip
    mid = graph.deliver(
        "inbox", b"From: a@b.example\r\nTo: c@d.example\r\nSubject: s\r\n\r\nx", "S"
    )
    lists = graph.http.get(f"{graph.user}/todo/lists").json()["value"]
    task = graph.http.post(
        f"{graph.user}/todo/lists/{lists[0]['id']}/tasks",
        json={"title": "t", "importance": "high",
              "dueDateTime": {"dateTime": "2031-06-02T00:00:00", "timeZone": "UTC"}},
    ).json()  # fmt: skip
    category = graph.http.post(
        f"{graph.user}/outlook/masterCategories", json={"displayName": "Salesforce"}
    ).json()
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    cases: list[tuple[Any, str]] = [
        (graph.http.get(f"{graph.user}/events/{single['id']}", params=expand).json(), "Event"),
        (
            graph.http.get(
                f"{graph.user}/events/{series['id']}",
                params={"$select": "subject,recurrence,type,cancelledOccurrences"},
            ).json(),
            "Event",
        ),
        (graph.http.get(f"{graph.user}/calendarView", params=WINDOW).json()["value"], "Event[]"),
        (
            graph.http.get(f"{graph.user}/calendarView/delta", params=WINDOW).json()["value"],
            "Event[]",
        ),
        (contact, "Contact"),
        (graph.http.get(f"{graph.user}/contactFolders").json()["value"], "ContactFolder[]"),
        (graph.http.get(f"{graph.user}/messages/{mid}").json(), "Message"),
        (graph.http.get(f"{graph.user}/mailFolders").json()["value"], "MailFolder[]"),
        (lists, "TodoTaskList[]"),
        (task, "TodoTask"),
        (category, "OutlookCategory"),
        (
            graph.http.get(f"{graph.user}/events/{single['id']}", params=expand).json()[
                "singleValueExtendedProperties"
            ],
            "SingleValueLegacyExtendedProperty[]",
        ),
    ]
    subscription = graph.http.post(
        "/subscriptions",
        json={"changeType": "created", "notificationUrl": "http://127.0.0.1:9/none",
              "resource": f"users/{graph.address}/events", "expirationDateTime": expires},
    )  # fmt: skip
    # Port 9 answers nothing, so validation fails: the refusal is the documented error shape.
    assert subscription.status_code == 400
    problems = [p for value, kind in cases for p in check(value, kind)]
    assert problems == []
    assert len(cases) == 12
