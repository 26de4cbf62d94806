"""The EWS watch's catch-up hints (#17 case 7), with its EWS calls scripted: every start of a
subscription and every reconnection after a broken stream sends exactly one; a connection the
server closed on time, or a reconnection attempt that fails, sends none."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import pytest
from exchangelib.errors import ErrorTimeoutExpired  # type: ignore[import-untyped]

from concord_mail_connector.adapters import push_exchange
from concord_mail_connector.adapters.push_exchange import ExchangeChangeFeed
from concord_mail_connector.domain.model import Kind, MailboxAccount, Provider
from concord_mail_connector.domain.own_writes import ItemEvent
from concord_mail_connector.domain.provider import MailboxAccess
from concord_mail_connector.domain.push import PushMode, WatchState

pytestmark = pytest.mark.unit

# One scripted streaming connection: called with the watch, it returns (the server closed the
# connection on time) or raises (the connection broke).
Connection = Callable[[object], Awaitable[None]]


class Sink:
    def __init__(self) -> None:
        self.hints: list[tuple[frozenset[Kind], str]] = []
        self.states: list[WatchState] = []

    def changed(self, kinds: frozenset[Kind], hint: str, items: Sequence[ItemEvent] = ()) -> None:
        self.hints.append((kinds, hint))

    def state(self, state: WatchState) -> None:
        self.states.append(state)

    @property
    def catch_ups(self) -> list[str]:
        return [hint for kinds, hint in self.hints if not kinds]


def _access() -> MailboxAccess:
    account = MailboxAccount(
        mailbox="m1",
        address="m1@example.test",
        provider=Provider.EXCHANGE_EWS,
        settings={},
        has_secret=False,
        secret_update_time=None,
        update_time=datetime.now(UTC),
        etag="1",
    )
    return MailboxAccess(account, None)


async def _watch(
    monkeypatch: pytest.MonkeyPatch,
    connections: list[Connection],
    *,
    subscribe_failures: int = 0,
) -> Sink:
    """Run one watch over the scripted connections (then a connection that never ends), on a
    stubbed subscription, until every script has been played; its sink."""
    sink = Sink()
    played = asyncio.Event()
    script = list(connections)
    failing = [subscribe_failures]
    subscribed: list[int] = []

    def subscribe(self: push_exchange._MailboxWatch) -> str:
        if failing[0]:
            failing[0] -= 1
            raise ErrorTimeoutExpired("server away")
        self.account = object()
        self.folders = push_exchange._Folders({"cal": Kind.CALENDAR_ITEM}, [], missing=False)
        subscribed.append(1)
        return f"sub-{len(subscribed)}"

    async def stream(self: push_exchange._MailboxWatch, subscription: str, ends: datetime) -> bool:
        if not script:
            played.set()
            await asyncio.Event().wait()
        await script.pop(0)(self)
        return False

    monkeypatch.setattr(push_exchange._MailboxWatch, "_subscribe_streaming", subscribe)
    monkeypatch.setattr(push_exchange._MailboxWatch, "_stream_until_folders_appear", stream)
    monkeypatch.setattr(push_exchange._MailboxWatch, "_forget", lambda self, subscription: None)
    feed = ExchangeChangeFeed(max_back_off=0.01, healthy_stream_seconds=0.0, sessions=1)
    task = asyncio.create_task(feed.watch(_access(), sink))
    try:
        async with asyncio.timeout(5):
            await played.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return sink


async def _held_then_closed(watch: object) -> None:
    """A connection that stayed up (the watch saw it healthy), closed by the server on time."""
    assert isinstance(watch, push_exchange._MailboxWatch)
    watch._healthy(PushMode.STREAMING, datetime.now(UTC))


async def _broken(watch: object) -> None:
    raise ConnectionResetError("connection reset by peer")


async def _held_then_broken(watch: object) -> None:
    await _held_then_closed(watch)
    raise ConnectionResetError("connection reset by peer")


async def test_the_first_subscription_sends_one_catch_up_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = await _watch(monkeypatch, [_held_then_closed])
    assert sink.catch_ups == ["subscribed"]


async def test_a_subscription_made_after_the_server_came_back_sends_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three failed Subscribe calls (the server was away when the watch started): no hint for
    # them, one once the subscription is held.
    sink = await _watch(monkeypatch, [_held_then_closed], subscribe_failures=3)
    assert sink.catch_ups == ["subscribed"]


async def test_a_connection_closed_on_time_reconnects_without_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Exchange ends every connection at its timeout, having sent everything: no gap to catch up.
    sink = await _watch(monkeypatch, [_held_then_closed] * 3)
    assert sink.catch_ups == ["subscribed"]


async def test_a_broken_connection_sends_one_catch_up_hint_once_a_reconnection_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Broken after it held; then two reconnections that break at once (the server is away,
    # each counted as a young failure but short of falling back to pull); then one that holds.
    # Events written to the broken connection were lost with it: one hint, not one per attempt.
    sink = await _watch(
        monkeypatch,
        [_held_then_broken, _broken, _held_then_closed, _held_then_closed],
    )
    assert sink.catch_ups == ["subscribed", "reconnected"]


async def test_each_broken_connection_that_is_recovered_sends_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = await _watch(monkeypatch, [_held_then_broken, _held_then_broken, _held_then_closed])
    assert sink.catch_ups == ["subscribed", "reconnected", "reconnected"]
