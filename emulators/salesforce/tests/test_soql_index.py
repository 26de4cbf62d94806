"""Rows named by Id or by an indexed field are read through the index, as Salesforce's optimizer
does: the answer is the scan's answer, the query plan says `Index`, and only those rows are
examined (a scan made `Id IN (200 ids)` cost every row of the type times every literal)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simple_salesforce.exceptions import SalesforceMalformedRequest

from concord_salesforce_emulator import soql

from .conftest import TypedSalesforce, error_body


def _contacts(sf: TypedSalesforce, count: int, batch: int | None = None) -> list[str]:
    """Contacts made in one call; the even ones linked, unless they are one `batch` of many."""
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": True,
            "records": [
                {
                    "attributes": {"type": "Contact"},
                    "LastName": f"Person {n:03d}" if batch is None else f"Person {batch}-{n:03d}",
                    "Concord_Link_Id__c": f"link-{n:03d}" if n % 2 == 0 and batch is None else None,
                }
                for n in range(count)
            ],
        },
    )
    assert isinstance(created, list)
    return [r["id"] for r in created]


def _plan(sf: TypedSalesforce, query: str) -> dict[str, Any]:
    answer = sf.restful("query", params={"explain": query})
    assert isinstance(answer, dict)
    plans = answer["plans"]
    assert len(plans) == 1
    plan: dict[str, Any] = plans[0]
    return plan


def _in(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


@pytest.fixture
def examined(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Ids of the rows a query's WHERE is tested on (the emulator runs in this process)."""
    seen: list[str] = []
    original = soql.PlannedQuery._matches

    def counting(self: soql.PlannedQuery, record: soql.Record, context: Any) -> bool:
        seen.append(record["Id"])
        return original(self, record, context)

    monkeypatch.setattr(soql.PlannedQuery, "_matches", counting)
    return seen


def test_explain_says_an_id_in_list_uses_the_index_and_other_filters_scan(
    sf: TypedSalesforce,
) -> None:
    people = _contacts(sf, 12)
    by_id = _plan(sf, f"SELECT Id FROM Contact WHERE Id IN ({_in(people[:3])})")
    assert (by_id["leadingOperationType"], by_id["fields"], by_id["cardinality"]) == (
        "Index",
        ["Id"],
        3,
    )
    assert by_id["sobjectCardinality"] == 12
    by_link = _plan(
        sf,
        "SELECT Id FROM Contact WHERE LastName != 'x' AND Concord_Link_Id__c IN "
        "('LINK-000', 'link-002', 'link-999')",
    )
    assert (by_link["leadingOperationType"], by_link["fields"], by_link["cardinality"]) == (
        "Index",
        ["Concord_Link_Id__c"],
        2,
    )
    scan = _plan(sf, "SELECT Id FROM Contact WHERE LastName IN ('Person 001', 'Person 002')")
    assert (scan["leadingOperationType"], scan["fields"], scan["cardinality"]) == (
        "TableScan",
        [],
        2,
    )
    assert scan["notes"][0]["fields"] == ["LastName"]
    # Under an OR the Id no longer bounds the rows: a scan.
    either = _plan(sf, f"SELECT Id FROM Contact WHERE Id = '{people[0]}' OR LastName = 'x'")
    assert either["leadingOperationType"] == "TableScan"
    # An index holds no nulls: `= null` on an indexed field scans (and finds the nulls).
    nulls = _plan(sf, "SELECT Id FROM Contact WHERE Concord_Link_Id__c = null")
    assert (nulls["leadingOperationType"], nulls["cardinality"]) == ("TableScan", 6)


def test_an_id_in_query_examines_only_the_rows_it_names(
    sf: TypedSalesforce, examined: list[str]
) -> None:
    people = _contacts(sf, 40)
    wanted = [people[30], people[3], people[17]]
    rows = sf.query(f"SELECT Id, SystemModstamp FROM Contact WHERE Id IN ({_in(wanted)})")
    # In the order a scan meets them (insertion), not the order of the list.
    assert [r["Id"] for r in rows["records"]] == [people[3], people[17], people[30]]
    assert sorted(examined) == sorted(wanted)
    examined.clear()
    linked = sf.query(
        "SELECT Id FROM Contact WHERE Concord_Link_Id__c IN ('link-004', 'LINK-010', 'link-011')"
    )
    assert [r["Id"] for r in linked["records"]] == [people[4], people[10]]
    assert sorted(examined) == sorted([people[4], people[10]])
    examined.clear()
    sf.query("SELECT Id FROM Contact WHERE LastName = 'Person 004'")
    assert len(examined) == 40


def test_index_reads_keep_scan_semantics(sf: TypedSalesforce) -> None:
    people = _contacts(sf, 6)
    sf.Contact.delete(people[2])
    listed = _in(people[:4])
    live = sf.query(f"SELECT Id FROM Contact WHERE Id IN ({listed})")["records"]
    assert [r["Id"] for r in live] == [people[0], people[1], people[3]]
    everything = sf.query_all(
        f"SELECT Id, IsDeleted FROM Contact WHERE Id IN ({listed})", include_deleted=True
    )["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in everything] == [
        (people[0], False),
        (people[1], False),
        (people[2], True),
        (people[3], False),
    ]
    deleted_link = sf.query_all(
        "SELECT Id FROM Contact WHERE Concord_Link_Id__c = 'link-002'", include_deleted=True
    )["records"]
    assert [r["Id"] for r in deleted_link] == [people[2]]
    # 15-character ids, other conjuncts, ORDER BY and LIMIT, as a scan answers them.
    short = _in([p[:15] for p in people])
    ordered = sf.query(
        f"SELECT Id FROM Contact WHERE Id IN ({short}) AND LastName != 'Person 001' "
        "ORDER BY LastName DESC LIMIT 3"
    )["records"]
    assert [r["Id"] for r in ordered] == [people[5], people[4], people[3]]
    assert sf.query(f"SELECT COUNT() FROM Contact WHERE Id IN ({short})")["totalSize"] == 5
    assert sf.query("SELECT Id FROM Contact WHERE Id = null")["totalSize"] == 0
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.query(f"SELECT Id FROM Contact WHERE Id IN ('{people[0]}', 'not-an-id')")
    assert error_body(excinfo.value)[0] == {
        "errorCode": "INVALID_QUERY_FILTER_OPERATOR",
        "message": "invalid ID field: not-an-id",
    }


