"""The SOQL subset: parsing, refusing what it does not support, evaluating, and paging."""

from __future__ import annotations

import datetime as dt
import fnmatch
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simple_salesforce.exceptions import SalesforceMalformedRequest

from concord_salesforce_emulator import ids, soql, timefmt
from concord_salesforce_emulator.errors import SalesforceError
from concord_salesforce_emulator.schema import load_schema
from concord_salesforce_emulator.server import Settings

from .conftest import TypedSalesforce, error_body

SCHEMA = load_schema()


def _run(
    text: str, records: list[dict[str, Any]], parents: dict[str, Any] | None = None
) -> list[Any]:
    planned = soql.plan(text, SCHEMA)
    lookup = parents or {}

    def resolve(record_id: str) -> tuple[str, dict[str, Any]] | None:
        found = lookup.get(record_id)
        return (found["type"], found) if found else None

    return [r["Id"] for r in planned.run(records, resolve)]


def _contact(n: int, **fields: Any) -> dict[str, Any]:
    record = {
        "Id": ids.mint("003", n),
        "LastName": None,
        "Email": None,
        "Birthdate": None,
        "CreatedDate": None,
        "IsEmailBounced": False,
        "AccountId": None,
    }
    record.update(fields)
    return record


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        "SELECT Id FROM Contact WHERE LastName = 'a' AND Email = 'b' OR IsEmailBounced = true",
        "SELECT Id FROM Contact GROUP BY LastName",
        "SELECT Id FROM Contact WHERE",
        "SELECT FROM Contact",
        "SELECT Id Contact",
        "SELECT Id FROM Contact LIMIT -1",
        "SELECT Id FROM Contact WHERE CreatedDate > 2020-01-01",
        "SELECT Id FROM Contact WHERE LastName = 5",
        "SELECT Id FROM Contact WHERE IsEmailBounced > true",
        "SELECT Id FROM Contact WHERE Birthdate = 2020-13-45",
        "SELECT Id, Id FROM Contact",
        # Grouped queries select only what is grouped or aggregated.
        "SELECT LastName, COUNT(Id) FROM Contact",
        "SELECT MAX(CreatedDate) FROM Contact LIMIT 1",
        "SELECT FIELDS(ALL) FROM Contact",
        "SELECT Id FROM Contact WHERE CreatedDate = LAST_N_FORTNIGHTS:2",
    ],
)
def test_unsupported_or_wrong_queries_are_refused(text: str) -> None:
    with pytest.raises(SalesforceError) as excinfo:
        soql.plan(text, SCHEMA)
    assert excinfo.value.code == "MALFORMED_QUERY"
    assert excinfo.value.status == 400


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SELECT Id FROM Nope__c", "INVALID_TYPE"),
        ("SELECT Nope FROM Contact", "INVALID_FIELD"),
        ("SELECT Nope.Name FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE AccountId = 'xyz'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Contact OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE"),
        ("SELECT Id FROM Contact WHERE LastName INCLUDES ('a')", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id, (SELECT Id FROM Nopes) FROM Contact", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE Id IN (SELECT LastName FROM Contact)", "INVALID_FIELD"),
    ],
)
def test_unknown_names_get_their_own_codes(text: str, code: str) -> None:
    with pytest.raises(SalesforceError) as excinfo:
        soql.plan(text, SCHEMA)
    assert excinfo.value.code == code


