"""The change streams: one subscriber per connected org (held by lease across replicas), one
stream per channel, each batch turned into a hint before its replay id is kept.

At least once, never lost: a batch's hint is published before the batch's last replay id is
stored, so a replica killed in between resumes before the batch and sends its hint again (a
repeated hint costs one coalesced session, a lost one a stale mailbox).

An org streams once every one of its channels listens (its subscription accepted), not once the
first does: the channels come up one by one, and a change on a channel not yet listening "from
now on" is never hinted. So STREAMING promises that every change made from then on is hinted;
until then the org is STARTING and its changes are the schedule's, as before any stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from concord_crm_connector.changes.model import (
    CHANNELS,
    ChangeEvent,
    CrmHint,
    StreamMode,
    StreamState,
    hints_for,
    ids_to_look_up,
)
from concord_crm_connector.changes.ports import (
    ChangeSource,
    HintSink,
    OrgLeases,
    OwnerLookup,
    ReplayStore,
    ReplayTooOld,
    StreamReports,
)

__all__ = ["ChangeStreams"]

log = logging.getLogger(__name__)

# An empty replay id stored means "from now on" (after an expired one was given up).
_FROM_NOW = b""


class ChangeStreams:
    def __init__(
        self,
        orgs: Callable[[], Awaitable[Sequence[str]]],
        source: ChangeSource,
        replays: ReplayStore,
        owners: OwnerLookup,
        sink: HintSink,
        leases: OrgLeases,
        *,
        reports: StreamReports | None = None,
        channels: Iterable[str] = CHANNELS.values(),
        rescan_seconds: float = 10.0,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._orgs = orgs
        self._source = source
        self._replays = replays
        self._owners = owners
        self._sink = sink
        self._leases = leases
        self._reports = reports
        self._channels = tuple(channels)
        self._rescan_seconds = rescan_seconds
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._clock = clock
        self._running: dict[str, list[asyncio.Task[None]]] = {}
        self._states: dict[str, StreamState] = {}
        # The channels of each held org whose subscription stands (accepted, or delivering).
        self._listening: dict[str, set[str]] = {}
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="change-streams")

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for org in list(self._running):
            await self._drop(org)

    def state(self, org: str) -> StreamState | None:
        return self._states.get(org)

    async def rescan(self) -> None:
        """Streams for the orgs this replica may hold; none for the others."""
        connected = set(await self._orgs())
        for org in list(self._running):
            if org not in connected or not await self._leases.hold(org):
                await self._drop(org)
                if org in connected:
                    self._states[org] = StreamState(StreamMode.STANDBY)
        for org in sorted(connected - set(self._running)):
            if await self._leases.hold(org):
                self._listening[org] = set()
                await self._set(
                    org,
                    StreamState(
                        StreamMode.STARTING, reason=self._waiting(org), channels=self._channels
                    ),
                )
                self._running[org] = [
                    asyncio.create_task(self._stream(org, channel), name=f"cdc {org} {channel}")
                    for channel in self._channels
                ]
            else:
                self._states[org] = StreamState(StreamMode.STANDBY)
        for org in set(self._states) - connected:
            del self._states[org]

    async def _supervise(self) -> None:
        while True:
            try:
                await self.rescan()
                await self.report()
            except Exception:
                log.warning("change streams: rescan failed", exc_info=True)
            await asyncio.sleep(self._rescan_seconds)

    async def _drop(self, org: str) -> None:
        tasks = self._running.pop(org, [])
        self._listening.pop(org, None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._leases.release(org)

    async def _stream(self, org: str, channel: str) -> None:
        failures = 0
        stored = await self._replays.get(org, channel)
        # Whether the changes this run may not see (committed while no stream held a position)
        # were hinted: nothing to catch up on an org's very first stream.
        caught_up = stored is None
        if stored is None:
            # Marked at once, so a run that dies before its first event or keepalive leaves
            # "streamed without a position" behind, not "never streamed".
            await self._replays.put(org, channel, _FROM_NOW)
        while True:
            stored = await self._replays.get(org, channel)
            if stored:
                caught_up = False
            elif not caught_up:
                # The last run streamed from "now on" and died (or the stream broke) before
                # Salesforce gave it a replay id: what was committed since is unknown.
                await self._publish(
                    CrmHint(
                        org=org, everyone=True, reason=f"{channel}: resumed without a replay id"
                    )
                )
                caught_up = True
            try:
                async for batch in self._source.subscribe(org, channel, stored or None):
                    failures = 0
                    # Every batch, the first one (the subscription accepted) included, says
                    # the channel listens.
                    self._listening.setdefault(org, set()).add(channel)
                    if batch.events:
                        await self.handle(org, channel, batch.events)
                    elif batch.latest_replay_id and batch.latest_replay_id != stored:
                        # Nothing new up to here: a restart may begin here, not "from now on"
                        # (which would skip what is committed while no replica streams).
                        await self._replays.put(org, channel, batch.latest_replay_id)
                        stored = batch.latest_replay_id
                    await self._streaming(org)
                # The server ended the stream (it closes long-lived ones): subscribe again from
                # the replay id kept.
                log.info("change stream %s %s ended by the server; subscribing again", org, channel)
            except asyncio.CancelledError:
                raise
            except ReplayTooOld:
                # Nothing tells what happened since: every mailbox of the org syncs, and the
                # stream starts again from now on.
                await self._publish(
                    CrmHint(org=org, everyone=True, reason=f"{channel}: replay id expired")
                )
                await self._replays.put(org, channel, _FROM_NOW)
                caught_up = True
            except Exception as error:
                failures += 1
                # Not listening until a subscription of this channel stands again.
                self._listening.get(org, set()).discard(channel)
                reason = f"{channel}: {type(error).__name__}"
                log.warning("change stream %s %s failed: %s", org, channel, error)
                await self._set(
                    org,
                    replace(
                        self._states.get(org, StreamState(StreamMode.FAILING)),
                        mode=StreamMode.FAILING,
                        reason=reason,
                    ),
                )
                delay = min(self._retry_max, self._retry_base * 2 ** min(failures - 1, 10))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def handle(self, org: str, channel: str, batch: Sequence[ChangeEvent]) -> None:
        """One batch: its hint out first, then its replay id kept."""
        wanted = ids_to_look_up(batch)
        owners: dict[str, str] = {}
        if wanted:
            try:
                owners = await self._owners.owners(org, wanted)
            except Exception:
                log.warning("change stream %s: owners unreadable", org, exc_info=True)
        hint = hints_for(org, batch, owners)
        if hint is not None:
            await self._publish(hint)
        await self._replays.put(org, channel, batch[-1].replay_id)
        commits = [e.commit_time for e in batch if e.commit_time is not None]
        current = self._states.get(org, StreamState(StreamMode.STARTING))
        await self._set(
            org,
            replace(
                current,
                last_event=self._clock(),
                last_commit=max(commits) if commits else current.last_commit,
            ),
        )
        await self._streaming(org)

    async def _streaming(self, org: str) -> None:
        """STREAMING once every channel listens; until then a starting org says which wait (a
        failing one keeps saying why it fails)."""
        current = self._states.get(org) or StreamState(StreamMode.STARTING)
        waiting = self._waiting(org)
        if not waiting:
            if current.mode is not StreamMode.STREAMING:
                log.info("change stream %s -> streaming", org)
                await self._set(org, replace(current, mode=StreamMode.STREAMING, reason=""))
        elif current.mode is StreamMode.STARTING and current.reason != waiting:
            await self._set(org, replace(current, reason=waiting))

    def _waiting(self, org: str) -> str:
        """Which of the org's channels do not listen yet, or "" when all do."""
        listening = self._listening.get(org, set())
        missing = [c for c in self._channels if c not in listening]
        if not missing:
            return ""
        return f"waiting for {len(missing)} of {len(self._channels)} channels: " + ", ".join(
            missing
        )

    async def report(self) -> None:
        """Every held org's state, for the dashboard; the report's time says this replica
        lives (a report that grows old reads as SILENT)."""
        for org in list(self._running):
            if org in self._states:
                await self._put_report(org, self._states[org])

    async def _publish(self, hint: CrmHint) -> None:
        """A hint out; one that syncs the whole org is kept on the dashboard with its reason
        (the admin sees why every mailbox ran a session)."""
        await self._sink.publish(hint)
        if hint.everyone:
            current = self._states.get(hint.org, StreamState(StreamMode.STARTING))
            await self._set(
                hint.org, replace(current, resync_reason=hint.reason, resync_time=self._clock())
            )

    async def _set(self, org: str, state: StreamState) -> None:
        """A change of mode is reported at once; lag and times ride on the periodic report."""
        before = self._states.get(org)
        self._states[org] = state
        if before is None or (before.mode, before.reason, before.resync_time) != (
            state.mode,
            state.reason,
            state.resync_time,
        ):
            await self._put_report(org, state)

    async def _put_report(self, org: str, state: StreamState) -> None:
        if self._reports is None:
            return
        try:
            await self._reports.put(org, state)
        except Exception:
            # The dashboard's view only: never a reason to stop streaming.
            log.warning("change stream %s: state not reported", org, exc_info=True)
