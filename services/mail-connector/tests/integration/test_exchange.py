"""The Exchange provider through the mail-connector's gRPC API, against the EWS emulator."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from cryptography.fernet import Fernet
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    IMPERSONATION,
    Account,
    CalendarItem,
    Configuration,
    Contact,
    Credentials,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    Folder,
    HTMLBody,
    Message,
    Task,
)
from exchangelib.indexed_properties import (  # type: ignore[import-untyped]
    EmailAddress,
    PhoneNumber,
    PhysicalAddress,
)
from exchangelib.properties import Attendee, Mailbox  # type: ignore[import-untyped]
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    Recurrence,
    TaskRecurrence,
    WeeklyPattern,
)
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from concord.common.v1 import resources_pb2 as r
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_exchange_emulator.testing import RunningEmulator
from concord_mail_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_mail_connector.adapters import exchange
from concord_mail_connector.adapters.ews_items import LINK_ID_FIELD
from concord_mail_connector.adapters.exchange import ExchangeProvider
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.api.servicer import MailConnectorServicer
from concord_mail_connector.domain.model import Provider
from concord_mail_connector.domain.service import MailConnector
from concord_rpc import RpcFailure, from_rpc_error
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import serving_in_process

pytestmark = pytest.mark.integration

SERVICE = ("svc-concord@concord.test", "svc-password")
CALENDAR = r.OBJECT_KIND_CALENDAR_ITEM


@dataclass
class Ews:
    stub: pb_grpc.MailConnectorServiceStub
    emulator: RunningEmulator

    async def register(
        self,
        address: str,
        username: str = SERVICE[0],
        password: str = SERVICE[1],
        access_type: str = "",
    ) -> str:
        """An account for `address`; returns the mailbox's resource name."""
        mailbox = f"m-{uuid.uuid4().hex[:12]}"
        account = pb.MailboxAccount(
            name=f"mailboxes/{mailbox}/account",
            address=address,
            provider=r.MAIL_PROVIDER_EXCHANGE_EWS,
            ews=pb.EwsSettings(
                service_url=self.emulator.endpoint,
                username=username,
                auth_type="basic",
                access_type=access_type,
            ),
            secret=password.encode(),
        )
        await self.stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=account))
        return f"mailboxes/{mailbox}"

    def new_user(self, **extra: object) -> tuple[str, str]:
        address = f"u-{uuid.uuid4().hex[:10]}@concord.test"
        password = uuid.uuid4().hex
        self.emulator.admin("POST", "users", {"username": address, "password": password, **extra})
        return address, password

    async def new_mailbox(self) -> str:
        address, _ = self.new_user()
        return await self.register(address)

    async def own_mailbox(self) -> tuple[str, Account]:
        """A mailbox registered with its user's own credentials, and that user's client."""
        address, password = self.new_user()
        mailbox = await self.register(address, address, password)
        return mailbox, self.client(address, password)

    async def called(self, operation: str) -> None:
        """Until the emulator has counted an `operation` call (made by a task of the test)."""
        for _ in range(500):
            if self.emulator.admin("GET", "calls").get(operation):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {operation} call reached the server")

    def client(self, address: str, password: str) -> Account:
        """The user's own exchangelib client, as Outlook would open the mailbox."""
        config = Configuration(
            service_endpoint=self.emulator.endpoint,
            credentials=Credentials(address, password),
            auth_type=BASIC,
        )
        return Account(address, config=config, autodiscover=False, access_type=DELEGATE)

    async def changes(
        self, mailbox: str, token: str = "", page_size: int = 0, kind: int = CALENDAR
    ) -> pb.ListChangesResponse:
        return await self.stub.ListChanges(
            pb.ListChangesRequest(
                mailbox=mailbox,
                kind=kind,  # type: ignore[arg-type]
                cursor=r.Cursor(token=token),
                page_size=page_size,
                include_items=True,
            )
        )

    async def apply(self, mailbox: str, *writes: pb.MailWrite) -> list[pb.MailWriteResult]:
        response = await self.stub.ApplyItems(
            pb.ApplyItemsRequest(mailbox=mailbox, writes=list(writes))
        )
        return list(response.results)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("exchange")).start()
    yield emu
    emu.stop()


@pytest.fixture(autouse=True)
def _close_exchangelib_sessions(emulator: RunningEmulator) -> Iterator[None]:
    """exchangelib pools sessions per endpoint and drops some unclosed after an error; collect
    them here so their ResourceWarning cannot fail whichever later test the collector runs in."""
    yield
    emulator.admin("DELETE", "faults")
    close_connections()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
async def ews(tmp_path: Path, emulator: RunningEmulator) -> AsyncIterator[Ews]:
    engine = create_engine(f"sqlite:///{tmp_path}/ews.db")
    await migrate(engine, MIGRATIONS)
    store = SqlAccountStore(engine, SecretBox(Fernet.generate_key()))
    provider = ExchangeProvider(max_workers=4, max_back_off=5)
    servicer = MailConnectorServicer(MailConnector(store, {Provider.EXCHANGE_EWS: provider}))
    try:
        async with serving_in_process(
            "mail-connector",
            SERVICE_NAME,
            lambda s: pb_grpc.add_MailConnectorServiceServicer_to_server(servicer, s),
        ) as chan:
            yield Ews(pb_grpc.MailConnectorServiceStub(chan), emulator)
    finally:
        await provider.close()
        await engine.dispose()


async def failure(call: Awaitable[object]) -> RpcFailure:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return from_rpc_error(caught.value)


