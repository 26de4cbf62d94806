"""A fleet of mailboxes on the emulators, as `make up` runs the stack (issue #18, scale).

`FLEET` mailboxes are made on the Exchange emulator, each with a Salesforce user of its own in
the demo org, and registered with Concord as an admin would: one reconciler replica syncs them
all, pushed by the mail-connector's streaming subscriptions and Salesforce's change events.
Then, measured in this one run:

1. a burst: one meeting saved in every mailbox at once; until every one is an Event in
   Salesforce: the sessions it took (echoes included), the reconciler process's CPU, the
   Salesforce API calls (the emulator's own count) and each meeting's time to Salesforce;
2. quiet sessions (what the schedule runs every interval in a mailbox with no change): their
   Salesforce API calls and the reconciler's CPU;
3. a paced load: meetings saved at a steady rate across the fleet, about half the burst's
   throughput, for `PACED_SECONDS`: the freshness (time to Salesforce) it holds, p50 and p99.

From these, printed as figures, never gated on times:
- mailboxes one reconciler replica keeps at 30-second freshness = the sessions per second it can
  run / the sessions per second one mailbox needs, for a busy user (`CHANGES_PER_USER_DAY`, all
  in an 8-hour working day) plus the schedule; the replica's bound is its own CPU (one core: one
  event loop) and, on this shared machine, the whole stack's measured throughput (every peer and
  emulator on the same two cores) is printed beside it as the floor;
- Salesforce API calls per user per day at that change rate, against the daily allocation of a
  1,000-user Enterprise org (100,000 + 1,000 per licence, /work/shared/REFERENCE.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import pytest
import requests
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
)
from simple_salesforce.api import Salesforce, SFType

from concord.common.v1 import resources_pb2
from concord.events.v1 import events_pb2
from concord.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from concord.mail.v1 import mail_connector_service_pb2
from concord.reconciler.v1 import resources_pb2 as reconciler_pb2
from concord_events import mail_changed
from concord_reconciler.sessions.adapters.scheduler import (
    ORG_HOLD_MAX_AGE_SECONDS,
    ScheduleReader,
)
from concord_store import create_engine, migrate
from concord_testing import OtlpReceiver
from tests.e2e.clients import demo_org, records
from tests.e2e.conftest import RunningStack, start_stack, stop_stack

FLEET = int(os.environ.get("CONCORD_BENCH_FLEET", "30"))
PACED_SECONDS = float(os.environ.get("CONCORD_BENCH_PACED_SECONDS", "20"))
# A busy sales user: meetings, tasks, contacts and filed emails changed on either side.
CHANGES_PER_USER_DAY = 100
WORKDAY_SECONDS = 8 * 3600
FRESHNESS_SECONDS = 30.0
TARGET_MAILBOXES = 5_000
# One reconciler replica is one event loop: one core at most, kept below saturation so that a
# burst queues for seconds, not minutes.
REPLICA_CORE_SHARE = 0.7
ENTERPRISE_USERS = 1_000
ENTERPRISE_DAILY_ALLOCATION = 100_000 + 1_000 * ENTERPRISE_USERS
QUIET_SAMPLES = 10
SYNC_INTERVAL_SECONDS = 1800.0  # the reconciler's default interval
TICK_SECONDS = 5.0  # the reconciler's default schedule tick
SCHEDULE_HISTORY = 25  # finished sessions per mailbox in the schedule's store
HINT_SAMPLES = 20
IDLE_SECONDS = 5.0
SETTLE_SECONDS = 2.0
SETTLE_QUIET_SECONDS = 5.0
QUIET_SECONDS = 5.0
PASSWORD = "fleet-password"


@dataclass(frozen=True)
class Member:
    mailbox_id: str
    address: str
    account: Account


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    up_file = os.environ.get("CONCORD_BENCH_UP_FILE")
    if up_file:
        # A stack already running (`concord-devstack up --free-ports`): measured as it is.
        info = json.loads(Path(up_file).read_text())
        yield RunningStack(Path(info["var_dir"]), Path(up_file), info, None, None, 0.0)  # type: ignore[arg-type]
        return
    with OtlpReceiver() as receiver:
        running = start_stack(tmp_path_factory.mktemp("fleet"), receiver)
        try:
            yield running
        finally:
            stop_stack(running)


class Fleet:
    """The fleet's mailboxes and the counters the bench reads: the reconciler's CPU, the
    Salesforce emulator's API usage, the sessions each mailbox ran."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.sf: Salesforce = demo_org(stack)
        self.http = requests.Session()
        self.http.trust_env = False
        self.members: list[Member] = []
        self.gateway = str(stack.info["services"]["gateway"]["address"])
        self.admin = [("authorization", f"Bearer {stack.info['demo']['admin_token']}")]

    # -- counters ------------------------------------------------------------------------------

    def reconciler_cpu(self) -> float:
        """CPU seconds (user + system) of the reconciler process so far."""
        pid = int(self.stack.info["services"]["reconciler"]["pid"])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def api_calls(self) -> int:
        org = self.stack.info["emulators"]["salesforce"]
        answer = self.http.get(f"{org['admin_url']}/calls", verify=org["ca_cert"], timeout=10)
        used: int = answer.json()["apiUsage"]["used"]
        return used

    async def sessions_since(self, since: dt.datetime) -> list[reconciler_pb2.Session]:
        async with grpc.aio.insecure_channel(self.gateway) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            found: list[reconciler_pb2.Session] = []
            for member in self.members:
                reply = await stub.ListSessions(
                    gateway_service_pb2.ListSessionsRequest(
                        parent=f"mailboxes/{member.mailbox_id}", page_size=100
                    ),
                    metadata=self.admin,
                    timeout=30,
                )
                found += [s for s in reply.sessions if s.request_time.ToDatetime(dt.UTC) >= since]
            return found

    @staticmethod
    def completed(sessions: list[reconciler_pb2.Session]) -> list[reconciler_pb2.Session]:
        return [s for s in sessions if s.state == reconciler_pb2.SESSION_STATE_COMPLETED]

    async def hint(self, mailbox_ids: list[str]) -> None:
        """A push hint for each mailbox, as the mail-connector publishes one."""
        client = await nats.connect(str(self.stack.info["nats"]["url"]))
        try:
            for mailbox_id in mailbox_ids:
                hint = events_pb2.MailChanged(mailbox=mailbox_id, hint="bench")
                await client.publish(mail_changed(mailbox_id), hint.SerializeToString())
            await client.flush()
        finally:
            await client.close()

    # -- making the fleet ---------------------------------------------------------------------

    def make(self, count: int) -> None:
        exchange = self.stack.info["emulators"]["exchange"]
        admin_url = exchange["url"].split("/EWS/", 1)[0] + "/__admin/users"
        users = self.sf.User
        assert isinstance(users, SFType)
        run = uuid.uuid4().hex[:6]
        made: list[tuple[str, str, str]] = []
        for n in range(count):
            address = f"fleet{n}-{run}@concord.test"
            answer = self.http.post(
                admin_url, json={"username": address, "password": PASSWORD}, timeout=30
            )
            assert answer.status_code == 201, answer.text
            crm_user = users.create(
                {
                    "Username": f"fleet{n}-{run}@concord-fleet.example",
                    "LastName": f"Fleet {n}",
                    "Email": address,
                    "Alias": f"fleet{n}"[:8],
                    "TimeZoneSidKey": "GMT",
                }
            )
            made.append((f"fleet{n}-{run}", address, str(crm_user["id"])))
        asyncio.run(self._register(made, exchange["url"]))
        for mailbox_id, address, _ in made:
            config = Configuration(
                service_endpoint=exchange["url"],
                credentials=Credentials(address, PASSWORD),
                auth_type=BASIC,
            )
            account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
            self.members.append(Member(mailbox_id, address, account))

    async def _register(self, made: list[tuple[str, str, str]], ews_url: str) -> None:
        org = self.stack.info["demo"]["org"]
        async with grpc.aio.insecure_channel(self.gateway) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            for mailbox_id, address, crm_user in made:
                await stub.RegisterMailbox(
                    gateway_service_pb2.RegisterMailboxRequest(
                        mailbox_id=mailbox_id,
                        request_id=f"fleet-{mailbox_id}",
                        mailbox=reconciler_pb2.Mailbox(
                            org=f"orgs/{org}",
                            owner_user_id=mailbox_id,
                            crm_user_id=crm_user,
                            address=address,
                            provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
                        ),
                        account=mail_connector_service_pb2.MailboxAccount(
                            address=address,
                            provider=resources_pb2.MAIL_PROVIDER_EXCHANGE_EWS,
                            ews=mail_connector_service_pb2.EwsSettings(
                                service_url=ews_url, username=address, auth_type="basic"
                            ),
                            secret=PASSWORD.encode(),
                        ),
                    ),
                    metadata=self.admin,
                    timeout=60,
                )

    def wait_settled(self, within: float) -> None:
        """Every fleet mailbox streams (its watch's catch-up hint sent) and completed a session,
        no session of the fleet is queued or running, and none was requested for
        `SETTLE_QUIET_SECONDS`: a session a watch's resubscription asks for just after another
        ends (the first sync made its folders) belongs to the setup, not to what is measured
        next."""
        log = self.stack.var_dir / "log" / "mail-connector.log"
        deadline = time.monotonic() + within
        silent: list[str] = []
        unsynced: list[str] = []
        pending: list[reconciler_pb2.Session] = []
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            silent = [m.mailbox_id for m in self.members if f"push {m.mailbox_id}: " not in text]
            now = dt.datetime.now(dt.UTC)
            recent = asyncio.run(self.sessions_since(now - dt.timedelta(hours=1)))
            pending = [
                s
                for s in recent
                if s.state
                in (reconciler_pb2.SESSION_STATE_QUEUED, reconciler_pb2.SESSION_STATE_RUNNING)
            ]
            newest = max((s.request_time.ToDatetime(dt.UTC) for s in recent), default=None)
            quiet = newest is None or (now - newest).total_seconds() >= SETTLE_QUIET_SECONDS
            synced = {s.name.split("/")[1] for s in self.completed(recent)}
            unsynced = [m.mailbox_id for m in self.members if m.mailbox_id not in synced]
            if not silent and not pending and quiet:
                if not unsynced:
                    return
                # Its first sync failed (on a loaded machine a peer can miss its deadline) and
                # nothing asks again before the interval: a hint, or it would first sync (and
                # make its folders) inside a measured window.
                asyncio.run(self.hint(unsynced))
            time.sleep(1)
        # What kept it: a watch that never reported, or a session that never ended.
        now = dt.datetime.now(dt.UTC)
        open_sessions = [
            f"{s.name} {reconciler_pb2.SessionState.Name(s.state)} "
            f"{resources_pb2.SessionTrigger.Name(s.trigger)} requested "
            f"{(now - s.request_time.ToDatetime(dt.UTC)).total_seconds():.0f} s ago"
            for s in pending
        ]
        raise AssertionError(
            f"the fleet did not settle within {within:g} s: no watch state from {silent}; "
            f"open sessions: {open_sessions}; never synced: {unsynced}"
        )

    # -- changes ----------------------------------------------------------------------------------

    def save_meeting(self, member: Member, prefix: str) -> tuple[str, float]:
        """A meeting saved in the member's calendar; its subject and when the save returned."""
        subject = f"{prefix}-{member.mailbox_id}-{uuid.uuid4().hex[:6]}"
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=3)
        CalendarItem(
            account=member.account,
            folder=member.account.calendar,
            subject=subject,
            categories=["Salesforce"],
            start=EWSDateTime.from_datetime(start),
            end=EWSDateTime.from_datetime(start + dt.timedelta(hours=1)),
        ).save(send_meeting_invitations="SendToNone")
        return subject, time.time()

    def arrivals(self, prefix: str) -> dict[str, float]:
        """Per subject of `prefix`, when Salesforce created its Event (the emulator's clock, the
        same machine's)."""
        found = records(
            self.sf, f"SELECT Subject, CreatedDate FROM Event WHERE Subject LIKE '{prefix}-%'"
        )
        return {str(r["Subject"]): _sf_time(str(r["CreatedDate"])) for r in found}

    def wait_arrived(self, prefix: str, saved: dict[str, float], within: float) -> dict[str, float]:
        deadline = time.monotonic() + within
        while True:
            arrived = self.arrivals(prefix)
            if set(saved) <= set(arrived):
                return {subject: arrived[subject] - saved[subject] for subject in saved}
            if time.monotonic() > deadline:
                missing = len(set(saved) - set(arrived))
                raise AssertionError(f"{missing} of {len(saved)} meetings not in Salesforce")
            time.sleep(1)


