"""`$batch`, throttling (faults and the mailbox concurrency limit), lost answers."""

from __future__ import annotations

import base64
import concurrent.futures
from typing import Any

import pytest

from .conftest import Graph

pytestmark = pytest.mark.integration


def _create(n: int) -> dict[str, Any]:
    return {
        "id": str(n),
        "method": "POST",
        "url": "/users/{user}/events",
        "headers": {"Content-Type": "application/json"},
        "body": {
            "subject": f"b{n}",
            "start": {"dateTime": "2031-06-02T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-06-02T11:00:00", "timeZone": "UTC"},
        },
    }


def _batch(graph: Graph, requests: list[dict[str, Any]]) -> Any:
    for req in requests:
        req["url"] = req["url"].replace("{user}", graph.address)
    return graph.http.post("/$batch", json={"requests": requests})


def test_a_batch_answers_each_request_by_id(graph: Graph) -> None:
    mid = graph.deliver("inbox", b"Subject: s\r\n\r\nbody\r\n")
    answer = _batch(
        graph,
        [
            _create(1),
            {"id": "2", "method": "GET", "url": "/users/{user}/events/nope"},
            {"id": "3", "method": "GET", "url": f"/users/{{user}}/messages/{mid}/$value"},
        ],
    )
    assert answer.status_code == 200
    by_id = {r["id"]: r for r in answer.json()["responses"]}
    assert by_id["1"]["status"] == 201
    assert by_id["1"]["body"]["subject"] == "b1"
    assert by_id["2"]["status"] == 404
    # Content that is not JSON travels base64-encoded.
    assert base64.b64decode(by_id["3"]["body"]) == b"Subject: s\r\n\r\nbody\r\n"


def test_more_than_twenty_requests_are_refused(graph: Graph) -> None:
    answer = _batch(graph, [_create(n) for n in range(21)])
    assert answer.status_code == 400
    assert graph.http.get(f"{graph.user}/events").json()["value"] == []


def test_a_throttle_fault_is_429_with_retry_after(graph: Graph) -> None:
    graph.emu.admin("POST", "faults", {"kind": "throttle", "operation": "read", "retry_after": 3})
    answer = graph.http.get(f"{graph.user}/events")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3"
    assert graph.http.get(f"{graph.user}/events").status_code == 200
    graph.emu.admin("POST", "faults", {"kind": "unavailable", "retry_after": 2})
    assert graph.http.get(f"{graph.user}/events").status_code == 503


def test_a_throttled_sub_request_is_429_inside_the_batch(graph: Graph) -> None:
    graph.emu.admin("POST", "faults", {"kind": "throttle", "operation": "create"})
    answer = _batch(graph, [_create(1), _create(2)])
    statuses = [r["status"] for r in answer.json()["responses"]]
    assert statuses == [429, 201]
    assert answer.json()["responses"][0]["headers"]["Retry-After"] == "1"


def test_a_dropped_answer_is_applied_and_lost(graph: Graph) -> None:
    graph.emu.admin("POST", "faults", {"kind": "drop_response", "operation": "create"})
    answer = _batch(graph, [_create(1), _create(2)])
    assert answer.status_code == 504
    listed = graph.http.get(f"{graph.user}/events").json()["value"]
    assert sorted(e["subject"] for e in listed) == ["b1", "b2"]


def test_more_than_four_concurrent_requests_per_mailbox_are_throttled(graph: Graph) -> None:
    graph.emu.admin(
        "POST", "faults", {"kind": "latency", "operation": "read", "times": 8, "latency_ms": 300}
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: graph.http.get(f"{graph.user}/events").status_code, range(8))
        )
    assert statuses.count(200) >= 4
    assert 429 in statuses
    calls = graph.emu.admin("GET", "calls")
    assert calls["max_in_flight"][graph.address] > 4
