"""SOQL and SOSL beyond the basics, through simple-salesforce: what each clause answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceMalformedRequest

from .conftest import TypedSalesforce, api, bearer, error_body


def _accounts_with_people(sf: TypedSalesforce) -> dict[str, str]:
    acme = sf.Account.create({"Name": "Acme", "Type": "Customer", "BillingCountry": "US"})["id"]
    globex = sf.Account.create({"Name": "Globex", "Type": "Customer", "BillingCountry": "FR"})["id"]
    lonely = sf.Account.create({"Name": "Lonely", "Type": "Prospect", "BillingCountry": "US"})["id"]
    ada = sf.Contact.create({"LastName": "Lovelace", "AccountId": acme, "Email": "a@x.example"})[
        "id"
    ]
    alan = sf.Contact.create({"LastName": "Turing", "AccountId": acme})["id"]
    grace = sf.Contact.create({"LastName": "Hopper", "AccountId": globex})["id"]
    return {
        "acme": acme,
        "globex": globex,
        "lonely": lonely,
        "ada": ada,
        "alan": alan,
        "grace": grace,
    }


def test_aggregate_aliases_and_unaliased_expr_keys(sf: TypedSalesforce) -> None:
    _accounts_with_people(sf)
    result = sf.query("SELECT COUNT(Id) cnt, MAX(LastName), MIN(LastName) FROM Contact")
    assert result["records"] == [
        {"attributes": {"type": "AggregateResult"}, "cnt": 3, "expr0": "Turing", "expr1": "Hopper"}
    ]
    assert sf.query("SELECT COUNT() FROM Contact") == {
        "totalSize": 3,
        "done": True,
        "records": [],
    }


def test_group_by_having_count_distinct_and_rollup(sf: TypedSalesforce) -> None:
    _accounts_with_people(sf)
    grouped = sf.query(
        "SELECT Type, COUNT(Id) n, COUNT_DISTINCT(BillingCountry) countries FROM Account "
        "GROUP BY Type HAVING COUNT(Id) > 1"
    )["records"]
    assert [(r["Type"], r["n"], r["countries"]) for r in grouped] == [("Customer", 2, 2)]
    rolled = sf.query(
        "SELECT Type, COUNT(Id) n, GROUPING(Type) g FROM Account GROUP BY ROLLUP(Type) "
        "ORDER BY GROUPING(Type), Type"
    )["records"]
    assert [(r["Type"], r["n"], r["g"]) for r in rolled] == [
        ("Customer", 2, 0),
        ("Prospect", 1, 0),
        (None, 3, 1),
    ]
    cube = sf.query(
        "SELECT Type, BillingCountry, COUNT(Id) FROM Account GROUP BY CUBE(Type, BillingCountry)"
    )["records"]
    # 3 groups, 2 Type subtotals, 2 country subtotals and a grand total.
    assert len(cube) == 8
    assert {
        "attributes": {"type": "AggregateResult"},
        "Type": None,
        "BillingCountry": None,
        "expr0": 3,
    } in cube


def test_own_name_prefix_parent_paths_and_child_subqueries(sf: TypedSalesforce) -> None:
    ids = _accounts_with_people(sf)
    found = sf.query(
        "SELECT Contact.LastName, Contact.Account.Name FROM Contact WHERE Contact.Email != null"
    )["records"]
    assert [(r["LastName"], r["Account"]["Name"]) for r in found] == [("Lovelace", "Acme")]
    accounts = sf.query(
        "SELECT Name, (SELECT LastName FROM Contacts ORDER BY LastName) FROM Account ORDER BY Name"
    )["records"]
    contacts = {a["Name"]: a["Contacts"] for a in accounts}
    assert [c["LastName"] for c in contacts["Acme"]["records"]] == ["Lovelace", "Turing"]
    assert contacts["Acme"]["totalSize"] == 2
    assert contacts["Acme"]["done"] is True
    assert contacts["Acme"]["records"][0]["attributes"]["type"] == "Contact"
    # An account without contacts answers null, as Salesforce does.
    assert contacts["Lonely"] is None
    assert ids["acme"] in {a["attributes"]["url"].rsplit("/", 1)[1] for a in accounts}


def test_semi_join_and_anti_join(sf: TypedSalesforce) -> None:
    ids = _accounts_with_people(sf)
    with_people = sf.query(
        "SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact) ORDER BY Name"
    )["records"]
    assert [r["Id"] for r in with_people] == [ids["acme"], ids["globex"]]
    without = sf.query(
        "SELECT Id FROM Account WHERE Id NOT IN (SELECT AccountId FROM Contact "
        "WHERE LastName = 'Hopper')"
    )["records"]
    assert {r["Id"] for r in without} == {ids["acme"], ids["lonely"]}


def test_typeof_and_polymorphic_type(sf: TypedSalesforce) -> None:
    ids = _accounts_with_people(sf)
    sf.Task.create({"Subject": "Call", "WhoId": ids["ada"], "WhatId": ids["acme"]})
    task = sf.query(
        "SELECT TYPEOF What WHEN Account THEN Name, Type ELSE Name END, Who.Type FROM Task"
    )["records"][0]
    assert task["What"]["attributes"]["type"] == "Account"
    assert (task["What"]["Name"], task["What"]["Type"]) == ("Acme", "Customer")
    assert task["Who"]["Type"] == "Contact"
    assert sf.query("SELECT Id FROM Task WHERE What.Type = 'Account'")["totalSize"] == 1


def test_activity_histories_are_closed_tasks_and_past_events(sf: TypedSalesforce) -> None:
    ids = _accounts_with_people(sf)
    sf.Task.create({"Subject": "Done", "WhatId": ids["acme"], "Status": "Completed"})
    sf.Task.create({"Subject": "Open", "WhatId": ids["acme"]})
    account = sf.query(
        f"SELECT (SELECT Subject FROM ActivityHistories), (SELECT Subject FROM OpenActivities) "
        f"FROM Account WHERE Id = '{ids['acme']}'"
    )["records"][0]
    assert [r["Subject"] for r in account["ActivityHistories"]["records"]] == ["Done"]
    assert account["ActivityHistories"]["records"][0]["attributes"]["type"] == "ActivityHistory"
    assert [r["Subject"] for r in account["OpenActivities"]["records"]] == ["Open"]


def test_date_functions_and_literals(sf: TypedSalesforce) -> None:
    _accounts_with_people(sf)
    year = dt.datetime.now(dt.UTC).year
    per_year = sf.query(
        "SELECT CALENDAR_YEAR(CreatedDate) y, COUNT(Id) FROM Account "
        "GROUP BY CALENDAR_YEAR(CreatedDate)"
    )["records"]
    assert [(r["y"], r["expr0"]) for r in per_year] == [(year, 3)]
    assert (
        sf.query(f"SELECT COUNT() FROM Account WHERE CALENDAR_YEAR(CreatedDate) = {year}")[
            "totalSize"
        ]
        == 3
    )
    for literal, expected in (
        ("TODAY", 3),
        ("N_DAYS_AGO:0", 3),
        ("N_DAYS_AGO:1", 0),
        ("THIS_WEEK", 3),
        ("LAST_N_DAYS:2", 3),
        ("THIS_FISCAL_YEAR", 3),
        ("LAST_N_MONTHS:3", 0),
        ("NEXT_N_QUARTERS:1", 0),
    ):
        text = f"SELECT COUNT() FROM Account WHERE CreatedDate = {literal}"
        assert sf.query(text)["totalSize"] == expected, literal


def test_fields_functions_and_read_only_clauses(sf: TypedSalesforce) -> None:
    _accounts_with_people(sf)
    standard = sf.query("SELECT FIELDS(STANDARD) FROM Account LIMIT 1")["records"][0]
    assert {"Id", "Name", "BillingCountry"} <= set(standard)
    assert not any(k.endswith("__c") for k in standard)
    custom = sf.query("SELECT FIELDS(CUSTOM) FROM Account LIMIT 1")["records"][0]
    assert set(custom) - {"attributes"}
    assert all(k.endswith("__c") for k in set(custom) - {"attributes"})
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.query("SELECT FIELDS(ALL) FROM Account")
    assert "LIMIT of at most 200" in error_body(excinfo.value)[0]["message"]
    for clause in ("FOR VIEW", "FOR REFERENCE", "FOR UPDATE", "WITH SECURITY_ENFORCED"):
        assert (
            sf.query(f"SELECT Id FROM Account LIMIT 5 {clause}".replace("LIMIT 5 WITH", "WITH"))[
                "totalSize"
            ]
            == 3
        )
    assert sf.query("SELECT Id FROM Account USING SCOPE Everything")["totalSize"] == 3


def test_order_by_nulls_last_with_offset(sf: TypedSalesforce) -> None:
    _accounts_with_people(sf)
    sf.Contact.create({"LastName": "Nobody"})
    names = [
        r["LastName"]
        for r in sf.query(
            "SELECT LastName FROM Contact ORDER BY Account.Name DESC NULLS LAST, LastName "
            "LIMIT 3 OFFSET 1"
        )["records"]
    ]
    assert names == ["Lovelace", "Turing", "Nobody"]


def test_errors_carry_salesforce_codes_and_caret(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.query("SELECT Nope FROM Contact")
    error: dict[str, Any] = error_body(excinfo.value)[0]
    assert error["errorCode"] == "INVALID_FIELD"
    assert error["message"].startswith(
        "\nSELECT Nope FROM Contact\n       ^\nERROR at Row:1:Column:8\nNo such column 'Nope'"
    )
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.query("SELECT Id FROM Nope")
    assert error_body(excinfo.value)[0]["errorCode"] == "INVALID_TYPE"
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.query("SELECT LastName, COUNT(Id) FROM Contact")
    assert error_body(excinfo.value)[0]["errorCode"] == "MALFORMED_QUERY"


def test_query_all_returns_deleted_rows_with_is_deleted(sf: TypedSalesforce) -> None:
    ids = _accounts_with_people(sf)
    sf.Contact.delete(ids["grace"])
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 2
    deleted = sf.query_all(
        "SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true", include_deleted=True
    )["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in deleted] == [(ids["grace"], True)]


def test_explain_answers_with_a_query_plan(
    sf: TypedSalesforce, emulator: Any, http: requests.Session, token: dict[str, Any]
) -> None:
    ids = _accounts_with_people(sf)
    response = http.get(
        api(emulator, "query"),
        params={"explain": f"SELECT Id FROM Contact WHERE Id = '{ids['ada']}'"},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    plan = response.json()["plans"][0]
    assert set(plan) == {
        "cardinality",
        "fields",
        "leadingOperationType",
        "notes",
        "relativeCost",
        "sobjectCardinality",
        "sobjectType",
    }
    assert (plan["leadingOperationType"], plan["cardinality"], plan["sobjectType"]) == (
        "Index",
        1,
        "Contact",
    )
    scan = http.get(
        api(emulator, "query"),
        params={"explain": "SELECT Id FROM Contact WHERE LastName = 'x'"},
        headers=bearer(token),
    ).json()["plans"][0]
    assert scan["leadingOperationType"] == "TableScan"
    assert scan["notes"][0]["fields"] == ["LastName"]


def test_sosl_quoted_phrase_is_an_exact_phrase(sf: TypedSalesforce) -> None:
    hit = sf.Contact.create({"LastName": "Smith", "Title": "Head of Data Platform"})["id"]
    sf.Contact.create({"LastName": "Jones", "Title": "Platform for Data"})
    phrase = sf.search('FIND {"data platform"} IN ALL FIELDS RETURNING Contact(Id)')
    assert [r["Id"] for r in phrase["searchRecords"]] == [hit]
    words = sf.search("FIND {data platform} IN ALL FIELDS RETURNING Contact(Id)")
    assert len(words["searchRecords"]) == 2
    either = sf.search('FIND {"head of" OR jones} IN ALL FIELDS RETURNING Contact(Id)')
    assert len(either["searchRecords"]) == 2


def test_sosl_escaped_characters_are_literal_and_operators_group(sf: TypedSalesforce) -> None:
    star = sf.Contact.create({"LastName": "Widget* (UK)"})["id"]
    plain = sf.Contact.create({"LastName": "Widgets"})["id"]
    escaped = sf.search(r"FIND {Widget\* \(UK\)} IN NAME FIELDS RETURNING Contact(Id)")
    assert [r["Id"] for r in escaped["searchRecords"]] == [star]
    wildcard = sf.search("FIND {Widget*} IN NAME FIELDS RETURNING Contact(Id)")
    assert {r["Id"] for r in wildcard["searchRecords"]} == {star, plain}
    grouped = sf.search("FIND {Widgets AND NOT (UK OR US)} IN NAME FIELDS RETURNING Contact(Id)")
    assert [r["Id"] for r in grouped["searchRecords"]] == [plain]
