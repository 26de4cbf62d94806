"""The MailProvider contract: what every mail system adapter must do, run against each one.

Later providers (IMAP/CalDAV/CardDAV, Graph, Google) add a harness to `HARNESSES`.
"""

from __future__ import annotations

import datetime as dt
import gc
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Protocol

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    IMPERSONATION,
    Account,
    Configuration,
    Credentials,
)
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord_exchange_emulator.testing import RunningEmulator
from concord_mail_connector.adapters.exchange import ExchangeProvider
from concord_mail_connector.domain.model import Cursor, Kind, MailboxAccount, Provider
from concord_mail_connector.domain.provider import (
    MailboxAccess,
    MailProvider,
    Write,
    WriteOperation,
)

pytestmark = pytest.mark.integration


class Harness(Protocol):
    provider: MailProvider

    def new_mailbox(self) -> MailboxAccess: ...

    def lose_next_create_response(self) -> None:
        """The next create is committed by the server, then its answer is lost."""

    def edit_elsewhere(self, mailbox: MailboxAccess, native_id: str, subject: str) -> None:
        """Another client edits the item (so versions held by Concord go stale)."""


class ExchangeHarness:
    def __init__(self, emulator: RunningEmulator) -> None:
        self.emulator = emulator
        self.provider = ExchangeProvider(max_workers=4, max_back_off=2)
        # One service account impersonating every mailbox, as an org runs it.
        self.service = (f"svc-{uuid.uuid4().hex[:8]}@concord.test", uuid.uuid4().hex)
        emulator.admin(
            "POST",
            "users",
            {"username": self.service[0], "password": self.service[1], "can_impersonate": True},
        )

    def new_mailbox(self) -> MailboxAccess:
        address = f"c-{uuid.uuid4().hex[:10]}@concord.test"
        self.emulator.admin("POST", "users", {"username": address, "password": "x"})
        settings = {
            "service_url": self.emulator.endpoint,
            "username": self.service[0],
            "auth_type": "basic",
        }
        now = datetime.now(UTC)
        account = MailboxAccount(
            address.split("@")[0], address, Provider.EXCHANGE_EWS, settings, True, now, now, "e"
        )
        return MailboxAccess(account, self.service[1].encode())

    def lose_next_create_response(self) -> None:
        self.emulator.admin("POST", "faults", {"kind": "drop_response", "operation": "CreateItem"})

    def edit_elsewhere(self, mailbox: MailboxAccess, native_id: str, subject: str) -> None:
        config = Configuration(
            service_endpoint=self.emulator.endpoint,
            credentials=Credentials(*self.service),
            auth_type=BASIC,
        )
        account = Account(
            mailbox.account.address, config=config, autodiscover=False, access_type=IMPERSONATION
        )
        [item] = account.fetch(ids=[(native_id, None)])
        item.subject = subject
        item.save(update_fields=["subject"])


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("exchange"), seed=False).start()
    yield emu
    emu.stop()


HARNESSES: dict[str, Callable[[RunningEmulator], Harness]] = {"exchange": ExchangeHarness}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(
    request: pytest.FixtureRequest, emulator: RunningEmulator
) -> AsyncIterator[Harness]:
    made = HARNESSES[request.param](emulator)
    yield made
    if isinstance(made, ExchangeHarness):
        await made.provider.close()
    emulator.admin("DELETE", "faults")
    close_connections()
    with warnings.catch_warnings():
        # Pooled sessions dropped after an injected fault; see test_exchange.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def event(subject: str) -> r.MailItem:
    start = datetime(2031, 6, 2, 8, tzinfo=UTC)
    return r.MailItem(
        ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM),
        calendar_item=r.CalendarItem(
            subject=subject,
            start=_ts(start),
            end=_ts(start + dt.timedelta(hours=1)),
            time_zone="Europe/Paris",
        ),
    )


def create(link_id: str, subject: str = "Kick-off") -> Write:
    return Write(WriteOperation.CREATE, link_id, r.ItemRef(), event(subject))


