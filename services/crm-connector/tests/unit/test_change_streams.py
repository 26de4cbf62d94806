"""The change streams' promises: hints before replay ids, one org per lease, expired replays
resynced, failures retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from concord_crm_connector.changes.model import (
    ChangeEvent,
    CrmHint,
    StreamMode,
    StreamReport,
    StreamState,
    observed,
)
from concord_crm_connector.changes.ports import ChangeBatch, ReplayTooOld
from concord_crm_connector.changes.streams import ChangeStreams

pytestmark = pytest.mark.unit

CHANNEL = "/data/EventChangeEvent"
ANN = "005000000000001AAA"


COMMITTED = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _event(n: int, owner: str = ANN) -> ChangeEvent:
    return ChangeEvent(
        CHANNEL,
        bytes([n]),
        "Event",
        "CREATE",
        (f"00U{n}",),
        owner_id=owner,
        commit_time=COMMITTED + timedelta(seconds=n),
    )


@dataclass
class World:
    """Salesforce's stream, the store, NATS and the lease, in memory; one journal of effects."""

    batches: list[list[ChangeEvent]] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)
    replays: dict[tuple[str, str], bytes] = field(default_factory=dict)
    hints: list[CrmHint] = field(default_factory=list)
    expired: bool = False
    failures: int = 0
    others_hold: set[str] = field(default_factory=set)
    subscribed_from: list[bytes | None] = field(default_factory=list)
    reported: list[tuple[str, StreamState]] = field(default_factory=list)

    async def subscribe(
        self, org: str, channel: str, replay_id: bytes | None
    ) -> AsyncIterator[ChangeBatch]:
        self.subscribed_from.append(replay_id)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("stream reset")
        if self.expired and replay_id is not None:
            self.expired = False
            raise ReplayTooOld(replay_id.hex())
        while self.batches:
            events = self.batches.pop(0)
            yield ChangeBatch(events, events[-1].replay_id)
        await asyncio.sleep(3600)  # an open stream with nothing to say
        yield ChangeBatch()

    async def get(self, org: str, channel: str) -> bytes | None:
        return self.replays.get((org, channel))

    async def put(self, org: str, channel: str, replay_id: bytes) -> None:
        self.journal.append(f"replay {replay_id.hex()}")
        self.replays[(org, channel)] = replay_id

    async def owners(self, org: str, ids_by_type: Mapping[str, Sequence[str]]) -> dict[str, str]:
        return {}

    async def publish(self, hint: CrmHint) -> None:
        self.journal.append(f"hint {','.join(hint.record_ids) or hint.reason}")
        self.hints.append(hint)

    async def report(self, org: str, state: StreamState) -> None:
        self.reported.append((org, state))

    async def hold(self, org: str) -> bool:
        return org not in self.others_hold

    async def release(self, org: str) -> None:
        self.journal.append(f"release {org}")


@dataclass
class Reports:
    world: World

    async def put(self, org: str, state: StreamState) -> None:
        await self.world.report(org, state)

    async def get(self, org: str) -> StreamReport | None:  # pragma: no cover - write side only
        raise AssertionError("the streams only write reports")


def _streams(world: World, orgs: Sequence[str] = ("acme",)) -> ChangeStreams:
    async def connected() -> Sequence[str]:
        return orgs

    return ChangeStreams(
        connected,
        world,
        world,
        world,
        world,
        world,
        reports=Reports(world),
        channels=[CHANNEL],
        rescan_seconds=3600,
        retry_base_seconds=0.01,
        retry_max_seconds=0.02,
    )


