"""The SOQL reference's own example queries, run through simple-salesforce against the emulator.

The corpus and its sources are in `reference/soql-corpus/`. Each example must parse and answer
in Salesforce's result shape: records carrying `attributes` of the queried type, parent paths as
nested records, child subqueries as nested query results (or null), aggregate queries as
`AggregateResult` rows, `COUNT()` as totalSize alone, and an object the org lacks as INVALID_TYPE.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from concord_salesforce_emulator.app import running_in_thread
from concord_salesforce_emulator.server import Settings

from .conftest import REFERENCE, VERSION, TypedSalesforce, error_body

CORPUS: list[dict[str, str]] = json.loads((REFERENCE / "soql-corpus" / "queries.json").read_text())


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TypedSalesforce]:
    settings = Settings()
    with running_in_thread(tmp_path_factory.mktemp("corpus") / "sf", settings) as running:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(running.ca_cert)
        token = session.post(
            f"{running.url}/services/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
                "username": settings.username,
                "password": settings.password,
            },
        ).json()
        sf = TypedSalesforce(
            instance_url=token["instance_url"],
            session_id=token["access_token"],
            session=session,
            version=VERSION,
        )
        _seed(sf)
        yield sf
        session.close()


def _seed(sf: TypedSalesforce) -> None:
    """A small org the examples find rows in: accounts with contacts, deals, leads, activities."""
    acme = sf.Account.create(
        {"Name": "Acme", "Industry": "Media", "BillingCity": "Boston", "Rating": "Hot"}
    )["id"]
    sf.Account.create({"Name": "Acme", "Industry": "Energy", "BillingState": "New York"})
    globex = sf.Account.create({"Name": "Globex", "Type": "Customer"})["id"]
    ada = sf.Contact.create(
        {"LastName": "Apple", "FirstName": "Ada", "AccountId": acme, "MailingCity": "Twin Falls"}
    )["id"]
    sf.Contact.create({"LastName": "Babbage", "AccountId": globex, "LeadSource": "Web"})
    sf.Opportunity.create(
        {
            "Name": "Big deal",
            "AccountId": acme,
            "StageName": "Closed Lost",
            "CloseDate": "2025-01-01",
            "Amount": 5000,
        }
    )
    sf.Opportunity.create(
        {
            "Name": "Small deal",
            "AccountId": globex,
            "StageName": "Prospecting",
            "CloseDate": "2030-01-01",
            "Amount": 100,
        }
    )
    for company, source, status in (
        ("Initech", "Web", "Open - Not Contacted"),
        ("Hooli", "Web", "Working - Contacted"),
        ("Umbrella", "Phone Inquiry", "Open - Not Contacted"),
    ):
        sf.Lead.create(
            {"LastName": company, "Company": company, "LeadSource": source, "Status": status}
        )
    sf.Task.create({"Subject": "Call", "WhoId": ada, "WhatId": acme, "Status": "Completed"})
    sf.Event.create(
        {
            "Subject": "Visit",
            "WhatId": acme,
            "StartDateTime": "2020-01-01T10:00:00Z",
            "EndDateTime": "2020-01-01T11:00:00Z",
        }
    )


def _check_record(record: dict[str, Any], sobject: str) -> None:
    assert record["attributes"]["type"] == sobject
    assert re.fullmatch(
        rf"/services/data/v{VERSION}/sobjects/{sobject}/\w{{18}}", record["attributes"]["url"]
    )
    for value in record.values():
        if isinstance(value, dict) and "records" in value:
            # A child subquery: a nested query result.
            assert value["done"] is True
            assert value["totalSize"] == len(value["records"])
            for child in value["records"]:
                assert "type" in child["attributes"]
        elif isinstance(value, dict) and value is not record["attributes"]:
            assert "type" in value["attributes"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "example",
    [pytest.param(e, id=f"{i:03d}") for i, e in enumerate(CORPUS)],
)
def test_reference_example_runs_with_salesforce_result_shape(
    org: TypedSalesforce, example: dict[str, str]
) -> None:
    text = example["query"]
    shape = example["shape"]
    if shape == "invalid_type":
        with pytest.raises(SalesforceMalformedRequest) as excinfo:
            org.query_all(text)
        assert error_body(excinfo.value)[0]["errorCode"] == "INVALID_TYPE"
        return
    result = org.query_all(text)
    assert result["done"] is True
    records = result["records"]
    if shape == "count":
        assert records == []
        assert isinstance(result["totalSize"], int)
        return
    assert result["totalSize"] == len(records)
    if shape == "aggregate":
        for record in records:
            assert record["attributes"] == {"type": "AggregateResult"}
        return
    outer = _outer_object(text)
    for record in records:
        _check_record(record, outer)


def _outer_object(text: str) -> str:
    """The FROM object of the outer query (after any subqueries in the select list)."""
    depth = 0
    words = text.replace("(", " ( ").replace(")", " ) ").split()
    for index, word in enumerate(words):
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == 0 and word.upper() == "FROM":
            return words[index + 1]
    raise AssertionError(text)


SEARCHES: list[dict[str, Any]] = json.loads(
    (REFERENCE / "soql-corpus" / "searches.json").read_text()
)


@pytest.fixture(scope="module")
def searchable(org: TypedSalesforce) -> TypedSalesforce:
    org.Account.create({"Name": "Acme Widgets", "Industry": "Energy"})
    org.Contact.create({"FirstName": "Joe", "LastName": "Smith", "Email": "joe@mycompany.example"})
    org.Contact.create({"FirstName": "Joe", "LastName": "Jones", "Phone": "4155551212"})
    org.Contact.create({"FirstName": "Dan", "LastName": "Fielding"})
    return org


@pytest.mark.integration
@pytest.mark.parametrize(
    "example", [pytest.param(e, id=f"sosl-{i:02d}") for i, e in enumerate(SEARCHES)]
)
def test_reference_search_runs_with_salesforce_result_shape(
    searchable: TypedSalesforce, example: dict[str, Any]
) -> None:
    found = searchable.search(example["search"])
    assert set(found) >= {"searchRecords"}
    for record in found["searchRecords"]:
        assert re.fullmatch(
            rf"/services/data/v{VERSION}/sobjects/{record['attributes']['type']}/\w{{18}}",
            record["attributes"]["url"],
        )
    if "hits" in example:
        names = sorted(r.get("LastName") or r.get("Name") for r in found["searchRecords"])
        assert names == sorted(example["hits"])
