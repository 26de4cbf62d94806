"""SOSL search by email, getUpdated and getDeleted (with `earliestDateAvailable`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from concord_salesforce_emulator.app import Running
from concord_salesforce_emulator.timefmt import parse_datetime

from .conftest import REFERENCE, TypedSalesforce, error_body

pytestmark = pytest.mark.integration

FIXTURES = REFERENCE / "salesforce-fixtures"


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_search_by_email_across_objects(sf: TypedSalesforce) -> None:
    contact = sf.Contact.create({"LastName": "Hopper", "Email": "grace@navy.example"})["id"]
    lead = sf.Lead.create({"LastName": "Hopper", "Company": "Navy", "Email": "GRACE@navy.example"})[
        "id"
    ]
    sf.Contact.create({"LastName": "Other", "Email": "someone.grace@navy.example"})
    found = sf.search(
        "FIND {grace@navy.example} IN EMAIL FIELDS RETURNING Contact(Id, Email), Lead(Id, Company)"
    )
    records = found["searchRecords"]
    assert [(r["attributes"]["type"], r["Id"]) for r in records] == [
        ("Contact", contact),
        ("Lead", lead),
    ]
    assert set(records[1]) == {"attributes", "Id", "Company"}
    assert set(_fixture("sobject_search_success_response.json")[0]) <= set(records[0])


def test_search_returning_with_where_and_limit(sf: TypedSalesforce) -> None:
    for n in range(3):
        sf.Contact.create(
            {"LastName": f"P{n}", "Email": f"p{n}@same.example", "Title": "CTO" if n else "CEO"}
        )
    found = sf.quick_search("*@same.example")  # FIND {…}: every field, every object
    assert len(found["searchRecords"]) == 3
    narrowed = sf.search(
        "FIND {*@same.example} IN EMAIL FIELDS "
        "RETURNING Contact(Id, Title WHERE Title = 'CTO' LIMIT 1)"
    )
    assert [r["Title"] for r in narrowed["searchRecords"]] == ["CTO"]


def test_search_by_domain_matches_whole_domains_only(sf: TypedSalesforce) -> None:
    hit = sf.Contact.create({"LastName": "A", "Email": "a@acme.example"})["id"]
    sf.Contact.create({"LastName": "B", "Email": "b@notacme.example"})
    sf.Contact.create({"LastName": "C", "Email": "c@acme.example.org"})
    found = sf.search("FIND {acme.example} IN EMAIL FIELDS RETURNING Contact(Id)")
    assert [r["Id"] for r in found["searchRecords"]] == [hit]


def test_malformed_search(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.search("FIND grace RETURNING Contact")
    assert excinfo.value.content == _fixture("sobject_search_error_response.json")


def test_get_updated_and_deleted(sf: TypedSalesforce) -> None:
    start = _now() - dt.timedelta(minutes=1)
    keep = sf.Contact.create({"LastName": "Keep"})["id"]
    gone = sf.Contact.create({"LastName": "Gone"})["id"]
    sf.Contact.delete(gone)
    end = _now() + dt.timedelta(minutes=1)

    updated = sf.Contact.updated(start, end)
    assert set(updated) == set(_fixture("sobject_get_updated_success_response.json"))
    assert updated["ids"] == [keep]

    deleted = sf.Contact.deleted(start, end)
    assert set(deleted) == set(_fixture("sobject_get_deleted_success_response.json"))
    assert [r["id"] for r in deleted["deletedRecords"]] == [gone]
    earliest = parse_datetime(deleted["earliestDateAvailable"])
    assert earliest <= start


def test_purged_recycle_bin_moves_earliest_date_available(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    start = _now() - dt.timedelta(minutes=5)
    gone = sf.Contact.create({"LastName": "Gone"})["id"]
    sf.Contact.delete(gone)
    http.post(f"{emulator.url}/__admin/recycle-bin/purge").raise_for_status()
    deleted = sf.Contact.deleted(start, _now() + dt.timedelta(minutes=1))
    assert deleted["deletedRecords"] == []
    # The log now starts after the cursor: a client must resync in full rather than trust it.
    assert parse_datetime(deleted["earliestDateAvailable"]) > start
    assert sf.query_all("SELECT Id FROM Contact", include_deleted=True)["totalSize"] == 0


def test_windows_older_than_the_logs_are_refused(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Contact.deleted(_now() - dt.timedelta(days=16), _now())
    assert error_body(excinfo.value)[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    assert sf.Contact.updated(_now() - dt.timedelta(days=29), _now())["ids"] == []
