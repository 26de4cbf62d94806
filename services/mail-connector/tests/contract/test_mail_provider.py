"""The MailProvider contract: what every mail system adapter must do, run against each one.

Each provider adds a harness to `HARNESSES` (Exchange/EWS, Graph; later IMAP/CalDAV/CardDAV and
Google): every test runs once per harness.
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
    Folder,
    Message,
)
from exchangelib.errors import ErrorFolderNotFound  # type: ignore[import-untyped]
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from google.protobuf.timestamp_pb2 import Timestamp
from lxml import etree

from concord.common.v1 import resources_pb2 as r
from concord_exchange_emulator import items as emulated
from concord_exchange_emulator import xmlns
from concord_exchange_emulator.store import new_id
from concord_exchange_emulator.testing import RunningEmulator
from concord_graph_emulator.testing import RunningEmulator as RunningGraph
from concord_mail_connector.adapters.exchange import ExchangeProvider
from concord_mail_connector.adapters.graph import GraphProvider
from concord_mail_connector.domain.model import Cursor, Kind, MailboxAccount, Provider
from concord_mail_connector.domain.provider import (
    MailboxAccess,
    MailProvider,
    Write,
    WriteOperation,
)

pytestmark = pytest.mark.integration


class Harness(Protocol):
    # Read-only, so an adapter's own provider type satisfies it.
    @property
    def provider(self) -> MailProvider: ...

    def new_mailbox(self) -> MailboxAccess: ...

    def lose_next_create_response(self) -> None:
        """The next create is committed by the server, then its answer is lost."""

    def edit_elsewhere(self, mailbox: MailboxAccess, native_id: str, subject: str) -> None:
        """Another client edits the item (so versions held by Concord go stale)."""

    def plant_unreadable_event(self, mailbox: MailboxAccess) -> None:
        """Puts a calendar item the server holds but whose content cannot be read (here: a
        start that is no date), as a damaged store or a foreign client leaves one."""

    def plant_poison_event(self, mailbox: MailboxAccess) -> str:
        """Puts a calendar item whose reading fails as no reader foresees (issue #17, case 2):
        for Exchange an all-day item in a zone no Windows table knows, by raw SOAP, which makes
        exchangelib lose the whole SyncFolderItems page; for Graph and Google a reminder past
        what the item's field holds. Its native id."""

    def deliver(self, mailbox: MailboxAccess, where: str, mime: bytes, *categories: str) -> None:
        """Files a message in `where`: `shared` (the dedicated folder), `inbox` or `sent`."""

    async def close(self) -> None: ...


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

    def _client(self, mailbox: MailboxAccess) -> Account:
        config = Configuration(
            service_endpoint=self.emulator.endpoint,
            credentials=Credentials(*self.service),
            auth_type=BASIC,
        )
        return Account(
            mailbox.account.address, config=config, autodiscover=False, access_type=IMPERSONATION
        )

    def edit_elsewhere(self, mailbox: MailboxAccess, native_id: str, subject: str) -> None:
        [item] = self._client(mailbox).fetch(ids=[(native_id, None)])
        item.subject = subject
        item.save(update_fields=["subject"])

    def plant_unreadable_event(self, mailbox: MailboxAccess) -> None:
        # No client can write such an item, so it goes straight into the emulator's store.
        address = mailbox.account.address
        node = etree.Element(xmlns.t("CalendarItem"), nsmap={"t": xmlns.T})
        xmlns.sub(node, xmlns.t("Subject"), "Damaged")
        xmlns.sub(node, xmlns.t("Start"), "not-a-date")
        xmlns.sub(node, xmlns.t("End"), "2031-06-02T09:00:00Z")
        xmlns.sub(node, xmlns.t("IsAllDayEvent"), "false")
        item, _ = emulated.prepare_new(node, owner=address, owner_name=address)
        store = self.emulator.store
        calendar = store.distinguished_folder(address, "calendar")
        assert calendar is not None
        store.insert_item(new_id("AAMkI"), address, calendar.id, etree.tostring(item))

    def plant_poison_event(self, mailbox: MailboxAccess) -> str:
        mars = (
            "<t:CalendarItem><t:Subject>All day on Mars</t:Subject>"
            "<t:Start>2031-03-18T00:00:00Z</t:Start><t:End>2031-03-19T00:00:00Z</t:End>"
            "<t:IsAllDayEvent>true</t:IsAllDayEvent>"
            '<t:StartTimeZone Id="Mars Standard Time"/><t:EndTimeZone Id="Mars Standard Time"/>'
            "</t:CalendarItem>"
        )
        return self.emulator.create_raw(mailbox.account.address, "x", mars)

    def deliver(self, mailbox: MailboxAccess, where: str, mime: bytes, *categories: str) -> None:
        account = self._client(mailbox)
        if where == "shared":
            try:
                folder = account.msg_folder_root / "Salesforce Emails"
            except ErrorFolderNotFound:
                folder = Folder(
                    parent=account.msg_folder_root,
                    name="Salesforce Emails",
                    folder_class="IPF.Note",
                )
                folder.save()
        else:
            folder = {"inbox": account.inbox, "sent": account.sent}[where]
        Message(
            account=account, folder=folder, mime_content=mime, categories=list(categories) or None
        ).save()

    async def close(self) -> None:
        await self.provider.close()
        self.emulator.admin("DELETE", "faults")
        close_connections()
        with warnings.catch_warnings():
            # Pooled sessions dropped after an injected fault; see test_exchange.
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


class GraphHarness:
    """Graph through its emulator: one app registration (client credentials) per harness."""

    def __init__(self, emulator: RunningGraph) -> None:
        self.emulator = emulator
        self.provider = GraphProvider(max_back_off=2, ca_bundle=emulator.ca_cert)
        self.app = emulator.new_app()

    def new_mailbox(self) -> MailboxAccess:
        address = self.emulator.new_mailbox("c")
        settings = {
            "tenant_id": self.app.tenant_id,
            "client_id": self.app.client_id,
            "authority_url": self.emulator.base,
            "graph_url": self.emulator.graph_url,
        }
        now = datetime.now(UTC)
        account = MailboxAccount(
            address.split("@")[0], address, Provider.GRAPH, settings, True, now, now, "e"
        )
        return MailboxAccess(account, self.app.client_secret.encode())

    def lose_next_create_response(self) -> None:
        self.emulator.admin("POST", "faults", {"kind": "drop_response", "operation": "create"})

    def edit_elsewhere(self, mailbox: MailboxAccess, native_id: str, subject: str) -> None:
        self.emulator.admin(
            "PATCH", f"users/{mailbox.account.address}/items/{native_id}", {"title": subject}
        )

    def plant_unreadable_event(self, mailbox: MailboxAccess) -> None:
        # A start that is no date: no Graph write makes one, so it goes in through the admin API.
        self.emulator.admin(
            "POST",
            f"users/{mailbox.account.address}/plant",
            {
                "subject": "Damaged",
                "type": "singleInstance",
                "isAllDay": False,
                "start": {"dateTime": "not-a-date", "timeZone": "UTC"},
                "end": {"dateTime": "2031-06-02T09:00:00.0000000", "timeZone": "UTC"},
            },
        )

    def plant_poison_event(self, mailbox: MailboxAccess) -> str:
        planted = self.emulator.admin(
            "POST",
            f"users/{mailbox.account.address}/plant",
            {
                "subject": "Remind me in 4,000 years",
                "type": "singleInstance",
                "isAllDay": False,
                "start": {"dateTime": "2031-06-02T08:00:00.0000000", "timeZone": "UTC"},
                "end": {"dateTime": "2031-06-02T09:00:00.0000000", "timeZone": "UTC"},
                "isReminderOn": True,
                "reminderMinutesBeforeStart": 2**31,
            },
        )
        return str(planted["id"])

    def deliver(self, mailbox: MailboxAccess, where: str, mime: bytes, *categories: str) -> None:
        folder = {"shared": "Salesforce Emails", "inbox": "inbox", "sent": "sentitems"}[where]
        self.emulator.deliver(mailbox.account.address, folder, mime, *categories)

    async def close(self) -> None:
        await self.provider.close()
        self.emulator.admin("DELETE", "faults")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("exchange"), seed=False).start()
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def graph_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGraph]:
    emu = RunningGraph(tmp_path_factory.mktemp("graph")).start()
    yield emu
    emu.stop()


