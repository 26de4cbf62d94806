"""From a meeting saved in the mailbox to its Event in Salesforce, with nobody forcing a session.

The stack as `make up` runs it: the Exchange emulator streams the change to the mail-connector,
which publishes a push hint, which the reconciler's scheduler turns into a session. Printed as
measured in one run (never gated on times): median and 99th percentile over 200 meetings saved
10 a second, beside the seed product's 30-minute schedule (a change waits 15 minutes on
average and 30 at worst there). Targets: p50 <= 1 s and p99 <= 3 s.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
import uuid

import pytest
from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone  # type: ignore[import-untyped]

from tests.e2e.clients import demo_mailbox, demo_org, records
from tests.e2e.conftest import RunningStack

CHANGES = 200
PER_SECOND = 10
SEED_SCHEDULE_SECONDS = 30 * 60


@pytest.mark.timeout(600)
def test_change_to_salesforce_latency(stack: RunningStack) -> None:
    account = demo_mailbox(stack)
    sf = demo_org(stack)
    # Start from a synced mailbox, so the first change does not wait behind the first sync.
    assert stack.concord("sync", "demo", "--wait").returncode == 0

    prefix = f"latency-{uuid.uuid4().hex[:8]}"
    saved: dict[str, float] = {}
    arrived: dict[str, float] = {}
    utc = EWSTimeZone("UTC")
    tomorrow = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)

    def save_meetings() -> None:
        for n in range(CHANGES):
            subject = f"{prefix}-{n:03d}"
            start = tomorrow + dt.timedelta(days=1, minutes=30 * n)
            CalendarItem(
                account=account,
                folder=account.calendar,
                subject=subject,
                # What shares a meeting with Salesforce (the default selection).
                categories=["Salesforce"],
                start=EWSDateTime.from_datetime(start).astimezone(utc),
                end=EWSDateTime.from_datetime(start + dt.timedelta(minutes=30)).astimezone(utc),
            ).save(send_meeting_invitations="SendToNone")
            saved[subject] = time.monotonic()
            time.sleep(1 / PER_SECOND)

    writer = threading.Thread(target=save_meetings, daemon=True)
    writer.start()
    deadline = time.monotonic() + 300
    while len(arrived) < CHANGES and time.monotonic() < deadline:
        seen = time.monotonic()
        for record in records(sf, f"SELECT Subject FROM Event WHERE Subject LIKE '{prefix}-%'"):
            arrived.setdefault(record["Subject"], seen)
        time.sleep(0.05)
    writer.join(60)

    missing = sorted(set(saved) - set(arrived))
    assert not missing, f"{len(missing)} meetings never reached Salesforce, e.g. {missing[:3]}"
    latencies = sorted(arrived[s] - saved[s] for s in saved)
    p50 = statistics.median(latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print()
    print(
        f"change -> Salesforce Event, {CHANGES} meetings saved {PER_SECOND}/s, no forced session:"
    )
    print(f"  p50 {p50:.2f} s (target <= 1 s), p99 {p99:.2f} s (target <= 3 s)")
    print(
        f"  seed product's 30-minute schedule: {SEED_SCHEDULE_SECONDS / 2 / p50:.0f}x slower on "
        f"average, {SEED_SCHEDULE_SECONDS / p99:.0f}x at worst"
    )
