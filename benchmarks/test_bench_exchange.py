"""EWS calls the mail-connector's Exchange provider spends, counted by the emulator's admin API.

Printed as ratios against the floor (../shared/REFERENCE.md, "Throughput floors"), measured in
one run; call counts are deterministic, so the listing target is also asserted:
- listing: one SyncFolderItems per page of changes (≤512 a call) is the floor; GetItem batches
  (occurrence exceptions, MIME) are counted apart; target ≤ 3 calls beyond GetItem per 1,000.
  Shared emails span three folders (Salesforce Emails, plus Inbox and Sent Items selected by
  category), so their listing pays one more SyncFolderItems per quiet folder and round.
- writing: one write request per item is the floor (EWS could batch more into one call).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree

from concord.common.v1 import resources_pb2 as r
from concord_exchange_emulator import items as emulated
from concord_exchange_emulator import xmlns
from concord_exchange_emulator.store import new_id
from concord_exchange_emulator.testing import RunningEmulator
from concord_mail_connector.adapters.exchange import MAX_PAGE, ExchangeProvider
from concord_mail_connector.domain.model import Cursor, Kind, MailboxAccount, Provider
from concord_mail_connector.domain.provider import MailboxAccess, Write, WriteOperation

CHANGED = 1000
WRITTEN = 100
LISTING_TARGET = 3  # EWS calls beyond GetItem per 1,000 changed items listed


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("bench-exchange"), seed=False).start()
    yield emu
    emu.stop()


def _mailbox(emulator: RunningEmulator) -> MailboxAccess:
    service = (f"svc-{uuid.uuid4().hex[:8]}@concord.test", uuid.uuid4().hex)
    emulator.admin(
        "POST",
        "users",
        {"username": service[0], "password": service[1], "can_impersonate": True},
    )
    address = f"bench-{uuid.uuid4().hex[:8]}@concord.test"
    emulator.admin("POST", "users", {"username": address, "password": "x"})
    settings = {"service_url": emulator.endpoint, "username": service[0], "auth_type": "basic"}
    now = datetime.now(UTC)
    account = MailboxAccount(
        address.split("@")[0], address, Provider.EXCHANGE_EWS, settings, True, now, now, "e"
    )
    return MailboxAccess(account, service[1].encode())


def _plant(emulator: RunningEmulator, address: str, folder_id: str, node: etree._Element) -> None:
    """Straight into the emulator's store: the bench measures the listing, not the setup."""
    item, _ = emulated.prepare_new(node, owner=address, owner_name=address)
    emulator.store.insert_item(new_id("AAMkI"), address, folder_id, etree.tostring(item))


