"""Contacts, mail and To Do: folders, items, delta per folder, MIME."""

from __future__ import annotations

import pytest

from .conftest import Graph

pytestmark = pytest.mark.integration

MIME = (
    b"From: Ada <ada@acme.example>\r\nTo: rep@concord.test\r\nSubject: Quote\r\n"
    b"Message-ID: <q1@acme.example>\r\nDate: Mon, 02 Jun 2031 08:00:00 +0000\r\n\r\nHello\r\n"
)


def test_contact_folders_hold_contacts_listed_by_delta(graph: Graph) -> None:
    folder = graph.http.post(f"{graph.user}/contactFolders", json={"displayName": "Salesforce"})
    assert folder.status_code == 201
    fid = folder.json()["id"]
    again = graph.http.post(f"{graph.user}/contactFolders", json={"displayName": "Salesforce"})
    assert again.status_code == 409
    found = graph.http.get(
        f"{graph.user}/contactFolders", params={"$filter": "displayName eq 'Salesforce'"}
    ).json()["value"]
    assert [f["id"] for f in found] == [fid]
    made = graph.http.post(
        f"{graph.user}/contactFolders/{fid}/contacts",
        json={"givenName": "Ada", "surname": "Lovelace",
              "emailAddresses": [{"address": "ada@acme.example", "name": "Ada"}]},
    )  # fmt: skip
    assert made.status_code == 201
    first = graph.http.get(
        f"{graph.user}/contactFolders/{fid}/contacts/delta", params={"$select": "givenName"}
    ).json()
    assert [(c["givenName"], "surname" in c) for c in first["value"]] == [("Ada", False)]
    graph.http.delete(f"{graph.user}/contacts/{made.json()['id']}")
    second = graph.http.get(first["@odata.deltaLink"]).json()
    assert second["value"] == [{"id": made.json()["id"], "@removed": {"reason": "deleted"}}]


def test_delivered_mail_has_its_properties_and_mime(graph: Graph) -> None:
    mid = graph.deliver("inbox", MIME, "Salesforce")
    message = graph.http.get(f"{graph.user}/messages/{mid}").json()
    assert message["subject"] == "Quote"
    assert message["internetMessageId"] == "<q1@acme.example>"
    assert message["from"]["emailAddress"]["address"] == "ada@acme.example"
    assert message["categories"] == ["Salesforce"]
    assert message["body"] == {"contentType": "text", "content": "Hello\r\n"}
    raw = graph.http.get(f"{graph.user}/messages/{mid}/$value")
    assert raw.content == MIME
    size = graph.http.get(
        f"{graph.user}/messages/{mid}",
        params={"$expand": "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')"},
    ).json()["singleValueExtendedProperties"]
    assert size == [{"id": "Integer 0x0E08", "value": str(len(MIME))}]


def test_messages_delta_is_per_folder(graph: Graph) -> None:
    first = graph.http.get(f"{graph.user}/mailFolders/inbox/messages/delta").json()
    graph.deliver("sentitems", MIME)
    inbox_id = graph.deliver("inbox", MIME)
    graph.http.patch(f"{graph.user}/messages/{inbox_id}", json={"categories": ["Salesforce"]})
    changed = graph.http.get(first["@odata.deltaLink"]).json()["value"]
    assert [(m["id"], m["categories"]) for m in changed] == [(inbox_id, ["Salesforce"])]


def test_todo_lists_and_tasks_with_delta(graph: Graph) -> None:
    lists = graph.http.get(f"{graph.user}/todo/lists").json()["value"]
    default = next(x for x in lists if x["wellknownListName"] == "defaultList")
    url = f"{graph.user}/todo/lists/{default['id']}/tasks"
    first = graph.http.get(f"{url}/delta").json()
    made = graph.http.post(
        url,
        json={"title": "Call Acme", "dueDateTime": {"dateTime": "2031-06-02T00:00:00",
                                                     "timeZone": "UTC"},
              "linkedResources": [{"applicationName": "Concord", "externalId": "l1"}]},
    )  # fmt: skip
    assert made.status_code == 201
    bad = graph.http.post(url, json={"title": "x", "status": "someday"})
    assert bad.status_code == 400
    changed = graph.http.get(first["@odata.deltaLink"]).json()["value"]
    assert [(t["title"], t["linkedResources"][0]["externalId"]) for t in changed] == [
        ("Call Acme", "l1")
    ]


def test_a_tasks_linked_resources_are_resources_of_their_own(graph: Graph) -> None:
    lists = graph.http.get(f"{graph.user}/todo/lists").json()["value"]
    default = next(x for x in lists if x["wellknownListName"] == "defaultList")
    url = f"{graph.user}/todo/lists/{default['id']}/tasks"
    made = graph.http.post(
        url,
        json={"title": "Call Acme",
              "linkedResources": [{"applicationName": "Concord", "externalId": "l1"}]},
    ).json()  # fmt: skip
    task = f"{url}/{made['id']}"
    [linked] = graph.http.get(f"{task}/linkedResources").json()["value"]
    assert linked["id"]
    assert linked["externalId"] == "l1"
    first = graph.http.get(f"{url}/delta").json()
    patched = graph.http.patch(f"{task}/linkedResources/{linked['id']}", json={"externalId": "l2"})
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**linked, "externalId": "l2"}
    added = graph.http.post(
        f"{task}/linkedResources", json={"applicationName": "CRM", "externalId": "x"}
    )
    assert added.status_code == 201
    # A linked resource's write is a change of its task.
    changed = graph.http.get(first["@odata.deltaLink"]).json()["value"]
    assert [[x["externalId"] for x in t["linkedResources"]] for t in changed] == [["l2", "x"]]
    missing = graph.http.patch(f"{task}/linkedResources/nope", json={"externalId": "l3"})
    assert missing.status_code == 404
    bad = graph.http.post(f"{task}/linkedResources", json={"colour": "red"})
    assert bad.status_code == 400


def test_categories_are_the_mailbox_master_list(graph: Graph) -> None:
    made = graph.http.post(
        f"{graph.user}/outlook/masterCategories", json={"displayName": "Salesforce"}
    )
    assert made.status_code == 201
    dup = graph.http.post(
        f"{graph.user}/outlook/masterCategories", json={"displayName": "salesforce"}
    )
    assert dup.status_code == 409
    names = [
        c["displayName"]
        for c in graph.http.get(f"{graph.user}/outlook/masterCategories").json()["value"]
    ]
    assert names == ["Salesforce"]


def test_contact_folders_are_those_inside_the_default_contacts_folder(graph: Graph) -> None:
    listed = graph.http.get(f"{graph.user}/contactFolders").json()["value"]
    assert "Contacts" not in [f["displayName"] for f in listed]
    made = graph.http.post(f"{graph.user}/contactFolders", json={"displayName": "Clients"})
    assert made.status_code == 201
    listed = graph.http.get(f"{graph.user}/contactFolders").json()["value"]
    assert [f["displayName"] for f in listed] == ["Clients"]
