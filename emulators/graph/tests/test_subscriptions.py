"""Subscriptions: the validation handshake, change and lifecycle notifications, all as real
HTTP POSTs to a receiver."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Graph, check

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook receiver: echoes validation tokens (unless told not to), records the rest."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.validations = 0
        self.refuse = False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if "validationToken" in query:
                    outer.validations += 1
                    token = b"wrong" if outer.refuse else query["validationToken"][0].encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(token)))
                    self.end_headers()
                    self.wfile.write(token)
                    return
                outer.received += json.loads(body)["value"]
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def _subscribe(graph: Graph, receiver: Receiver, **extra: Any) -> Any:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    return graph.http.post(
        "/subscriptions",
        json={
            "changeType": "created,updated,deleted",
            "notificationUrl": receiver.url,
            "lifecycleNotificationUrl": receiver.url,
            "resource": f"users/{graph.address}/events",
            "expirationDateTime": expires.isoformat().replace("+00:00", "Z"),
            "clientState": "secret-state",
            **extra,
        },
    )


def test_a_subscription_is_validated_then_notifies_each_change(
    graph: Graph, receiver: Receiver
) -> None:
    made = _subscribe(graph, receiver)
    assert made.status_code == 201, made.text
    assert receiver.validations == 2  # the notification URL and the lifecycle URL
    event = graph.event()
    graph.http.patch(f"{graph.user}/events/{event['id']}", json={"subject": "x"})
    got = receiver.wait_for(2)
    assert [(n["changeType"], n["clientState"]) for n in got] == [
        ("created", "secret-state"),
        ("updated", "secret-state"),
    ]
    assert got[0]["resourceData"]["id"] == event["id"]
    # In the shape of Graph's published changeNotification.
    assert [check(n, "ChangeNotification") for n in got] == [[], []]
    assert got[0]["subscriptionId"] == made.json()["id"]


def test_a_receiver_that_fails_validation_gets_no_subscription(
    graph: Graph, receiver: Receiver
) -> None:
    receiver.refuse = True
    answer = _subscribe(graph, receiver)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ValidationError"
    assert graph.http.get("/subscriptions").json()["value"] == []


def test_too_long_a_lifetime_is_refused_and_renewal_extends(
    graph: Graph, receiver: Receiver
) -> None:
    too_long = (dt.datetime.now(dt.UTC) + dt.timedelta(days=8)).isoformat()
    assert _subscribe(graph, receiver, expirationDateTime=too_long).status_code == 400
    made = _subscribe(graph, receiver).json()
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    renewed = graph.http.patch(
        f"/subscriptions/{made['id']}", json={"expirationDateTime": later.isoformat()}
    )
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_lifecycle_notifications_and_a_removed_subscription(
    graph: Graph, receiver: Receiver
) -> None:
    made = _subscribe(graph, receiver).json()
    graph.emu.admin("POST", f"subscriptions/{made['id']}/lifecycle", {"event": "missed"})
    graph.emu.admin(
        "POST", f"subscriptions/{made['id']}/lifecycle", {"event": "subscriptionRemoved"}
    )
    got = receiver.wait_for(2)
    assert [n["lifecycleEvent"] for n in got] == ["missed", "subscriptionRemoved"]
    assert [check(n, "ChangeNotification") for n in got] == [[], []]
    assert graph.http.get(f"/subscriptions/{made['id']}").status_code == 404
    graph.event()
    time.sleep(0.2)
    assert len(receiver.received) == 2  # nothing more after removal


def test_an_expired_subscription_is_gone(graph: Graph, receiver: Receiver) -> None:
    made = _subscribe(graph, receiver).json()
    graph.emu.admin("POST", f"subscriptions/{made['id']}/expire")
    graph.event()
    time.sleep(0.2)
    assert receiver.received == []
    assert graph.http.get(f"/subscriptions/{made['id']}").status_code == 404
