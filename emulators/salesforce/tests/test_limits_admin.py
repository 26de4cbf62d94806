"""API limits, call counters, fault injection (including the lost acknowledgement), seeding."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceError, SalesforceGeneralError

from concord_salesforce_emulator.app import Running
from concord_salesforce_emulator.server import Settings

from .conftest import TypedSalesforce, api, bearer, error_body

pytestmark = pytest.mark.integration


def _admin(emulator: Running, http: requests.Session, resource: str, **body: Any) -> Any:
    response = http.post(f"{emulator.url}/__admin/{resource}", json=body)
    response.raise_for_status()
    return response.json()


def _usage(response: requests.Response) -> tuple[int, int]:
    used, limit = response.headers["Sforce-Limit-Info"].removeprefix("api-usage=").split("/")
    return int(used), int(limit)


class TestDailyAllocation:
    @pytest.fixture
    def settings(self) -> Settings:
        return Settings(daily_api_limit=4)

    def test_every_response_reports_usage_until_the_allocation_is_spent(
        self, emulator: Running, http: requests.Session, token: dict[str, Any]
    ) -> None:
        headers = bearer(token)
        ok = http.get(api(emulator, "sobjects"), headers=headers)
        assert _usage(ok) == (1, 4)
        failed = http.get(api(emulator, "sobjects/Nope/describe"), headers=headers)
        assert failed.status_code == 404
        assert _usage(failed) == (2, 4)
        limits = http.get(api(emulator, "limits"), headers=headers).json()
        assert limits["DailyApiRequests"] == {"Max": 4, "Remaining": 1}
        assert http.get(api(emulator, "sobjects"), headers=headers).status_code == 200
        spent = http.get(api(emulator, "sobjects"), headers=headers)
        assert spent.status_code == 403
        assert spent.json() == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]
        assert _usage(spent) == (4, 4)
        _admin(emulator, http, "settings", daily_api_limit=10)
        assert http.get(api(emulator, "sobjects"), headers=headers).status_code == 200


def test_composite_and_collections_count_as_one_call(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    records = [{"attributes": {"type": "Account"}, "Name": f"A{n}"} for n in range(200)]
    sf.restful("composite/sobjects", method="POST", json={"records": records})
    calls = http.get(f"{emulator.url}/__admin/calls").json()
    assert calls["apiUsage"]["used"] == 1
    assert calls["calls"] == {"POST composite/sobjects": 1, "POST /services/oauth2/token": 1}


def test_counters_group_by_endpoint_and_reset(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    first = sf.Account.create({"Name": "One"})["id"]
    second = sf.Account.create({"Name": "Two"})["id"]
    sf.Account.get(first)
    sf.Account.get(second)
    sf.query("SELECT Id FROM Account")
    calls = http.get(f"{emulator.url}/__admin/calls").json()["calls"]
    assert calls["POST sobjects/Account"] == 2
    assert calls["GET sobjects/Account/{id}"] == 2
    assert calls["GET query"] == 1
    _admin(emulator, http, "reset")
    after = http.get(f"{emulator.url}/__admin/calls").json()
    assert after == {"calls": {}, "apiUsage": {"used": 0, "limit": 100_000}}


def test_throttle_5xx_and_latency_faults(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    _admin(emulator, http, "faults", kind="throttle", path="/sobjects", count=1)
    with pytest.raises(SalesforceError) as excinfo:
        sf.Account.create({"Name": "Throttled"})
    assert excinfo.value.status == 403
    assert error_body(excinfo.value)[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert sf.Account.create({"Name": "Fine"})["success"]

    _admin(emulator, http, "faults", kind="error", status=503, count=2)
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as general:
            sf.query("SELECT Id FROM Account")
        assert general.value.status == 503
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 1

    _admin(emulator, http, "faults", kind="latency", latency_ms=300, count=1)
    started = time.monotonic()
    sf.query("SELECT Id FROM Account")
    assert time.monotonic() - started >= 0.3
    assert http.delete(f"{emulator.url}/__admin/faults").json() == {"faults": 0}


def test_lost_acknowledgement_commits_the_write(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    _admin(emulator, http, "faults", kind="drop_response", path="/composite/sobjects", count=1)
    records = [
        {"attributes": {"type": "Task"}, "Subject": "Follow up", "Concord_Link_Id__c": "lost-1"}
    ]
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.restful(
            "composite/sobjects/Task/Concord_Link_Id__c", method="PATCH", json={"records": records}
        )
    found = sf.query("SELECT Id, Subject FROM Task WHERE Concord_Link_Id__c = 'lost-1'")
    assert found["totalSize"] == 1
    # A client that retries with an upsert by link id converges on one record.
    retried = sf.restful(
        "composite/sobjects/Task/Concord_Link_Id__c", method="PATCH", json={"records": records}
    )
    assert retried is not None
    assert retried[0]["created"] is False
    assert sf.query("SELECT COUNT() FROM Task")["totalSize"] == 1


def test_unknown_fault_kind_is_refused(emulator: Running, http: requests.Session) -> None:
    response = http.post(f"{emulator.url}/__admin/faults", json={"kind": "gremlins"})
    assert response.status_code == 400


def test_health_and_demo_seed(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    assert http.get(f"{emulator.url}/__admin/health").json() == {"status": "ok"}
    seeded = _admin(emulator, http, "seed", seed="demo")
    again = _admin(emulator, http, "seed", seed="demo")
    assert seeded == again
    assert len(seeded["users"]) >= 2
    accounts = sf.query("SELECT Id, Website FROM Account")["records"]
    assert len(accounts) == 3
    assert all(a["Website"] for a in accounts)
    contacts = sf.query("SELECT Id, Email, Account.Name FROM Contact WHERE Email != null")
    assert contacts["totalSize"] == len(seeded["contacts"]) >= 3
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == len(seeded["leads"])
    open_deals = sf.query("SELECT Id FROM Opportunity WHERE IsClosed = false")
    assert open_deals["totalSize"] == len(seeded["opportunities"])
    assert http.post(f"{emulator.url}/__admin/seed", json={"seed": "other"}).status_code == 400


def test_throttling_a_share_of_calls(
    sf: TypedSalesforce, emulator: Running, http: requests.Session
) -> None:
    _admin(emulator, http, "faults", kind="throttle", probability=0.5, seed=7, count=None)
    outcomes = []
    for _ in range(20):
        try:
            sf.query("SELECT Id FROM Account")
            outcomes.append(True)
        except SalesforceError:
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 20
