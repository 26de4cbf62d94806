"""Graph push against the Graph emulator: subscriptions validated by the real webhook receiver,
notifications turned into hints, lifecycle events, renewal, refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest

from concord_graph_emulator.testing import RunningEmulator
from concord_mail_connector.adapters.graph import GraphProvider
from concord_mail_connector.adapters.push_graph import GraphChangeFeed, GraphWebhook
from concord_mail_connector.domain.model import Kind, MailboxAccount, Provider
from concord_mail_connector.domain.own_writes import ItemEvent
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import PushMode, WatchState
from concord_testing import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("graph")).start()
    yield emu
    emu.stop()


class Sink:
    def __init__(self) -> None:
        self.changes: list[tuple[float, frozenset[Kind], str]] = []
        self.states: list[WatchState] = []

    def changed(self, kinds: frozenset[Kind], hint: str, items: Sequence[ItemEvent] = ()) -> None:
        self.changes.append((time.monotonic(), kinds, hint))

    def state(self, state: WatchState) -> None:
        self.states.append(state)

    async def wait(self, predicate: Any, within: float = 5.0) -> None:
        ends = time.monotonic() + within
        while not predicate():
            assert time.monotonic() < ends, f"timed out; changes={self.changes}"
            await asyncio.sleep(0.02)


class Watched:
    def __init__(self, emulator: RunningEmulator, webhook: GraphWebhook, **feed: Any) -> None:
        self.emulator = emulator
        self.app = emulator.new_app()
        self.address = emulator.new_mailbox("push")
        self.provider = GraphProvider(max_back_off=2, ca_bundle=emulator.ca_cert)
        self.feed = GraphChangeFeed(self.provider, webhook, max_back_off=0.2, **feed)
        self.webhook = webhook
        now = dt.datetime.now(dt.UTC)
        settings = {
            "tenant_id": self.app.tenant_id,
            "client_id": self.app.client_id,
            "authority_url": emulator.base,
            "graph_url": emulator.graph_url,
        }
        account = MailboxAccount(
            self.address.split("@")[0], self.address, Provider.GRAPH, settings, True, now, now, "e"
        )
        self.access = MailboxAccess(account, self.app.client_secret.encode())
        self.sink = Sink()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.feed.watch(self.access, self.sink))

    def subscriptions(self) -> list[dict[str, Any]]:
        listed = self.emulator.admin("GET", "subscriptions")["value"]
        return [s for s in listed if self.address in s["resource"]]

    async def create_event(self) -> None:
        body = {
            "subject": "Pushed",
            "start": {"dateTime": "2031-06-02T08:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-06-02T09:00:00", "timeZone": "UTC"},
        }
        await self.provider._send(self.access, "POST", f"users/{self.address}/events", None, body)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task
        await self.provider.close()


@pytest.fixture
async def webhook() -> AsyncIterator[GraphWebhook]:
    port = free_port()
    made = GraphWebhook(f"http://127.0.0.1:{port}")
    await made.start("127.0.0.1", port)
    yield made
    await made.stop()


@pytest.fixture
async def watched(emulator: RunningEmulator, webhook: GraphWebhook) -> AsyncIterator[Watched]:
    made = Watched(emulator, webhook)
    made.start()
    await made.sink.wait(lambda: any(h == "subscribed" for _, _, h in made.sink.changes))
    yield made
    await made.stop()


async def test_each_kind_is_subscribed_through_the_validation_handshake(watched: Watched) -> None:
    subs = watched.subscriptions()
    assert len(subs) == 4
    assert {s["clientState"] is not None for s in subs} == {True}
    assert watched.sink.states[-1].mode == PushMode.STREAMING
    assert watched.sink.states[-1].kinds == frozenset(Kind)


async def test_a_change_becomes_a_hint_for_its_kind(watched: Watched) -> None:
    before = len(watched.sink.changes)
    started = time.monotonic()
    await watched.create_event()
    await watched.sink.wait(lambda: len(watched.sink.changes) > before)
    at, kinds, hint = watched.sink.changes[-1]
    assert (kinds, hint) == (frozenset({Kind.CALENDAR_ITEM}), "graph")
    assert at - started < 1.0


async def test_a_wrong_client_state_is_refused(watched: Watched) -> None:
    sub = watched.subscriptions()[0]
    before = len(watched.sink.changes)
    forged = {
        "value": [{"subscriptionId": sub["id"], "clientState": "guess", "changeType": "created"}]
    }
    async with httpx.AsyncClient() as client:
        answer = await client.post(watched.webhook.notification_url, json=forged)
        unknown = await client.post(
            watched.webhook.notification_url,
            json={"value": [{"subscriptionId": "nope", "clientState": "x"}]},
        )
        garbage = await client.post(watched.webhook.notification_url, content=b"{not json")
    assert (answer.status_code, unknown.status_code, garbage.status_code) == (202, 202, 202)
    await asyncio.sleep(0.1)
    assert len(watched.sink.changes) == before
    assert watched.webhook.refused == {
        "wrong clientState": 1,
        "unknown subscription": 1,
        "malformed": 1,
    }


async def test_a_removed_subscription_is_made_again_with_a_catch_up(watched: Watched) -> None:
    first = {s["id"] for s in watched.subscriptions()}
    victim = sorted(first)[0]
    watched.emulator.admin(
        "POST", f"subscriptions/{victim}/lifecycle", {"event": "subscriptionRemoved"}
    )
    await watched.sink.wait(
        lambda: sum(1 for _, _, h in watched.sink.changes if h == "subscribed") == 2
    )
    again = {s["id"] for s in watched.subscriptions()}
    assert len(again) == 4
    assert victim not in again


async def test_missed_notifications_become_a_catch_up_hint(watched: Watched) -> None:
    sub = watched.subscriptions()[0]
    watched.emulator.admin("POST", f"subscriptions/{sub['id']}/lifecycle", {"event": "missed"})
    await watched.sink.wait(lambda: watched.sink.changes[-1][1:] == (frozenset(), "missed"))


async def test_subscriptions_are_renewed_before_they_expire(
    emulator: RunningEmulator, webhook: GraphWebhook
) -> None:
    made = Watched(
        emulator, webhook, lifetime=dt.timedelta(seconds=4), renew_before=dt.timedelta(seconds=2)
    )
    made.start()
    try:
        await made.sink.wait(lambda: len(made.subscriptions()) == 4)
        first = {s["id"]: s["expirationDateTime"] for s in made.subscriptions()}

        def extended() -> bool:
            now = {s["id"]: s["expirationDateTime"] for s in made.subscriptions()}
            # The same subscriptions, each extended (never re-made).
            return set(now) == set(first) and all(now[i] > first[i] for i in first)

        await made.sink.wait(extended, within=6)
    finally:
        await made.stop()


async def test_an_unreachable_receiver_degrades_the_watch_with_the_reason(
    emulator: RunningEmulator,
) -> None:
    nowhere = GraphWebhook(f"http://127.0.0.1:{free_port()}")
    made = Watched(emulator, nowhere)
    made.start()
    try:
        await made.sink.wait(
            lambda: any(s.mode == PushMode.DEGRADED for s in made.sink.states), within=8
        )
        degraded = next(s for s in made.sink.states if s.mode == PushMode.DEGRADED)
        assert degraded.reason == "ValidationError"
        assert made.subscriptions() == []
    finally:
        await made.stop()
