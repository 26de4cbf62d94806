"""Google push: a Calendar watch channel POSTs to the HTTPS receiver, re-created before it
expires; Gmail's history id is polled; a POST with another token is refused."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from concord_google_emulator.testing import RunningEmulator, build_service
from concord_mail_connector.adapters.google import GoogleProvider
from concord_mail_connector.adapters.push_google import GoogleChangeFeed, NotificationReceiver
from concord_mail_connector.domain.model import Kind, MailboxAccount, Provider
from concord_mail_connector.domain.own_writes import ItemEvent
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import PushMode, WatchState

pytestmark = pytest.mark.integration


class Sink:
    def __init__(self) -> None:
        self.hints: list[tuple[frozenset[Kind], str]] = []
        self.states: list[WatchState] = []

    def changed(self, kinds: frozenset[Kind], hint: str, items: Sequence[ItemEvent] = ()) -> None:
        self.hints.append((kinds, hint))

    def state(self, state: WatchState) -> None:
        self.states.append(state)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("google")).start()
    yield emu
    emu.stop()


@pytest.fixture
async def receiver(
    tmp_path: Path, emulator: RunningEmulator
) -> AsyncIterator[NotificationReceiver]:
    made = NotificationReceiver("127.0.0.1", 0, tmp_path / "push", pubsub_token="pst")
    await made.start()
    emulator.admin("POST", "trust", {"ca_file": str(made.ca_file)})
    yield made
    await made.stop()


async def until(check: Any, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + within
    while not check():
        assert loop.time() < ends, "not within the time"
        await asyncio.sleep(0.02)


async def test_calendar_channel_and_gmail_history_become_hints_and_channels_are_replaced(
    emulator: RunningEmulator, receiver: NotificationReceiver
) -> None:
    key = emulator.service_account()
    address = emulator.add_user(f"p-{uuid.uuid4().hex[:8]}@concord.test")
    now = datetime.now(UTC)
    account = MailboxAccount(
        "p",
        address,
        Provider.GOOGLE,
        {"service_account_email": key["client_email"], "api_url": emulator.base},
        True,
        now,
        now,
        "e",
    )
    access = MailboxAccess(account, json.dumps(key).encode())
    provider = GoogleProvider(max_workers=2, ca_file=emulator.ca_file)
    feed = GoogleChangeFeed(
        provider, receiver, channel_seconds=1.0, renew_margin=0.5, gmail_poll_seconds=0.05
    )
    sink = Sink()
    task = asyncio.create_task(feed.watch(access, sink))
    try:
        await until(lambda: sink.hints[:1] == [(frozenset(), "subscribed")])
        assert sink.states[0].mode == PushMode.STREAMING
        calendar = build_service(emulator, key, "calendar", address)
        gmail = build_service(emulator, key, "gmail", address)
        event = {
            "summary": "pushed",
            "start": {"dateTime": "2031-06-02T10:00:00Z"},
            "end": {"dateTime": "2031-06-02T11:00:00Z"},
        }
        await asyncio.to_thread(calendar.events().insert(calendarId="primary", body=event).execute)
        await until(lambda: (frozenset({Kind.CALENDAR_ITEM}), "calendar-watch") in sink.hints)
        raw = "RnJvbTogYUBiLmMNClN1YmplY3Q6IHgNCg0KaGk="
        await asyncio.to_thread(
            gmail.users().messages().insert(userId="me", body={"raw": raw}).execute
        )
        await until(lambda: (frozenset({Kind.EMAIL}), "gmail-history") in sink.hints)
        # The channel lives a second: a new one replaces it half a second before.
        await until(lambda: (frozenset(), "resubscribed") in sink.hints, within=5)
        calendar.close()
        gmail.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await provider.close()
    # Replaced channels are stopped, not left to run out: at most the last one is left.
    assert len(emulator.emulator.calendar.channels) <= 1
    assert emulator.admin("DELETE", "violations") == []


async def test_a_post_with_another_token_is_refused(receiver: NotificationReceiver) -> None:
    hits: list[str] = []
    receiver.register("chan-1", "right", lambda: hits.append("changed"))
    context = ssl.create_default_context(cafile=str(receiver.ca_file))

    def post(token: str, state: str) -> int:
        request = urllib.request.Request(receiver.address, data=b"", method="POST")
        request.add_header("X-Goog-Channel-ID", "chan-1")
        request.add_header("X-Goog-Channel-Token", token)
        request.add_header("X-Goog-Resource-State", state)
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert await asyncio.to_thread(post, "wrong", "exists") == 403
    assert await asyncio.to_thread(post, "right", "sync") == 200
    assert hits == []
    assert await asyncio.to_thread(post, "right", "exists") == 200
    assert hits == ["changed"]


async def test_gmail_pushes_through_users_watch_and_pubsub_where_a_topic_is_set(
    emulator: RunningEmulator, receiver: NotificationReceiver
) -> None:
    topic = f"projects/concord/topics/gmail-{uuid.uuid4().hex[:6]}"
    emulator.admin("POST", "pubsub", {"topic": topic, "push_endpoint": receiver.pubsub_address})
    key = emulator.service_account()
    address = emulator.add_user(f"w-{uuid.uuid4().hex[:8]}@concord.test")
    now = datetime.now(UTC)
    account = MailboxAccount(
        "w",
        address,
        Provider.GOOGLE,
        {"service_account_email": key["client_email"], "api_url": emulator.base},
        True,
        now,
        now,
        "e",
    )
    provider = GoogleProvider(max_workers=2, ca_file=emulator.ca_file)
    # Polling would take an hour: a hint within seconds can only be the push.
    feed = GoogleChangeFeed(provider, receiver, gmail_poll_seconds=3600, gmail_topic=topic)
    sink = Sink()
    task = asyncio.create_task(feed.watch(MailboxAccess(account, json.dumps(key).encode()), sink))
    try:
        await until(lambda: sink.hints[:1] == [(frozenset(), "subscribed")])
        gmail = build_service(emulator, key, "gmail", address)
        raw = "RnJvbTogYUBiLmMNClN1YmplY3Q6IHgNCg0KaGk="
        await asyncio.to_thread(
            gmail.users().messages().insert(userId="me", body={"raw": raw}).execute
        )
        await until(lambda: (frozenset({Kind.EMAIL}), "gmail-watch") in sink.hints)
        gmail.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await provider.close()
    assert emulator.admin("DELETE", "violations") == []


async def test_a_pubsub_push_needs_the_token_and_a_foreign_message_is_acknowledged(
    receiver: NotificationReceiver,
) -> None:
    context = ssl.create_default_context(cafile=str(receiver.ca_file))

    def post(url: str, body: bytes) -> int:
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    wrong = receiver.pubsub_address.replace("token=pst", "token=nope")
    assert await asyncio.to_thread(post, wrong, b"{}") == 403
    assert await asyncio.to_thread(post, receiver.pubsub_address, b"not json") == 204
    assert receiver.received == 0
