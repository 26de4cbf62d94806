"""A change waits for no big session (issue #18, fairness).

The stack as `make up` runs it. Mailbox A (`demo`, Exchange) runs a big first sync: thousands
of Events made in Salesforce while it was suspended, mirrored into it by one session once it
is resumed. Meanwhile a meeting is saved every second, in turn in mailbox B (`demo-graph`,
Graph) and in A itself, and each is timed from its save to its Event in Salesforce, with
nobody forcing a session: B's sessions must not wait for A's (a long session gives its slot
to the next request), and A's own push is served between the big session's chunks. Before A
resumes, the other mailboxes sync once: a new user's records are in Salesforce long before
their mailbox joins, and every other mailbox has listed them (as someone else's) by then; made
here a moment before, they would otherwise be a bulk load every mailbox lists at once, on top
of A's first sync (how long that took each is printed).

Printed as measured in one run (never gated on times): p50/p99 of both, beside how long a
change in A would have waited for the big session to end (as it did before: 10 to 64 s), and
the mean time of one chunk (`BATCH_SIZE` items). Targets: p99 <= 3 s for B, and for A <= 3 s after
the chunk in progress.

The issue asks for 10,000 items; `CONCORD_BENCH_FAIRNESS_ITEMS` sets how many (1,000 by
default: at the mailbox emulator's write rate through Concord on a shared 2-core machine the
whole 10,000 takes many minutes, longer than `make bench` should run, and what a change waits
for is the chunk in progress, whatever the backlog behind it).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone  # type: ignore[import-untyped]

from concord_reconciler.mirror.domain.executor import BATCH_SIZE
from concord_testing import OtlpReceiver
from tests.e2e.clients import demo_mailbox, demo_org, eventually, records
from tests.e2e.conftest import RunningStack, start_stack, stop_stack
from tests.e2e.test_graph import graph_client, meeting

ITEMS = int(os.environ.get("CONCORD_BENCH_FAIRNESS_ITEMS", "1000"))
CHUNK = BATCH_SIZE  # one chunk of the big session
EVERY_SECONDS = 1.0
# The stack's other demo mailboxes (Graph, Google), each its own Salesforce user.
OTHER_MAILBOXES = ("demo-graph", "demo-google")
COLLECTION = 200  # records per sObject Collections call
# On a loaded shared machine one call of a chunk can pass the 10 s default, and its answer is
# then lost (its items looked up again next session). The benchmark measures waiting, not
# the write rate, so the peers are given the time.
PEER_TIMEOUT_SECONDS = "60"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with OtlpReceiver() as receiver:
        running = start_stack(
            tmp_path_factory.mktemp("fairness"),
            receiver,
            {"RECONCILER_PEER_TIMEOUT_SECONDS": PEER_TIMEOUT_SECONDS},
        )
        try:
            yield running
        finally:
            stop_stack(running)


def _sessions(stack: RunningStack, mailbox: str) -> list[dict[str, Any]]:
    listed = stack.concord("--json", "sessions", mailbox, "--limit", "10")
    assert listed.returncode == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout).get("sessions", [])
    return found


def _when(stamp: str) -> float:
    """A session's timestamp as epoch seconds."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]


def _where_the_time_went(stack: RunningStack, trace_id: str) -> str:
    """The big session's calls to its peers, by name: how many, and the mean time from each
    call's start to the next call's (spans carry their start only)."""
    calls = [
        s
        for s in stack.receiver.trace(trace_id)
        if s.service_name == "reconciler" and s.kind == "CLIENT"
    ]
    spent: dict[str, list[float]] = {}
    for call, following in itertools.pairwise(calls):
        name = call.name.rsplit("/", 1)[-1]
        spent.setdefault(name, []).append(
            (following.start_time_unix_nano - call.start_time_unix_nano) / 1e9
        )
    ranked = sorted(spent.items(), key=lambda item: -sum(item[1]))[:6]
    return ", ".join(f"{n} {len(t)}x {statistics.mean(t):.2f} s" for n, t in ranked)


