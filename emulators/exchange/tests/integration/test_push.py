"""Push subscriptions: the emulator POSTs SendNotification to the client's URL (issue #15)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
from exchangelib import Account, Message  # type: ignore[import-untyped]
from exchangelib.errors import ErrorInvalidSubscription  # type: ignore[import-untyped]
from lxml import etree

from concord_exchange_emulator import schema
from concord_exchange_emulator.xmlns import M, S, T

pytestmark = pytest.mark.integration


class _Client(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []
    answer = "OK"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(body)
        reply = (
            f'<s:Envelope xmlns:s="{S}"><s:Body><m:SendNotificationResult xmlns:m="{M}">'
            f"<m:SubscriptionStatus>{type(self).answer}</m:SubscriptionStatus>"
            "</m:SendNotificationResult></s:Body></s:Envelope>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/xml")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def client_url() -> Iterator[str]:
    _Client.received = []
    _Client.answer = "OK"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Client)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ews-push"
    server.shutdown()
    server.server_close()


def _wait_for(count: int) -> list[etree._Element]:
    deadline = time.monotonic() + 10
    while len(_Client.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [etree.fromstring(body) for body in _Client.received]


def test_events_are_pushed_until_the_client_unsubscribes(account: Account, client_url: str) -> None:
    subscription_id, watermark = account.drafts.subscribe_to_push(callback_url=client_url)
    assert watermark
    with pytest.raises(ErrorInvalidSubscription):
        account.drafts.unsubscribe(subscription_id)
    Message(account=account, folder=account.drafts, subject="pushed").save()
    # A StatusEvent may come first (Exchange sends them on its own): the create is among them.
    deadline = time.monotonic() + 10
    created: list[etree._Element] = []
    while not created and time.monotonic() < deadline:
        created = [n for n in _wait_for(1) if n.find(f".//{{{T}}}CreatedEvent") is not None]
        time.sleep(0.05)
    assert created, "no CreatedEvent pushed"
    for notification in _wait_for(1):
        body = notification.find(f"{{{S}}}Body")
        assert body is not None
        assert schema.validation_errors(body[0]) == []
    _Client.answer = "Unsubscribe"
    before = len(_Client.received)
    Message(account=account, folder=account.drafts, subject="last").save()
    _wait_for(before + 1)
    answered = len(_Client.received)
    assert answered > before
    Message(account=account, folder=account.drafts, subject="not pushed").save()
    time.sleep(0.6)
    # The client answered Unsubscribe: nothing more is posted.
    assert len(_Client.received) == answered
