"""The sync engine (#5 "Done means"), printed as measured in one run (never gated on times):

- planner throughput on one core (CPU time), items/s for 10,000 and 100,000 links with one
  change in ten (half edited in the mailbox, half in Salesforce), against the target of
  20,000 items/s;
- the reconciler's peak resident memory while planning 100,000 links, in a subprocess of its
  own that first imports the whole service (gRPC, SQLAlchemy, NATS), against 250 MB;
- the writes and calls of a session with no changes: the engine over in-memory sides after a
  first sync (must be zero writes), and the peer calls the gRPC sides make for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from concord.common.v1 import resources_pb2 as res
from concord_reconciler.mirror.adapters.crm_side import CrmSyncSide
from concord_reconciler.mirror.adapters.mail_side import MailSyncSide
from concord_reconciler.mirror.adapters.memory import MemoryLinkStore, MemorySide
from concord_reconciler.mirror.adapters.sync_sides import SessionMapping
from concord_reconciler.mirror.domain.executor import sync_pair
from concord_reconciler.mirror.domain.planner import SyncPolicy, plan
from concord_reconciler.mirror.domain.ports import CrmPage, MailPage
from concord_reconciler.mirror.domain.sync import Change, Link, Side, Snapshot, Value, content_hash

TARGET_ITEMS_PER_SECOND = 20_000
TARGET_RSS_MB = 250
SIZES = (10_000, 100_000)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
EVENT = res.OBJECT_KIND_CALENDAR_ITEM


def _fields(n: int) -> dict[str, Value]:
    start = NOW + timedelta(hours=n % 5000)
    return {
        "Subject": f"Pipeline review {n}",
        "StartDateTime": start.isoformat(),
        "EndDateTime": (start + timedelta(hours=1)).isoformat(),
        "Location": f"Room {n % 40}",
        "Description": "Agenda: numbers, risks, next steps.",
        "ShowAs": "Busy",
        "IsPrivate": False,
        "OwnerId": "005000000000001AAA",
    }


def workload(size: int) -> tuple[list[Link], list[Change], list[Change]]:
    """`size` links in sync, and the changes of one in ten of them."""
    links: list[Link] = []
    mail: list[Change] = []
    crm: list[Change] = []
    for n in range(size):
        fields = _fields(n)
        digest = content_hash(fields)
        links.append(
            Link(
                link_id=f"{n:08d}-0000-4000-8000-000000000000",
                mailbox_id="bench",
                kind=EVENT,
                mail_id=f"AAMk{n}",
                crm_id=f"00U{n:015d}",
                mail_version="ck1",
                crm_version="2026-01-01T00:00:00Z",
                mail_hash=digest,
                crm_hash=digest,
                base=fields,
            )
        )
        if n % 10:
            continue
        if n % 20:
            edited = {**fields, "Subject": f"Pipeline review {n} (moved)"}
            mail.append(Change(Side.MAIL, f"AAMk{n}", Snapshot(edited, version="ck2")))
        else:
            edited = {**fields, "Location": "Room 99"}
            crm.append(Change(Side.CRM, f"00U{n:015d}", Snapshot(edited, version="2026-06-01")))
    return links, mail, crm


def _planning_rate(size: int) -> tuple[float, int]:
    links, mail, crm = workload(size)
    policy = SyncPolicy(kind=EVENT)
    rounds, spent, writes = 0, 0.0, 0
    while spent < 1.5 or rounds < 2:
        started = time.process_time()
        merge = plan("bench", mail, crm, links, policy, NOW)
        spent += time.process_time() - started
        rounds += 1
        writes = len(merge.writes)
    return size * rounds / spent, writes


# Run in a fresh interpreter so the peak is the reconciler's, not this test process's.
# ru_maxrss survives exec on Linux (it still holds the forking parent's size), so the size
# once imported is the current resident set; the peak is ru_maxrss, taken after planning.
_MEMORY_PROBE = """
import json, resource, sys
import concord_reconciler.__main__  # the whole service: gRPC, SQLAlchemy, NATS, protos
from benchmarks.test_bench_engine import EVENT, NOW, workload
from concord_reconciler.mirror.domain.planner import SyncPolicy, plan
with open("/proc/self/status") as status:
    before = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
