"""Describes, create/read/update/delete, upsert, and the validation errors Salesforce gives."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from concord_salesforce_emulator.app import Running
from concord_salesforce_emulator.timefmt import parse_datetime

from .conftest import REFERENCE, TypedSalesforce, api, bearer

pytestmark = pytest.mark.integration

DESCRIBES = REFERENCE / "salesforce-describe"
LINKED = ["Event", "Task", "Contact", "Lead", "EmailMessage"]
SYNTHETIC = ["Task", "EmailMessage", "EmailMessageRelation", "EventRelation", "User", "Attachment"]


def _error(excinfo: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    content = excinfo.value.content
    assert isinstance(content, list)
    assert len(content) == 1
    body: dict[str, Any] = content[0]
    return body


def _start(hour: int) -> str:
    return f"2030-05-01T{hour:02d}:00:00.000+0000"


# ---- describe ---------------------------------------------------------------------------------


def test_recorded_describe_is_served_as_recorded(sf: TypedSalesforce) -> None:
    ours = sf.Account.describe()
    recorded = json.loads((DESCRIBES / "GET_sobjects_Account_describe.json").read_text())
    assert json.loads(json.dumps(recorded).replace("/vxx.0/", "/v62.0/")) == ours


@pytest.mark.parametrize("name", LINKED)
def test_link_field_is_a_unique_external_id(sf: TypedSalesforce, name: str) -> None:
    fields = {f["name"]: f for f in getattr(sf, name).describe()["fields"]}
    link = fields["Concord_Link_Id__c"]
    assert (link["externalId"], link["unique"], link["type"], link["length"]) == (
        True,
        True,
        "string",
        255,
    )


@pytest.mark.parametrize("name", SYNTHETIC)
def test_built_describes_have_the_recorded_shape(sf: TypedSalesforce, name: str) -> None:
    recorded = json.loads((DESCRIBES / "GET_sobjects_Event_describe.json").read_text())
    ours = getattr(sf, name).describe()
    assert set(ours) == set(recorded)
    field_keys = set(recorded["fields"][0])
    assert all(set(f) == field_keys for f in ours["fields"])
    names = {f["name"] for f in ours["fields"]}
    assert {"Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted"} <= names


def test_global_describe_lists_every_object_with_its_prefix(sf: TypedSalesforce) -> None:
    described = sf.describe()
    assert described is not None
    prefixes = {s["name"]: s["keyPrefix"] for s in described["sobjects"]}
    expected = {
        "Contact": "003",
        "Lead": "00Q",
        "Account": "001",
        "Opportunity": "006",
        "Event": "00U",
        "Task": "00T",
        "EmailMessage": "02s",
        "User": "005",
    }
    assert expected.items() <= prefixes.items()


def test_unknown_object_is_not_found(emulator: Running, http: requests.Session, token: Any) -> None:
    response = http.get(api(emulator, "sobjects/Nope__c/describe"), headers=bearer(token))
    assert response.status_code == 404
    assert response.json() == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]


@pytest.mark.parametrize("version", ["v30.0", "v20.0", "v99.0", "latest"])
def test_unsupported_versions_are_not_found(
    emulator: Running, http: requests.Session, token: Any, version: str
) -> None:
    url = f"{emulator.url}/services/data/{version}/sobjects"
    assert http.get(url, headers=bearer(token)).status_code == 404
    ok = http.get(f"{emulator.url}/services/data/v31.0/sobjects", headers=bearer(token))
    assert ok.status_code == 200


# ---- create / read / update / delete --------------------------------------------------------


def test_crud_with_system_fields(sf: TypedSalesforce) -> None:
    account = sf.Account.create({"Name": "Acme", "Website": "https://acme.example"})["id"]
    contact_id = sf.Contact.create(
        {"LastName": "Hopper", "FirstName": "Grace", "AccountId": account}
    )["id"]
    contact = sf.Contact.get(contact_id)
    assert contact["Name"] == "Grace Hopper"
    assert contact["IsDeleted"] is False
    assert contact["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v62.0/sobjects/Contact/{contact_id}",
    }
    created = parse_datetime(contact["CreatedDate"])
    assert contact["CreatedDate"].endswith("+0000")
    assert contact["SystemModstamp"] == contact["LastModifiedDate"] == contact["CreatedDate"]

    assert sf.Contact.update(contact_id, {"Title": "Rear Admiral"}) == 204
    updated = sf.Contact.get(contact_id[:15])
    assert updated["Title"] == "Rear Admiral"
    assert parse_datetime(updated["SystemModstamp"]) >= created
    assert updated["CreatedDate"] == contact["CreatedDate"]

    assert sf.Contact.delete(contact_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(contact_id)
    everything = sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)
    assert everything["records"][0]["IsDeleted"] is True
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0


def test_get_with_fields_and_by_external_id(
    sf: TypedSalesforce, emulator: Running, http: requests.Session, token: Any
) -> None:
    sf.Lead.create({"LastName": "Torvalds", "Company": "Kernel", "Concord_Link_Id__c": "L-1"})
    lead = sf.Lead.get_by_custom_id("Concord_Link_Id__c", "l-1")
    assert lead["Company"] == "Kernel"
    response = http.get(
        api(emulator, f"sobjects/Lead/{lead['Id']}"),
        params={"fields": "Id,Company"},
        headers=bearer(token),
    )
    assert set(response.json()) == {"attributes", "Id", "Company"}


def test_event_times_are_derived_and_all_day_events_are_dates(sf: TypedSalesforce) -> None:
    timed = sf.Event.create(
        {"Subject": "Sync", "StartDateTime": "2030-05-01T09:00:00Z", "DurationInMinutes": 90}
    )["id"]
    event = sf.Event.get(timed)
    assert event["EndDateTime"] == "2030-05-01T10:30:00.000+0000"
    assert event["ActivityDateTime"] == event["StartDateTime"]
    all_day = sf.Event.create(
        {
            "Subject": "Offsite",
            "IsAllDayEvent": True,
            "ActivityDate": "2030-06-01",
            "DurationInMinutes": 2880,
        }
    )["id"]
    event = sf.Event.get(all_day)
    assert (event["ActivityDate"], event["EndDate"]) == ("2030-06-01", "2030-06-02")


def test_moving_an_event_start_keeps_its_duration(sf: TypedSalesforce) -> None:
    event = sf.Event.create({"StartDateTime": _start(9), "EndDateTime": _start(10)})["id"]
    sf.Event.update(event, {"StartDateTime": _start(13)})
    assert sf.Event.get(event)["EndDateTime"] == _start(14)
    sf.Event.update(event, {"DurationInMinutes": 30})
    assert sf.Event.get(event)["EndDateTime"] == "2030-05-01T13:30:00.000+0000"


# ---- errors -----------------------------------------------------------------------------------


def test_required_field_missing(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Contact.create({"FirstName": "No Last Name"})
    assert _error(excinfo) == {
        "errorCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [LastName]",
        "fields": ["LastName"],
    }


def test_string_too_long(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.create(
            {"Subject": "x" * 256, "StartDateTime": _start(9), "EndDateTime": _start(10)}
        )
    error = _error(excinfo)
    assert error["errorCode"] == "STRING_TOO_LONG"
    assert error["fields"] == ["Subject"]
    assert "(max length=255)" in error["message"]
    assert sf.Event.create(
        {"Subject": "x" * 255, "StartDateTime": _start(9), "EndDateTime": _start(10)}
    )["success"]


def test_restricted_picklist(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.create(
            {"ShowAs": "Sleeping", "StartDateTime": _start(9), "EndDateTime": _start(10)}
        )
    assert _error(excinfo) == {
        "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "message": "Show Time As: bad value for restricted picklist field: Sleeping",
        "fields": ["ShowAs"],
    }


def test_unknown_field_matches_the_recorded_error(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Contact.create({"LastName": "X", "foo": 1})
    assert _error(excinfo) == {
        "errorCode": "INVALID_FIELD",
        "message": "No such column 'foo' on sobject of type Contact",
    }


def test_malformed_and_dangling_references(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.create({"WhoId": "xyz", "StartDateTime": _start(9), "EndDateTime": _start(10)})
    assert _error(excinfo)["errorCode"] == "MALFORMED_ID"
    assert _error(excinfo)["fields"] == ["WhoId"]
    missing_contact = "0035e0000000999"
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.create(
            {"WhoId": missing_contact, "StartDateTime": _start(9), "EndDateTime": _start(10)}
        )
    assert _error(excinfo)["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"
    account = sf.Account.create({"Name": "Not a person"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.create({"WhoId": account, "StartDateTime": _start(9), "EndDateTime": _start(10)})
    assert _error(excinfo)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"


def test_bad_id_in_the_url(emulator: Running, http: requests.Session, token: Any) -> None:
    response = http.get(api(emulator, "sobjects/Contact/not-an-id"), headers=bearer(token))
    assert response.status_code == 404
    assert response.json() == [
        {
            "errorCode": "NOT_FOUND",
            "message": "Provided external ID field does not exist or is not accessible: not-an-id",
        }
    ]


def test_event_end_before_start(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.create({"StartDateTime": _start(10), "EndDateTime": _start(9)})
    assert _error(excinfo)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    event = sf.Event.create({"StartDateTime": _start(9), "EndDateTime": _start(10)})["id"]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Event.update(event, {"EndDateTime": _start(8)})
    assert _error(excinfo)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"


def test_duplicate_external_id(sf: TypedSalesforce) -> None:
    first = sf.Task.create({"Subject": "Call", "Concord_Link_Id__c": "T-1"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.Task.create({"Subject": "Call again", "Concord_Link_Id__c": "t-1"})
    error = _error(excinfo)
    assert error["errorCode"] == "DUPLICATE_VALUE"
    assert first in error["message"]


def test_failed_write_leaves_no_trace(sf: TypedSalesforce) -> None:
    contact = sf.Contact.create({"LastName": "Stable", "Title": "Before"})["id"]
    with pytest.raises(SalesforceMalformedRequest):
        sf.Contact.update(contact, {"Title": "After", "LastName": "x" * 81})
    assert sf.Contact.get(contact)["Title"] == "Before"


# ---- upsert -----------------------------------------------------------------------------------


def test_upsert_created_updated_and_ambiguous(
    sf: TypedSalesforce, emulator: Running, http: requests.Session, token: Any
) -> None:
    url = api(emulator, "sobjects/Event/Concord_Link_Id__c/E-1")
    body = {"Subject": "One", "StartDateTime": _start(9), "EndDateTime": _start(10)}
    created = http.patch(url, json=body, headers=bearer(token))
    assert created.status_code == 201
    assert created.json() == {
        "id": created.json()["id"],
        "success": True,
        "errors": [],
        "created": True,
    }
    updated = http.patch(url, json={"Subject": "Two"}, headers=bearer(token))
    assert updated.status_code == 200
    assert updated.json()["created"] is False
    assert sf.Event.get(created.json()["id"])["Subject"] == "Two"

    # Email is an idLookup field and not unique: two matches make the upsert ambiguous.
    a = sf.Contact.create({"LastName": "A", "Email": "same@example.com"})["id"]
    b = sf.Contact.create({"LastName": "B", "Email": "same@example.com"})["id"]
    response = http.patch(
        api(emulator, "sobjects/Contact/Email/same@example.com"),
        json={"Title": "x"},
        headers=bearer(token),
    )
    assert response.status_code == 300
    assert response.json() == [f"/services/data/v62.0/sobjects/Contact/{i}" for i in (a, b)]
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Contact.upsert("Email/same@example.com", {"Title": "x"})


def test_upsert_by_a_field_that_is_not_an_external_id(
    emulator: Running, http: requests.Session, token: Any
) -> None:
    response = http.patch(
        api(emulator, "sobjects/Contact/Title/x"), json={"LastName": "x"}, headers=bearer(token)
    )
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"


def test_bad_json_versions_list_and_wrong_method(
    emulator: Running, http: requests.Session, token: Any
) -> None:
    broken = http.post(
        api(emulator, "sobjects/Account"),
        data=b"{not json",
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    versions = http.get(f"{emulator.url}/services/data/").json()
    assert {"version": "62.0", "url": "/services/data/v62.0", "label": "v62"} in versions
    wrong = http.put(api(emulator, "sobjects/Account"), json={}, headers=bearer(token))
    assert wrong.status_code == 405
    assert wrong.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"


def test_external_ids_with_slashes_travel_encoded(
    sf: TypedSalesforce, emulator: Running, http: requests.Session, token: Any
) -> None:
    url = api(emulator, f"sobjects/Task/Concord_Link_Id__c/{quote('mail/1', safe='')}")
    assert http.patch(url, json={"Subject": "Slash"}, headers=bearer(token)).status_code == 201
    assert http.get(url, headers=bearer(token)).json()["Concord_Link_Id__c"] == "mail/1"