def _tail(stack: RunningStack, trace_id: str) -> str:
    """What the big session did after its last write: its peer calls from the end of that
    write to the session's end, merged by method (a change saved then waits for them)."""
    spans = stack.receiver.trace(trace_id)
    [session] = [s for s in spans if s.name == "sync.session" and s.service_name == "reconciler"]
    calls = [s for s in spans if s.service_name == "reconciler" and s.kind == "CLIENT"]
    writes = [s for s in calls if s.name.endswith(("ApplyItems", "ApplyBatch"))]
    if not writes:
        return "no writes"
    after = max(s.end_time_unix_nano for s in writes)
    spent: dict[str, list[float]] = {}
    for call in calls:
        if call.start_time_unix_nano >= after:
            spent.setdefault(call.name.rsplit("/", 1)[-1], []).append(
                (call.end_time_unix_nano - call.start_time_unix_nano) / 1e9
            )
    return f"{(session.end_time_unix_nano - after) / 1e9:.1f} s: " + (
        ", ".join(f"{n} {len(t)}x {sum(t):.1f} s" for n, t in sorted(spent.items())) or "no calls"
    )


def _make_backlog(sf: Any, prefix: str) -> None:
    """ITEMS Events of A's Salesforce user (the integration user), 200 a call."""
    first = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    for start in range(0, ITEMS, COLLECTION):
        batch = []
        for n in range(start, min(ITEMS, start + COLLECTION)):
            begins = first + dt.timedelta(days=3, minutes=15 * n)
            batch.append(
                {
                    "attributes": {"type": "Event"},
                    "Subject": f"{prefix}-{n:05d}",
                    "StartDateTime": begins.isoformat(),
                    "EndDateTime": (begins + dt.timedelta(minutes=15)).isoformat(),
                }
            )
        answers = sf.restful(
            "composite/sobjects", method="POST", json={"allOrNone": True, "records": batch}
        )
        assert all(a["success"] for a in answers), answers[:3]