def test_in_lists_compare_like_equals(sf: TypedSalesforce) -> None:
    """The set lookup matches exactly what `=` matches: text ignoring case, nulls, dates."""
    people = _contacts(sf, 4)
    by_name = sf.query("SELECT Id FROM Contact WHERE LastName IN ('PERSON 001', 'person 003')")
    assert [r["Id"] for r in by_name["records"]] == [people[1], people[3]]
    unlinked = sf.query("SELECT Id FROM Contact WHERE Concord_Link_Id__c IN (null, 'link-000')")
    assert [r["Id"] for r in unlinked["records"]] == [people[0], people[1], people[3]]
    others = sf.query("SELECT Id FROM Contact WHERE Concord_Link_Id__c NOT IN (null)")
    assert [r["Id"] for r in others["records"]] == [people[0], people[2]]
    today = sf.query("SELECT Id FROM Contact WHERE CreatedDate IN (TODAY, YESTERDAY)")
    assert len(today["records"]) == 4


def _batches(sf: TypedSalesforce, batches: int, size: int) -> list[list[str]]:
    """Contacts made `size` to a call: the rows of a call share one SystemModstamp."""
    made: list[list[str]] = []
    for batch in range(batches):
        made.append(_contacts(sf, size, batch))
        # Each call gets its own millisecond, so batches never share a SystemModstamp.
        time.sleep(0.002)
    return made


def test_a_change_listing_examines_its_page_not_the_type(
    sf: TypedSalesforce, examined: list[str]
) -> None:
    first, second, *_ = _batches(sf, 4, 10)
    [after] = sf.query(f"SELECT SystemModstamp FROM Contact WHERE Id = '{first[0]}'")["records"]
    stamp = after["SystemModstamp"].replace("+0000", "Z")
    examined.clear()
    page = sf.query_all(
        f"SELECT Id FROM Contact WHERE SystemModstamp > {stamp} ORDER BY SystemModstamp, Id LIMIT 5"
    )["records"]
    assert [r["Id"] for r in page] == sorted(second)[:5]
    # Through Salesforce's index on the audit field: the rows at the cursor's stamp and the
    # page's, not the forty of the type.
    assert set(examined) == set(first + second)


def test_a_lookup_is_indexed_and_the_optimizer_takes_the_fewer_rows(
    sf: TypedSalesforce, examined: list[str]
) -> None:
    account = sf.Account.create({"Name": "Acme"})["id"]
    people = [p for batch in _batches(sf, 3, 10) for p in batch]
    for person in people[5:8]:
        sf.Contact.update(person, {"AccountId": account[:15]})
    examined.clear()
    page = sf.query(
        f"SELECT Id FROM Contact WHERE AccountId = '{account}' ORDER BY SystemModstamp LIMIT 10"
    )["records"]
    assert [r["Id"] for r in page] == people[5:8]
    assert set(examined) == set(people[5:8])
    # An index holds no nulls, and the walk by SystemModstamp reads only the first batch's
    # rows (all sharing the page's last SystemModstamp), less the three edited since.
    examined.clear()
    sf.query("SELECT Id FROM Contact WHERE AccountId = null ORDER BY SystemModstamp LIMIT 2")
    assert set(examined) == set(people[:5] + people[8:10])


@pytest.fixture
def history(sf: TypedSalesforce) -> list[str]:
    """Contacts made in batches (ties), some edited since (new stamps), some deleted."""
    made = [contact for batch in _batches(sf, 6, 5) for contact in batch]
    for contact in made[3:30:4]:
        sf.Contact.update(contact, {"LastName": "Edited"})
        time.sleep(0.002)
    for contact in made[::7]:
        sf.Contact.delete(contact)
    stamps = sf.query_all("SELECT SystemModstamp FROM Contact", include_deleted=True)["records"]
    return sorted({r["SystemModstamp"].replace("+0000", "Z") for r in stamps})


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    operator=st.sampled_from([">", ">=", "="]),
    order=st.sampled_from(
        ["SystemModstamp", "SystemModstamp, Id", "SystemModstamp, LastName DESC"]
    ),
    limit=st.integers(1, 12),
    offset=st.integers(0, 3),
    deleted=st.booleans(),
    edited=st.booleans(),
)
def test_the_index_walk_answers_as_a_scan_does(
    sf: TypedSalesforce,
    history: list[str],
    data: st.DataObject,
    operator: str,
    order: str,
    limit: int,
    offset: int,
    deleted: bool,
    edited: bool,
) -> None:
    stamp = data.draw(st.sampled_from(history))
    where = f"SystemModstamp {operator} {stamp}"
    if edited:
        where = f"({where} OR LastName = 'Edited') AND LastName != 'Person 1-001'"
    query = f"SELECT Id FROM Contact WHERE {where} ORDER BY {order}"
    scan = sf.query_all(query, include_deleted=deleted)["records"]
    page = sf.query_all(f"{query} LIMIT {limit} OFFSET {offset}", include_deleted=deleted)
    assert [r["Id"] for r in page["records"]] == [r["Id"] for r in scan][offset : offset + limit]