async def _until(check: Callable[[], object], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling in-memory state the streams change
            await asyncio.sleep(0.005)


async def test_each_batch_hints_before_its_replay_id_is_kept() -> None:
    world = World(batches=[[_event(1), _event(2)], [_event(3)]])
    streams = _streams(world)
    await streams.rescan()
    await _until(lambda: len(world.journal) == 5)
    # The first stream marks the org as streamed (without a position yet) before anything else.
    assert world.journal == ["replay ", "hint 00U1,00U2", "replay 02", "hint 00U3", "replay 03"]
    state = streams.state("acme")
    assert state is not None
    assert state.mode is StreamMode.STREAMING
    await streams.stop()
    # A restart resumes after the last batch handled.
    again = World(replays=dict(world.replays))
    restarted = _streams(again)
    await restarted.rescan()
    await _until(lambda: again.subscribed_from)
    assert again.subscribed_from == [b"\x03"]
    await restarted.stop()


async def test_an_expired_replay_id_syncs_the_whole_org_and_starts_from_now() -> None:
    world = World(replays={("acme", CHANNEL): b"\x07"}, expired=True)
    streams = _streams(world)
    await streams.rescan()
    await _until(lambda: len(world.subscribed_from) == 2)
    assert [h.everyone for h in world.hints] == [True]
    assert "replay id expired" in world.hints[0].reason
    assert world.subscribed_from == [b"\x07", None]
    # The dashboard keeps why every mailbox synced.
    state = streams.state("acme")
    assert state is not None
    assert state.resync_reason == f"{CHANNEL}: replay id expired"
    assert state.resync_time is not None
    assert world.reported[-1][1].resync_reason == state.resync_reason
    await streams.stop()


async def test_a_run_that_died_before_its_first_replay_id_makes_the_next_sync_everyone() -> None:
    first = World()
    streams = _streams(first)
    await streams.rescan()
    await _until(lambda: first.subscribed_from)
    assert first.hints == []  # an org's very first stream has nothing to catch up
    await streams.stop()  # as good as killed: no event or keepalive gave it a position
    assert first.replays == {("acme", CHANNEL): b""}

    second = World(replays=dict(first.replays), batches=[[_event(4)]])
    restarted = _streams(second)
    await restarted.rescan()
    await _until(lambda: len(second.hints) == 2)
    assert [(h.everyone, h.reason) for h in second.hints] == [
        (True, f"{CHANNEL}: resumed without a replay id"),
        (False, ""),
    ]
    assert second.subscribed_from == [None]
    await restarted.stop()
    # Once a position is kept, a restart resumes from it and hints no one extra.
    third = World(replays=dict(second.replays))
    again = _streams(third)
    await again.rescan()
    await _until(lambda: third.subscribed_from)
    assert (third.subscribed_from, third.hints) == ([b"\x04"], [])
    await again.stop()


async def test_another_replicas_org_is_left_to_it() -> None:
    world = World(batches=[[_event(1)]], others_hold={"globex"})
    streams = _streams(world, orgs=("acme", "globex"))
    await streams.rescan()
    await _until(lambda: world.hints)
    globex = streams.state("globex")
    assert globex is not None
    assert globex.mode is StreamMode.STANDBY
    assert len(world.subscribed_from) == 1
    await streams.stop()


async def test_a_failing_stream_is_retried_and_reports_why_meanwhile() -> None:
    world = World(batches=[[_event(5)]], failures=2)
    streams = _streams(world)
    await streams.rescan()
    await _until(lambda: world.hints)
    assert len(world.subscribed_from) == 3
    state = streams.state("acme")
    assert state is not None
    assert state.mode is StreamMode.STREAMING
    await streams.stop()
    assert world.journal[-1] == "release acme"


async def test_the_dashboard_hears_each_change_of_mode_at_once_and_the_lag_on_each_report() -> None:
    handled = COMMITTED + timedelta(seconds=10)
    world = World(batches=[[_event(1), _event(2)]], failures=1)
    streams = ChangeStreams(
        _orgs("acme"),
        world,
        world,
        world,
        world,
        world,
        reports=Reports(world),
        channels=[CHANNEL],
        rescan_seconds=3600,
        retry_base_seconds=0.01,
        retry_max_seconds=0.02,
        clock=lambda: handled,
    )
    await streams.rescan()
    await _until(lambda: world.hints)
    modes = [state.mode for _, state in world.reported]
    assert modes == [StreamMode.STARTING, StreamMode.FAILING, StreamMode.STREAMING]
    assert world.reported[1][1].reason == f"{CHANNEL}: ConnectionError"
    # Times ride on the periodic report, which also says this replica lives.
    await streams.report()
    org, last = world.reported[-1]
    assert org == "acme"
    assert (last.mode, last.reason) == (StreamMode.STREAMING, "")
    assert last.last_commit == COMMITTED + timedelta(seconds=2)
    assert last.lag == timedelta(seconds=8)
    await streams.stop()


TASKS = "/data/TaskChangeEvent"


@dataclass
class Channels(World):
    """Salesforce's stream with each channel's subscription accepted when the test says so (as
    PubSubSource yields an empty batch once Salesforce accepts it), or failed for the channels
    in `broken` (then tried again only once the test opens the channel's gate again)."""

    accepted: dict[str, asyncio.Event] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    queued: dict[str, list[list[ChangeEvent]]] = field(default_factory=dict)

    def gate(self, channel: str) -> asyncio.Event:
        return self.accepted.setdefault(channel, asyncio.Event())

    async def subscribe(
        self, org: str, channel: str, replay_id: bytes | None
    ) -> AsyncIterator[ChangeBatch]:
        self.subscribed_from.append(replay_id)
        await self.gate(channel).wait()
        if channel in self.broken:
            self.gate(channel).clear()  # the retry waits for the test
            raise ConnectionError("stream reset")
        yield ChangeBatch()
        while True:
            while self.queued.get(channel):
                events = self.queued[channel].pop(0)
                yield ChangeBatch(events, events[-1].replay_id)
            await asyncio.sleep(0.005)


def _two_channels(world: World) -> ChangeStreams:
    return ChangeStreams(
        _orgs("acme"),
        world,
        world,
        world,
        world,
        world,
        reports=Reports(world),
        channels=[CHANNEL, TASKS],
        rescan_seconds=3600,
        retry_base_seconds=0.01,
        retry_max_seconds=0.02,
    )


def _mode(streams: ChangeStreams) -> StreamMode | None:
    state = streams.state("acme")
    return None if state is None else state.mode


async def test_an_org_streams_only_once_every_channel_listens() -> None:
    """A change on a channel not listening yet is never hinted (its stream starts "from now
    on"): STREAMING, which says every change from now on is hinted, waits for the last one."""
    world = Channels()
    streams = _two_channels(world)
    await streams.rescan()
    world.gate(CHANNEL).set()
    world.queued[CHANNEL] = [[_event(1)]]
    await _until(lambda: world.hints)
    state = streams.state("acme")
    assert state is not None
    assert state.mode is StreamMode.STARTING
    assert state.reason == f"waiting for 1 of 2 channels: {TASKS}"
    assert state.last_commit == COMMITTED + timedelta(seconds=1)  # the events handled count
    assert StreamMode.STREAMING not in {s.mode for _, s in world.reported}

    world.gate(TASKS).set()
    await _until(lambda: _mode(streams) is StreamMode.STREAMING)
    state = streams.state("acme")
    assert state is not None
    assert state.reason == ""
    assert world.reported[-1][1].mode is StreamMode.STREAMING
    await streams.stop()


async def test_an_org_with_a_failing_channel_fails_while_the_others_stream() -> None:
    world = Channels(broken={TASKS})
    streams = _two_channels(world)
    await streams.rescan()
    world.gate(CHANNEL).set()
    world.gate(TASKS).set()
    await _until(lambda: _mode(streams) is StreamMode.FAILING)
    # Events on the channel that listens are hinted, and say nothing of the one that fails.
    world.queued[CHANNEL] = [[_event(2)]]
    await _until(lambda: world.hints)
    state = streams.state("acme")
    assert state is not None
    assert (state.mode, state.reason) == (StreamMode.FAILING, f"{TASKS}: ConnectionError")

    world.broken.clear()
    world.gate(TASKS).set()
    await _until(lambda: _mode(streams) is StreamMode.STREAMING)
    await streams.stop()


def _orgs(*orgs: str) -> Callable[[], Awaitable[Sequence[str]]]:
    async def connected() -> Sequence[str]:
        return orgs

    return connected


NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
STREAMING = StreamState(StreamMode.STREAMING, last_commit=NOW, last_event=NOW)


@pytest.mark.parametrize(
    ("report", "enabled", "mode"),
    [
        (StreamReport(STREAMING, NOW - timedelta(seconds=20)), True, StreamMode.STREAMING),
        (StreamReport(STREAMING, NOW - timedelta(seconds=40)), True, StreamMode.SILENT),
        (None, True, StreamMode.SILENT),
        (StreamReport(STREAMING, NOW), False, StreamMode.OFF),
    ],
)
def test_the_dashboard_reads_a_report_older_than_the_silence_bound_as_silent(
    report: StreamReport | None, enabled: bool, mode: StreamMode
) -> None:
    seen = observed(report, NOW, enabled=enabled, silent_after=timedelta(seconds=35))
    assert seen.state.mode is mode
    assert bool(seen.state.reason) is (mode is not StreamMode.STREAMING)
