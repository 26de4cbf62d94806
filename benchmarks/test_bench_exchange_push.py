"""Push latency: a change committed in the EWS emulator → `concord.mail.changed.<mailbox>` on NATS.

The real path, in one process: the emulator's streaming notifications, exchangelib, the push
supervisor and its coalescing window, a real nats-server. Printed beside the seed product's
30-minute schedule (the wait a change had before push) as a ratio, and beside the write's own
round trip (the change cannot be seen before it is committed). Target (issue #4): p99 ≤ 1 s.
Printed, not asserted: benchmarks never gate on absolute times.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import nats
import pytest
from cryptography.fernet import Fernet
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    FailFast,
)
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from nats.aio.msg import Msg

from concord_exchange_emulator.testing import RunningEmulator
from concord_mail_connector.__main__ import MIGRATIONS
from concord_mail_connector.adapters.exchange import credential_sessions
from concord_mail_connector.adapters.push_accounts import SqlPushAccounts
from concord_mail_connector.adapters.push_exchange import ExchangeChangeFeed
from concord_mail_connector.adapters.push_nats import NatsChangePublisher
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.domain.model import AccountUpdate, Provider
from concord_mail_connector.domain.push import PushMode, PushSupervisor
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import NatsServer

CHANGES = 200
WINDOW = 0.2
SEED_SCHEDULE_SECONDS = 30 * 60


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    data = tmp_path / "exchange"
    data.mkdir()
    emu = RunningEmulator(data, seed=False).start()
    yield emu
    emu.stop()
    close_connections()


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@pytest.mark.timeout(600)
async def test_change_to_event_latency(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    address = f"bench-{uuid.uuid4().hex[:8]}@concord.test"
    password = uuid.uuid4().hex
    emulator.admin("POST", "users", {"username": address, "password": password})
    engine = create_engine(f"sqlite:///{tmp_path}/mail.db")
    await migrate(engine, MIGRATIONS)
    store = SqlAccountStore(engine, SecretBox(Fernet.generate_key()))
    await store.upsert(
        AccountUpdate(
            mailbox="bench",
            address=address,
            provider=Provider.EXCHANGE_EWS,
            settings={"service_url": emulator.endpoint, "username": address, "auth_type": "basic"},
            secret=password.encode(),
        )
    )
    client = await nats.connect(nats_server.url)
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def arrived(msg: Msg) -> None:
        await arrivals.put(time.perf_counter())

    await client.subscribe("concord.mail.changed.bench", cb=arrived)
    supervisor = PushSupervisor(
        SqlPushAccounts(engine, store),
        {
            Provider.EXCHANGE_EWS: ExchangeChangeFeed(
                stream_minutes=30, sessions=credential_sessions(16)
            )
        },
        NatsChangePublisher(client),
        window=WINDOW,
        rescan_seconds=3600,
    )
    await supervisor.rescan()
    async with asyncio.timeout(30):
        while True:
            state = supervisor.state("bench")
            if state is not None and state.mode == PushMode.STREAMING:
                break
            await asyncio.sleep(0.05)

    config = Configuration(
        service_endpoint=emulator.endpoint,
        credentials=Credentials(address, password),
        auth_type=BASIC,
        retry_policy=FailFast(),
    )
    account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
    start = EWSDateTime(2026, 12, 1, 9, tzinfo=EWSTimeZone("UTC"))
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="latency 0",
        start=start,
        end=start + dt.timedelta(hours=1),
    )
    await asyncio.to_thread(meeting.save)  # warm-up: connections, the folder cache
    async with asyncio.timeout(30):
        await arrivals.get()
    await asyncio.sleep(WINDOW * 2)

    latencies: list[float] = []
    writes: list[float] = []
    missed = 0
    for index in range(1, CHANGES + 1):
        meeting.subject = f"latency {index}"
        began = time.perf_counter()
        # Half creates, half updates: both are changes the mailbox owner makes.
        if index % 2:
            meeting = CalendarItem(
                account=account,
                folder=account.calendar,
                subject=f"latency {index}",
                start=start,
                end=start + dt.timedelta(hours=1),
            )
            await asyncio.to_thread(meeting.save)
        else:
            await asyncio.to_thread(partial(meeting.save, update_fields=["subject"]))
        writes.append(time.perf_counter() - began)
        try:
            async with asyncio.timeout(10):
                got = await arrivals.get()
        except TimeoutError:
            missed += 1
            continue
        latencies.append(got - began)
        # Past the coalescing window, so the next change starts a fresh one (the common case:
        # one person's edits are seconds apart, not milliseconds).
        await asyncio.sleep(WINDOW * 1.5)
        while not arrivals.empty():
            arrivals.get_nowait()

    await supervisor.stop()
    await client.drain()
    await engine.dispose()

    median = statistics.median(latencies)
    p99 = _percentile(latencies, 0.99)
    write = statistics.median(writes)
    print()
    print(f"exchange push: change → concord.mail.changed over {len(latencies)} changes")
    print(f"  median {median * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   (target p99 ≤ 1000 ms)")
    print(f"  missed (no event in 10 s): {missed}")
    print(
        f"  write round trip (median): {write * 1000:.1f} ms → p50 / write = {median / write:.1f}x"
    )
    print(
        f"  seed product's schedule: {SEED_SCHEDULE_SECONDS} s → "
        f"{SEED_SCHEDULE_SECONDS / p99:,.0f}x sooner at p99, "
        f"{SEED_SCHEDULE_SECONDS / median:,.0f}x at the median "
        f"(the schedule's average wait, 900 s: {900 / median:,.0f}x)"
    )
