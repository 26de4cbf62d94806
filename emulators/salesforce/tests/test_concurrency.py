"""One client's long call holds up no other's, and concurrent calls stay correct.

A long call is held in the middle of being served (its worker waits, at a point inside the
emulator, for the short call to be answered, for at most `HOLD_SECONDS`): the short call must be
answered while the long one is still being served. An emulator that serves one call at a time
can answer the short call only after the hold gives up.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceError

from concord_salesforce_emulator.app import Running
from concord_salesforce_emulator.server import Settings

from .conftest import VERSION, TypedSalesforce, api, bearer

WIDE_ROWS = 2000
HOLD_SECONDS = 10.0
START = datetime(2026, 6, 1, 9, tzinfo=UTC)


@pytest.fixture
def settings() -> Settings:
    return Settings(page_size=2000)


def client(emulator: Running, token: dict[str, Any]) -> TypedSalesforce:
    """A client of its own: a `requests` session serves one thread."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(emulator.ca_cert)
    return TypedSalesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=session,
        version=VERSION,
    )


def event(n: int, text: str | None = None) -> dict[str, Any]:
    start = START + timedelta(minutes=30 * n)
    return {
        "attributes": {"type": "Event"},
        "Subject": text or f"Wide meeting {n}",
        "StartDateTime": start.isoformat(),
        "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
        "Location": text or f"Room {n % 40}",
        "Description": text or f"Agenda {n}: " + "the quarterly numbers, line by line. " * 40,
    }


def create_events(sf: TypedSalesforce, count: int, text: str | None = None) -> list[str]:
    created: list[str] = []
    for start in range(0, count, 200):
        records = [event(n, text) for n in range(start, min(start + 200, count))]
        results = sf.restful(
            "composite/sobjects", method="POST", json={"allOrNone": True, "records": records}
        )
        assert results is not None
        assert all(r["success"] for r in results), results
        created += [r["id"] for r in results]
    return created


def every_field(sf: TypedSalesforce) -> str:
    return ", ".join(f["name"] for f in sf.Event.describe()["fields"])


class Hold:
    """Holds the first call that reaches `point` (a method of `owner`) there until `release`.

    `reached` is set when a call is held; `released_in_time` says whether `release` came before
    the hold gave up.
    """

    def __init__(self, owner: object, point: str, when: Callable[..., bool]) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()
        self.released_in_time: bool | None = None
        original = getattr(owner, point)

        def held(*args: Any, **kwargs: Any) -> Any:
            if not self.reached.is_set() and when(*args, **kwargs):
                self.reached.set()
                self.released_in_time = self._released.wait(HOLD_SECONDS)
            return original(*args, **kwargs)

        self.owner, self.point, self.held = owner, point, held

    def release(self) -> None:
        self._released.set()


@contextmanager
def holding(
    monkeypatch: pytest.MonkeyPatch, owner: object, point: str, when: Callable[..., bool]
) -> Iterator[Hold]:
    hold = Hold(owner, point, when)
    monkeypatch.setattr(owner, point, hold.held)
    yield hold
    hold.release()


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # reported by the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def result_of(thread: threading.Thread, outcome: dict[str, Any]) -> Any:
    thread.join(timeout=60)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def big_page(cursor: Any, *args: Any) -> bool:
    return bool(cursor.total >= WIDE_ROWS)


# ---- a short call beside a long one ----------------------------------------------------------


@pytest.mark.parametrize("short", ["query", "PATCH", "retrieve"])
def test_a_short_call_is_answered_while_a_big_query_is_served(
    emulator: Running,
    sf: TypedSalesforce,
    token: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    short: str,
) -> None:
    ids = create_events(sf, WIDE_ROWS)
    soql = f"SELECT {every_field(sf)} FROM Event"
    with holding(monkeypatch, emulator.emulator.api, "_page", big_page) as hold:
        big, outcome = in_thread(lambda: client(emulator, token).query(soql))
        assert hold.reached.wait(30)
        if short == "query":
            small = sf.query(f"SELECT Id, Subject FROM Event WHERE Id = '{ids[7]}'")
            assert [r["Subject"] for r in small["records"]] == ["Wide meeting 7"]
        elif short == "PATCH":
            assert sf.Event.update(ids[7], {"Subject": "Moved"}) == 204
        else:
            assert sf.Event.get(ids[7])["Location"] == "Room 7"
        hold.release()
        rows = result_of(big, outcome)["records"]
    assert hold.released_in_time, f"the {short} waited for the big query to be served"
    assert len(rows) == WIDE_ROWS
    # The big query read the rows as they were when it ran, each whole.
    assert rows[7]["Subject"] == "Wide meeting 7"


