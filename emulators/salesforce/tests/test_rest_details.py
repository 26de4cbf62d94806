"""The REST details clients rely on: Collections retrieve, case-insensitive names, /limits,
every API version, UI resources, unknown sub-paths, the identity URL and session reuse."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce

from concord_salesforce_emulator.app import Running

from .conftest import TypedSalesforce, api, bearer


def test_collections_retrieve_answers_null_for_deleted_ids(sf: TypedSalesforce) -> None:
    kept = sf.Contact.create({"LastName": "Kept", "Email": "k@x.example"})["id"]
    gone = sf.Contact.create({"LastName": "Gone"})["id"]
    sf.Contact.delete(gone)
    posted = sf.restful(
        "composite/sobjects/Contact",
        method="POST",
        json={"ids": [kept, gone], "fields": ["id", "LastName", "email"]},
    )
    assert posted == [
        {
            "attributes": {
                "type": "Contact",
                "url": f"/services/data/v62.0/sobjects/Contact/{kept}",
            },
            "Id": kept,
            "LastName": "Kept",
            "Email": "k@x.example",
        },
        None,
    ]
    got: list[Any] = (
        sf.restful(
            "composite/sobjects/Contact", params={"ids": f"{gone},{kept}", "fields": "LastName"}
        )
        or []
    )
    assert [r and r["LastName"] for r in got] == [None, "Kept"]


def test_collections_update_takes_field_names_in_any_case(sf: TypedSalesforce) -> None:
    contact = sf.Contact.create({"LastName": "Before"})["id"]
    result = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": True,
            "records": [{"attributes": {"type": "Contact"}, "id": contact, "lastname": "After"}],
        },
    )
    assert result == [{"id": contact, "success": True, "errors": []}]
    assert sf.Contact.get(contact)["LastName"] == "After"


def test_limits_list_what_real_orgs_return(sf: TypedSalesforce) -> None:
    limits = sf.limits()
    for name in (
        "DailyApiRequests",
        "DataStorageMB",
        "FileStorageMB",
        "DailyBulkApiBatches",
        "HourlyPublishedPlatformEvents",
        "SingleEmail",
        "MassEmail",
    ):
        assert set(limits[name]) >= {"Max", "Remaining"}, name
    assert limits["DailyApiRequests"]["Remaining"] < limits["DailyApiRequests"]["Max"]


@pytest.mark.parametrize("version", [f"{v}.0" for v in range(31, 66)])
def test_every_version_from_31_is_served(
    token: dict[str, Any], http: requests.Session, version: str
) -> None:
    sf = Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=http,
        version=version,
    )
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] >= 0


def test_versions_list_runs_from_31_to_the_newest(
    emulator: Running, http: requests.Session
) -> None:
    listed = http.get(f"{emulator.url}/services/data").json()
    assert listed[0]["version"] == "31.0"
    assert listed[-1]["version"] == "65.0"
    assert len(listed) == 35


@pytest.mark.parametrize(
    "path",
    [
        "sobjects/Account/describe/layouts",
        "sobjects/Account/listviews",
        "recent",
        "tabs",
        "theme",
    ],
)
def test_ui_resources_exist(
    emulator: Running, http: requests.Session, token: dict[str, Any], path: str
) -> None:
    response = http.get(api(emulator, path), headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    if path.endswith("layouts"):
        fields = {
            c["value"]
            for s in body["layouts"][0]["detailLayoutSections"]
            for row in s["layoutRows"]
            for item in row["layoutItems"]
            for c in item["layoutComponents"]
        }
        assert "Name" in fields
    elif path.endswith("listviews"):
        view = body["listviews"][0]
        one = http.get(f"{emulator.url}{view['url']}", headers=bearer(token))
        assert one.json()["id"] == view["id"]
    elif path == "theme":
        assert body["themeItems"][0]["icons"]
    else:
        assert isinstance(body, list)


def test_recent_lists_the_newest_named_records(sf: TypedSalesforce) -> None:
    account = sf.Account.create({"Name": "Fresh"})["id"]
    recent: list[Any] = sf.restful("recent", params={"limit": 1}) or []
    assert [(r["Id"], r["Name"]) for r in recent] == [(account, "Fresh")]


def test_unknown_sub_path_of_an_sobject_is_not_found(
    emulator: Running, http: requests.Session, token: dict[str, Any]
) -> None:
    response = http.get(
        api(emulator, "sobjects/Account/quickActions/LogACall"), headers=bearer(token)
    )
    assert response.status_code == 404
    assert response.json() == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]


def test_identity_url_from_the_token_answers(http: requests.Session, token: dict[str, Any]) -> None:
    response = http.get(token["id"], headers=bearer(token))
    assert response.status_code == 200
    identity = response.json()
    assert identity["id"] == token["id"]
    assert identity["organization_id"] == token["id"].split("/")[-2]
    assert identity["user_id"] == token["id"].split("/")[-1]
    assert identity["username"]
    assert identity["urls"]["rest"].startswith(token["instance_url"])
    assert http.get(token["id"]).status_code == 403


def test_a_second_login_while_the_session_is_valid_gets_the_same_token(
    emulator: Running, http: requests.Session, token: dict[str, Any]
) -> None:
    settings = emulator.emulator.settings
    form = {
        "grant_type": "password",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
        "username": settings.username,
        "password": settings.password,
    }
    again = http.post(f"{emulator.url}/services/oauth2/token", data=form).json()
    assert again["access_token"] == token["access_token"]
    http.post(f"{emulator.url}/__admin/expire-sessions")
    fresh = http.post(f"{emulator.url}/services/oauth2/token", data=form).json()
    assert fresh["access_token"] != token["access_token"]