async def _schedule_costs(path: Path, mailboxes: int, history: int) -> tuple[float, float, float]:
    """CPU seconds (this process: the event loop and SQLite's thread) of one read of the whole
    schedule, as the leading replica makes every tick, and of the check every push hint makes
    (`held_until`: the mailbox's newest session and its org's holds), over `mailboxes`
    mailboxes of one org with `history` finished sessions each (rows written directly)."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine, "concord_reconciler.migrations")
    await engine.dispose()
    day_ago = int((time.time() - 86400) * 1e6)
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO mailboxes (mailbox_id, org_id, owner_user_id, crm_user_id, address,"
            " provider, state, suspended_reason, sync_interval_seconds, create_time_us,"
            " update_time_us, version) VALUES (?, 'org', ?, '005000000000001AAA', ?, 1, 1,"
            " '', 0, ?, ?, 1)",
            [(f"m{n}", f"u{n}", f"m{n}@example.com", day_ago, day_ago) for n in range(mailboxes)],
        )
        db.executemany(
            "INSERT INTO sessions (session_id, mailbox_id, state, trigger, request_id,"
            " failure_reason, failure_code, counts, request_time_us, start_time_us,"
            " end_time_us, trace_id) VALUES (?, ?, 3, 2, '', '', '', x'', ?, ?, ?, '')",
            [
                (uuid.uuid4().hex, f"m{n}", t, t, t + 100_000)
                for n in range(mailboxes)
                for t in (day_ago + int(h * 86400e6 / history) for h in range(history))
            ],
        )
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    reader = ScheduleReader(engine, dt.timedelta(seconds=SYNC_INTERVAL_SECONDS))
    try:
        await reader.rows()  # warm: statement caches, the file in the page cache
        samples = []
        for _ in range(3):
            cpu = time.process_time()
            assert len(await reader.rows()) == mailboxes
            samples.append(time.process_time() - cpu)
        # A hint's check as the scheduler makes it: the org's hold taken as read within
        # ORG_HOLD_MAX_AGE_SECONDS (all but the first of these), and that read itself.
        cpu = time.process_time()
        assert await reader.held_until("m0", ORG_HOLD_MAX_AGE_SECONDS) is None
        hold_read = time.process_time() - cpu
        cpu = time.process_time()
        for n in range(1, HINT_SAMPLES + 1):
            assert await reader.held_until(f"m{n}", ORG_HOLD_MAX_AGE_SECONDS) is None
        per_hint = (time.process_time() - cpu) / HINT_SAMPLES
    finally:
        await engine.dispose()
    return statistics.median(samples), per_hint, hold_read


def _sf_time(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.timeout(900)
def test_mailboxes_per_reconciler_replica_and_salesforce_calls_per_user(
    stack: RunningStack, tmp_path: Path
) -> None:
    # The leading replica's schedule read at the target's size (grows with the mailboxes and
    # with their session history, pruned after RECONCILER_SESSION_RETENTION_SECONDS beyond each
    # mailbox's newest 25).
    schedule_cpu, hint_cpu, hold_read_cpu = asyncio.run(
        _schedule_costs(tmp_path / "schedule.db", TARGET_MAILBOXES, SCHEDULE_HISTORY)
    )
    fleet = Fleet(stack)
    fleet.make(FLEET)
    fleet.wait_settled(within=240)

    # The replica's cost at rest (schedule ticks, leases, heartbeats): taken off what follows.
    # Nothing polls the reconciler inside a measured window: its API answers cost CPU too.
    cpu, started = fleet.reconciler_cpu(), time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle_share = (fleet.reconciler_cpu() - cpu) / (time.monotonic() - started)

    # 1. A burst: one meeting in every mailbox at once.
    prefix = f"burst-{uuid.uuid4().hex[:6]}"
    since = dt.datetime.now(dt.UTC)
    cpu, calls, started = fleet.reconciler_cpu(), fleet.api_calls(), time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        saved = dict(pool.map(lambda m: fleet.save_meeting(m, prefix), fleet.members))
    latencies = fleet.wait_arrived(prefix, saved, within=300)
    time.sleep(SETTLE_SECONDS)  # the sessions of Concord's own writes' echoes, if any
    burst_window = time.monotonic() - started
    burst_cpu = fleet.reconciler_cpu() - cpu - idle_share * burst_window
    burst_calls = fleet.api_calls() - calls
    burst_sessions = fleet.completed(asyncio.run(fleet.sessions_since(since)))
    assert burst_sessions, "no session of the burst completed"
    fleet.wait_settled(within=120)

    # 2. Quiet sessions, as a hint or the schedule starts them in a mailbox with no change.
    sample = fleet.members[:QUIET_SAMPLES]
    since = dt.datetime.now(dt.UTC)
    cpu, calls, started = fleet.reconciler_cpu(), fleet.api_calls(), time.monotonic()
    asyncio.run(fleet.hint([m.mailbox_id for m in sample]))
    time.sleep(QUIET_SECONDS)
    quiet_window = time.monotonic() - started
    quiet_cpu_total = fleet.reconciler_cpu() - cpu - idle_share * quiet_window
    quiet_calls_total = fleet.api_calls() - calls
    quiet_sessions = fleet.completed(asyncio.run(fleet.sessions_since(since)))
    assert quiet_sessions, "no quiet session ran"
    quiet_cpu = quiet_cpu_total / len(quiet_sessions)
    quiet_calls = quiet_calls_total / len(quiet_sessions)
    fleet.wait_settled(within=120)

    # Throughput: the burst's sessions over their own span (the reconciler's clock).
    first_start = min(s.start_time.ToDatetime(dt.UTC) for s in burst_sessions)
    last_end = max(s.end_time.ToDatetime(dt.UTC) for s in burst_sessions)
    burst_span = max(0.001, (last_end - first_start).total_seconds())
    burst_rate = len(burst_sessions) / burst_span
    sessions_per_change = len(burst_sessions) / len(saved)

    # 3. A paced load at about half the burst's throughput, spread over the fleet.
    paced_rate = max(0.2, burst_rate / sessions_per_change / 2)  # meetings per second
    prefix = f"paced-{uuid.uuid4().hex[:6]}"
    paced: dict[str, float] = {}
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < PACED_SECONDS:
        member = fleet.members[n % len(fleet.members)]
        subject, when = fleet.save_meeting(member, prefix)
        paced[subject] = when
        n += 1
        time.sleep(max(0.0, started + n / paced_rate - time.monotonic()))
    paced_achieved = len(paced) / (time.monotonic() - started)
    paced_latencies = fleet.wait_arrived(prefix, paced, within=300)

    # Per mailbox, the sessions per second a busy user's day needs at its peak.
    change_sessions = sessions_per_change * CHANGES_PER_USER_DAY / WORKDAY_SECONDS
    need = change_sessions + 1 / SYNC_INTERVAL_SECONDS
    cpu_per_session = burst_cpu / len(burst_sessions)
    # The replica's CPU per mailbox: its sessions, and its share of the schedule read every
    # tick by the leading replica (measured at the target's size; leases and heartbeats, this
    # fleet's cost at rest, do not grow with mailboxes).
    tick_per_mailbox = schedule_cpu / TICK_SECONDS / TARGET_MAILBOXES
    # The org's hold is read again at most once per max age, shared by the org's hints.
    org_hints_per_second = TARGET_MAILBOXES * change_sessions
    hint_cpu += hold_read_cpu / max(1.0, org_hints_per_second * ORG_HOLD_MAX_AGE_SECONDS)
    # A push session costs at least one hint's check at the target's size, on top of what the
    # small fleet measured (its check reads a small org's history).
    per_mailbox_share = (
        change_sessions * (cpu_per_session + hint_cpu)
        + quiet_cpu / SYNC_INTERVAL_SECONDS
        + tick_per_mailbox
    )
    by_cpu = REPLICA_CORE_SHARE / per_mailbox_share
    by_wall = burst_rate / need
    calls_per_change = burst_calls / len(saved)
    scheduled_per_day = 86400 / SYNC_INTERVAL_SECONDS
    per_user_day = CHANGES_PER_USER_DAY * calls_per_change + scheduled_per_day * quiet_calls
    polled_per_day = 86400 / FRESHNESS_SECONDS * quiet_calls
    allocation_per_user = ENTERPRISE_DAILY_ALLOCATION / ENTERPRISE_USERS

    values = list(latencies.values())
    paced_values = list(paced_latencies.values())
    print()
    print(f"fleet of {len(fleet.members)} Exchange mailboxes, one reconciler replica (SQLite):")
    print(
        f"  burst, one meeting in each: {len(burst_sessions)} sessions "
        f"({sessions_per_change:.2f} per change, echoes included) in {burst_span:.1f} s = "
        f"{burst_rate:.1f} sessions/s; time to Salesforce p50 {_p(values, 0.5):.1f} s, "
        f"p99 {_p(values, 0.99):.1f} s"
    )
    print(
        f"  reconciler CPU: {cpu_per_session * 1000:.1f} ms per change session, "
        f"{quiet_cpu * 1000:.1f} ms per quiet session ({len(quiet_sessions)} sampled), "
        f"{idle_share:.2%} of a core at rest"
    )
    print(
        f"  schedule read (the leader, every {TICK_SECONDS:g} s) at {TARGET_MAILBOXES:,} "
        f"mailboxes x {SCHEDULE_HISTORY} past sessions: {schedule_cpu * 1000:.0f} ms CPU = "
        f"{schedule_cpu / TICK_SECONDS:.1%} of a core; a push hint's check: "
        f"{hint_cpu * 1000:.1f} ms CPU, the org's hold read in it at most once a second "
        f"{hold_read_cpu * 1000:.1f} ms"
    )
    print(
        f"  paced: {len(paced)} meetings at {paced_achieved:.2f}/s for {PACED_SECONDS:g} s: "
        f"time to Salesforce p50 {_p(paced_values, 0.5):.1f} s, "
        f"p99 {_p(paced_values, 0.99):.1f} s (target {FRESHNESS_SECONDS:g} s)"
    )
    print(
        f"  one mailbox needs {need * 3600:.1f} sessions/h at the peak "
        f"({CHANGES_PER_USER_DAY} changes in {WORKDAY_SECONDS // 3600} h, a scheduled sync "
        f"every {SYNC_INTERVAL_SECONDS / 60:g} min)"
    )
    print(
        f"  mailboxes per reconciler replica at {FRESHNESS_SECONDS:g} s freshness: "
        f"{by_cpu:,.0f} by the replica's own CPU ({REPLICA_CORE_SHARE:.0%} of one core; "
        f"target {TARGET_MAILBOXES:,}: {by_cpu / TARGET_MAILBOXES:.2f}x); {by_wall:,.0f} by "
        f"the whole stack's throughput on this shared machine (every peer and emulator on "
        f"the same cores)"
    )
    parts = {
        "sessions' own work": change_sessions * cpu_per_session + quiet_cpu / SYNC_INTERVAL_SECONDS,
        "push hints' checks": change_sessions * hint_cpu,
        "the schedule read": tick_per_mailbox,
    }
    print(
        "  where the replica's CPU goes at that size: "
        + ", ".join(f"{name} {share / per_mailbox_share:.0%}" for name, share in parts.items())
    )
    print(
        f"  Salesforce API calls: {calls_per_change:.1f} per change, {quiet_calls:.1f} per quiet "
        f"session; {per_user_day:,.0f} per user per day against {allocation_per_user:,.0f} "
        f"(a {ENTERPRISE_USERS:,}-user Enterprise org: {ENTERPRISE_DAILY_ALLOCATION:,}/day): "
        f"{per_user_day / allocation_per_user:.0%} of the allocation; polling Salesforce every "
        f"{FRESHNESS_SECONDS:g} s instead of its change events: {polled_per_day:,.0f} "
        f"({polled_per_day / allocation_per_user:.0%})"
    )
    assert per_user_day > 0
