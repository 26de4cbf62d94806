"""Response bodies compared with the ones a mature client keeps as fixtures (restforce, MIT).

Each case makes the emulator produce the situation a fixture records, then compares shapes:
the same keys (or, where the fixture predates fields newer API versions add, a subset), the
same value types, and element shapes of lists.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests

from concord_salesforce_emulator.app import Running

from .conftest import REFERENCE, api, bearer
from .shapes import shape_mismatches

pytestmark = pytest.mark.integration

FIXTURES = REFERENCE / "salesforce-fixtures"


class Org:
    def __init__(self, emulator: Running, http: requests.Session, token: dict[str, Any]) -> None:
        self.emulator, self.http, self.token = emulator, http, token

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(
            method, api(self.emulator, path), headers=bearer(self.token), **kwargs
        )

    def contact(self, **fields: Any) -> str:
        body = {"LastName": "Fixture", **fields}
        record_id: str = self.call("POST", "sobjects/Contact", json=body).json()["id"]
        return record_id


def _window() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {
        "start": (now - dt.timedelta(hours=1)).isoformat(),
        "end": (now + dt.timedelta(hours=1)).isoformat(),
    }


def _deleted(org: Org) -> requests.Response:
    org.call("DELETE", f"sobjects/Contact/{org.contact()}")
    return org.call("GET", "sobjects/Contact/deleted/", params=_window())


def _updated(org: Org) -> requests.Response:
    org.contact()
    return org.call("GET", "sobjects/Contact/updated/", params=_window())


def _paged(org: Org, last: bool) -> requests.Response:
    for _ in range(6):
        org.contact()
    first = org.call("GET", "query", params={"q": "SELECT LastName FROM Contact"})
    if not last:
        return first
    return org.http.get(
        org.emulator.url + first.json()["nextRecordsUrl"], headers=bearer(org.token)
    )


def _ambiguous(org: Org) -> requests.Response:
    org.contact(Email="twice@example.com")
    org.contact(Email="twice@example.com")
    return org.call("PATCH", "sobjects/Contact/Email/twice@example.com", json={"Title": "x"})


def _token_error(org: Org) -> requests.Response:
    return org.http.post(
        f"{org.emulator.url}/services/oauth2/token",
        data={"grant_type": "password", "client_id": "nope"},
    )


def _token(org: Org) -> requests.Response:
    settings = org.emulator.emulator.settings
    return org.http.post(
        f"{org.emulator.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "username": settings.username,
            "password": settings.password,
        },
    )


# fixture file -> (status, how to make the emulator answer it, subset allowed)
CASES: dict[str, tuple[int, Callable[[Org], requests.Response], bool]] = {
    "auth_success_response.json": (200, _token, True),
    "auth_error_response.json": (400, _token_error, False),
    "expired_session_response.json": (
        401,
        lambda o: o.http.get(api(o.emulator, "sobjects")),
        False,
    ),
    "services_data_success_response.json": (
        200,
        lambda o: o.http.get(f"{o.emulator.url}/services/data/"),
        False,
    ),
    "sobject_create_success_response.json": (
        201,
        lambda o: o.call("POST", "sobjects/Contact", json={"LastName": "x"}),
        False,
    ),
    "sobject_describe_sobjects_success_response.json": (
        200,
        lambda o: o.call("GET", "sobjects"),
        True,
    ),
    "sobject_sobject_describe_error_response.json": (
        404,
        lambda o: o.call("GET", "sobjects/Whizbang/describe"),
        False,
    ),
    "sobject_sobject_find_error_response.json": (
        404,
        lambda o: o.call("GET", "sobjects/Contact/23foo"),
        False,
    ),
    "sobject_get_deleted_success_response.json": (200, _deleted, False),
    "sobject_get_updated_success_response.json": (200, _updated, False),
    "sobject_query_empty_response.json": (
        200,
        lambda o: o.call("GET", "query", params={"q": "SELECT Id FROM Contact"}),
        False,
    ),
    "sobject_query_paginated_first_page_response.json": (200, lambda o: _paged(o, False), False),
    "sobject_query_paginated_last_page_response.json": (200, lambda o: _paged(o, True), False),
    "sobject_query_error_response.json": (
        400,
        lambda o: o.call("GET", "query", params={"q": "SELECT Nope FROM Contact"}),
        False,
    ),
    "sobject_search_error_response.json": (
        400,
        lambda o: o.call("GET", "search", params={"q": "FIND grace"}),
        False,
    ),
    "sobject_upsert_created_success_response.json": (
        201,
        lambda o: o.call(
            "PATCH", "sobjects/Contact/Concord_Link_Id__c/new", json={"LastName": "x"}
        ),
        True,
    ),
    "sobject_upsert_error_response.json": (
        404,
        lambda o: o.call("PATCH", "sobjects/Contact/Namez/x", json={"LastName": "x"}),
        False,
    ),
    "sobject_upsert_multiple_error_response.json": (300, _ambiguous, False),
    "sobject_write_error_response.json": (
        400,
        lambda o: o.call("POST", "sobjects/Contact", json={"LastName": "x", "foo": 1}),
        False,
    ),
}


def _subset_mismatches(recorded: Any, ours: Any) -> list[str]:
    """Fixture keys must all be present (newer API versions add some); types must agree."""
    if isinstance(recorded, dict) and isinstance(ours, dict):
        missing = [f"missing {k}" for k in recorded if k not in ours]
        typed = [p for k in recorded if k in ours for p in _subset_mismatches(recorded[k], ours[k])]
        return missing + typed
    if isinstance(recorded, list) and isinstance(ours, list):
        return [p for a, b in zip(recorded, ours, strict=False) for p in _subset_mismatches(a, b)]
    if recorded is None or ours is None or type(recorded) is type(ours):
        return []
    return [f"{type(recorded).__name__} != {type(ours).__name__}"]


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_matches_fixture(
    fixture: str, emulator: Running, http: requests.Session, token: dict[str, Any]
) -> None:
    status, make, subset = CASES[fixture]
    recorded = json.loads((FIXTURES / fixture).read_text())
    response = make(Org(emulator, http, token))
    assert response.status_code == status, response.text[:300]
    ours = response.json()
    if "paginated" in fixture:
        # The fixture's records are of another object: compare the page, not the fields.
        for body in (recorded, ours):
            body["records"] = [{"attributes": r["attributes"]} for r in body["records"]]
    problems = _subset_mismatches(recorded, ours) if subset else shape_mismatches(recorded, ours)
    assert problems == [], (problems, ours)