def _ts(value: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


START = dt.datetime(2030, 3, 4, 9, 0, tzinfo=dt.UTC)


def meeting(subject: str = "Pipeline review", **fields: object) -> r.MailItem:
    item = r.CalendarItem(
        subject=subject,
        start=_ts(START),
        end=_ts(START + dt.timedelta(hours=1)),
        time_zone="Europe/Berlin",
        location="Room 1",
        body_text="agenda",
        categories=["Salesforce"],
        attendees=[r.Attendee(email="ada@acme.example", role=r.ATTENDEE_ROLE_REQUIRED)],
        **fields,  # type: ignore[arg-type]
    )
    return r.MailItem(ref=r.ItemRef(kind=CALENDAR), calendar_item=item)


def create(link_id: str, item: r.MailItem | None = None) -> pb.MailWrite:
    return pb.MailWrite(
        operation=pb.MAIL_WRITE_OPERATION_CREATE, link_id=link_id, item=item or meeting()
    )


def update(ref: r.ItemRef, item: r.MailItem, *paths: str) -> pb.MailWrite:
    return pb.MailWrite(
        operation=pb.MAIL_WRITE_OPERATION_UPDATE,
        link_id=ref.link_id,
        ref=ref,
        item=item,
        update_mask=FieldMask(paths=list(paths)),
    )


async def test_seeded_calendar_is_listed_as_canonical_items_through_impersonation(
    ews: Ews,
) -> None:
    mailbox = await ews.register("demo@concord.test")
    page = await ews.changes(mailbox)
    assert not page.has_more
    assert page.next_cursor.token
    items = {c.item.calendar_item.subject: c.item for c in page.changes}
    assert all(c.type == r.CHANGE_TYPE_UPSERT for c in page.changes)
    review = items["Quarterly review with Acme"]
    assert review.ref.native_id
    assert review.ref.version
    assert review.ref.collection == "calendar-item"
    event = review.calendar_item
    assert event.time_zone == "Europe/Berlin"
    assert event.location == "Acme HQ, Berlin"
    assert event.body_text == "Agenda: pipeline, renewals."
    assert list(event.categories) == ["Salesforce"]
    assert event.ical_uid
    assert event.end.ToDatetime() - event.start.ToDatetime() == dt.timedelta(hours=1)
    assert [(a.email, a.response_status) for a in event.attendees] == [
        ("ada@acme.example", r.RESPONSE_STATUS_ACCEPTED),
        ("grace@globex.example", r.RESPONSE_STATUS_TENTATIVE),
    ]
    lunch = items["Lunch (private)"].calendar_item
    assert lunch.is_private
    assert lunch.sensitivity == r.SENSITIVITY_PRIVATE
    assert lunch.time_zone == "America/Los_Angeles"
    offsite = items["Team offsite"].calendar_item
    assert offsite.all_day
    assert not offsite.HasField("start")
    assert dt.date.fromisoformat(offsite.end_date) - dt.date.fromisoformat(
        offsite.start_date
    ) == dt.timedelta(days=1)
    standup = items["Weekly pipeline stand-up"].calendar_item
    assert standup.time_zone == "America/New_York"
    assert list(standup.recurrence.rules) == [
        "RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO;WKST=MO;COUNT=10"
    ]
    assert standup.recurrence.time_zone == "America/New_York"
    # The cursor covers everything listed: listing again from it finds nothing new.
    again = await ews.changes(mailbox, page.next_cursor.token)
    assert list(again.changes) == []


async def test_changes_without_include_items_carry_references_only(ews: Ews) -> None:
    mailbox = await ews.register("demo@concord.test")
    response = await ews.stub.ListChanges(
        pb.ListChangesRequest(mailbox=mailbox, kind=r.OBJECT_KIND_TASK)
    )
    assert len(response.changes) == 3
    assert all(c.ref.native_id and not c.HasField("item") for c in response.changes)
    got = await ews.stub.GetItems(
        pb.GetItemsRequest(
            mailbox=mailbox,
            refs=[
                *(c.ref for c in response.changes),
                r.ItemRef(kind=r.OBJECT_KIND_TASK, native_id="gone"),
            ],
        )
    )
    assert sorted(i.task.subject for i in got.items) == [
        "Follow up with Globex",
        "Send Acme the renewal quote",
        # From a real iCalendar file (VTODO).
        "Test Todo 1",
    ]
    assert [ref.native_id for ref in got.not_found] == ["gone"]


async def test_create_update_delete_round_trip_through_the_cursor(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    start = await ews.changes(mailbox)
    assert list(start.changes) == []
    [created] = await ews.apply(mailbox, create("link-1"))
    assert created.status == r.WRITE_STATUS_OK
    assert not created.already_applied
    assert created.ref.native_id
    assert created.ref.version
    assert created.ref.link_id == "link-1"
    page = await ews.changes(mailbox, start.next_cursor.token)
    [change] = page.changes
    assert change.ref.native_id == created.ref.native_id
    assert change.ref.link_id == "link-1"
    event = change.item.calendar_item
    assert event.subject == "Pipeline review"
    assert event.time_zone == "Europe/Berlin"
    assert event.start.ToDatetime(dt.UTC) == START
    assert [a.email for a in event.attendees] == ["ada@acme.example"]

    [updated] = await ews.apply(
        mailbox, update(created.ref, meeting("Pipeline review, moved"), "subject")
    )
    assert updated.status == r.WRITE_STATUS_OK
    assert updated.ref.version != created.ref.version
    page = await ews.changes(mailbox, page.next_cursor.token)
    assert [c.item.calendar_item.subject for c in page.changes] == ["Pipeline review, moved"]
    assert page.changes[0].item.calendar_item.location == "Room 1"

    delete = pb.MailWrite(
        operation=pb.MAIL_WRITE_OPERATION_DELETE, link_id="link-1", ref=updated.ref
    )
    [deleted] = await ews.apply(mailbox, delete)
    assert deleted.status == r.WRITE_STATUS_OK
    page = await ews.changes(mailbox, page.next_cursor.token)
    assert [(c.type, c.ref.native_id) for c in page.changes] == [
        (r.CHANGE_TYPE_DELETE, created.ref.native_id)
    ]


async def test_a_create_retried_after_a_lost_response_writes_one_item(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    ews.emulator.admin("POST", "faults", {"kind": "drop_response", "operation": "CreateItem"})
    [lost] = await ews.apply(mailbox, create("link-once"))
    assert lost.status == r.WRITE_STATUS_RETRYABLE
    [retried] = await ews.apply(mailbox, create("link-once"))
    assert retried.status == r.WRITE_STATUS_OK
    assert retried.already_applied
    page = await ews.changes(mailbox)
    assert [c.ref.native_id for c in page.changes] == [retried.ref.native_id]


async def test_a_stale_version_is_a_conflict_and_results_keep_the_input_order(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    [first] = await ews.apply(mailbox, create("link-a"))
    [newer] = await ews.apply(mailbox, update(first.ref, meeting("edited in Outlook"), "subject"))
    missing = r.ItemRef(kind=CALENDAR, native_id="AAMkAGone", link_id="link-gone")
    results = await ews.apply(
        mailbox,
        update(first.ref, meeting("edited by Concord"), "subject"),
        create("link-b", meeting("second")),
        update(missing, meeting("x"), "subject"),
    )
    assert [(x.link_id, x.status) for x in results] == [
        ("link-a", r.WRITE_STATUS_CONFLICT),
        ("link-b", r.WRITE_STATUS_OK),
        ("link-gone", r.WRITE_STATUS_NOT_FOUND),
    ]
    assert results[0].error_code == "ErrorIrresolvableConflict"
    got = await ews.stub.GetItems(pb.GetItemsRequest(mailbox=mailbox, refs=[newer.ref]))
    assert got.items[0].calendar_item.subject == "edited in Outlook"


async def test_pages_follow_page_size_and_has_more(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    await ews.apply(mailbox, *(create(f"p{n}", meeting(f"m{n}")) for n in range(5)))
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = await ews.changes(mailbox, token, page_size=2)
        pages += 1
        seen += [c.item.calendar_item.subject for c in page.changes]
        token = page.next_cursor.token
        if not page.has_more:
            break
    assert pages == 3
    assert sorted(seen) == [f"m{n}" for n in range(5)]


async def test_an_invalid_sync_state_asks_for_a_full_resync(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    await ews.apply(mailbox, create("link-r"))
    page = await ews.changes(mailbox)
    ews.emulator.admin("POST", "invalidate-sync-states")
    lost = await ews.changes(mailbox, page.next_cursor.token)
    assert lost.full_resync_required
    assert list(lost.changes) == []
    assert lost.next_cursor.token == ""
    again = await ews.changes(mailbox, lost.next_cursor.token)
    assert [c.ref.link_id for c in again.changes] == ["link-r"]


async def test_rejected_credentials_are_a_failed_precondition(ews: Ews) -> None:
    address, _ = ews.new_user()
    mailbox = await ews.register(address, address, "wrong")
    got = await failure(ews.changes(mailbox))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "MAILBOX_CREDENTIALS_REJECTED"
    assert got.metadata == {"mailbox": mailbox}


async def test_impersonation_without_the_right_is_access_denied(ews: Ews) -> None:
    intruder, password = ews.new_user()
    mailbox = await ews.register("demo@concord.test", intruder, password)
    got = await failure(ews.changes(mailbox))
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "MAILBOX_ACCESS_DENIED"
    assert got.metadata["provider_code"] == "ErrorImpersonateUserDenied"


async def test_a_user_opening_its_own_mailbox_needs_no_impersonation(ews: Ews) -> None:
    address, password = ews.new_user()
    mailbox = await ews.register(address, address, password)
    [created] = await ews.apply(mailbox, create("own-1"))
    assert created.status == r.WRITE_STATUS_OK
    page = await ews.changes(mailbox)
    assert [c.ref.link_id for c in page.changes] == ["own-1"]


async def test_delegate_access_is_honoured_when_configured(ews: Ews) -> None:
    # The seeded assistant may open the demo mailbox as a delegate, but not impersonate it.
    delegate = await ews.register(
        "demo@concord.test", "assistant@concord.test", "assistant-password", "delegate"
    )
    page = await ews.changes(delegate, kind=r.OBJECT_KIND_TASK)
    assert len(page.changes) >= 2
    impersonating = await ews.register(
        "demo@concord.test", "assistant@concord.test", "assistant-password", "impersonation"
    )
    got = await failure(ews.changes(impersonating, kind=r.OBJECT_KIND_TASK))
    assert got.reason == "MAILBOX_ACCESS_DENIED"
    assert got.metadata["provider_code"] == "ErrorImpersonateUserDenied"
    # A service account with the right impersonates by default.
    default = await ews.register("demo@concord.test")
    assert (await ews.changes(default, kind=r.OBJECT_KIND_TASK)).changes


async def test_an_unknown_access_type_is_refused_when_registering(ews: Ews) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ews.register("demo@concord.test", access_type="sudo")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "account.ews.access_type" in str(from_rpc_error(caught.value).field_violations)


async def test_get_items_by_link_id_needs_a_kind_and_answers_with_the_link_id(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    [created] = await ews.apply(mailbox, create("find-me"))
    got = await failure(ews.stub.GetItems(pb.GetItemsRequest(mailbox=mailbox, link_ids=["x"])))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    found = await ews.stub.GetItems(
        pb.GetItemsRequest(mailbox=mailbox, link_ids=["find-me", "nowhere"], kind=CALENDAR)
    )
    assert [(i.ref.link_id, i.ref.native_id) for i in found.items] == [
        ("find-me", created.ref.native_id)
    ]
    assert list(found.not_found) == []


async def test_email_cursor_invalidated_or_its_folder_gone_asks_for_a_full_resync(
    ews: Ews,
) -> None:
    address, _ = ews.new_user()
    mailbox = await ews.register(address)
    first = await ews.changes(mailbox, kind=r.OBJECT_KIND_EMAIL)
    assert first.next_cursor.token
    garbled = await ews.changes(mailbox, "concord-multi:bm90IGpzb24=", kind=r.OBJECT_KIND_EMAIL)
    assert garbled.full_resync_required
    # The user deletes the dedicated folder: its SyncState names a folder that is gone.
    config = Configuration(
        service_endpoint=ews.emulator.endpoint, credentials=Credentials(*SERVICE), auth_type=BASIC
    )
    account = Account(address, config=config, autodiscover=False, access_type=IMPERSONATION)
    (account.msg_folder_root / "Salesforce Emails").delete()
    gone = await ews.changes(mailbox, first.next_cursor.token, kind=r.OBJECT_KIND_EMAIL)
    assert gone.full_resync_required
    assert gone.next_cursor.token == ""
    assert list(gone.changes) == []
    fresh = await ews.changes(mailbox, kind=r.OBJECT_KIND_EMAIL)
    assert not fresh.full_resync_required


async def test_a_short_server_busy_is_waited_out(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    ews.emulator.admin(
        "POST",
        "faults",
        {"kind": "server_busy", "operation": "SyncFolderItems", "back_off_ms": 300},
    )
    page = await ews.changes(mailbox)
    assert page.next_cursor.token


async def test_a_back_off_past_the_deadline_is_resource_exhausted(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    await ews.changes(mailbox)  # warm up: the version probe and folders are cached
    ews.emulator.admin(
        "POST",
        "faults",
        {"kind": "server_busy", "operation": "SyncFolderItems", "back_off_ms": 4000},
    )
    got = await failure(
        ews.stub.ListChanges(pb.ListChangesRequest(mailbox=mailbox, kind=CALENDAR), timeout=2)
    )
    assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.reason == "PROVIDER_THROTTLED"
    assert got.retry_after == 4.0
    # The mailbox stays backed off: the next call answers without asking the server again.
    ews.emulator.admin("DELETE", "calls")
    again = await failure(
        ews.stub.ListChanges(pb.ListChangesRequest(mailbox=mailbox, kind=CALENDAR), timeout=2)
    )
    assert again.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < (again.retry_after or 0) < 4.0
    assert ews.emulator.admin("GET", "calls") == {}
    # Other mailboxes are not held back.
    other = await ews.new_mailbox()
    assert (await ews.changes(other)).next_cursor.token


async def test_collections_name_defaults_and_dedicated_folders(ews: Ews) -> None:
    mailbox = await ews.register("demo@concord.test")
    response = await ews.stub.ListCollections(pb.ListCollectionsRequest(mailbox=mailbox))
    found = {(c.id, c.kind, c.is_default) for c in response.collections}
    assert ("calendar-item", CALENDAR, True) in found
    assert ("task", r.OBJECT_KIND_TASK, True) in found
    assert ("contact", r.OBJECT_KIND_CONTACT, True) in found
    assert ("email", r.OBJECT_KIND_EMAIL, True) in found


async def test_tasks_contacts_and_emails_of_the_dedicated_folders(ews: Ews) -> None:
    mailbox = await ews.register("demo@concord.test")
    tasks = await ews.changes(mailbox, kind=r.OBJECT_KIND_TASK)
    by_subject = {c.item.task.subject: c.item.task for c in tasks.changes}
    quote = by_subject["Send Acme the renewal quote"]
    assert quote.status == r.TASK_STATUS_NOT_STARTED
    assert list(quote.categories) == ["Salesforce"]
    assert quote.due_date
    assert by_subject["Follow up with Globex"].status == r.TASK_STATUS_IN_PROGRESS

    contacts = await ews.changes(mailbox, kind=r.OBJECT_KIND_CONTACT)
    people = {c.item.contact.display_name: c.item.contact for c in contacts.changes}
    ada = people["Ada Lovelace"]
    assert (ada.given_name, ada.family_name, ada.company) == ("Ada", "Lovelace", "Acme")
    assert [(e.address, e.primary) for e in ada.email_addresses] == [("ada@acme.example", True)]

    emails = await ews.changes(mailbox, kind=r.OBJECT_KIND_EMAIL)
    assert emails.changes
    for change in emails.changes:
        email = change.item.email
        assert email.internet_message_id.startswith("<")
        assert email.folder in ("Salesforce Emails", "Inbox")
        if email.folder == "Inbox":
            # Outside the dedicated folder, only what carries the share category.
            assert "Salesforce" in email.categories
        assert email.from_address.address
        assert email.HasField("received_time")
        assert email.internet_message_id.encode() in email.mime_content
        assert change.item.HasField("last_modified_time")
    subjects = {c.item.email.subject for c in emails.changes}
    assert "Initech intro" in subjects
    assert "Newsletter" not in subjects


async def test_the_dedicated_folder_is_created_in_a_new_mailbox(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    first = await ews.changes(mailbox, kind=r.OBJECT_KIND_CONTACT)
    assert list(first.changes) == []
    response = await ews.stub.ListCollections(
        pb.ListCollectionsRequest(mailbox=mailbox, kind=r.OBJECT_KIND_CONTACT)
    )
    assert [(c.id, c.display_name) for c in response.collections if c.is_default] == [
        ("contact", "Salesforce Contacts")
    ]


async def test_a_vanished_folder_is_a_failed_precondition_naming_it(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    # A non-default folder, addressed by its id, then deleted behind the connector's back.
    address = (
        await ews.stub.GetMailboxAccount(pb.GetMailboxAccountRequest(name=f"{mailbox}/account"))
    ).account.address

    config = Configuration(
        service_endpoint=ews.emulator.endpoint,
        credentials=Credentials(*SERVICE),
        auth_type=BASIC,
    )
    account = Account(address, config=config, autodiscover=False, access_type=IMPERSONATION)
    doomed = Folder(parent=account.msg_folder_root, name="Doomed", folder_class="IPF.Note")
    doomed.save()
    doomed_id = doomed.id
    listed = await ews.stub.ListChanges(
        pb.ListChangesRequest(mailbox=mailbox, kind=r.OBJECT_KIND_EMAIL, collection=doomed_id)
    )
    assert listed.next_cursor.collection == doomed_id
    doomed.delete()
    got = await failure(
        ews.stub.ListChanges(
            pb.ListChangesRequest(
                mailbox=mailbox,
                kind=r.OBJECT_KIND_EMAIL,
                collection=doomed_id,
                cursor=listed.next_cursor,
            )
        )
    )
    assert got.code == grpc.StatusCode.FAILED_PRECONDITION
    assert got.reason == "COLLECTION_NOT_FOUND"
    assert got.metadata["collection"] == doomed_id


async def test_an_all_day_item_and_a_task_round_trip_their_dates(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    offsite = r.MailItem(
        ref=r.ItemRef(kind=CALENDAR),
        calendar_item=r.CalendarItem(
            subject="Offsite", all_day=True, start_date="2030-05-06", end_date="2030-05-08"
        ),
    )
    task = r.MailItem(
        ref=r.ItemRef(kind=r.OBJECT_KIND_TASK),
        task=r.TaskItem(subject="Call Ada", due_date="2030-05-07", status=r.TASK_STATUS_WAITING),
    )
    results = await ews.apply(
        mailbox,
        create("all-day", offsite),
        pb.MailWrite(operation=pb.MAIL_WRITE_OPERATION_CREATE, link_id="task-1", item=task),
    )
    assert [x.status for x in results] == [r.WRITE_STATUS_OK, r.WRITE_STATUS_OK]
    got = await ews.stub.GetItems(
        pb.GetItemsRequest(mailbox=mailbox, refs=[x.ref for x in results])
    )
    event, todo = got.items
    assert (event.calendar_item.start_date, event.calendar_item.end_date) == (
        "2030-05-06",
        "2030-05-08",
    )
    assert event.ref.link_id == "all-day"
    assert (todo.task.subject, todo.task.due_date) == ("Call Ada", "2030-05-07")
    assert todo.task.status == r.TASK_STATUS_WAITING


async def test_content_the_provider_cannot_write_is_invalid_per_item(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    backwards = meeting("backwards")
    backwards.calendar_item.end.CopyFrom(_ts(START - dt.timedelta(hours=1)))
    unknown_zone = meeting("zoned")
    unknown_zone.calendar_item.time_zone = "Mars/Olympus_Mons"
    results = await ews.apply(mailbox, create("bad-1", backwards), create("bad-2", unknown_zone))
    assert [x.status for x in results] == [r.WRITE_STATUS_INVALID, r.WRITE_STATUS_INVALID]
    assert "Olympus" in results[1].error_message


@pytest.mark.parametrize("held", [False, True], ids=["listed", "series-version-held"])
async def test_an_edited_occurrence_is_listed_as_an_exception_of_its_series(
    ews: Ews, held: bool
) -> None:
    # `held`: the caller names the series' version it holds (issue #18); the occurrence's
    # edit moved the master's ChangeKey, so the master is read, its exception with it.
    mailbox, account = await ews.own_mailbox()
    berlin = EWSTimeZone("Europe/Berlin")
    start = EWSDateTime(2030, 3, 18, 10, 0, tzinfo=berlin)
    master = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Weekly sync",
        start=start,
        end=start + dt.timedelta(minutes=30),
        recurrence=Recurrence(
            pattern=WeeklyPattern(interval=1, weekdays=[1]), start=start.date(), number=4
        ),
    )
    master.save(send_meeting_invitations="SendToNone")
    first = await ews.changes(mailbox)
    [series] = first.changes
    assert list(series.item.calendar_item.recurrence.rules) == [
        "RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO;WKST=MO;COUNT=4"
    ]
    second = master.occurrence(index=2)
    second.refresh()
    second.subject = "Weekly sync (moved)"
    second.start += dt.timedelta(hours=2)
    second.end += dt.timedelta(hours=2)
    second.save(update_fields=["subject", "start", "end"], conflict_resolution="NeverOverwrite")
    third = master.occurrence(index=3)
    third.refresh()
    third.delete()

    page = (
        await ews.stub.ListChanges(
            pb.ListChangesRequest(
                mailbox=mailbox,
                kind=CALENDAR,
                cursor=first.next_cursor,
                include_items=True,
                known=[series.ref],
            )
        )
        if held
        else await ews.changes(mailbox, first.next_cursor.token)
    )
    updated, exception = page.changes
    assert updated.ref.native_id == master.id
    assert [
        t.ToDatetime(dt.UTC) for t in updated.item.calendar_item.recurrence.excluded_starts
    ] == [dt.datetime(2030, 4, 1, 8, 0, tzinfo=dt.UTC)]
    moved = exception.item.calendar_item
    assert moved.subject == "Weekly sync (moved)"
    assert moved.series_id == master.id
    assert moved.original_start.ToDatetime(dt.UTC) == dt.datetime(2030, 3, 25, 9, 0, tzinfo=dt.UTC)
    assert moved.start.ToDatetime(dt.UTC) == dt.datetime(2030, 3, 25, 11, 0, tzinfo=dt.UTC)


async def test_writes_throttled_past_the_deadline_are_retryable_in_order(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    [done] = await ews.apply(mailbox, create("t-0"))
    ews.emulator.admin(
        "POST", "faults", {"kind": "server_busy", "operation": "FindItem", "back_off_ms": 4000}
    )
    response = await ews.stub.ApplyItems(
        pb.ApplyItemsRequest(mailbox=mailbox, writes=[create("t-1"), create("t-2")]), timeout=2
    )
    assert [(x.link_id, x.status, x.error_code) for x in response.results] == [
        ("t-1", r.WRITE_STATUS_RETRYABLE, "PROVIDER_THROTTLED"),
        ("t-2", r.WRITE_STATUS_RETRYABLE, "PROVIDER_THROTTLED"),
    ]
    assert done.status == r.WRITE_STATUS_OK


async def test_an_unknown_windows_zone_is_kept_by_its_raw_name(ews: Ews) -> None:
    # exchangelib cannot write a zone CLDR does not know, so the item goes in as the emulator's
    # seed puts items in: straight into its store.
    from lxml import etree

    from concord_exchange_emulator import items as emulated
    from concord_exchange_emulator.store import new_id
    from concord_exchange_emulator.xmlns import T, sub, t

    address, _ = ews.new_user()
    mailbox = await ews.register(address)
    node = etree.Element(t("CalendarItem"), nsmap={"t": T})
    sub(node, t("Subject"), "Somewhere odd")
    sub(node, t("Start"), "2030-03-18T10:00:00Z")
    sub(node, t("End"), "2030-03-18T10:30:00Z")
    sub(node, t("IsAllDayEvent"), "false")
    sub(node, t("StartTimeZone"), Id="Olympus Mons Standard Time")
    item, _ = emulated.prepare_new(node, owner=address, owner_name=address)
    store = ews.emulator.store
    calendar = store.distinguished_folder(address, "calendar")
    assert calendar is not None
    store.insert_item(new_id("AAMkI"), address, calendar.id, etree.tostring(item))

    [change] = (await ews.changes(mailbox)).changes
    assert change.item.calendar_item.time_zone == "Olympus Mons Standard Time"
    assert change.item.calendar_item.start.ToDatetime(dt.UTC) == dt.datetime(
        2030, 3, 18, 10, 0, tzinfo=dt.UTC
    )


async def test_item_content_stays_out_of_the_logs_even_at_debug(
    ews: Ews, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox = await ews.new_mailbox()
    secret_subject = f"Merger talks {uuid.uuid4().hex}"
    with caplog.at_level(logging.DEBUG):
        [written] = await ews.apply(mailbox, create("quiet", meeting(secret_subject)))
        page = await ews.changes(mailbox)
    assert written.status == r.WRITE_STATUS_OK
    assert page.changes[0].item.calendar_item.subject == secret_subject
    assert secret_subject not in caplog.text
    assert "ada@acme.example" not in caplog.text


async def test_a_batch_of_writes_costs_one_request_per_operation(ews: Ews) -> None:
    mailbox = await ews.new_mailbox()
    await ews.changes(mailbox)  # the account and its folders, looked up once
    ews.emulator.admin("DELETE", "calls")
    created = await ews.apply(mailbox, *(create(f"batch-{n}", meeting(f"m{n}")) for n in range(5)))
    assert ews.emulator.admin("GET", "calls") == {"FindItem": 1, "CreateItem": 1}
    ews.emulator.admin("DELETE", "calls")
    await ews.apply(mailbox, *(update(c.ref, meeting("moved"), "subject") for c in created))
    assert ews.emulator.admin("GET", "calls") == {"UpdateItem": 1}


async def test_one_invalid_create_costs_the_others_nothing(
    ews: Ews, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exchangelib validates every item of a request before sending it: a valid batch is
    validated once (by the send), and one bad item is found, refused alone, and the others
    sent, all in one CreateItem request."""
    mailbox = await ews.new_mailbox()
    await ews.changes(mailbox)
    cleaned: list[str] = []
    clean = CalendarItem.clean

    def counted(self: CalendarItem, *args: Any, **kwargs: Any) -> None:
        cleaned.append(str(self.subject))
        clean(self, *args, **kwargs)

    monkeypatch.setattr(CalendarItem, "clean", counted)
    ews.emulator.admin("DELETE", "calls")
    fresh = [create(f"valid-{n}", meeting(f"v{n}")) for n in range(4)]
    for write in fresh:
        write.known_new = True
    assert {a.status for a in await ews.apply(mailbox, *fresh)} == {r.WRITE_STATUS_OK}
    assert sorted(cleaned) == ["v0", "v1", "v2", "v3"]
    backwards = meeting("backwards")
    backwards.calendar_item.end.CopyFrom(_ts(START - dt.timedelta(hours=1)))
    mixed = [create("good-1", meeting("good 1")), create("bad", backwards)]
    mixed.append(create("good-2", meeting("good 2")))
    for write in mixed:
        write.known_new = True
    answers = await ews.apply(mailbox, *mixed)
    assert [a.status for a in answers] == [
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_INVALID,
        r.WRITE_STATUS_OK,
    ]
    assert ews.emulator.admin("GET", "calls") == {"CreateItem": 2}
    subjects = [c.item.calendar_item.subject for c in (await ews.changes(mailbox)).changes]
    assert sorted(subjects) == ["good 1", "good 2", "v0", "v1", "v2", "v3"]


async def test_creates_known_new_skip_the_link_id_search(ews: Ews) -> None:
    """A first sync's creates are proved new by the caller: 250 of them cost 3 CreateItem
    calls (100 a call, as ApplyItems takes them) and no FindItem; a mixed batch searches only
    for the ones that may be replays."""
    mailbox = await ews.new_mailbox()
    await ews.changes(mailbox)
    ews.emulator.admin("DELETE", "calls")
    fresh = [create(f"new-{n}", meeting(f"m{n}")) for n in range(250)]
    for write in fresh:
        write.known_new = True
    for start in range(0, len(fresh), 100):
        answers = await ews.apply(mailbox, *fresh[start : start + 100])
        assert {a.status for a in answers} == {r.WRITE_STATUS_OK}
    assert ews.emulator.admin("GET", "calls") == {"CreateItem": 3}
    ews.emulator.admin("DELETE", "calls")
    replay = create("new-0", meeting("m0"))
    proved = create("new-250", meeting("m250"))
    proved.known_new = True
    again, other = await ews.apply(mailbox, replay, proved)
    assert again.already_applied
    assert not other.already_applied
    calls = ews.emulator.admin("GET", "calls")
    # (exchangelib reads the found item's link id by GetItem.)
    assert (calls["FindItem"], calls["CreateItem"]) == (1, 1)
    page = await ews.changes(mailbox, page_size=500)
    assert len(page.changes) == 251


async def test_an_item_exchangelib_cannot_parse_is_quarantined_and_its_page_goes_on(
    ews: Ews,
) -> None:
    # An all-day item in a zone no table knows (written by some other client) breaks
    # exchangelib's parsing of the whole SyncFolderItems page it is on.
    from lxml import etree

    from concord_exchange_emulator import items as emulated
    from concord_exchange_emulator.store import new_id
    from concord_exchange_emulator.xmlns import T, sub, t

    address, _ = ews.new_user()
    mailbox = await ews.register(address)
    [before] = await ews.apply(mailbox, create("before", meeting("before the poison")))
    node = etree.Element(t("CalendarItem"), nsmap={"t": T})
    sub(node, t("Subject"), "All day on Mars")
    sub(node, t("Start"), "2030-03-18T00:00:00Z")
    sub(node, t("End"), "2030-03-19T00:00:00Z")
    sub(node, t("IsAllDayEvent"), "true")
    sub(node, t("StartTimeZone"), Id="Mars Standard Time")
    sub(node, t("EndTimeZone"), Id="Mars Standard Time")
    item, _ = emulated.prepare_new(node, owner=address, owner_name=address)
    store = ews.emulator.store
    calendar = store.distinguished_folder(address, "calendar")
    assert calendar is not None
    poison_id = new_id("AAMkI")
    store.insert_item(poison_id, address, calendar.id, etree.tostring(item))
    [after] = await ews.apply(mailbox, create("after", meeting("after the poison")))

    page = await ews.changes(mailbox)
    good = {c.ref.native_id for c in page.changes if not c.HasField("problem")}
    assert good == {before.ref.native_id, after.ref.native_id}
    [bad] = [c for c in page.changes if c.HasField("problem")]
    assert bad.ref.native_id == poison_id
    assert bad.problem.reason in ("UNKNOWN_TIME_ZONE", "CONVERSION_FAILED")
    # The cursor went past it: the next listing is quiet, the mailbox is not blocked.
    again = await ews.changes(mailbox, page.next_cursor.token)
    assert list(again.changes) == []


MARS_ALL_DAY = (
    "<t:CalendarItem><t:Subject>All day on Mars</t:Subject>"
    "<t:Start>2030-03-18T00:00:00Z</t:Start><t:End>2030-03-19T00:00:00Z</t:End>"
    "<t:IsAllDayEvent>true</t:IsAllDayEvent>"
    '<t:StartTimeZone Id="Mars Standard Time"/><t:EndTimeZone Id="Mars Standard Time"/>'
    "</t:CalendarItem>"
)


@pytest.mark.parametrize("page_size", [0, 1, 2])
async def test_a_poison_item_created_by_raw_soap_is_quarantined_on_any_page(
    ews: Ews, page_size: int
) -> None:
    # Issue #17, case 2: an all-day item in a zone no Windows table knows, written by another
    # client over raw SOAP, failed exchangelib's parsing of the whole SyncFolderItems page, so
    # every session of the mailbox failed. Whatever the page size, the other items come, the
    # poison one is quarantined by id with a reason, and the cursor passes it.
    address, password = ews.new_user()
    mailbox = await ews.register(address)
    [before] = await ews.apply(mailbox, create("before", meeting("before the poison")))
    poison_id = ews.emulator.create_raw(address, password, MARS_ALL_DAY)
    [after] = await ews.apply(mailbox, create("after", meeting("after the poison")))

    good: set[str] = set()
    bad: list[r.MailChange] = []
    token = ""
    for _ in range(10):
        page = await ews.changes(mailbox, token, page_size=page_size)
        good |= {c.ref.native_id for c in page.changes if not c.HasField("problem")}
        bad += [c for c in page.changes if c.HasField("problem")]
        token = page.next_cursor.token
        if not page.has_more:
            break
    assert good == {before.ref.native_id, after.ref.native_id}
    assert [c.ref.native_id for c in bad] == [poison_id]
    assert bad[0].problem.reason in ("UNKNOWN_TIME_ZONE", "CONVERSION_FAILED")
    assert bad[0].problem.message
    again = await ews.changes(mailbox, token)
    assert list(again.changes) == []


async def test_reading_a_poison_item_by_reference_fails_that_item_alone(ews: Ews) -> None:
    # A retry of the quarantined item (RetryItem) reads it by reference, in a batch with others:
    # the batch must not fail with it.
    address, password = ews.new_user()
    mailbox = await ews.register(address)
    [good] = await ews.apply(mailbox, create("good", meeting("an ordinary meeting")))
    poison_id = ews.emulator.create_raw(address, password, MARS_ALL_DAY)
    poison = r.ItemRef(kind=CALENDAR, native_id=poison_id, collection=good.ref.collection)
    got = await ews.stub.GetItems(pb.GetItemsRequest(mailbox=mailbox, refs=[good.ref, poison]))
    assert [i.ref.native_id for i in got.items] == [good.ref.native_id]
    [failed] = got.failures
    assert failed.ref.native_id == poison_id
    assert failed.problem.reason == "CONVERSION_FAILED"


async def test_a_listing_of_references_reads_no_item(ews: Ews) -> None:
    """Issue #18: a caller expecting its own writes back (the reconciler after a batch) lists
    references only. EWS lists them by id and ChangeKey alone: the server reads no item and
    exchangelib parses none, so even an item it could not parse comes as a plain reference,
    its version the ChangeKey a write answered."""
    address, password = ews.new_user()
    mailbox = await ews.register(address)
    start = await ews.changes(mailbox)
    [written] = await ews.apply(mailbox, create("mine", meeting("written by Concord")))
    poison_id = ews.emulator.create_raw(address, password, MARS_ALL_DAY)
    refs = await ews.stub.ListChanges(
        pb.ListChangesRequest(
            mailbox=mailbox, kind=CALENDAR, cursor=start.next_cursor, include_items=False
        )
    )
    assert [(c.ref.native_id, c.HasField("item"), c.HasField("problem")) for c in refs.changes] == [
        (written.ref.native_id, False, False),
        (poison_id, False, False),
    ]
    assert refs.changes[0].ref.version == written.ref.version
    # The same cursor listed with items reads them (and quarantines the one it cannot parse).
    full = await ews.changes(mailbox, start.next_cursor.token)
    assert [c.HasField("problem") for c in full.changes] == [False, True]
    # Both cursors stand at the same point: nothing new after either.
    assert list((await ews.changes(mailbox, refs.next_cursor.token)).changes) == []


async def test_mailboxes_of_one_service_account_are_not_served_one_request_at_a_time(
    ews: Ews,
) -> None:
    """exchangelib keeps one session per credential unless told otherwise, so every mailbox a
    service account opens waited for the one request in flight: a slow answer for one mailbox
    held all the others (and a first sync's calls of 25 items went one by one). The provider
    gives the credential as many sessions as it has workers (within EWS's 27 concurrent)."""
    slow_address, _ = ews.new_user()
    quick_address, _ = ews.new_user()
    slow = await ews.register(slow_address)
    quick = await ews.register(quick_address)
    await ews.changes(slow)  # both accounts opened, the credential's version probed
    await ews.changes(quick)
    ews.emulator.admin("DELETE", "calls")
    ews.emulator.slow("SyncFolderItems", slow_address, latency_ms=3000)
    finished: list[str] = []

    async def listed(mailbox: str, name: str) -> None:
        await ews.changes(mailbox)
        finished.append(name)

    held = asyncio.create_task(listed(slow, "slow"))
    # Until the slow mailbox's listing is at the server, held there.
    await ews.called("SyncFolderItems")
    await listed(quick, "quick")
    await held
    assert finished == ["quick", "slow"]


@pytest.mark.parametrize(
    ("operation", "kind"),
    [("GetFolder", CALENDAR), ("FindFolder", r.OBJECT_KIND_CONTACT)],
    ids=["well-known-folder", "dedicated-folder"],
)
async def test_a_new_mailbox_slow_to_open_holds_no_other_new_mailbox(
    ews: Ews, operation: str, kind: int
) -> None:
    """exchangelib caches an account's folders (`account.root`, `account.calendar`, ...) and a
    folder's children (read by `folder / name`, with the whole folder tree the first time)
    behind one lock per property for the whole process, so the first listing of every new
    mailbox waited for every other new mailbox's first look-up of its folders: with 30
    mailboxes added at once, a first listing waited up to 17 s, past the reconciler's 10 s
    deadline, while each EWS request took under 0.2 s. The provider looks a mailbox's folders
    up on its own, so only that mailbox waits for them."""
    slow_address, _ = ews.new_user()
    quick_address, _ = ews.new_user()
    slow = await ews.register(slow_address)
    quick = await ews.register(quick_address)
    ews.emulator.admin("DELETE", "calls")
    # The slow mailbox's first look-up of a folder (its root; its dedicated folder by name)
    # answers 3 s late.
    ews.emulator.slow(operation, slow_address, latency_ms=3000)
    finished: list[str] = []

    async def listed(mailbox: str, name: str) -> None:
        await ews.changes(mailbox, kind=kind)
        finished.append(name)

    held = asyncio.create_task(listed(slow, "slow"))
    await ews.called(operation)
    await listed(quick, "quick")
    await held
    assert finished == ["quick", "slow"]


async def test_a_new_mailbox_finds_its_dedicated_folder_without_reading_its_folder_tree(
    ews: Ews,
) -> None:
    """A dedicated folder is looked for by name (one shallow FindFolder), not by reading the
    mailbox's whole folder tree (a GetFolder of every distinguished folder, a deep FindFolder
    and a GetFolder), which a new mailbox's first listing did twice before making the folder;
    a folder the user named in another case is the one (Exchange compares folder names
    without case). Later listings look for it no more."""
    address, password = ews.new_user()
    user = ews.client(address, password)
    Folder(
        parent=user.msg_folder_root, name="salesforce contacts", folder_class="IPF.Contact"
    ).save()
    mailbox = await ews.register(address)
    ews.emulator.admin("DELETE", "calls")
    assert list((await ews.changes(mailbox, kind=r.OBJECT_KIND_CONTACT)).changes) == []
    calls = ews.emulator.admin("GET", "calls")
    # The root, then the well-known folders; the dedicated one by name; no folder made.
    assert (calls.get("GetFolder"), calls.get("FindFolder"), calls.get("CreateFolder")) == (
        2,
        1,
        None,
    )
    ews.emulator.admin("DELETE", "calls")
    await ews.changes(mailbox, kind=r.OBJECT_KIND_CONTACT)
    assert ews.emulator.admin("GET", "calls") == {"SyncFolderItems": 1}


async def test_a_dedicated_folder_made_meanwhile_is_the_one_used(ews: Ews) -> None:
    """Two first listings of one new mailbox at once (or two replicas') both find no dedicated
    folder and both make one: the second maker is told it exists (ErrorFolderExists), and
    uses it rather than failing the listing."""
    address, password = ews.new_user()
    mailbox = await ews.register(address)
    # The first CreateFolder is held 2 s: the second listing's is made meanwhile.
    ews.emulator.slow("CreateFolder", address, latency_ms=2000)
    first = asyncio.create_task(ews.changes(mailbox, kind=r.OBJECT_KIND_CONTACT))
    await ews.called("CreateFolder")
    second = await ews.changes(mailbox, kind=r.OBJECT_KIND_CONTACT)
    assert list(second.changes) == []
    assert list((await first).changes) == []
    user = ews.client(address, password)
    assert [f.name for f in user.msg_folder_root.children].count("Salesforce Contacts") == 1


async def test_items_at_a_version_the_caller_holds_are_answered_unread(ews: Ews) -> None:
    """Issue #18: a caller that just wrote (the reconciler mid-session) names the versions its
    writes answered; EWS lists ids and ChangeKeys, answers those items by reference, and reads
    only the others (here an item exchangelib cannot parse, quarantined as ever)."""
    address, password = ews.new_user()
    mailbox = await ews.register(address)
    start = await ews.changes(mailbox)
    [mine] = await ews.apply(mailbox, create("mine", meeting("written by Concord")))
    [theirs] = await ews.apply(mailbox, create("theirs", meeting("edited since")))
    poison_id = ews.emulator.create_raw(address, password, MARS_ALL_DAY)
    listed = await ews.stub.ListChanges(
        pb.ListChangesRequest(
            mailbox=mailbox,
            kind=CALENDAR,
            cursor=start.next_cursor,
            include_items=True,
            known=[mine.ref, r.ItemRef(native_id=theirs.ref.native_id, version="an older one")],
        )
    )
    by_id = {c.ref.native_id: c for c in listed.changes}
    assert set(by_id) == {mine.ref.native_id, theirs.ref.native_id, poison_id}
    assert not by_id[mine.ref.native_id].HasField("item")
    assert by_id[mine.ref.native_id].ref.version == mine.ref.version
    assert by_id[theirs.ref.native_id].item.calendar_item.subject == "edited since"
    assert by_id[poison_id].problem.reason in ("UNKNOWN_TIME_ZONE", "CONVERSION_FAILED")


async def test_an_update_stores_its_link_id_and_a_link_id_alone_replaces_a_copys(
    ews: Ews,
) -> None:
    """Completing a recurring task splits the occurrence off as a copy: the update's link id
    goes with it (how a crash that lost the answer finds where the update went), and the task
    moved on gets an id of its own by an update of the link id alone, which changes nothing
    else."""
    mailbox, account = await ews.own_mailbox()
    start = dt.date(2030, 5, 6)
    recurrence = TaskRecurrence(
        pattern=WeeklyPattern(interval=1, weekdays=[start.isoweekday()]), start=start, number=3
    )
    task = Task(account=account, folder=account.tasks, subject="Report", recurrence=recurrence)
    await asyncio.to_thread(task.save)
    ref = r.ItemRef(kind=r.OBJECT_KIND_TASK, native_id=task.id, version=task.changekey)
    done = r.MailItem(ref=ref, task=r.TaskItem(status=r.TASK_STATUS_COMPLETED))
    [completed] = await ews.apply(
        mailbox,
        pb.MailWrite(
            operation=pb.MAIL_WRITE_OPERATION_UPDATE,
            link_id="weekly",
            ref=ref,
            item=done,
            update_mask=FieldMask(paths=["status"]),
        ),
    )
    assert completed.status == r.WRITE_STATUS_OK
    one_off = completed.ref.native_id
    assert one_off != task.id  # split off: the answer names the one-off

    async def carrying(link_id: str) -> list[tuple[str, str, str]]:
        found = await ews.stub.GetItems(
            pb.GetItemsRequest(mailbox=mailbox, link_ids=[link_id], kind=r.OBJECT_KIND_TASK)
        )
        return sorted((i.ref.native_id, i.task.due_date, str(i.task.status)) for i in found.items)

    before = await carrying("weekly")
    assert {native for native, _, _ in before} == {one_off, task.id}
    moved_on = next(t for t in before if t[0] == task.id)

    alone = r.MailItem(ref=r.ItemRef(kind=r.OBJECT_KIND_TASK, native_id=task.id))
    alone.task.SetInParent()
    [relinked] = await ews.apply(
        mailbox,
        pb.MailWrite(
            operation=pb.MAIL_WRITE_OPERATION_UPDATE,
            link_id="next",
            ref=alone.ref,
            item=alone,
            update_mask=FieldMask(paths=["link_id"]),
        ),
    )
    assert relinked.status == r.WRITE_STATUS_OK
    assert [native for native, _, _ in await carrying("weekly")] == [one_off]
    assert await carrying("next") == [moved_on]  # its content as it was


def _every_field(models: Any, version: Any, *, mime: bool = False) -> list[Any]:
    """What listings and reads asked for before they named the fields the conversion reads
    (issue #18): every field of the item classes, MIME only when asked for."""
    mimes = () if mime else ("mime_content", "mime_content_utf8")
    return [f for m in models for f in m.supported_fields(version=version) if f.name not in mimes]


async def test_full_items_list_and_read_as_they_did_with_every_field(
    ews: Ews, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox, account = await ews.own_mailbox()
    # East of UTC: an all-day item's dates read in any other zone are the day before.
    berlin, tokyo = EWSTimeZone("Europe/Berlin"), EWSTimeZone("Asia/Tokyo")
    start = EWSDateTime(2030, 3, 18, 10, 0, tzinfo=berlin)
    people = [Mailbox(email_address=f"p{n}@acme.example", name=f"Person {n}") for n in range(4)]
    full = {
        "body": HTMLBody("<p>agenda</p>"),
        "categories": ["Salesforce", "Blue"],
        "sensitivity": "Private",
        "location": "Room 1",
        "legacy_free_busy_status": "Tentative",
        "reminder_is_set": True,
        "reminder_minutes_before_start": 30,
        "required_attendees": [Attendee(mailbox=people[0], response_type="Accept")],
        "optional_attendees": [Attendee(mailbox=people[1], response_type="Tentative")],
        "resources": [Attendee(mailbox=people[2], response_type="Unknown")],
        LINK_ID_FIELD: "link-full",
    }
    meetings = [
        CalendarItem(subject="Timed", start=start, end=start + dt.timedelta(hours=1), **full),
        CalendarItem(
            subject="All day",
            start=EWSDate(2030, 3, 19),
            end=EWSDate(2030, 3, 20),
            is_all_day=True,
            _start_timezone=tokyo,
            _end_timezone=tokyo,
            **full,
        ),
        CalendarItem(
            subject="Weekly",
            start=start,
            end=start + dt.timedelta(minutes=30),
            recurrence=Recurrence(
                pattern=WeeklyPattern(interval=1, weekdays=[1]), start=start.date(), number=4
            ),
            **full,
        ),
    ]
    for meeting_ in meetings:
        meeting_.account, meeting_.folder = account, account.calendar
        meeting_.save(send_meeting_invitations="SendToNone")
    series = meetings[2]
    moved = series.occurrence(index=2)
    moved.refresh()
    moved.start += dt.timedelta(hours=2)
    moved.end += dt.timedelta(hours=2)
    moved.save(update_fields=["start", "end"], conflict_resolution="NeverOverwrite")
    gone = series.occurrence(index=3)
    gone.refresh()
    gone.delete()
    Task(
        account=account,
        folder=account.tasks,
        subject="Call back",
        body="notes",
        due_date=EWSDate(2030, 3, 20),
        start_date=EWSDate(2030, 3, 18),
        status="InProgress",
        percent_complete=Decimal(50),
        importance="High",
        categories=["Salesforce"],
        reminder_is_set=True,
        reminder_due_by=start,
        **{LINK_ID_FIELD: "link-task"},
    ).save()
    contacts = Folder(
        parent=account.msg_folder_root, name="Salesforce Contacts", folder_class="IPF.Contact"
    )
    contacts.save()
    Contact(
        account=account,
        folder=contacts,
        given_name="Ada",
        middle_name="King",
        surname="Lovelace",
        generation="II",
        display_name="Ada Lovelace",
        email_addresses=[EmailAddress(label="EmailAddress1", email="ada@acme.example")],
        phone_numbers=[PhoneNumber(label="MobilePhone", phone_number="+49 30 1")],
        physical_addresses=[PhysicalAddress(label="Business", street="1 Main St", city="Berlin")],
        company_name="Acme",
        job_title="CTO",
        department="R&D",
        body="met at the fair",
        categories=["Salesforce"],
        birthday=EWSDate(1990, 12, 10),
        **{LINK_ID_FIELD: "link-contact"},
    ).save()
    emails = Folder(
        parent=account.msg_folder_root, name="Salesforce Emails", folder_class="IPF.Note"
    )
    emails.save()
    for folder, subject in ((emails, "Filed"), (account.inbox, "Categorised")):
        Message(
            account=account,
            folder=folder,
            subject=subject,
            body=HTMLBody("<p>offer</p>"),
            to_recipients=[people[0]],
            cc_recipients=[people[1]],
            bcc_recipients=[people[2]],
            categories=["Salesforce"],
        ).save()

    async def listed_and_read() -> list[Any]:
        got: list[Any] = []
        for kind in (CALENDAR, r.OBJECT_KIND_TASK, r.OBJECT_KIND_CONTACT, r.OBJECT_KIND_EMAIL):
            page = await ews.changes(mailbox, kind=kind)
            found = await ews.stub.GetItems(
                pb.GetItemsRequest(mailbox=mailbox, refs=[c.ref for c in page.changes])
            )
            got += [list(page.changes), list(found.items)]
        return got

    now = await listed_and_read()
    with monkeypatch.context() as patched:
        patched.setattr(exchange, "listed_fields", _every_field)
        before = await listed_and_read()
    assert now == before
    calendar, _, tasks, _, people_, _, shared, read = now
    # Every kind, every field: what the comparison covers.
    assert len(calendar) == 4
    assert calendar[3].item.calendar_item.series_id == series.id
    assert [c.item.calendar_item.all_day for c in calendar[:2]] == [False, True]
    assert calendar[2].item.calendar_item.recurrence.excluded_starts
    assert calendar[0].item.calendar_item.attendees[2].role == r.ATTENDEE_ROLE_RESOURCE
    assert tasks[0].item.task.reminder_time.seconds
    assert tasks[0].item.ref.link_id
    assert people_[0].item.contact.postal_addresses[0].city == "Berlin"
    assert sorted(c.item.email.subject for c in shared) == ["Categorised", "Filed"]
    assert all(e.email.mime_content for e in read)


async def test_listing_reading_and_writing_parse_each_answer_whole(
    ews: Ews, monkeypatch: pytest.MonkeyPatch
) -> None:
    # exchangelib reads an answer through iter_content() at requests' default chunk size, one
    # byte per Python call (issue #18: a third of a big listing's CPU).
    mailbox = await ews.register("demo@concord.test")
    for kind in (CALENDAR, r.OBJECT_KIND_EMAIL):
        await ews.changes(mailbox, kind=kind)  # the folders' lookups, cached from here on
    by_byte: list[str] = []
    iter_content = requests.Response.iter_content

    def counted(response: requests.Response, chunk_size: int | None = 1, **kwargs: Any) -> Any:
        if chunk_size == 1:
            # The operation the answer is to: the element the SOAP body holds.
            found = re.search(rb"<s:Body><m:(\w+)", bytes(response.request.body or b""))
            by_byte.append(found.group(1).decode() if found else "?")
        return iter_content(response, chunk_size, **kwargs)

    monkeypatch.setattr(requests.Response, "iter_content", counted)
    listed = [await ews.changes(mailbox, kind=kind) for kind in (CALENDAR, r.OBJECT_KIND_EMAIL)]
    refs = [c.ref for page in listed for c in page.changes]
    read = await ews.stub.GetItems(pb.GetItemsRequest(mailbox=mailbox, refs=refs))
    assert len(read.items) == len(refs) > 0
    assert any(e.email.mime_content for e in read.items)
    assert any(c.item.calendar_item.recurrence.rules for c in listed[0].changes)
    assert by_byte == []
    # Writes too: a big first sync's CreateItem answers carry 300 bytes an item.
    [created] = await ews.apply(mailbox, create("whole-1"))
    moved = meeting("Pipeline review, moved")
    [updated] = await ews.apply(mailbox, update(created.ref, moved, "subject"))
    [deleted] = await ews.apply(
        mailbox,
        pb.MailWrite(operation=pb.MAIL_WRITE_OPERATION_DELETE, link_id="whole-1", ref=updated.ref),
    )
    assert [w.status for w in (created, updated, deleted)] == [r.WRITE_STATUS_OK] * 3
    # (A create's look-up by link id, a FindItem that finds nothing, goes through exchangelib's
    # query set and is parsed as it parses.)
    assert set(by_byte) <= {"FindItem"}