@pytest.mark.unit
def test_where_order_limit_offset_and_parent_fields() -> None:
    account = {"type": "Account", "Id": ids.mint("001", 1), "Name": "Acme"}
    records = [
        _contact(1, LastName="Zed", Email="Z@acme.example", AccountId=account["Id"]),
        _contact(2, LastName="amy", Email=None),
        _contact(3, LastName="Bob", Email="bob@other.example", IsEmailBounced=True),
        _contact(4, LastName=None),
    ]
    parents = {account["Id"]: account}
    first, second, third, fourth = (r["Id"] for r in records)
    assert _run("SELECT Id FROM Contact WHERE Account.Name = 'acme'", records, parents) == [first]
    assert _run("SELECT Id FROM Contact WHERE Email LIKE '%@ACME.%'", records) == [first]
    assert _run("SELECT Id FROM Contact WHERE Email != null", records) == [first, third]
    # SOQL's != matches nulls, unlike SQL.
    assert _run("SELECT Id FROM Contact WHERE LastName != 'zed'", records) == [
        second,
        third,
        fourth,
    ]
    assert _run(
        "SELECT Id FROM Contact WHERE NOT (IsEmailBounced = true OR LastName = null)", records
    ) == [first, second]
    assert _run("SELECT Id FROM Contact ORDER BY LastName", records) == [
        fourth,
        second,
        third,
        first,
    ]
    assert _run("SELECT Id FROM Contact ORDER BY LastName DESC", records) == [
        first,
        third,
        second,
        fourth,
    ]
    assert _run(
        "SELECT Id FROM Contact ORDER BY LastName NULLS LAST LIMIT 2 OFFSET 1", records
    ) == [third, first]
    assert _run(f"SELECT Id FROM Contact WHERE Id IN ('{second[:15]}', '{fourth}')", records) == [
        second,
        fourth,
    ]
    assert _run("SELECT Id FROM Contact WHERE LastName NOT IN ('Zed', 'Bob')", records) == [
        second,
        fourth,
    ]


@pytest.mark.unit
def test_date_literals_and_datetimes() -> None:
    now = timefmt.now()
    stamp = timefmt.format_datetime
    records = [
        _contact(1, CreatedDate=stamp(now)),
        _contact(2, CreatedDate=stamp(now - dt.timedelta(days=3))),
        _contact(3, CreatedDate=stamp(now - dt.timedelta(days=40))),
        _contact(4, Birthdate=(now.date() - dt.timedelta(days=1)).isoformat()),
    ]
    first, second, third, fourth = (r["Id"] for r in records)
    assert _run("SELECT Id FROM Contact WHERE CreatedDate = TODAY", records) == [first]
    assert _run("SELECT Id FROM Contact WHERE CreatedDate = LAST_N_DAYS:7", records) == [
        first,
        second,
    ]
    assert _run("SELECT Id FROM Contact WHERE CreatedDate < LAST_N_DAYS:30", records) == [third]
    assert _run("SELECT Id FROM Contact WHERE Birthdate = YESTERDAY", records) == [fourth]
    cutoff = stamp(now - dt.timedelta(days=10)).replace(".000+0000", "Z")
    assert _run(f"SELECT Id FROM Contact WHERE CreatedDate > {cutoff[:19]}Z", records) == [
        first,
        second,
    ]


# ---- the evaluator agrees with a straightforward filter ------------------------------------------

_NAMES = st.sampled_from(["Ada", "ada", "Bob", "Éva", "o'neil", "", None])
_DAYS = st.one_of(st.none(), st.integers(min_value=0, max_value=20))
_BASE = dt.date(2024, 1, 1)