links, mail, crm = workload(int(sys.argv[1]))
merge = plan("bench", mail, crm, links, SyncPolicy(kind=EVENT), NOW)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"imported_kb": before, "peak_kb": peak, "writes": len(merge.writes)}))
"""


def _peak_rss(size: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(size)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


async def _quiet_session_on_memory_sides(size: int) -> tuple[int, dict[str, int], dict[str, int]]:
    ticks = iter(range(1, 10**9))
    mail, crm = (
        MemorySide(Side.MAIL, lambda: next(ticks)),
        MemorySide(Side.CRM, lambda: next(ticks)),
    )
    for n in range(size):
        mail.create(_fields(n))
    store, policy = MemoryLinkStore(), SyncPolicy(kind=EVENT, future_window=None)
    await sync_pair("bench", policy, mail, crm, store, NOW)
    mail.calls.clear()
    crm.calls.clear()
    quiet = await sync_pair("bench", policy, mail, crm, store, NOW)
    return quiet.writes, dict(mail.calls), dict(crm.calls)


class _Counting:
    """Peer clients answering an empty page, counting what the gRPC sides ask of them."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def list_changes(self, *args: Any, **kwargs: Any) -> Any:
        mail_side = len(args) == 3
        self._count("mail.ListChanges" if mail_side else "crm.ListChanges")
        token = res.Cursor(token="next")
        return MailPage([], token) if mail_side else CrmPage([], token)

    def __getattr__(self, name: str) -> Any:
        async def anything(*args: Any, **kwargs: Any) -> Sequence[Any]:
            self._count(name)
            return []

        return anything


async def _quiet_session_peer_calls() -> dict[str, int]:
    peers = _Counting()
    shared = SessionMapping(peers, "orgs/bench", "005000000000001AAA")
    mail = MailSyncSide(peers, shared, "mailboxes/bench")
    crm = CrmSyncSide(peers, shared, peers, "orgs/bench", "005000000000001AAA")
    store = MemoryLinkStore()
    for kind in (EVENT, res.OBJECT_KIND_TASK, res.OBJECT_KIND_CONTACT):
        # A cursor from an earlier session: what a quiet session starts from.
        store.cursors[("bench", kind, Side.MAIL)] = "c"
        store.cursors[("bench", kind, Side.CRM)] = "c"
        await sync_pair("bench", SyncPolicy(kind=kind), mail, crm, store, NOW)
    return peers.calls


@pytest.mark.timeout(900)
async def test_engine_throughput_memory_and_quiet_session() -> None:
    # First, while this process is small: a child's ru_maxrss starts at its parent's size.
    probe = _peak_rss(SIZES[-1])
    peak_mb, imported_mb = probe["peak_kb"] / 1024, probe["imported_kb"] / 1024
    print(
        f"\nreconciler resident memory planning {SIZES[-1]:,} links: peak {peak_mb:,.0f} MB"
        f" ({imported_mb:,.0f} MB once the service is imported)"
        f" = {peak_mb / TARGET_RSS_MB:.2f} x the {TARGET_RSS_MB} MB target"
    )

    print("planner throughput, one core (CPU time), one change in ten:")
    for size in SIZES:
        rate, writes = _planning_rate(size)
        print(
            f"  {size:>7,} links  {rate:12,.0f} items/s  = {rate / TARGET_ITEMS_PER_SECOND:5.2f}"
            f" x target {TARGET_ITEMS_PER_SECOND:,}/s  ({writes:,} writes planned)"
        )
        assert writes == size // 10

    writes, mail_calls, crm_calls = await _quiet_session_on_memory_sides(10_000)
    print(
        f"session with no changes over 10,000 linked items: {writes} writes;"
        f" side calls mail {mail_calls}, Salesforce {crm_calls}"
    )
    assert writes == 0
    calls = await _quiet_session_peer_calls()
    print(
        f"peer calls of a quiet session through the gRPC sides (3 pairs): {sum(calls.values())}"
        f" {dict(sorted(calls.items()))}; floor: one listing per pair and side = 6"
    )
