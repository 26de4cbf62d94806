"""Every object of the recorded global describe, and the rows a new org starts with."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest import REFERENCE, TypedSalesforce, api, bearer, error_body

GLOBAL = json.loads(
    (REFERENCE / "salesforce-describe" / "GET_sobjects_Global_describe.json").read_text()
)


def test_every_recorded_object_is_listed_describable_and_queryable(
    sf: TypedSalesforce, emulator: Any, http: requests.Session, token: dict[str, Any]
) -> None:
    described_org: dict[str, Any] = sf.describe() or {}
    listed = {o["name"]: o for o in described_org["sobjects"]}
    for entry in GLOBAL["sobjects"]:
        name = entry["name"]
        assert name in listed, name
        for flag in ("createable", "updateable", "queryable", "deletable"):
            assert listed[name][flag] == entry[flag], (name, flag)
        described = http.get(api(emulator, f"sobjects/{name}/describe"), headers=bearer(token))
        assert described.status_code == 200, name
        fields = {f["name"] for f in described.json()["fields"]}
        assert {"Id", "CreatedDate", "SystemModstamp"} <= fields, name
        if entry["queryable"]:
            assert sf.query(f"SELECT Id FROM {name} LIMIT 1")["done"] is True


@pytest.mark.parametrize(
    ("sobject", "values"),
    [
        ("Campaign", {"Name": "Spring launch", "BudgetedCost": 1000, "IsActive": True}),
        ("Product2", {"Name": "Widget", "ProductCode": "W-1", "IsActive": True}),
    ],
)
def test_standard_objects_are_creatable(
    sf: TypedSalesforce, sobject: str, values: dict[str, Any]
) -> None:
    created = sf.__getattr__(sobject).create(values)
    assert created["success"] is True
    row = sf.__getattr__(sobject).get(created["id"])
    assert row["Name"] == values["Name"]
    assert row["attributes"]["type"] == sobject


def test_note_on_an_account_is_a_child_the_account_queries(sf: TypedSalesforce) -> None:
    account = sf.Account.create({"Name": "Acme"})["id"]
    note = sf.Note.create({"Title": "Call notes", "Body": "Went well", "ParentId": account})["id"]
    found = sf.query(f"SELECT Name, (SELECT Title FROM Notes) FROM Account WHERE Id = '{account}'")
    assert found["records"][0]["Notes"]["records"][0]["Title"] == "Call notes"
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Note.create({"Body": "no title, no parent"})
    assert error_body(excinfo.value)[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert note.startswith("002")


def test_price_book_entries_and_line_items(sf: TypedSalesforce) -> None:
    standard = sf.query("SELECT Id, Name FROM Pricebook2 WHERE IsStandard = true")["records"]
    assert [r["Name"] for r in standard] == ["Standard Price Book"]
    product = sf.Product2.create({"Name": "Widget"})["id"]
    entry = sf.PricebookEntry.create(
        {
            "Pricebook2Id": standard[0]["Id"],
            "Product2Id": product,
            "UnitPrice": 10,
            "IsActive": True,
        }
    )["id"]
    account = sf.Account.create({"Name": "Acme"})["id"]
    deal = sf.Opportunity.create(
        {
            "Name": "Deal",
            "AccountId": account,
            "StageName": "Prospecting",
            "CloseDate": "2030-01-01",
        }
    )["id"]
    sf.OpportunityLineItem.create(
        {"OpportunityId": deal, "PricebookEntryId": entry, "Quantity": 2, "TotalPrice": 20}
    )
    lines = sf.query(
        "SELECT Name, (SELECT Quantity, PricebookEntry.Product2.Name FROM OpportunityLineItems) "
        "FROM Opportunity"
    )["records"][0]["OpportunityLineItems"]["records"]
    assert lines[0]["Quantity"] == 2
    assert lines[0]["PricebookEntry"]["Product2"]["Name"] == "Widget"


def test_a_new_org_has_its_standard_rows(sf: TypedSalesforce, token: dict[str, Any]) -> None:
    organization = sf.query("SELECT Id, Name, FiscalYearStartMonth FROM Organization")["records"]
    assert len(organization) == 1
    # The org id in the token's identity URL is the Organization row's id.
    assert token["id"].split("/")[-2] == organization[0]["Id"]
    assert organization[0]["FiscalYearStartMonth"] == 1
    hours = sf.query("SELECT Name, MondayStartTime FROM BusinessHours WHERE IsDefault = true")
    assert [r["Name"] for r in hours["records"]] == ["Default"]
    users = sf.query("SELECT Username FROM User WHERE IsActive = true")["records"]
    assert len(users) >= 1


def test_objects_salesforce_does_not_let_a_client_create_are_refused(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Organization.create({"Name": "Another org"})
    assert error_body(excinfo.value)[0]["errorCode"] in (
        "INVALID_TYPE",
        "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
    )


@pytest.mark.parametrize(
    "sobject",
    [
        "Note",
        "Product2",
        "Pricebook2",
        "PricebookEntry",
        "OpportunityLineItem",
        "BusinessHours",
        "CronTrigger",
        "CronJobDetail",
        "LoginHistory",
        "RecordType",
    ],
)
def test_standard_objects_beyond_the_recording_are_served(
    sf: TypedSalesforce, sobject: str
) -> None:
    described: dict[str, Any] = sf.__getattr__(sobject).describe() or {}
    assert described["name"] == sobject
    assert described["keyPrefix"]
    assert sf.query(f"SELECT Id, CreatedDate FROM {sobject}")["done"] is True