def _event(n: int) -> etree._Element:
    node = etree.Element(xmlns.t("CalendarItem"), nsmap={"t": xmlns.T})
    start = datetime(2031, 1, 6, 9, tzinfo=UTC) + dt.timedelta(hours=n)
    xmlns.sub(node, xmlns.t("Subject"), f"Meeting {n}")
    xmlns.sub(node, xmlns.t("Start"), start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    xmlns.sub(
        node, xmlns.t("End"), (start + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    xmlns.sub(node, xmlns.t("IsAllDayEvent"), "false")
    xmlns.sub(node, xmlns.t("StartTimeZone"), Id="W. Europe Standard Time")
    return node


def _message(n: int) -> etree._Element:
    msg = EmailMessage()
    msg["From"] = "ada@acme.example"
    msg["To"] = "rep@concord.test"
    msg["Subject"] = f"Quote {n}"
    msg["Message-ID"] = f"<bench-{n}-{uuid.uuid4().hex}@acme.example>"
    msg["Date"] = "Mon, 06 Jan 2031 09:00:00 +0000"
    msg.set_content(f"About quote {n}.")
    node = etree.Element(xmlns.t("Message"), nsmap={"t": xmlns.T})
    mime = base64.b64encode(msg.as_bytes()).decode()
    xmlns.sub(node, xmlns.t("MimeContent"), mime, CharacterSet="UTF-8")
    return node


async def _list_all(
    provider: ExchangeProvider, mailbox: MailboxAccess, kind: Kind, token: str
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


def _calls(emulator: RunningEmulator) -> dict[str, int]:
    counted: dict[str, int] = emulator.admin("GET", "calls")
    emulator.admin("DELETE", "calls")
    return counted


def _split(calls: dict[str, int]) -> tuple[int, int]:
    get_item = calls.get("GetItem", 0)
    return get_item, sum(calls.values()) - get_item


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("kind", "folder", "quiet_folders"), [(Kind.CALENDAR_ITEM, "calendar", 0), (Kind.EMAIL, "", 2)]
)
async def test_ews_calls_per_thousand_changed_items_listed(
    emulator: RunningEmulator, kind: Kind, folder: str, quiet_folders: int
) -> None:
    provider = ExchangeProvider(max_workers=2)
    mailbox = _mailbox(emulator)
    address = mailbox.account.address
    try:
        # Warm: the account, its folders (the email folder is made here) and a cursor.
        _, token = await _list_all(provider, mailbox, kind, "")
        if folder:
            target = emulator.store.distinguished_folder(address, folder)
        else:
            root = emulator.store.distinguished_folder(address, "msgfolderroot")
            assert root is not None
            [target] = [
                f
                for f in emulator.store.child_folders(root.id)
                if f.display_name == "Salesforce Emails"
            ]
        assert target is not None
        for n in range(CHANGED):
            node = _event(n) if kind == Kind.CALENDAR_ITEM else _message(n)
            _plant(emulator, address, target.id, node)
        _calls(emulator)
        listed, _ = await _list_all(provider, mailbox, kind, token)
        calls = _calls(emulator)
    finally:
        await provider.close()
    assert listed == CHANGED
    get_item, rest = _split(calls)
    floor = math.ceil(CHANGED / MAX_PAGE)
    per_thousand = rest * 1000 / CHANGED
    print()
    print(f"{kind.value}: {CHANGED} changed items listed, EWS calls {dict(sorted(calls.items()))}")
    print(
        f"  GetItem batches {get_item * 1000 / CHANGED:.1f} per 1,000; "
        f"beyond GetItem {per_thousand:.1f} per 1,000 (target ≤ {LISTING_TARGET}, floor "
        f"{floor}: {rest / floor:.2f}x the floor; {quiet_folders} quiet folders)"
    )
    assert rest <= floor + quiet_folders
    assert per_thousand <= LISTING_TARGET + quiet_folders


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


@pytest.mark.timeout(300)
async def test_ews_calls_per_hundred_items_written(emulator: RunningEmulator) -> None:
    provider = ExchangeProvider(max_workers=2)
    mailbox = _mailbox(emulator)
    try:
        await provider.list_changes(mailbox, Kind.CALENDAR_ITEM, Cursor("calendar-item", ""), 1)
        _calls(emulator)
        creates = [
            Write(WriteOperation.CREATE, f"bench-{n}", r.ItemRef(), _meeting(n))
            for n in range(WRITTEN)
        ]
        created = await provider.apply_items(mailbox, creates)
        create_calls = _calls(emulator)
        updates = [
            Write(
                WriteOperation.UPDATE,
                w.link_id,
                w.ref or r.ItemRef(),
                _meeting(n),
                update_mask=["subject"],
            )
            for n, w in enumerate(created)
        ]
        updated = await provider.apply_items(mailbox, updates)
        update_calls = _calls(emulator)
        deletes = [
            Write(WriteOperation.DELETE, w.link_id, w.ref or r.ItemRef(), r.MailItem())
            for w in updated
        ]
        deleted = await provider.apply_items(mailbox, deletes)
        delete_calls = _calls(emulator)
    finally:
        await provider.close()
    for results in (created, updated, deleted):
        assert {x.status for x in results} == {r.WRITE_STATUS_OK}
    print()
    for what, calls in (
        ("create", create_calls),
        ("update", update_calls),
        ("delete", delete_calls),
    ):
        total = sum(calls.values())
        print(
            f"{what} {WRITTEN} calendar items: {total} EWS calls {dict(sorted(calls.items()))}, "
            f"{total / WRITTEN:.2f}x the floor of one write request per item"
        )