def update(ref: r.ItemRef, subject: str) -> Write:
    return Write(WriteOperation.UPDATE, ref.link_id, ref, event(subject), update_mask=["subject"])


def delete(ref: r.ItemRef) -> Write:
    return Write(WriteOperation.DELETE, ref.link_id, ref, r.MailItem())


async def listing(
    h: Harness, mailbox: MailboxAccess, token: str = ""
) -> tuple[list[r.MailChange], str]:
    changes: list[r.MailChange] = []
    while True:
        page = await h.provider.list_changes(
            mailbox, Kind.CALENDAR_ITEM, Cursor("calendar-item", token), 2
        )
        assert not page.full_resync_required
        changes += page.changes
        token = page.next_cursor.token
        if not page.has_more:
            return changes, token


async def test_cursor_round_trip(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    changes, token = await listing(harness, mailbox)
    assert changes == []
    assert token
    assert (
        await listing(harness, mailbox, token) == ([], token)
        or (await listing(harness, mailbox, token))[0] == []
    )


async def test_create_update_delete_are_listed_in_pages(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    _, token = await listing(harness, mailbox)
    results = await harness.provider.apply_items(
        mailbox, [create(f"l{n}", f"s{n}") for n in range(3)]
    )
    assert [x.status for x in results] == [r.WRITE_STATUS_OK] * 3
    changes, token = await listing(harness, mailbox, token)
    assert sorted((c.ref.link_id, c.item.calendar_item.subject) for c in changes) == [
        ("l0", "s0"),
        ("l1", "s1"),
        ("l2", "s2"),
    ]
    first = results[0].ref
    assert first is not None
    [updated, deleted] = await harness.provider.apply_items(
        mailbox, [update(first, "s0 edited"), delete(results[1].ref or r.ItemRef())]
    )
    assert (updated.status, deleted.status) == (r.WRITE_STATUS_OK, r.WRITE_STATUS_OK)
    changes, _ = await listing(harness, mailbox, token)
    assert sorted((c.type, c.ref.native_id) for c in changes) == sorted(
        [
            (r.CHANGE_TYPE_UPSERT, first.native_id),
            (r.CHANGE_TYPE_DELETE, (results[1].ref or r.ItemRef()).native_id),
        ]
    )


async def test_a_replayed_create_after_a_lost_response_finds_the_first(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    harness.lose_next_create_response()
    [lost] = await harness.provider.apply_items(mailbox, [create("once")])
    assert lost.status == r.WRITE_STATUS_RETRYABLE
    [replayed] = await harness.provider.apply_items(mailbox, [create("once")])
    assert replayed.status == r.WRITE_STATUS_OK
    assert replayed.already_applied
    changes, _ = await listing(harness, mailbox)
    assert [c.ref.link_id for c in changes] == ["once"]


async def test_a_concurrent_edit_is_a_conflict_not_an_overwrite(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    [written] = await harness.provider.apply_items(mailbox, [create("c1")])
    assert written.ref is not None
    harness.edit_elsewhere(mailbox, written.ref.native_id, "theirs")
    [stale] = await harness.provider.apply_items(mailbox, [update(written.ref, "ours")])
    assert stale.status == r.WRITE_STATUS_CONFLICT
    found = await harness.provider.get_items(mailbox, [written.ref])
    assert [i.calendar_item.subject for i in found.items] == ["theirs"]


async def test_writes_to_missing_items_are_not_found(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    [written] = await harness.provider.apply_items(mailbox, [create("gone")])
    assert written.ref is not None
    await harness.provider.apply_items(mailbox, [delete(written.ref)])
    results = await harness.provider.apply_items(
        mailbox, [delete(written.ref), update(written.ref, "again")]
    )
    assert [x.status for x in results] == [r.WRITE_STATUS_NOT_FOUND] * 2
    found = await harness.provider.get_items(mailbox, [written.ref])
    assert list(found.not_found) == [written.ref]