@st.composite
def _records(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=0, max_value=12))
    out = []
    for n in range(count):
        days = draw(_DAYS)
        out.append(
            _contact(
                n + 1,
                LastName=draw(_NAMES),
                IsEmailBounced=draw(st.booleans()),
                Birthdate=None if days is None else (_BASE + dt.timedelta(days=days)).isoformat(),
            )
        )
    return out


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def _conditions(draw: st.DrawFn, depth: int = 0) -> tuple[str, Any]:
    """A WHERE clause and the plain-Python predicate it means."""
    kind = draw(
        st.sampled_from(
            ["name", "bool", "date", "in"] + (["and", "or", "not"] if depth < 2 else [])
        )
    )
    if kind == "name":
        op = draw(st.sampled_from(["=", "!=", "<", ">=", "like"]))
        value = draw(_NAMES)
        if value is None or op == "like":
            value = value or "a"
            if op == "like":
                pattern = draw(st.sampled_from([value, value[:1] + "%", "%" + value[-1:], "_%"]))
                return (
                    f"LastName LIKE {_quote(pattern)}",
                    lambda r: _py_like(r["LastName"], pattern),
                )
            if op in ("<", ">="):
                op = "="
            text = "null"
            return (
                f"LastName {op} {text}",
                (lambda r: r["LastName"] is None)
                if op == "="
                else (lambda r: r["LastName"] is not None),
            )

        def compare(r: dict[str, Any], op: str = op, value: str = value) -> bool:
            actual: str | None = r["LastName"]
            if op == "=":
                return actual is not None and actual.lower() == value.lower()
            if op == "!=":
                return actual is None or actual.lower() != value.lower()
            if actual is None:
                return False
            return actual.lower() < value.lower() if op == "<" else actual.lower() >= value.lower()

        return (f"LastName {op} {_quote(value)}", compare)
    if kind == "bool":
        flag = draw(st.booleans())
        return (f"IsEmailBounced = {str(flag).lower()}", lambda r: r["IsEmailBounced"] is flag)
    if kind == "date":
        op = draw(st.sampled_from(["=", "<", "<=", ">", ">="]))
        day = _BASE + dt.timedelta(days=draw(st.integers(min_value=0, max_value=20)))
        operators = {
            "=": lambda a, b: a == b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        return (
            f"Birthdate {op} {day.isoformat()}",
            lambda r: (
                r["Birthdate"] is not None
                and operators[op](dt.date.fromisoformat(r["Birthdate"]), day)
            ),
        )
    if kind == "in":
        values = draw(st.lists(st.sampled_from(["Ada", "Bob", "Éva"]), min_size=1, max_size=3))
        lowered = {v.lower() for v in values}
        return (
            f"LastName IN ({', '.join(_quote(v) for v in values)})",
            lambda r: r["LastName"] is not None and r["LastName"].lower() in lowered,
        )
    if kind == "not":
        text, predicate = draw(_conditions(depth + 1))
        return (f"NOT ({text})", lambda r: not predicate(r))
    parts = draw(st.lists(_conditions(depth + 1), min_size=2, max_size=3))
    joiner = " AND " if kind == "and" else " OR "
    text = joiner.join(f"({t})" for t, _ in parts)
    if kind == "and":
        return (text, lambda r: all(p(r) for _, p in parts))
    return (text, lambda r: any(p(r) for _, p in parts))


def _py_like(value: str | None, pattern: str) -> bool:
    if value is None:
        return False
    return fnmatch.fnmatchcase(value.lower(), pattern.lower().replace("%", "*").replace("_", "?"))


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(records=_records(), condition=_conditions())
def test_evaluator_agrees_with_a_plain_filter(
    records: list[dict[str, Any]], condition: tuple[str, Any]
) -> None:
    text, predicate = condition
    expected = [r["Id"] for r in records if predicate(r)]
    assert _run(f"SELECT Id FROM Contact WHERE {text}", records) == expected


# ---- over HTTPS ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_paging_with_next_records_url(sf: TypedSalesforce) -> None:
    # The fixture's emulator pages every 5 records (Salesforce: 2,000).
    for n in range(12):
        sf.Contact.create({"LastName": f"Person {n:02d}"})
    first = sf.query("SELECT Id, LastName FROM Contact ORDER BY LastName")
    assert (first["totalSize"], first["done"], len(first["records"])) == (12, False, 5)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/")
    everything = sf.query_all("SELECT Id, LastName FROM Contact ORDER BY LastName")
    assert [r["LastName"] for r in everything["records"]] == [f"Person {n:02d}" for n in range(12)]
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 12


@pytest.mark.integration
def test_malformed_query_over_https(sf: TypedSalesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as excinfo:
        sf.query(
            "SELECT Id FROM Contact WHERE LastName = 'a' AND Email = 'b' OR IsEmailBounced = true"
        )
    assert error_body(excinfo.value)[0]["errorCode"] == "MALFORMED_QUERY"


@pytest.mark.integration
def test_query_all_pages_include_deleted_rows(sf: TypedSalesforce) -> None:
    created = [sf.Lead.create({"LastName": f"L{n}", "Company": "C"})["id"] for n in range(7)]
    for record_id in created[:4]:
        sf.Lead.delete(record_id)
    first = sf.query_all_iter("SELECT Id, IsDeleted FROM Lead", include_deleted=True)
    rows = list(first)
    assert len(rows) == 7
    assert sum(r["IsDeleted"] for r in rows) == 4
    live = sf.query("SELECT Id FROM Lead")
    assert (live["totalSize"], live["done"]) == (3, True)


@pytest.mark.integration
def test_polymorphic_and_two_level_parent_fields(sf: TypedSalesforce) -> None:
    account = sf.Account.create({"Name": "Acme"})["id"]
    contact = sf.Contact.create({"LastName": "Hopper", "AccountId": account})["id"]
    lead = sf.Lead.create({"LastName": "Torvalds", "Company": "Kernel"})["id"]
    for who in (contact, lead):
        sf.Event.create(
            {"WhoId": who, "StartDateTime": "2030-01-01T09:00:00Z", "DurationInMinutes": 30}
        )
    sf.Event.create({"StartDateTime": "2030-01-01T09:00:00Z", "DurationInMinutes": 30})
    rows = sf.query("SELECT Who.Name, Owner.Name FROM Event ORDER BY Who.Name NULLS LAST")
    whos = [
        (r["Who"]["attributes"]["type"], r["Who"]["Name"]) if r["Who"] else None
        for r in rows["records"]
    ]
    assert whos == [("Contact", "Hopper"), ("Lead", "Torvalds"), None]
    filtered = sf.query("SELECT Id FROM Event WHERE Who.Name LIKE 'tor%'")
    assert filtered["totalSize"] == 1
    nested = sf.query("SELECT Account.Owner.Name, Account.Name FROM Contact")["records"][0]
    assert nested["Account"]["Owner"]["Name"] == "Concord Admin"
    assert nested["Account"]["Name"] == "Acme"


@pytest.mark.integration
class TestBatchSize:
    @pytest.fixture
    def settings(self) -> Settings:
        return Settings()

    def test_batch_size_is_honoured_between_200_and_2000(self, sf: TypedSalesforce) -> None:
        for batch in range(3):
            records = [
                {"attributes": {"type": "Account"}, "Name": f"A{batch}-{n}"} for n in range(150)
            ]
            sf.restful("composite/sobjects", method="POST", json={"records": records})
        page = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=300"})
        assert (len(page["records"]), page["done"]) == (300, False)
        page = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=50"})
        assert len(page["records"]) == 200
        assert len(sf.query("SELECT Id FROM Account")["records"]) == 450


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(
    records=_records(),
    descending=st.booleans(),
    nulls=st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=15)),
    offset=st.one_of(st.none(), st.integers(min_value=0, max_value=15)),
)
def test_order_limit_offset_agree_with_a_plain_sort(
    records: list[dict[str, Any]],
    descending: bool,
    nulls: str,
    limit: int | None,
    offset: int | None,
) -> None:
    text = "SELECT Id FROM Contact ORDER BY LastName" + (" DESC" if descending else "") + nulls
    text += f" LIMIT {limit}" if limit is not None else ""
    text += f" OFFSET {offset}" if offset is not None else ""
    nulls_last = nulls == " NULLS LAST" or (descending and nulls == "")
    present = sorted(
        (r for r in records if r["LastName"] is not None),
        key=lambda r: r["LastName"].lower(),
        reverse=descending,
    )
    missing = [r for r in records if r["LastName"] is None]
    ordered = present + missing if nulls_last else missing + present
    start = offset or 0
    expected = ordered[start : None if limit is None else start + limit]
    assert _run(text, records) == [r["Id"] for r in expected]