# Each harness takes its own emulator, started only when its tests run.
HARNESSES: dict[str, Callable[[pytest.FixtureRequest], Harness]] = {
    "exchange": lambda request: ExchangeHarness(request.getfixturevalue("emulator")),
    "graph": lambda request: GraphHarness(request.getfixturevalue("graph_emulator")),
    # conftest.py: the Google emulator and provider (issue #14).
    "google": lambda request: request.getfixturevalue("google_harness"),
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    made = HARNESSES[request.param](request)
    yield made
    await made.close()


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
    h: Harness,
    mailbox: MailboxAccess,
    token: str = "",
    kind: Kind = Kind.CALENDAR_ITEM,
    include_content: bool = False,
    refs_only: bool = False,
) -> tuple[list[r.MailChange], str]:
    changes: list[r.MailChange] = []
    while True:
        page = await h.provider.list_changes(
            mailbox,
            kind,
            Cursor(kind.value, token),
            2,
            include_content=include_content,
            refs_only=refs_only,
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


async def test_a_listing_of_references_names_each_write_at_the_version_it_answered(
    harness: Harness,
) -> None:
    """Issue #18: what a caller expecting its own writes back relies on. Listed for references
    only, every upsert carries the id and version its write answered (with or without its
    item), and the cursor reached lists nothing more."""
    mailbox = harness.new_mailbox()
    _, token = await listing(harness, mailbox)
    results = await harness.provider.apply_items(
        mailbox, [create(f"l{n}", f"s{n}") for n in range(3)]
    )
    written = sorted((x.ref.native_id, x.ref.version) for x in results if x.ref is not None)
    assert len(written) == 3
    changes, after = await listing(harness, mailbox, token, refs_only=True)
    assert sorted((c.ref.native_id, c.ref.version) for c in changes) == written
    assert (await listing(harness, mailbox, after, refs_only=True))[0] == []


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


async def test_an_unreadable_item_is_quarantined_and_the_page_goes_on(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    harness.plant_unreadable_event(mailbox)
    await harness.provider.apply_items(mailbox, [create("fine", "Readable")])
    changes, _ = await listing(harness, mailbox)
    [bad] = [c for c in changes if c.HasField("problem")]
    [good] = [c for c in changes if not c.HasField("problem")]
    assert not bad.HasField("item")
    assert bad.ref.native_id
    assert bad.problem.reason == "CONVERSION_FAILED"
    assert "Damaged" not in bad.problem.message
    assert good.item.calendar_item.subject == "Readable"
    found = await harness.provider.get_items(mailbox, [bad.ref, good.ref])
    assert [i.ref.native_id for i in found.items] == [good.ref.native_id]
    assert [(f.ref.native_id, f.problem.reason) for f in found.failures] == [
        (bad.ref.native_id, "CONVERSION_FAILED")
    ]


async def test_a_poison_item_fails_alone_on_pages_of_any_size(harness: Harness) -> None:
    # Issue #17, case 2: one item the reader fails on must never fail its page (every session
    # of the mailbox failed), whatever layer fails: the page, a batch read, the conversion.
    mailbox = harness.new_mailbox()
    [before] = await harness.provider.apply_items(mailbox, [create("before", "Before")])
    poison = harness.plant_poison_event(mailbox)
    [after] = await harness.provider.apply_items(mailbox, [create("after", "After")])
    assert before.ref is not None
    assert after.ref is not None
    changes, token = await listing(harness, mailbox)
    good = {c.ref.native_id for c in changes if not c.HasField("problem")}
    assert good == {before.ref.native_id, after.ref.native_id}
    [bad] = [c for c in changes if c.HasField("problem")]
    assert bad.ref.native_id == poison
    assert bad.problem.reason == "CONVERSION_FAILED"
    # The cursor went past it: nothing more to list.
    again, _ = await listing(harness, mailbox, token)
    assert [c for c in again if c.ref.native_id == poison] == []
    # Read by reference in a batch with another, it fails alone.
    found = await harness.provider.get_items(mailbox, [bad.ref, before.ref])
    assert [i.ref.native_id for i in found.items] == [before.ref.native_id]
    assert [(f.ref.native_id, f.problem.reason) for f in found.failures] == [
        (poison, "CONVERSION_FAILED")
    ]


async def test_items_are_found_by_link_id_with_it_on_their_ref(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    harness.lose_next_create_response()
    [lost] = await harness.provider.apply_items(mailbox, [create("lost-answer", "Created once")])
    assert lost.status == r.WRITE_STATUS_RETRYABLE
    await harness.provider.apply_items(mailbox, [create("other")])
    found = await harness.provider.get_items(
        mailbox, [], link_ids=["lost-answer", "never-written"], kind=Kind.CALENDAR_ITEM
    )
    assert [(i.ref.link_id, i.calendar_item.subject) for i in found.items] == [
        ("lost-answer", "Created once")
    ]
    assert list(found.not_found) == []
    assert found.items[0].HasField("last_modified_time")


def contact(given: str, *emails: str, categories: tuple[str, ...] = ()) -> r.MailItem:
    return r.MailItem(
        ref=r.ItemRef(kind=r.OBJECT_KIND_CONTACT),
        contact=r.ContactItem(
            given_name=given,
            family_name="Lovelace",
            company="Acme",
            email_addresses=[
                r.ContactEmailAddress(address=e, primary=n == 0) for n, e in enumerate(emails)
            ],
            phone_numbers=[r.PhoneNumber(number="+44 20 7946 0000", type=r.PHONE_TYPE_WORK)],
            categories=list(categories),
        ),
    )


async def test_contacts_are_created_updated_and_deleted(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    _, token = await listing(harness, mailbox, kind=Kind.CONTACT)
    made = Write(WriteOperation.CREATE, "ada", r.ItemRef(), contact("Ada", "ada@acme.example"))
    [created] = await harness.provider.apply_items(mailbox, [made])
    [again] = await harness.provider.apply_items(mailbox, [made])
    assert (created.status, again.status, again.already_applied) == (
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_OK,
        True,
    )
    assert created.ref is not None
    changes, token = await listing(harness, mailbox, token, kind=Kind.CONTACT)
    [listed] = changes
    person = listed.item.contact
    assert (listed.ref.link_id, person.given_name, person.company) == ("ada", "Ada", "Acme")
    assert [e.address for e in person.email_addresses] == ["ada@acme.example"]
    assert [p.number for p in person.phone_numbers] == ["+44 20 7946 0000"]

    edited = contact("Augusta Ada", "ada@acme.example", "ada@home.example")
    [updated] = await harness.provider.apply_items(
        mailbox,
        [
            Write(
                WriteOperation.UPDATE,
                "ada",
                created.ref,
                edited,
                update_mask=["given_name", "email_addresses"],
            )
        ],
    )
    assert updated.status == r.WRITE_STATUS_OK
    harness.edit_elsewhere(mailbox, created.ref.native_id, "Someone else's edit")
    [stale] = await harness.provider.apply_items(
        mailbox,
        [
            Write(
                WriteOperation.UPDATE,
                "ada",
                updated.ref or r.ItemRef(),
                edited,
                update_mask=["given_name"],
            )
        ],
    )
    assert stale.status == r.WRITE_STATUS_CONFLICT
    changes, token = await listing(harness, mailbox, token, kind=Kind.CONTACT)
    [listed] = changes
    assert listed.item.contact.given_name == "Augusta Ada"
    assert [e.address for e in listed.item.contact.email_addresses] == [
        "ada@acme.example",
        "ada@home.example",
    ]
    [deleted] = await harness.provider.apply_items(mailbox, [delete(listed.ref)])
    assert deleted.status == r.WRITE_STATUS_OK
    changes, _ = await listing(harness, mailbox, token, kind=Kind.CONTACT)
    assert [(c.type, c.ref.native_id) for c in changes] == [
        (r.CHANGE_TYPE_DELETE, created.ref.native_id)
    ]


def mime(subject: str, body: str = "Hello") -> bytes:
    return (
        f"From: Ada <ada@acme.example>\r\nTo: rep@concord.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@acme.example>\r\n"
        f"Date: Mon, 02 Jun 2031 08:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


async def test_emails_are_the_shared_folder_plus_messages_with_the_category(
    harness: Harness,
) -> None:
    mailbox = harness.new_mailbox()
    _, token = await listing(harness, mailbox, kind=Kind.EMAIL)
    harness.deliver(mailbox, "shared", mime("filed"))
    harness.deliver(mailbox, "inbox", mime("tagged in"), "Salesforce")
    harness.deliver(mailbox, "inbox", mime("private in"))
    harness.deliver(mailbox, "sent", mime("tagged out"), "Salesforce", "Team")
    harness.deliver(mailbox, "sent", mime("private out"), "Team")
    changes, token = await listing(harness, mailbox, token, kind=Kind.EMAIL, include_content=True)
    by_subject = {c.item.email.subject: c.item for c in changes}
    assert sorted(by_subject) == ["filed", "tagged in", "tagged out"]
    shared = by_subject["tagged in"]
    assert shared.email.internet_message_id.endswith("@acme.example>")
    assert shared.email.from_address.address == "ada@acme.example"
    assert b"Subject: tagged in" in shared.email.mime_content
    assert [a.address for a in shared.email.to] == ["rep@concord.test"]
    assert shared.email.body_text.strip() == "Hello"
    assert shared.email.conversation_id
    assert list(shared.email.categories) == ["Salesforce"]
    assert by_subject["tagged out"].email.folder == "Sent Items"
    assert shared.HasField("last_modified_time")
    # A second listing from the cursor is quiet.
    again, _ = await listing(harness, mailbox, token, kind=Kind.EMAIL)
    assert again == []
    # Without content asked for, no MIME travels.
    fresh, _ = await listing(harness, mailbox, kind=Kind.EMAIL)
    assert {c.item.email.mime_content for c in fresh} == {b""}


async def test_an_email_with_broken_mime_is_quarantined(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    harness.deliver(mailbox, "shared", mime("fine"))
    broken = b"From: x@acme.example\r\nSubject: s\r\nContent-Type: multipart/mixed\r\n\r\nbody"
    harness.deliver(mailbox, "shared", broken)
    changes, _ = await listing(harness, mailbox, kind=Kind.EMAIL, include_content=True)
    assert sorted(c.problem.reason for c in changes) == ["", "MALFORMED_MIME"]
    [fine] = [c for c in changes if c.HasField("item")]
    assert fine.item.email.subject == "fine"


async def test_unsharing_takes_the_category_off(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    item = event("Shared meeting")
    item.calendar_item.categories[:] = ["Salesforce", "Team"]
    [written] = await harness.provider.apply_items(
        mailbox, [Write(WriteOperation.CREATE, "shared", r.ItemRef(), item)]
    )
    assert written.ref is not None
    item.calendar_item.categories[:] = ["Team"]
    [unshared] = await harness.provider.apply_items(
        mailbox,
        [Write(WriteOperation.UPDATE, "shared", written.ref, item, update_mask=["categories"])],
    )
    assert unshared.status == r.WRITE_STATUS_OK
    found = await harness.provider.get_items(mailbox, [written.ref])
    assert list(found.items[0].calendar_item.categories) == ["Team"]

    harness.deliver(mailbox, "inbox", mime("tagged"), "Salesforce")
    changes, token = await listing(harness, mailbox, kind=Kind.EMAIL)
    [email] = changes
    untag = r.MailItem(email=r.EmailItem(categories=[]))
    [done] = await harness.provider.apply_items(
        mailbox,
        [Write(WriteOperation.UPDATE, "e1", email.ref, untag, update_mask=["categories"])],
    )
    assert done.status == r.WRITE_STATUS_OK
    found = await harness.provider.get_items(mailbox, [email.ref])
    assert list(found.items[0].email.categories) == []
    # Untagged, it leaves the selection without being listed as deleted from the mailbox.
    after, _ = await listing(harness, mailbox, token, kind=Kind.EMAIL)
    assert after == []


async def test_a_batch_keeps_per_item_outcomes_in_order(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    invalid = event("Ends before it starts")
    invalid.calendar_item.end.FromDatetime(datetime(2031, 6, 1, tzinfo=UTC))
    results = await harness.provider.apply_items(
        mailbox,
        [
            create("b1", "one"),
            Write(WriteOperation.CREATE, "bad", r.ItemRef(), invalid),
            create("b2", "two"),
            create("b1", "one again"),
        ],
    )
    assert [(x.link_id, x.status, x.already_applied) for x in results] == [
        ("b1", r.WRITE_STATUS_OK, False),
        ("bad", r.WRITE_STATUS_INVALID, False),
        ("b2", r.WRITE_STATUS_OK, False),
        ("b1", r.WRITE_STATUS_OK, True),
    ]
    assert results[3].ref == results[0].ref
    first, second = results[0].ref, results[2].ref
    assert first is not None
    assert second is not None
    harness.edit_elsewhere(mailbox, first.native_id, "theirs")
    updated = await harness.provider.apply_items(
        mailbox, [update(second, "two, edited"), update(first, "ours"), update(second, "again")]
    )
    # The stale one is a conflict; the others are written, each with its own outcome.
    assert [x.status for x in updated] == [
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_CONFLICT,
        r.WRITE_STATUS_CONFLICT,  # its version went stale with the first update of the batch
    ]
    changes, _ = await listing(harness, mailbox)
    assert sorted(c.item.calendar_item.subject for c in changes) == ["theirs", "two, edited"]


async def test_a_lost_batch_answer_is_replayed_without_duplicates(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    batch = [create(f"r{n}", f"s{n}") for n in range(3)]
    harness.lose_next_create_response()
    lost = await harness.provider.apply_items(mailbox, batch)
    assert {x.status for x in lost} == {r.WRITE_STATUS_RETRYABLE}
    replayed = await harness.provider.apply_items(mailbox, batch)
    assert [(x.status, x.already_applied) for x in replayed] == [(r.WRITE_STATUS_OK, True)] * 3
    changes, _ = await listing(harness, mailbox)
    assert sorted(c.ref.link_id for c in changes) == ["r0", "r1", "r2"]


async def test_mime_past_the_page_budget_is_left_to_get_items(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    big = "x" * 1_300_000
    for n in range(3):
        harness.deliver(mailbox, "shared", mime(f"big {n}", big))
    page = await harness.provider.list_changes(
        mailbox, Kind.EMAIL, Cursor(Kind.EMAIL.value, ""), 10, include_content=True
    )
    changes = list(page.changes)
    assert len(changes) == 3
    without = [c for c in changes if not c.item.email.mime_content]
    # Two fit the page's budget; the third would push the answer towards gRPC's limit.
    assert len(without) == 1
    found = await harness.provider.get_items(mailbox, [without[0].ref])
    assert big.encode() in found.items[0].email.mime_content


# What a real server does that an emulator may not (issue #15): all-day dates, field lengths,
# the system folders of a real mailbox.


def all_day_event(subject: str, first: str, after_last: str) -> r.MailItem:
    return r.MailItem(
        ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM),
        calendar_item=r.CalendarItem(
            subject=subject,
            all_day=True,
            start_date=first,
            end_date=after_last,
            time_zone="Europe/Paris",
        ),
    )


async def test_an_all_day_event_keeps_its_dates(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    _, token = await listing(harness, mailbox)
    # Across a DST change in its zone, where a day off would show first.
    written = Write(
        WriteOperation.CREATE,
        "allday",
        r.ItemRef(),
        all_day_event("Offsite", "2031-03-29", "2031-04-01"),
    )
    [result] = await harness.provider.apply_items(mailbox, [written])
    assert result.status == r.WRITE_STATUS_OK
    changes, _ = await listing(harness, mailbox, token, include_content=True)
    [read] = [c.item.calendar_item for c in changes]
    assert (read.all_day, read.start_date, read.end_date) == (True, "2031-03-29", "2031-04-01")


async def test_a_subject_the_server_cannot_hold_whole_is_refused_not_cut(
    harness: Harness,
) -> None:
    mailbox = harness.new_mailbox()
    _, token = await listing(harness, mailbox)
    long_subject = "Quarterly review " * 30  # 510 characters
    [result] = await harness.provider.apply_items(mailbox, [create("long", long_subject)])
    if result.status == r.WRITE_STATUS_OK:
        changes, _ = await listing(harness, mailbox, token, include_content=True)
        assert [c.item.calendar_item.subject for c in changes] == [long_subject]
    else:
        assert result.status == r.WRITE_STATUS_INVALID
        assert "subject" in result.error_message
        assert (await listing(harness, mailbox, token))[0] == []


async def test_a_new_mailbox_offers_no_system_folder_as_a_collection(harness: Harness) -> None:
    mailbox = harness.new_mailbox()
    for kind in (Kind.CALENDAR_ITEM, Kind.TASK, Kind.CONTACT):
        collections = await harness.provider.list_collections(mailbox, kind)
        assert [c.display_name for c in collections if not c.is_default] == [], kind
