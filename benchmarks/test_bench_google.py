"""Google calls the mail-connector's Google provider spends, counted by the Google emulator, and
push latency from a Calendar change to `concord.mail.changed.<mailbox>` on NATS.

Printed as ratios against the floor (../shared/REFERENCE.md, "Throughput floors"), measured in
one run; call counts are deterministic, so the listing target is asserted:
- listing: one events.list per page of changes (≤250 a page as the provider asks) is the floor;
  target within 1.1x of it. Gmail has no listing with content: one messages.get (format=raw)
  per message is inherent, sent 50 to a batch request; both counts are printed.
- writing: one write request per item is the floor for events (Calendar has no bulk write);
  event creates, updates and deletes go 50 to a batch request (each part still counts against
  the quota). Contacts
  go in People's own batch calls: 200 creates or updates a call (an update also reads the
  contacts in one getBatchGet), 500 deletes; calls per 100 contacts written are printed.
- latency: a watch channel POST → the push hint; target p99 ≤ 1 s. Printed, not asserted.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.fernet import Fernet
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg

from concord.common.v1 import resources_pb2 as r
from concord_google_emulator.testing import RunningEmulator, build_service
from concord_mail_connector.__main__ import MIGRATIONS
from concord_mail_connector.adapters.google import MAX_PAGE, GoogleProvider
from concord_mail_connector.adapters.push_accounts import SqlPushAccounts
from concord_mail_connector.adapters.push_google import GoogleChangeFeed, NotificationReceiver
from concord_mail_connector.adapters.push_nats import NatsChangePublisher
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.domain.model import (
    AccountUpdate,
    Cursor,
    Kind,
    MailboxAccount,
    Provider,
)
from concord_mail_connector.domain.provider import MailboxAccess, Write, WriteOperation
from concord_mail_connector.domain.push import PushMode, PushSupervisor
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import NatsServer

CHANGED = 1000
WRITTEN = 100
LISTING_TARGET = 1.1  # x the floor
CHANGES = 100
WINDOW = 0.2


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("bench-google")).start()
    yield emu
    emu.stop()


def _mailbox(emulator: RunningEmulator) -> MailboxAccess:
    key = emulator.service_account()
    address = emulator.add_user(f"bench-{uuid.uuid4().hex[:8]}@concord.test")
    settings = {"service_account_email": key["client_email"], "api_url": emulator.base}
    now = datetime.now(UTC)
    account = MailboxAccount("bench", address, Provider.GOOGLE, settings, True, now, now, "e")
    return MailboxAccess(account, json.dumps(key).encode())


def _counted(emulator: RunningEmulator) -> tuple[dict[str, int], dict[str, int]]:
    calls: dict[str, int] = emulator.admin("GET", "calls")
    requests: dict[str, int] = emulator.admin("GET", "requests")
    emulator.admin("DELETE", "calls")
    emulator.admin("DELETE", "requests")
    return calls, requests


def _event(n: int) -> dict[str, Any]:
    start = datetime(2031, 1, 6, 9, tzinfo=UTC) + dt.timedelta(hours=n)
    return {
        "summary": f"Meeting {n}",
        "start": {"dateTime": start.isoformat(), "timeZone": "Europe/Paris"},
        "end": {
            "dateTime": (start + dt.timedelta(minutes=30)).isoformat(),
            "timeZone": "Europe/Paris",
        },
    }


def _raw(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "ada@acme.example"
    msg["To"] = "rep@concord.test"
    msg["Subject"] = f"Quote {n}"
    msg["Message-ID"] = f"<bench-{n}-{uuid.uuid4().hex}@acme.example>"
    msg["Date"] = "Mon, 06 Jan 2031 09:00:00 +0000"
    msg.set_content(f"About quote {n}.")
    return msg.as_bytes()


async def _list_all(
    provider: GoogleProvider, mailbox: MailboxAccess, kind: Kind, token: str
) -> tuple[int, str]:
    listed = 0
    while True:
        page = await provider.list_changes(
            mailbox, kind, Cursor(kind.value, token), MAX_PAGE, include_content=True
        )
        assert not page.full_resync_required
        assert not any(c.HasField("problem") for c in page.changes)
        listed += len(page.changes)
        token = page.next_cursor.token
        if not page.has_more:
            return listed, token


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", [Kind.CALENDAR_ITEM, Kind.EMAIL])
async def test_google_calls_per_thousand_changes_listed(
    emulator: RunningEmulator, kind: Kind
) -> None:
    provider = GoogleProvider(max_workers=2, ca_file=emulator.ca_file)
    mailbox = _mailbox(emulator)
    address = mailbox.account.address
    state = emulator.emulator
    try:
        _, token = await _list_all(provider, mailbox, kind, "")
        # Straight into the emulator's state: the bench measures the listing, not the setup.
        if kind == Kind.CALENDAR_ITEM:
            for n in range(CHANGED):
                state.calendar.plant(address, address, _event(n))
        else:
            gmail = build_service(emulator, json.loads(mailbox.secret or b""), "gmail", address)
            label = (
                gmail.users().labels().create(userId="me", body={"name": "Salesforce"}).execute()
            )
            for n in range(CHANGED):
                body = {
                    "raw": base64.urlsafe_b64encode(_raw(n)).decode(),
                    "labelIds": ["INBOX", label["id"]],
                }
                gmail.users().messages().insert(userId="me", body=body).execute()
            gmail.close()
        _counted(emulator)
        listed, _ = await _list_all(provider, mailbox, kind, token)
        calls, requests = _counted(emulator)
    finally:
        await provider.close()
    assert listed == CHANGED
    total_calls = sum(calls.values())
    http = sum(requests.values())
    print()
    print(f"google {kind.value}: {CHANGED} changes listed; calls {dict(sorted(calls.items()))}")
    if kind == Kind.CALENDAR_ITEM:
        floor = math.ceil(CHANGED / MAX_PAGE)
        print(
            f"  {total_calls * 1000 / CHANGED:.1f} calls and {http * 1000 / CHANGED:.1f} HTTP "
            f"requests per 1,000 (floor {floor} events.list: {total_calls / floor:.2f}x; "
            f"target ≤ {LISTING_TARGET}x)"
        )
        assert total_calls <= floor * LISTING_TARGET
    else:
        gets = calls.get("gmail.users.messages.get", 0)
        rest = total_calls - gets
        floor = math.ceil(CHANGED / MAX_PAGE)
        print(
            f"  {total_calls * 1000 / CHANGED:.1f} calls per 1,000 ({gets} messages.get, one per "
            f"message, in {requests.get('batch', 0)} batch requests); beyond them {rest} calls "
            f"(floor {floor} history.list pages: {rest / floor:.2f}x); "
            f"{http * 1000 / CHANGED:.1f} HTTP requests per 1,000"
        )


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _meeting(n: int) -> r.MailItem:
    start = datetime(2031, 6, 2, 8, tzinfo=UTC) + dt.timedelta(hours=n)
    return r.MailItem(
        calendar_item=r.CalendarItem(
            subject=f"Meeting {n}",
            start=_ts(start),
            end=_ts(start + dt.timedelta(hours=1)),
            time_zone="Europe/Paris",
        )
    )


Counts = tuple[dict[str, int], dict[str, int]]


async def _write_round(
    emulator: RunningEmulator,
    kind: Kind,
    item: Callable[[int, bool], r.MailItem],
    update_mask: list[str],
    known_new: bool = False,
) -> dict[str, Counts]:
    """WRITTEN items of `kind` created, updated (`item(n, True)`, the fields in `update_mask`)
    and deleted through the provider: the emulator's calls and HTTP requests for each step."""
    provider = GoogleProvider(max_workers=2, ca_file=emulator.ca_file)
    mailbox = _mailbox(emulator)
    counted: dict[str, Counts] = {}
    try:
        await provider.list_changes(mailbox, kind, Cursor(kind.value, ""), 1)
        _counted(emulator)
        creates = [
            Write(
                WriteOperation.CREATE,
                f"bench-{n}",
                r.ItemRef(),
                item(n, False),
                known_new=known_new,
            )
            for n in range(WRITTEN)
        ]
        created = await provider.apply_items(mailbox, creates)
        counted["create"] = _counted(emulator)
        updates = [
            Write(
                WriteOperation.UPDATE,
                w.link_id,
                w.ref or r.ItemRef(),
                item(n, True),
                update_mask=update_mask,
            )
            for n, w in enumerate(created)
        ]
        updated = await provider.apply_items(mailbox, updates)
        counted["update"] = _counted(emulator)
        deletes = [
            Write(WriteOperation.DELETE, w.link_id, w.ref or r.ItemRef(), r.MailItem())
            for w in updated
        ]
        deleted = await provider.apply_items(mailbox, deletes)
        counted["delete"] = _counted(emulator)
    finally:
        await provider.close()
    for results in (created, updated, deleted):
        assert {x.status for x in results} == {r.WRITE_STATUS_OK}
    return counted