def test_a_short_query_is_answered_while_a_composite_of_queries_is_served(
    emulator: Running,
    sf: TypedSalesforce,
    token: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = create_events(sf, WIDE_ROWS)
    query = (
        f"/services/data/v{VERSION}/query?q=SELECT+{every_field(sf).replace(' ', '')}+FROM+Event"
    )
    subrequests = [{"method": "GET", "url": query, "referenceId": f"all{n}"} for n in range(2)]
    with holding(monkeypatch, emulator.emulator.api, "_page", big_page) as hold:
        big, outcome = in_thread(
            lambda: client(emulator, token).restful(
                "composite", method="POST", json={"compositeRequest": subrequests}
            )
        )
        assert hold.reached.wait(30)
        small = sf.query(f"SELECT Subject FROM Event WHERE Id = '{ids[3]}'")
        assert [r["Subject"] for r in small["records"]] == ["Wide meeting 3"]
        hold.release()
        answer = result_of(big, outcome)
    assert hold.released_in_time, "the query waited for the Composite to be served"
    assert [r["body"]["totalSize"] for r in answer["compositeResponse"]] == [WIDE_ROWS] * 2


def test_a_query_is_answered_while_a_collection_commits_and_sees_none_of_it(
    emulator: Running,
    sf: TypedSalesforce,
    token: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = create_events(sf, 10)
    org = emulator.emulator.org
    updates = [{"attributes": {"type": "Event"}, "Id": i, "Subject": "Renamed"} for i in ids]

    def renaming(records: list[Any]) -> bool:
        return any(r.fields["Subject"] == "Renamed" for r in records)

    with holding(monkeypatch, org, "commit_records", renaming) as hold:
        write, outcome = in_thread(
            lambda: client(emulator, token).restful(
                "composite/sobjects", method="PATCH", json={"allOrNone": True, "records": updates}
            )
        )
        assert hold.reached.wait(30)
        seen = sf.query("SELECT Subject FROM Event")["records"]
        hold.release()
        results = result_of(write, outcome)
    assert hold.released_in_time, "the query waited for the Collections write"
    assert {r["Subject"] for r in seen} == {f"Wide meeting {n}" for n in range(10)}
    assert all(r["success"] for r in results)
    assert {r["Subject"] for r in sf.query("SELECT Subject FROM Event")["records"]} == {"Renamed"}


def test_an_all_or_none_composite_is_seen_by_no_one_before_it_commits(
    emulator: Running,
    sf: TypedSalesforce,
    token: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its first write is in the org while its second runs; a reader meanwhile reads the record
    (by id, by query, through an index, by the SystemModstamp walk) as it was, and the rollback
    leaves it so."""
    (kept,) = create_events(sf, 1)
    org = emulator.emulator.org
    base = f"/services/data/v{VERSION}/sobjects/Event"
    subrequests = [
        {
            "method": "PATCH",
            "url": f"{base}/{kept}",
            "referenceId": "rename",
            "body": {"Subject": "Doomed", "Concord_Link_Id__c": "doomed-link"},
        },
        {
            "method": "POST",
            "url": base,
            "referenceId": "fresh",
            "body": {
                "Subject": "Doomed too",
                "DurationInMinutes": 30,
                "ActivityDateTime": START.isoformat(),
            },
        },
        {
            "method": "PATCH",
            "url": f"{base}/{kept}",
            "referenceId": "bad",
            "body": {"NoSuchField__c": 1},
        },
    ]

    def second_write(records: list[Any]) -> bool:
        return any(r.fields["Subject"] == "Doomed too" for r in records)

    with holding(monkeypatch, org, "commit_records", second_write) as hold:
        composite, outcome = in_thread(
            lambda: client(emulator, token).restful(
                "composite",
                method="POST",
                json={"allOrNone": True, "compositeRequest": subrequests},
            )
        )
        assert hold.reached.wait(30)
        by_id = sf.Event.get(kept)
        everything = sf.query("SELECT Id, Subject FROM Event")["records"]
        by_link = sf.query("SELECT Id FROM Event WHERE Concord_Link_Id__c = 'doomed-link'")
        walked = sf.query("SELECT Id, Subject FROM Event ORDER BY SystemModstamp LIMIT 5")
        hold.release()
        answer = result_of(composite, outcome)
    assert hold.released_in_time, "the reader waited for the Composite"
    assert by_id["Subject"] == "Wide meeting 0"
    assert [(r["Id"], r["Subject"]) for r in everything] == [(kept, "Wide meeting 0")]
    assert by_link["totalSize"] == 0
    assert [r["Subject"] for r in walked["records"]] == ["Wide meeting 0"]
    assert [r["httpStatusCode"] for r in answer["compositeResponse"]] == [400, 400, 400]
    assert sf.Event.get(kept)["Subject"] == "Wide meeting 0"


# ---- writes and queries interleaved ------------------------------------------------------------


def test_interleaved_writes_and_queries_never_fail_and_read_whole_records(
    emulator: Running, sf: TypedSalesforce, token: dict[str, Any], http: requests.Session
) -> None:
    """Writers give Subject, Location and Description one value per write (a whole version has
    all three equal), create and delete records, and run all-or-none Composites that roll back
    (`Doomed`); readers scan, read through an index, walk by SystemModstamp and page, all at
    once. No call fails, every row read is one whole committed version, and the API usage the
    org counted is exactly the calls made."""
    ids = create_events(sf, 40, text="v-initial")
    # Enough rows that a scan spans thread switches, with writers adding and removing beside it.
    background = create_events(sf, 1500, text="v-background")
    owner = sf.query(f"SELECT OwnerId FROM Event WHERE Id = '{ids[0]}'")["records"][0]["OwnerId"]
    http.post(f"{emulator.url}/__admin/reset").raise_for_status()
    calls = [0]
    counted = threading.Lock()
    stop = threading.Event()
    problems: list[str] = []

    def count() -> None:
        with counted:
            calls[0] += 1

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        own = client(emulator, token)
        for step in range(40):
            text = f"v-{seed}-{step}"
            roll = rng.random()
            if roll < 0.6:
                own.Event.update(
                    rng.choice(ids), {"Subject": text, "Location": text, "Description": text}
                )
            elif roll < 0.8:
                created = create_events(own, 3, text=text)
                count()
                own.restful(
                    "composite/sobjects",
                    method="DELETE",
                    params={"ids": ",".join(created), "allOrNone": "true"},
                )
            else:
                doomed = [
                    {
                        "method": "PATCH",
                        "url": f"/services/data/v{VERSION}/sobjects/Event/{i}",
                        "referenceId": f"r{n}",
                        "body": {
                            "Subject": "Doomed",
                            "Location": "Doomed",
                            "Description": "Doomed",
                        },
                    }
                    for n, i in enumerate(rng.sample(ids, 3))
                ]
                doomed.append(
                    {"method": "GET", "url": "/services/data/nope", "referenceId": "fails"}
                )
                answer = own.restful(
                    "composite",
                    method="POST",
                    json={"allOrNone": True, "compositeRequest": doomed},
                )
                assert answer is not None
                assert all(r["httpStatusCode"] >= 400 for r in answer["compositeResponse"])
            count()

    def whole(rows: list[dict[str, Any]], where: str) -> None:
        for row in rows:
            values = {row["Subject"], row["Location"], row["Description"]}
            if len(values) != 1 or "Doomed" in values:
                problems.append(f"{where}: {row['Id']} read as {sorted(values)}")

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        own = client(emulator, token)
        fields = "Id, Subject, Location, Description"
        queries = [
            f"SELECT {fields} FROM Event",
            f"SELECT {fields} FROM Event WHERE OwnerId = '{owner}'",
            f"SELECT {fields} FROM Event WHERE Id IN ('{ids[0]}', '{ids[1]}', '{ids[2]}')",
            f"SELECT {fields} FROM Event ORDER BY SystemModstamp LIMIT 10",
        ]
        while not stop.is_set():
            soql = rng.choice(queries)
            page = own.query(soql, headers={"Sforce-Query-Options": "batchSize=200"})
            count()
            whole(page["records"], soql)
            record = own.Event.get(rng.choice(ids))
            count()
            whole([record], "retrieve")

    readers = [in_thread(functools.partial(reader, s)) for s in range(2)]
    writers = [in_thread(functools.partial(writer, s)) for s in range(100, 103)]
    for thread, outcome in writers:
        result_of(thread, outcome)
    stop.set()
    for thread, outcome in readers:
        result_of(thread, outcome)
    assert problems == []
    usage = http.get(f"{emulator.url}/__admin/calls").json()["apiUsage"]["used"]
    assert usage == calls[0]
    final = sf.query("SELECT Id, Subject, Location, Description FROM Event")["records"]
    assert sorted(r["Id"] for r in final) == sorted(ids + background)
    whole(final, "final")
    assert problems == []


def test_an_exhausted_limit_admits_exactly_the_allowed_calls_at_once(
    emulator: Running, token: dict[str, Any], http: requests.Session
) -> None:
    """Calls racing for the last of the daily allocation: exactly as many as are left pass."""
    http.post(f"{emulator.url}/__admin/reset").raise_for_status()
    http.post(f"{emulator.url}/__admin/settings", json={"daily_api_limit": 25}).raise_for_status()
    statuses: list[int] = []

    def caller() -> None:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(emulator.ca_cert)
        for _ in range(10):
            statuses.append(session.get(api(emulator, "limits"), headers=bearer(token)).status_code)

    threads = [in_thread(caller) for _ in range(4)]
    for thread, outcome in threads:
        result_of(thread, outcome)
    assert sorted(set(statuses)) == [200, 403]
    assert statuses.count(200) == 25


def test_a_page_of_an_open_cursor_is_served_once(
    emulator: Running, sf: TypedSalesforce, token: dict[str, Any]
) -> None:
    create_events(sf, 300)
    first = sf.query("SELECT Id FROM Event", headers={"Sforce-Query-Options": "batchSize=200"})
    locator = first["nextRecordsUrl"]
    results: list[Any] = []

    def fetch() -> None:
        try:
            results.append(len(client(emulator, token).query_more(locator, True)["records"]))
        except SalesforceError as error:
            results.append(error.status)

    threads = [in_thread(fetch) for _ in range(4)]
    for thread, outcome in threads:
        result_of(thread, outcome)
    assert sorted(results, key=str) == sorted([100, 400, 400, 400], key=str)