@pytest.mark.timeout(1800)
def test_a_change_waits_for_no_big_session(stack: RunningStack) -> None:
    account = demo_mailbox(stack)
    sf = demo_org(stack)
    http, graph_user = graph_client(stack)
    log = stack.var_dir / "log" / "mail-connector.log"
    for mailbox in ("demo", "demo-graph"):
        assert stack.concord("sync", mailbox, "--wait", timeout=300).returncode == 0
        streaming = f"push {mailbox}: starting -> streaming"
        eventually(lambda: streaming in log.read_text(), within=60)  # noqa: B023

    run = uuid.uuid4().hex[:8]
    # A's backlog, made while A is suspended so that one session mirrors it all.
    assert stack.concord("suspend", "demo").returncode == 0
    made = time.monotonic()
    _make_backlog(sf, f"backlog-{run}")
    made = time.monotonic() - made
    # A new user's years of meetings are in Salesforce long before their mailbox joins, and
    # every other mailbox of the org has listed them (as someone else's) since. Made here a
    # moment ago, they are first brought to the others' notice, as a bulk load would be, so
    # what is measured is A's first sync, not the bulk load every mailbox lists once.
    caught_up = {}
    for other in OTHER_MAILBOXES:
        began = time.monotonic()
        assert stack.concord("sync", other, "--wait", timeout=300).returncode == 0
        caught_up[other] = time.monotonic() - began
    resumed_at = time.time()
    assert stack.concord("resume", "demo").returncode == 0
    assert stack.concord("sync", "demo").returncode == 0

    def running_now() -> str | None:
        """The id of A's session that runs since the resume: the one with the backlog."""
        for session in _sessions(stack, "demo"):
            started = session.get("startTime")
            if (
                started
                and _when(started) >= resumed_at - 1
                and session["state"] == "SESSION_STATE_RUNNING"
            ):
                return str(session["sessionId"])
        return None

    big_id = eventually(running_now, within=120, every=0.2)

    def big_session() -> dict[str, Any]:
        [found] = [s for s in _sessions(stack, "demo") if s["sessionId"] == big_id]
        return found

    saved: dict[str, tuple[str, float]] = {}  # subject -> (mailbox, when saved)
    arrived: dict[str, float] = {}
    stop = threading.Event()
    utc = EWSTimeZone("UTC")
    tomorrow = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)

    def save_meetings() -> None:
        n = 0
        while not stop.is_set():
            subject = f"fair-{run}-{n:04d}"
            if n % 2 == 0:
                answer = http.post(
                    f"{graph_user}/events", json=meeting(subject, categories=["Salesforce"])
                )
                assert answer.status_code == 201, answer.text
                saved[subject] = ("B", time.monotonic())
            else:
                start = tomorrow + dt.timedelta(days=1, minutes=30 * n)
                CalendarItem(
                    account=account,
                    folder=account.calendar,
                    subject=subject,
                    categories=["Salesforce"],
                    start=EWSDateTime.from_datetime(start).astimezone(utc),
                    end=EWSDateTime.from_datetime(start + dt.timedelta(minutes=30)).astimezone(utc),
                ).save(send_meeting_invitations="SendToNone")
                saved[subject] = ("A", time.monotonic())
            n += 1
            stop.wait(EVERY_SECONDS)

    # Polled every 50 ms: by SystemModstamp from before the first save, which Salesforce reads
    # through its index, so the watch does not load the org it measures with a scan of every
    # Event (the backlog's 10,000 among them) at each look.
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def watch_salesforce() -> None:
        while not stop.is_set() or len(arrived) < len(saved):
            seen = time.monotonic()
            soql = (
                f"SELECT Subject FROM Event WHERE SystemModstamp >= {since} AND "
                f"Subject LIKE 'fair-{run}-%' ORDER BY SystemModstamp LIMIT 2000"
            )
            for record in records(sf, soql):
                arrived.setdefault(record["Subject"], seen)
            if stop.is_set() and time.monotonic() > stopped_at + 120:
                return
            time.sleep(0.05)

    stopped_at = float("inf")
    writer = threading.Thread(target=save_meetings, daemon=True)
    watcher = threading.Thread(target=watch_salesforce, daemon=True)
    writer.start()
    watcher.start()
    # Until the big session ends (its end time is read from its record).
    deadline = time.monotonic() + 1200
    finished: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        session = big_session()
        if session["state"] not in (
            "SESSION_STATE_QUEUED",
            "SESSION_STATE_RUNNING",
        ):
            finished = session
            break
        time.sleep(0.5)
    big_ended = time.monotonic()
    stop.set()
    stopped_at = time.monotonic()
    writer.join(60)
    watcher.join(180)
    http.close()

    assert finished is not None, "the big session did not end in 20 minutes"
    written = int(finished.get("counts", {}).get("mail", {}).get("created", 0))
    outcome = finished["state"].removeprefix("SESSION_STATE_").lower()
    if finished.get("failureReason"):
        outcome += f" ({finished['failureReason']})"
    missing = sorted(set(saved) - set(arrived))
    assert not missing, f"{len(missing)} meetings never reached Salesforce, e.g. {missing[:3]}"

    session_seconds = _when(finished["endTime"]) - _when(finished["startTime"])
    chunk_seconds = session_seconds / max(1, ITEMS / CHUNK)
    latency = {box: [arrived[s] - t for s, (b, t) in saved.items() if b == box] for box in "AB"}
    # What a change in A waited before: until the big session ended (then its own session).
    hostage = [big_ended - t for s, (b, t) in saved.items() if b == "A" and t < big_ended]
    b50, b99 = _percentiles(latency["B"])
    a50, a99 = _percentiles(latency["A"])
    print()
    print(
        f"fairness: mailbox A's first sync of {ITEMS} Salesforce Events (made in {made:.1f} s) "
        f"ran {session_seconds:.1f} s, {outcome}, {written} written, {chunk_seconds:.2f} s a "
        f"chunk of {CHUNK}; "
        f"a meeting saved every {EVERY_SECONDS:g} s meanwhile, in turn in B and in A:"
    )
    print(
        "  before A resumed, the other mailboxes' sessions that list the backlog as someone "
        "else's: " + ", ".join(f"{m} {t:.1f} s" for m, t in caught_up.items())
    )
    print(
        f"  B (another mailbox), {len(latency['B'])} meetings -> Salesforce: "
        f"p50 {b50:.2f} s, p99 {b99:.2f} s (target p99 <= 3 s)"
    )
    print(
        f"  A (the big session's own), {len(latency['A'])} meetings -> Salesforce: p50 "
        f"{a50:.2f} s, p99 {a99:.2f} s = {a99 / chunk_seconds:.1f} chunks "
        f"(target <= 3 s after the chunk in progress: p99 - 1 chunk = "
        f"{a99 - chunk_seconds:.2f} s)"
    )
    first = min(t for _, t in saved.values())
    slowest = sorted(((arrived[s] - t, b, t - first) for s, (b, t) in saved.items()), reverse=True)
    print(
        "  the slowest, by when they were saved after the first: "
        + ", ".join(f"{b} +{at:.0f} s: {waited:.2f} s" for waited, b, at in slowest[:4])
    )
    if finished.get("traceId"):
        print(f"  the big session's calls: {_where_the_time_went(stack, finished['traceId'])}")
        print(f"  after its last write: {_tail(stack, finished['traceId'])}")
    if hostage:
        print(
            f"  waiting for the big session's end instead (before): mean "
            f"{statistics.mean(hostage):.1f} s, max {max(hostage):.1f} s "
            f"({statistics.mean(hostage) / a50:.0f}x A's p50)"
        )