def _print_rounds(counted: dict[str, Counts], noun: str, per: Callable[[int], str]) -> None:
    print()
    for what, (calls, requests) in counted.items():
        total = sum(calls.values())
        http = sum(requests.values())
        print(
            f"google {what} {WRITTEN} {noun}: {total} calls {dict(sorted(calls.items()))} in "
            f"{http} HTTP requests; {per(total)}"
        )


@pytest.mark.timeout(300)
async def test_google_calls_per_hundred_items_written(emulator: RunningEmulator) -> None:
    counted = await _write_round(
        emulator, Kind.CALENDAR_ITEM, lambda n, _: _meeting(n), update_mask=["subject"]
    )
    _print_rounds(
        counted, "events", lambda total: f"{total / WRITTEN:.2f}x the floor of one write per item"
    )


def _person(n: int, given: str = "Ada") -> r.MailItem:
    return r.MailItem(
        contact=r.ContactItem(
            given_name=f"{given} {n}",
            family_name="Lovelace",
            email_addresses=[r.ContactEmailAddress(address=f"ada{n}@acme.example")],
        )
    )


@pytest.mark.timeout(300)
async def test_google_calls_per_hundred_contacts_written(emulator: RunningEmulator) -> None:
    # As an initial sync writes them: the cursor proves each new (no lookup by link id).
    counted = await _write_round(
        emulator,
        Kind.CONTACT,
        lambda n, updated: _person(n, "Augusta" if updated else "Ada"),
        update_mask=["given_name"],
        known_new=True,
    )
    _print_rounds(
        counted,
        "contacts",
        lambda total: f"{total * 100 / WRITTEN:.0f} calls per 100 contacts written",
    )


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@pytest.mark.timeout(600)
async def test_google_change_to_event_latency(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    mailbox = _mailbox(emulator)
    key = json.loads(mailbox.secret or b"")
    engine = create_engine(f"sqlite:///{tmp_path}/mail.db")
    await migrate(engine, MIGRATIONS)
    store = SqlAccountStore(engine, SecretBox(Fernet.generate_key()))
    await store.upsert(
        AccountUpdate(
            mailbox="bench",
            address=mailbox.account.address,
            provider=Provider.GOOGLE,
            settings=dict(mailbox.account.settings),
            secret=mailbox.secret,
        )
    )
    receiver = NotificationReceiver("127.0.0.1", 0, tmp_path / "push")
    await receiver.start()
    emulator.admin("POST", "trust", {"ca_file": str(receiver.ca_file)})
    provider = GoogleProvider(max_workers=2, ca_file=emulator.ca_file)
    client = await nats.connect(nats_server.url)
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def arrived(msg: Msg) -> None:
        await arrivals.put(time.perf_counter())

    await client.subscribe("concord.mail.changed.bench", cb=arrived)
    supervisor = PushSupervisor(
        SqlPushAccounts(engine, store),
        {Provider.GOOGLE: GoogleChangeFeed(provider, receiver, gmail_poll_seconds=3600)},
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
    await asyncio.sleep(WINDOW * 2)
    while not arrivals.empty():
        arrivals.get_nowait()
    service = build_service(emulator, key, "calendar", mailbox.account.address)
    events = service.events()
    latencies: list[float] = []
    writes: list[float] = []
    missed = 0
    made: dict[str, Any] = {}
    for index in range(CHANGES):
        began = time.perf_counter()
        # Half creates, half updates: both are changes the mailbox owner makes.
        if index % 2 == 0:
            made = await asyncio.to_thread(
                events.insert(calendarId="primary", body=_event(index)).execute
            )
        else:
            await asyncio.to_thread(
                events.patch(
                    calendarId="primary", eventId=made["id"], body={"summary": f"edit {index}"}
                ).execute
            )
        writes.append(time.perf_counter() - began)
        try:
            async with asyncio.timeout(10):
                got = await arrivals.get()
        except TimeoutError:
            missed += 1
            continue
        latencies.append(got - began)
        await asyncio.sleep(WINDOW * 1.5)
        while not arrivals.empty():
            arrivals.get_nowait()
    service.close()
    await supervisor.stop()
    await client.drain()
    await receiver.stop()
    await provider.close()
    await engine.dispose()
    median = statistics.median(latencies)
    p99 = _percentile(latencies, 0.99)
    write = statistics.median(writes)
    print()
    print(f"google push: calendar change → concord.mail.changed over {len(latencies)} changes")
    print(f"  median {median * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   (target p99 ≤ 1000 ms)")
    print(f"  missed (no event in 10 s): {missed}")
    print(
        f"  write round trip (median): {write * 1000:.1f} ms → p50 / write = {median / write:.1f}x"
    )
