"""simple-salesforce, unmodified, against the emulator over HTTPS: the basic round trip."""

from __future__ import annotations

import pytest

from .conftest import TypedSalesforce

pytestmark = pytest.mark.integration


def test_create_read_query_upsert_search(sf: TypedSalesforce) -> None:
    created = sf.Contact.create({"LastName": "Lovelace", "Email": "ada@example.com"})
    assert created["success"] is True
    assert created["id"].startswith("003")
    assert len(created["id"]) == 18
    assert sf.Contact.get(created["id"])["Name"] == "Lovelace"

    result = sf.query("SELECT Id, Name, Owner.Name FROM Contact WHERE Email = 'ADA@example.com'")
    assert result["totalSize"] == 1
    assert result["records"][0]["Owner"]["Name"] == "Concord Admin"
    assert sf.api_usage["api-usage"].used == 3

    assert sf.Contact.upsert("Concord_Link_Id__c/abc", {"LastName": "X"}) == 201
    assert sf.Contact.upsert("Concord_Link_Id__c/abc", {"LastName": "Y"}) == 200
    assert sf.Contact.get_by_custom_id("Concord_Link_Id__c", "abc")["LastName"] == "Y"

    found = sf.search("FIND {ada@example.com} IN EMAIL FIELDS RETURNING Contact(Id, Name)")
    assert [r["Id"] for r in found["searchRecords"]] == [created["id"]]
