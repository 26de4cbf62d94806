"""A small Salesforce call beside a big query, against the emulator as its own process.

Salesforce serves one client's short call while another's long query runs; so must the
emulator, or a change waits for someone else's first sync (issue #18). Printed, in one run:
the latency of a one-row query and of a one-record PATCH alone, and while another client asks
for a query of 2,000 wide Events (every field) over and over, with the big query's own
duration beside them (the big query's client reads the bytes and parses nothing, so that it
takes no time from the small one's). Never gated on times.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from benchmarks.test_bench_crm import START, Emulator, login
from benchmarks.test_bench_crm import emulator as emulator  # the fixture

pytestmark = pytest.mark.integration

ROWS = 2000
ALONE = 50


def wide_event(n: int) -> dict[str, Any]:
    start = START + timedelta(minutes=30 * n)
    return {
        "attributes": {"type": "Event"},
        "Subject": f"Wide meeting {n}",
        "StartDateTime": start.isoformat(),
        "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
        "Location": f"Room {n % 40}",
        "Description": f"Agenda {n}: " + "the quarterly numbers, line by line. " * 40,
        "ShowAs": "Busy",
    }


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def beside(big: Callable[[], object], small: Callable[[], object], count: int) -> list[float]:
    """Latencies of `count` small calls made one after another while another client asks for
    the big query again and again (the emulator is serving it nearly all the time)."""
    stop = threading.Event()
    served = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            big()
            served.set()

    worker = threading.Thread(target=keep_asking)
    worker.start()
    try:
        served.wait(timeout=60)
        return [timed(small) for _ in range(count)]
    finally:
        stop.set()
        worker.join()


def test_bench_small_call_beside_big_query(emulator: Emulator) -> None:
    writer = login(emulator)
    created: list[str] = []
    for start in range(0, ROWS, 200):
        results = writer.restful(
            "composite/sobjects",
            method="POST",
            json={"allOrNone": True, "records": [wide_event(n) for n in range(start, start + 200)]},
        )
        assert results is not None
        assert all(r["success"] for r in results)
        created += [r["id"] for r in results]
    first = created[0]
    described = writer.restful("sobjects/Event/describe")
    assert described is not None
    names = [f["name"] for f in described["fields"]]
    big_client, small_client = login(emulator), login(emulator)
    big_soql = f"SELECT {', '.join(names)} FROM Event WHERE Subject LIKE 'Wide meeting%'"
    small_soql = f"SELECT Id, Subject FROM Event WHERE Id = '{first}'"

    def big() -> None:
        # The bytes only: parsing 2,000 rows here would take this process's GIL from the
        # small client and be counted against the emulator.
        response = big_client.session.get(
            f"{big_client.base_url}query", params={"q": big_soql}, headers=big_client.headers
        )
        assert response.status_code == 200
        assert len(response.content) > ROWS * 1000

    def small_query() -> None:
        assert small_client.query(small_soql)["totalSize"] == 1

    count = iter(range(10**9))

    def small_patch() -> None:
        small_client.restful(
            f"sobjects/Event/{first}", method="PATCH", json={"Location": f"Room {next(count)}"}
        )

    big_alone = [timed(big) for _ in range(3)]
    print()
    print(f"Salesforce emulator (own process): query of {ROWS} wide Events (every field)")
    print(f"  big query alone: median {statistics.median(big_alone) * 1000:.0f} ms")
    print(
        f"{'small call':>10} {'alone p50':>10} {'mean':>7}"
        f" {'beside p50':>11} {'p90':>7} {'max':>7} {'mean':>7} {'mean ratio':>11}"
    )
    for name, small in (("query", small_query), ("PATCH", small_patch)):
        alone = sorted(timed(small) for _ in range(ALONE))
        during = sorted(beside(big, small, ALONE))
        print(
            f"{name:>10} {ms(statistics.median(alone)):>10} {ms(statistics.fmean(alone)):>7}"
            f" {ms(statistics.median(during)):>11} {ms(during[int(len(during) * 0.9)]):>7}"
            f" {ms(during[-1]):>7} {ms(statistics.fmean(during)):>7}"
            f" {statistics.fmean(during) / statistics.fmean(alone):>10.1f}x"
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"
