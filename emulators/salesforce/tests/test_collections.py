"""sObject Collections and Composite: partial success, allOrNone, limits, references."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from concord_salesforce_emulator.app import Running

from .conftest import TypedSalesforce, api, bearer

pytestmark = pytest.mark.integration

ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"


def _event(link: str, subject: str = "Meeting") -> dict[str, Any]:
    return {
        "attributes": {"type": "Event"},
        "Subject": subject,
        "Concord_Link_Id__c": link,
        "StartDateTime": "2030-01-01T09:00:00Z",
        "EndDateTime": "2030-01-01T10:00:00Z",
    }


class Client:
    def __init__(self, emulator: Running, http: requests.Session, token: dict[str, Any]) -> None:
        self.emulator, self.http, self.headers = emulator, http, bearer(token)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, api(self.emulator, path), headers=self.headers, **kwargs)


@pytest.fixture
def client(emulator: Running, http: requests.Session, token: dict[str, Any]) -> Client:
    return Client(emulator, http, token)


def test_create_partial_success_in_input_order(client: Client, sf: TypedSalesforce) -> None:
    records = [_event("a"), _event("b", subject="x" * 300), _event("c")]
    response = client.call(
        "POST", "composite/sobjects", json={"allOrNone": False, "records": records}
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["success"] for r in body] == [True, False, True]
    assert body[1]["id"] is None
    assert body[1]["errors"] == [
        {
            "statusCode": "STRING_TOO_LONG",
            "fields": ["Subject"],
            "message": body[1]["errors"][0]["message"],
        }
    ]
    assert body[0]["errors"] == []
    assert body[0]["id"].startswith("00U")
    assert sf.query("SELECT COUNT() FROM Event")["totalSize"] == 2


def test_all_or_none_rolls_everything_back(client: Client, sf: TypedSalesforce) -> None:
    records = [_event("a"), _event("b", subject="x" * 300)]
    body = client.call(
        "POST", "composite/sobjects", json={"allOrNone": True, "records": records}
    ).json()
    assert [r["success"] for r in body] == [False, False]
    assert body[0]["errors"][0]["statusCode"] == ROLLED_BACK
    assert body[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert sf.query("SELECT COUNT() FROM Event")["totalSize"] == 0


def test_more_than_200_records_is_refused(client: Client, sf: TypedSalesforce) -> None:
    records = [_event(str(n)) for n in range(201)]
    response = client.call("POST", "composite/sobjects", json={"records": records})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert sf.query("SELECT COUNT() FROM Event")["totalSize"] == 0
    assert (
        client.call("POST", "composite/sobjects", json={"records": records[:200]}).status_code
        == 200
    )


def test_upsert_by_link_id_creates_then_updates(client: Client, sf: TypedSalesforce) -> None:
    first = client.call(
        "PATCH",
        "composite/sobjects/Event/Concord_Link_Id__c",
        json={"allOrNone": False, "records": [_event("a"), _event("b")]},
    ).json()
    assert [(r["success"], r["created"]) for r in first] == [(True, True), (True, True)]
    again = client.call(
        "PATCH",
        "composite/sobjects/Event/Concord_Link_Id__c",
        json={"records": [_event("b", "Renamed"), _event("c")]},
    ).json()
    assert [(r["success"], r["created"]) for r in again] == [(True, False), (True, True)]
    assert again[0]["id"] == first[1]["id"]
    assert sf.Event.get(first[1]["id"])["Subject"] == "Renamed"
    assert sf.query("SELECT COUNT() FROM Event")["totalSize"] == 3


def test_upsert_with_the_same_new_link_twice_in_one_batch(client: Client) -> None:
    body = client.call(
        "PATCH",
        "composite/sobjects/Event/Concord_Link_Id__c",
        json={"records": [_event("dup"), _event("dup")]},
    ).json()
    assert [r["success"] for r in body] == [True, False]
    assert body[1]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"


def test_a_link_freed_earlier_in_a_batch_can_be_taken_later_in_it(client: Client) -> None:
    """Uniqueness is checked against the batch as planned so far: a value one record gives up
    is free for the next, a value one takes is not."""
    made = client.call(
        "POST",
        "composite/sobjects",
        json={"records": [_event("old"), _event("kept"), _event("other")]},
    ).json()
    first, second, third = (r["id"] for r in made)
    moved = client.call(
        "PATCH",
        "composite/sobjects",
        json={
            "records": [
                _event_with_id(first, "new"),
                _event_with_id(second, "OLD"),
                _event_with_id(third, "new"),
            ]
        },
    ).json()
    assert [r["success"] for r in moved] == [True, True, False]
    assert moved[2]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"


def _event_with_id(record_id: str, link: str) -> dict[str, Any]:
    return {"attributes": {"type": "Event"}, "Id": record_id, "Concord_Link_Id__c": link}


def test_update_and_delete_collections(client: Client, sf: TypedSalesforce) -> None:
    created = client.call(
        "POST", "composite/sobjects", json={"records": [_event("a"), _event("b")]}
    ).json()
    first, second = created[0]["id"], created[1]["id"]
    missing = "00U5e0000000zzz"
    updates = [
        {"attributes": {"type": "Event"}, "Id": first, "Subject": "One"},
        {"attributes": {"type": "Event"}, "Id": missing, "Subject": "Ghost"},
    ]
    body = client.call("PATCH", "composite/sobjects", json={"records": updates}).json()
    assert [r["success"] for r in body] == [True, False]
    assert body[1]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert sf.Event.get(first)["Subject"] == "One"

    deleted = client.call(
        "DELETE", "composite/sobjects", params={"ids": f"{first},{second[:15]},bogus"}
    ).json()
    assert [r["success"] for r in deleted] == [True, True, False]
    assert deleted[1]["id"] == second
    assert deleted[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert sf.query("SELECT COUNT() FROM Event")["totalSize"] == 0
    assert sf.query_all("SELECT Id FROM Event", include_deleted=True)["totalSize"] == 2
    again = client.call("DELETE", "composite/sobjects", params={"ids": first}).json()
    assert again[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"


def test_composite_with_references(client: Client, sf: TypedSalesforce) -> None:
    request = {
        "allOrNone": False,
        "compositeRequest": [
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Account",
                "referenceId": "acct",
                "body": {"Name": "Composite Co"},
            },
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Contact",
                "referenceId": "person",
                "body": {"LastName": "Ref", "AccountId": "@{acct.id}"},
            },
            {
                "method": "GET",
                "url": "/services/data/v62.0/query?q=SELECT+Id,Account.Name+FROM+Contact",
                "referenceId": "check",
            },
            {
                "method": "PATCH",
                "url": "/services/data/v62.0/composite/sobjects/Event/Concord_Link_Id__c",
                "referenceId": "events",
                "body": {"records": [_event("e1")]},
            },
            {
                "method": "GET",
                "url": "/services/data/v62.0/sobjects/Contact/@{person.id}",
                "referenceId": "fetch",
            },
        ],
    }
    response = client.call("POST", "composite", json=request)
    assert response.status_code == 200
    results = response.json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in results] == [201, 201, 200, 200, 200]
    assert [r["referenceId"] for r in results] == ["acct", "person", "check", "events", "fetch"]
    assert results[2]["body"]["records"][0]["Account"]["Name"] == "Composite Co"
    assert results[4]["body"]["AccountId"] == results[0]["body"]["id"]
    assert results[0]["httpHeaders"]["Location"].endswith(results[0]["body"]["id"])


def test_composite_limits(client: Client) -> None:
    query = {"method": "GET", "url": "/services/data/v62.0/query?q=SELECT+Id+FROM+Contact"}
    too_many = [dict(query, referenceId=f"r{n}") for n in range(26)]
    response = client.call("POST", "composite", json={"compositeRequest": too_many})
    assert response.status_code == 400
    six_queries = [dict(query, referenceId=f"r{n}") for n in range(6)]
    response = client.call("POST", "composite", json={"compositeRequest": six_queries})
    assert response.status_code == 400
    assert (
        client.call("POST", "composite", json={"compositeRequest": six_queries[:5]}).status_code
        == 200
    )


def test_composite_all_or_none_rolls_back_and_halts(client: Client, sf: TypedSalesforce) -> None:
    kept = sf.Account.create({"Name": "Before"})["id"]
    request = {
        "allOrNone": True,
        "compositeRequest": [
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Account",
                "referenceId": "new",
                "body": {"Name": "Rolled back"},
            },
            {
                "method": "PATCH",
                "url": f"/services/data/v62.0/sobjects/Account/{kept}",
                "referenceId": "changed",
                "body": {"Name": "After"},
            },
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Contact",
                "referenceId": "bad",
                "body": {"FirstName": "No last name"},
            },
            {
                "method": "POST",
                "url": "/services/data/v62.0/sobjects/Account",
                "referenceId": "next",
                "body": {"Name": "Never"},
            },
        ],
    }
    results = client.call("POST", "composite", json=request).json()["compositeResponse"]
    codes = [r["body"][0]["errorCode"] for r in results]
    assert codes == [
        "PROCESSING_HALTED",
        "PROCESSING_HALTED",
        "REQUIRED_FIELD_MISSING",
        "PROCESSING_HALTED",
    ]
    assert [r["Name"] for r in sf.query("SELECT Name FROM Account")["records"]] == ["Before"]


def _patch(client: Client, path: str, json: Any, guard: str) -> requests.Response:
    headers = client.headers | {"If-Unmodified-Since": guard}
    return client.http.request("PATCH", api(client.emulator, path), headers=headers, json=json)


def test_if_unmodified_since_guards_an_update_alone_and_inside_composite(
    client: Client, sf: TypedSalesforce
) -> None:
    import datetime as dt
    import email.utils

    created = sf.Event.create(_event("guarded") | {"attributes": None})
    record_id = created["id"]
    modified = dt.datetime.fromisoformat(
        sf.Event.get(record_id)["LastModifiedDate"].replace("+0000", "+00:00")
    )

    def http_date(value: dt.datetime) -> str:
        return email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)

    before, after = modified - dt.timedelta(hours=1), modified + dt.timedelta(hours=1)
    # Changed since the caller's version: refused, the record untouched.
    stale = _patch(
        client,
        f"sobjects/Event/{record_id}",
        json={"Subject": "overwrite"},
        guard=http_date(before),
    )
    assert stale.status_code == 412
    assert sf.Event.get(record_id)["Subject"] == "Meeting"
    fresh = _patch(
        client,
        f"sobjects/Event/{record_id}",
        json={"Subject": "mine"},
        guard=http_date(after),
    )
    assert fresh.status_code == 204
    # The same check per subrequest of a Composite request (its own httpHeaders).
    request = {
        "allOrNone": False,
        "compositeRequest": [
            {
                "method": "PATCH",
                "url": f"/services/data/v62.0/sobjects/Event/{record_id}",
                "referenceId": ref,
                "body": {"Subject": subject},
                "httpHeaders": {"If-Unmodified-Since": http_date(when)},
            }
            for ref, subject, when in (("old", "lost", before), ("new", "kept", after))
        ],
    }
    results = client.call("POST", "composite", json=request).json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in results] == [412, 204]
    assert sf.Event.get(record_id)["Subject"] == "kept"
    bad = _patch(
        client,
        f"sobjects/Event/{record_id}",
        json={"Subject": "x"},
        guard="yesterday",
    )
    assert bad.status_code == 400


def test_account_rows_carry_an_etag_that_if_match_and_if_none_match_check(
    client: Client, sf: TypedSalesforce
) -> None:
    """Strong validation, Account rows only (Conditional Request Headers): GET and PATCH
    answer an ETag; a PATCH whose If-Match names no current tag is a 412 and changes nothing;
    If-None-Match with the current tag is a 304 for a GET and a 412 for a PATCH."""
    record_id = sf.Account.create({"Name": "Acme"})["id"]
    path = f"sobjects/Account/{record_id}"
    read = client.call("GET", path)
    tag = read.headers["ETag"]
    assert re.fullmatch(r'"[A-Za-z0-9+/=]+--gzip"', tag), tag

    def patch(name: str, **headers: str) -> requests.Response:
        return client.http.request(
            "PATCH",
            api(client.emulator, path),
            headers=client.headers | headers,
            json={"Name": name},
        )

    assert patch("Stale", **{"If-Match": '"someone-elses--gzip"'}).status_code == 412
    assert sf.Account.get(record_id)["Name"] == "Acme"
    updated = patch("Acme Corp", **{"If-Match": f'"other--gzip", {tag}'})
    assert updated.status_code == 204
    new_tag = updated.headers["ETag"]
    assert new_tag != tag
    # The old tag no longer matches: the edit above wins over a writer who read before it.
    assert patch("Lost", **{"If-Match": tag}).status_code == 412
    assert sf.Account.get(record_id)["Name"] == "Acme Corp"
    assert patch("Lost", **{"If-None-Match": new_tag}).status_code == 412
    cached = client.http.get(
        api(client.emulator, path), headers=client.headers | {"If-None-Match": new_tag}
    )
    assert (cached.status_code, cached.content) == (304, b"")
    assert patch("x", **{"If-Match": "not-quoted"}).status_code == 400
    # The same check inside a Composite request, per subrequest.
    request = {
        "allOrNone": False,
        "compositeRequest": [
            {
                "method": "PATCH",
                "url": f"/services/data/v62.0/{path}",
                "referenceId": ref,
                "body": {"Name": name},
                "httpHeaders": {"If-Match": guard},
            }
            for ref, name, guard in (("old", "Lost", tag), ("new", "Acme Inc", new_tag))
        ],
    }
    results = client.call("POST", "composite", json=request).json()["compositeResponse"]
    assert [r["httpStatusCode"] for r in results] == [412, 204]
    assert sf.Account.get(record_id)["Name"] == "Acme Inc"


def test_other_objects_have_no_etag_and_ignore_if_match(
    client: Client, sf: TypedSalesforce
) -> None:
    record_id = sf.Event.create(_event("untagged") | {"attributes": None})["id"]
    path = f"sobjects/Event/{record_id}"
    assert "ETag" not in client.call("GET", path).headers
    edited = client.http.request(
        "PATCH",
        api(client.emulator, path),
        headers=client.headers | {"If-Match": '"anything--gzip"'},
        json={"Subject": "applied"},
    )
    assert edited.status_code == 204
    assert sf.Event.get(record_id)["Subject"] == "applied"


def test_a_read_if_modified_since_is_a_304_until_the_record_changes(
    client: Client, sf: TypedSalesforce
) -> None:
    import datetime as dt
    import email.utils

    record_id = sf.Event.create(_event("cached") | {"attributes": None})["id"]
    path = f"sobjects/Event/{record_id}"
    later = email.utils.format_datetime(
        dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), usegmt=True
    )
    earlier = email.utils.format_datetime(
        dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), usegmt=True
    )

    def read(since: str) -> int:
        headers = client.headers | {"If-Modified-Since": since}
        return client.http.get(api(client.emulator, path), headers=headers).status_code

    assert read(later) == 304
    assert read(earlier) == 200
    # An unreadable date is ignored on a read.
    assert read("yesterday") == 200
