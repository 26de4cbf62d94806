"""The Graph provider against the Graph emulator: what the contract suite does not cover
(series and exceptions, all-day dates, zones, resync, throttling, concurrency, auth), and a
Graph account served through the mail-connector's gRPC API."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from concord.common.v1 import resources_pb2 as r
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_graph_emulator.testing import RunningEmulator
from concord_mail_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_mail_connector.adapters import graph_items as gi
from concord_mail_connector.adapters.graph import GraphProvider
from concord_mail_connector.adapters.graph_items import LINK_ID_PROPERTY
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.api.servicer import MailConnectorServicer
from concord_mail_connector.domain.errors import (
    MailboxAccessDenied,
    MailboxCredentialsRejected,
    ProviderThrottled,
)
from concord_mail_connector.domain.model import Cursor, Kind, MailboxAccount, Provider
from concord_mail_connector.domain.provider import (
    MailboxAccess,
    ProviderChangePage,
    Write,
    WriteOperation,
)
from concord_mail_connector.domain.service import MailConnector
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import serving_in_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("graph")).start()
    yield emu
    emu.stop()


class Mailbox:
    def __init__(self, emulator: RunningEmulator) -> None:
        self.emulator = emulator
        self.app = emulator.new_app()
        self.address = emulator.new_mailbox("p")
        self.provider = GraphProvider(max_back_off=2, ca_bundle=emulator.ca_cert)
        self.access = self.access_with(self.app.client_secret)

    def access_with(self, secret: str) -> MailboxAccess:
        settings = {
            "tenant_id": self.app.tenant_id,
            "client_id": self.app.client_id,
            "authority_url": self.emulator.base,
            "graph_url": self.emulator.graph_url,
        }
        now = dt.datetime.now(dt.UTC)
        account = MailboxAccount(
            self.address.split("@")[0], self.address, Provider.GRAPH, settings, True, now, now, "e"
        )
        return MailboxAccess(account, secret.encode())

    def graph(self, method: str, path: str, body: Any = None) -> Any:
        """A write by another Graph client (Outlook, a phone), through the emulator's API."""
        context = ssl.create_default_context(cafile=self.emulator.ca_cert)
        with httpx.Client(verify=context) as client:
            got = client.post(
                self.emulator.token_url(self.app.tenant_id),
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.app.client_id,
                    "client_secret": self.app.client_secret,
                    "scope": "https://graph.microsoft.com/.default",
                },
            ).json()["access_token"]
            answer = client.request(
                method,
                f"{self.emulator.graph_url}/users/{self.address}/{path}",
                json=body,
                headers={"Authorization": f"Bearer {got}"},
            )
            return answer.json() if answer.content else None

    async def listing(
        self, kind: Kind = Kind.CALENDAR_ITEM, token: str = ""
    ) -> tuple[list[r.MailChange], str]:
        changes: list[r.MailChange] = []
        while True:
            page = await self.provider.list_changes(
                self.access, kind, Cursor(kind.value, token), 50
            )
            assert not page.full_resync_required
            changes += page.changes
            token = page.next_cursor.token
            if not page.has_more:
                return changes, token


@pytest.fixture
async def mailbox(emulator: RunningEmulator) -> AsyncIterator[Mailbox]:
    made = Mailbox(emulator)
    yield made
    await made.provider.close()
    emulator.admin("DELETE", "faults")


def _zoned(value: str, zone: str) -> dict[str, str]:
    return {"dateTime": value, "timeZone": zone}


async def test_a_series_is_its_master_and_its_exceptions_keyed_by_original_start(
    mailbox: Mailbox,
) -> None:
    series = mailbox.graph(
        "POST",
        "events",
        {
            "subject": "Stand-up",
            "start": _zoned("2031-06-02T09:00:00", "W. Europe Standard Time"),
            "end": _zoned("2031-06-02T09:30:00", "W. Europe Standard Time"),
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"],
                            "firstDayOfWeek": "monday"},
                "range": {"type": "numbered", "startDate": "2031-06-02", "numberOfOccurrences": 4},
            },
        },
    )  # fmt: skip
    window = "startDateTime=2031-01-01T00:00:00Z&endDateTime=2032-01-01T00:00:00Z"
    instances = mailbox.graph("GET", f"events/{series['id']}/instances?{window}")["value"]
    mailbox.graph("PATCH", f"events/{instances[1]['id']}", {"subject": "Stand-up (moved)"})
    mailbox.graph("DELETE", f"events/{instances[2]['id']}")
    changes, _ = await mailbox.listing()
    by_id = {c.ref.native_id: c.item.calendar_item for c in changes}
    master = by_id[series["id"]]
    assert list(master.recurrence.rules) == [
        "RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO;WKST=MO;COUNT=4"
    ]
    assert master.recurrence.time_zone == "Europe/Berlin"
    assert master.time_zone == "Europe/Berlin"
    assert [s.ToDatetime(dt.UTC) for s in master.recurrence.excluded_starts] == [
        dt.datetime(2031, 6, 16, 7, tzinfo=dt.UTC)
    ]
    [exception] = [c for c in changes if c.item.calendar_item.series_id]
    moved = exception.item.calendar_item
    assert (moved.subject, moved.series_id) == ("Stand-up (moved)", series["id"])
    assert moved.original_start.ToDatetime(dt.UTC) == dt.datetime(2031, 6, 9, 7, tzinfo=dt.UTC)
    # The unchanged occurrences are their master: nothing else is listed.
    assert len(changes) == 2


async def test_all_day_dates_never_pass_through_utc_and_private_stays_private(
    mailbox: Mailbox,
) -> None:
    mailbox.graph(
        "POST",
        "events",
        {
            "subject": "Offsite",
            "isAllDay": True,
            "sensitivity": "private",
            "start": _zoned("2031-06-02T00:00:00", "Tokyo Standard Time"),
            "end": _zoned("2031-06-04T00:00:00", "Tokyo Standard Time"),
        },
    )
    [change], _ = await mailbox.listing()
    item = change.item.calendar_item
    assert (item.all_day, item.start_date, item.end_date) == (True, "2031-06-02", "2031-06-04")
    assert not item.HasField("start")
    assert (item.sensitivity, item.is_private) == (r.SENSITIVITY_PRIVATE, True)
    assert item.time_zone == "Asia/Tokyo"


async def test_an_unknown_zone_quarantines_all_day_items_and_names_timed_ones(
    mailbox: Mailbox,
) -> None:
    custom = "tzone://Microsoft/Custom"
    for subject, all_day, start, end in (
        ("Holiday", True, "2031-06-02T00:00:00.0000000", "2031-06-03T00:00:00.0000000"),
        ("Call", False, "2031-06-02T08:00:00.0000000", "2031-06-02T09:00:00.0000000"),
    ):
        mailbox.emulator.admin(
            "POST",
            f"users/{mailbox.address}/plant",
            {"subject": subject, "type": "singleInstance", "isAllDay": all_day,
             "originalStartTimeZone": custom, "originalEndTimeZone": custom,
             "start": _zoned(start, "UTC"), "end": _zoned(end, "UTC")},
        )  # fmt: skip
    changes, _ = await mailbox.listing()
    problems = [c.problem for c in changes if c.HasField("problem")]
    assert [(p.reason, "Holiday" in p.message) for p in problems] == [("UNKNOWN_TIME_ZONE", False)]
    assert custom in problems[0].message
    [timed] = [c.item.calendar_item for c in changes if c.HasField("item")]
    assert (timed.subject, timed.time_zone) == ("Call", custom)


async def test_an_expired_delta_link_asks_for_a_full_resync(mailbox: Mailbox) -> None:
    _, token = await mailbox.listing(Kind.CONTACT)
    mailbox.emulator.admin("POST", f"users/{mailbox.address}/expire-delta")
    page = await mailbox.provider.list_changes(
        mailbox.access, Kind.CONTACT, Cursor("contact", token), 10
    )
    assert page == ProviderChangePage((), Cursor("contact", ""), full_resync_required=True)
    # A cursor this provider never wrote is answered the same way, never with an error.
    foreign = await mailbox.provider.list_changes(
        mailbox.access, Kind.CONTACT, Cursor("contact", "AAQkSyncState=="), 10
    )
    assert foreign.full_resync_required


async def test_retry_after_is_waited_out_within_the_cap_and_refused_past_it(
    mailbox: Mailbox,
) -> None:
    mailbox.emulator.admin(
        "POST", "faults", {"kind": "throttle", "operation": "delta", "retry_after": 0.5}
    )
    started = time.monotonic()
    await mailbox.listing(Kind.CONTACT)
    assert time.monotonic() - started >= 0.5
    mailbox.emulator.admin("POST", "faults", {"kind": "unavailable", "retry_after": 30})
    with pytest.raises(ProviderThrottled) as caught:
        await mailbox.listing(Kind.CONTACT)
    assert caught.value.retry_after == 30
    assert mailbox.provider.throttle_budget(mailbox.access.account.mailbox)["throttled"] == 2


async def test_at_most_four_requests_are_in_flight_per_mailbox(mailbox: Mailbox) -> None:
    made = mailbox.graph(
        "POST",
        "events",
        {"subject": "x", "start": _zoned("2031-06-02T08:00:00", "UTC"),
         "end": _zoned("2031-06-02T09:00:00", "UTC")},
    )  # fmt: skip
    ref = r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM, native_id=made["id"])
    mailbox.emulator.admin(
        "POST", "faults", {"kind": "latency", "operation": "read", "times": 12, "latency_ms": 150}
    )
    mailbox.emulator.admin("DELETE", "calls")
    found = await asyncio.gather(
        *(mailbox.provider.get_items(mailbox.access, [ref]) for _ in range(12))
    )
    assert all(len(f.items) == 1 for f in found)
    calls = mailbox.emulator.admin("GET", "calls")
    assert calls["max_in_flight"][mailbox.address] == 4
    # One token for all of them: msal serves it from its cache.
    assert calls["calls"].get("token", 0) <= 1
    assert calls["calls"]["prefer:IdType=ImmutableId"] >= 12
    assert calls["calls"]["prefer:outlook.timezone=UTC"] >= 12


async def test_an_access_policy_and_a_wrong_secret_are_told_apart(mailbox: Mailbox) -> None:
    with pytest.raises(MailboxCredentialsRejected):
        await mailbox.provider.list_collections(mailbox.access_with("wrong"), None)
    mailbox.emulator.admin(
        "POST", f"users/{mailbox.address}/deny", {"client_id": mailbox.app.client_id}
    )
    with pytest.raises(MailboxAccessDenied) as caught:
        await mailbox.provider.list_collections(mailbox.access, None)
    assert caught.value.metadata["provider_code"] == "ErrorAccessDenied"


async def test_collections_are_the_calendar_task_lists_and_dedicated_folders(
    mailbox: Mailbox,
) -> None:
    await mailbox.listing(Kind.CONTACT)  # makes the dedicated contacts folder
    found = await mailbox.provider.list_collections(mailbox.access, None)
    assert [(c.id, c.display_name, c.is_default) for c in found if c.is_default] == [
        ("calendar-item", "Calendar", True),
        ("task", "Tasks", True),
        ("contact", "Salesforce Contacts", True),
    ]


async def test_a_graph_account_is_served_through_the_api(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/api.db")
    await migrate(engine, MIGRATIONS)
    store = SqlAccountStore(engine, SecretBox(Fernet.generate_key()))
    provider = GraphProvider(ca_bundle=emulator.ca_cert)
    servicer = MailConnectorServicer(MailConnector(store, providers={Provider.GRAPH: provider}))
    app = emulator.new_app()
    address = emulator.new_mailbox("api")
    try:
        async with serving_in_process(
            "mail-connector",
            SERVICE_NAME,
            lambda s: pb_grpc.add_MailConnectorServiceServicer_to_server(servicer, s),
        ) as chan:
            stub = pb_grpc.MailConnectorServiceStub(chan)
            mailbox = f"g{uuid.uuid4().hex[:8]}"
            account = pb.MailboxAccount(
                name=f"mailboxes/{mailbox}/account",
                address=address,
                provider=r.MAIL_PROVIDER_GRAPH,
                graph=pb.GraphSettings(
                    tenant_id=app.tenant_id,
                    client_id=app.client_id,
                    authority_url=emulator.base,
                    graph_url=emulator.graph_url,
                ),
                secret=app.client_secret.encode(),
            )
            await stub.UpsertMailboxAccount(pb.UpsertMailboxAccountRequest(account=account))
            listed = await stub.ListChanges(
                pb.ListChangesRequest(mailbox=f"mailboxes/{mailbox}", kind=r.OBJECT_KIND_CONTACT)
            )
            assert listed.next_cursor.token.startswith("graph1:")
    finally:
        await provider.close()
        await engine.dispose()


async def test_a_write_in_an_unknown_zone_is_refused_with_the_reason(mailbox: Mailbox) -> None:
    item = r.MailItem(ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM))
    item.calendar_item.subject = "Somewhere"
    item.calendar_item.time_zone = "Mars/Olympus_Mons"
    item.calendar_item.start.FromDatetime(dt.datetime(2031, 6, 2, 8))
    item.calendar_item.end.FromDatetime(dt.datetime(2031, 6, 2, 9))
    [result] = await mailbox.provider.apply_items(
        mailbox.access, [Write(WriteOperation.CREATE, "z1", r.ItemRef(), item)]
    )
    assert (result.status, result.error_message) == (
        r.WRITE_STATUS_INVALID,
        "unknown time zone 'Mars/Olympus_Mons'",
    )


async def test_to_do_tasks_are_written_listed_with_their_link_id_and_found_by_it(
    mailbox: Mailbox,
) -> None:
    _, token = await mailbox.listing(Kind.TASK)
    task = r.MailItem(ref=r.ItemRef(kind=r.OBJECT_KIND_TASK))
    task.task.subject = "Send the quote"
    task.task.due_date = "2031-06-02"
    task.task.priority = r.TASK_PRIORITY_HIGH
    made = Write(WriteOperation.CREATE, "t1", r.ItemRef(), task)
    [created] = await mailbox.provider.apply_items(mailbox.access, [made])
    [again] = await mailbox.provider.apply_items(mailbox.access, [made])
    assert (created.status, again.status, again.already_applied) == (
        r.WRITE_STATUS_OK,
        r.WRITE_STATUS_OK,
        True,
    )
    changes, token = await mailbox.listing(Kind.TASK, token)
    [listed] = changes
    got = listed.item.task
    assert (listed.ref.link_id, got.subject, got.due_date, got.priority) == (
        "t1",
        "Send the quote",
        "2031-06-02",
        r.TASK_PRIORITY_HIGH,
    )
    task.task.status = r.TASK_STATUS_COMPLETED
    assert created.ref is not None
    [done] = await mailbox.provider.apply_items(
        mailbox.access,
        [Write(WriteOperation.UPDATE, "t1", listed.ref, task, update_mask=["status"])],
    )
    assert done.status == r.WRITE_STATUS_OK
    found = await mailbox.provider.get_items(mailbox.access, [], link_ids=["t1"], kind=Kind.TASK)
    assert [i.task.status for i in found.items] == [r.TASK_STATUS_COMPLETED]
    [deleted] = await mailbox.provider.apply_items(
        mailbox.access, [Write(WriteOperation.DELETE, "t1", listed.ref, r.MailItem())]
    )
    assert deleted.status == r.WRITE_STATUS_OK
    changes, _ = await mailbox.listing(Kind.TASK, token)
    # The update and the delete of one item since the cursor: its last state, the delete.
    assert [(c.type, c.ref.native_id) for c in changes] == [
        (r.CHANGE_TYPE_DELETE, listed.ref.native_id)
    ]


async def test_writes_go_in_batches_of_twenty(mailbox: Mailbox) -> None:
    item = r.MailItem(ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM))
    item.calendar_item.subject = "batched"
    item.calendar_item.start.FromDatetime(dt.datetime(2031, 6, 2, 8))
    item.calendar_item.end.FromDatetime(dt.datetime(2031, 6, 2, 9))
    writes = [Write(WriteOperation.CREATE, f"b{n}", r.ItemRef(), item) for n in range(25)]
    await mailbox.provider.list_collections(mailbox.access, None)  # the token, the folders
    mailbox.emulator.admin("DELETE", "calls")
    results = await mailbox.provider.apply_items(mailbox.access, writes)
    assert {x.status for x in results} == {r.WRITE_STATUS_OK}
    calls = mailbox.emulator.admin("GET", "calls")["calls"]
    # Two `$batch`es of link-id lookups (20 + 5), two of creates: 4 HTTP requests for 50.
    assert (calls["batch"], calls["requests"] - calls["batched"], calls["batched"]) == (4, 4, 50)


async def test_creates_known_new_go_without_link_id_lookups(mailbox: Mailbox) -> None:
    item = r.MailItem(ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM))
    item.calendar_item.subject = "proved new"
    item.calendar_item.start.FromDatetime(dt.datetime(2031, 6, 3, 8))
    item.calendar_item.end.FromDatetime(dt.datetime(2031, 6, 3, 9))
    writes = [
        Write(WriteOperation.CREATE, f"n{n}", r.ItemRef(), item, known_new=True) for n in range(25)
    ]
    await mailbox.provider.list_collections(mailbox.access, None)
    mailbox.emulator.admin("DELETE", "calls")
    results = await mailbox.provider.apply_items(mailbox.access, writes)
    assert {x.status for x in results} == {r.WRITE_STATUS_OK}
    calls = mailbox.emulator.admin("GET", "calls")["calls"]
    # Only the two `$batch`es of creates (20 + 5).
    assert (calls["batch"], calls["batched"]) == (2, 25)


def _meeting(subject: str) -> r.MailItem:
    item = r.MailItem(ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM))
    item.calendar_item.subject = subject
    item.calendar_item.start.FromDatetime(dt.datetime(2031, 6, 4, 8))
    item.calendar_item.end.FromDatetime(dt.datetime(2031, 6, 4, 9))
    return item


def _alone(ref: r.ItemRef, payload: str, link_id: str) -> Write:
    """An update of `ref` whose mask is the link id alone (the reconciler's relink)."""
    item = r.MailItem(ref=ref)
    getattr(item, payload).SetInParent()
    return Write(WriteOperation.UPDATE, link_id, ref, item, update_mask=["link_id"])


async def test_an_update_stores_its_link_id_and_a_link_id_alone_replaces_a_copys(
    mailbox: Mailbox,
) -> None:
    """An Outlook copy of an event Concord wrote carries its link id: a look-up by that id
    may find the copy. An update of the link id alone gives the copy its own and changes
    nothing else; every update stores the write's link id."""
    [made] = await mailbox.provider.apply_items(
        mailbox.access, [Write(WriteOperation.CREATE, "orig", r.ItemRef(), _meeting("Kick-off"))]
    )
    assert made.ref is not None
    copy = mailbox.graph(
        "POST",
        "events",
        {
            "subject": "Kick-off (copy)",
            "start": {"dateTime": "2031-06-04T08:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2031-06-04T09:00:00", "timeZone": "UTC"},
            "singleValueExtendedProperties": [{"id": LINK_ID_PROPERTY, "value": "orig"}],
        },
    )

    async def carrying(link_id: str) -> list[tuple[str, str]]:
        found = await mailbox.provider.get_items(
            mailbox.access, [], link_ids=[link_id], kind=Kind.CALENDAR_ITEM
        )
        return sorted((i.ref.native_id, i.calendar_item.subject) for i in found.items)

    assert {native for native, _ in await carrying("orig")} <= {made.ref.native_id, copy["id"]}
    ref = r.ItemRef(
        kind=r.OBJECT_KIND_CALENDAR_ITEM, native_id=copy["id"], version=copy["changeKey"]
    )
    [relinked] = await mailbox.provider.apply_items(
        mailbox.access, [_alone(ref, "calendar_item", "copy")]
    )
    assert relinked.status == r.WRITE_STATUS_OK
    assert relinked.ref is not None
    assert relinked.ref.link_id == "copy"
    assert await carrying("orig") == [(made.ref.native_id, "Kick-off")]
    assert await carrying("copy") == [(copy["id"], "Kick-off (copy)")]  # its content as it was

    # Any other update stores its link id too.
    moved = _meeting("Moved")
    [updated] = await mailbox.provider.apply_items(
        mailbox.access,
        [Write(WriteOperation.UPDATE, "moved", relinked.ref, moved, update_mask=["subject"])],
    )
    assert updated.status == r.WRITE_STATUS_OK
    assert await carrying("copy") == []
    assert await carrying("moved") == [(copy["id"], "Moved")]
    changes, _ = await mailbox.listing()
    assert sorted((c.ref.native_id, c.ref.link_id) for c in changes) == sorted(
        [(made.ref.native_id, "orig"), (copy["id"], "moved")]
    )


async def test_a_to_do_task_takes_a_link_id_in_its_linked_resource(mailbox: Mailbox) -> None:
    """To Do tasks keep link ids in a linked resource: an update naming the link id stores
    it there (made when the task has none), with or without fields of its own."""
    lists = mailbox.graph("GET", "todo/lists")["value"]
    default = next(x["id"] for x in lists if x["wellknownListName"] == "defaultList")
    copied = mailbox.graph(
        "POST",
        f"todo/lists/{default}/tasks",
        {"title": "Send the quote", "linkedResources": [gi.linked_resource("orig")]},
    )
    bare = mailbox.graph("POST", f"todo/lists/{default}/tasks", {"title": "Call back"})

    async def carrying(link_id: str) -> list[tuple[str, str, int]]:
        found = await mailbox.provider.get_items(
            mailbox.access, [], link_ids=[link_id], kind=Kind.TASK
        )
        return [(i.ref.native_id, i.task.subject, i.task.status) for i in found.items]

    changes, token = await mailbox.listing(Kind.TASK)
    refs = {c.ref.native_id: c.ref for c in changes}
    stale = r.ItemRef()
    stale.CopyFrom(refs[copied["id"]])
    stale.version = "stale"
    [conflict] = await mailbox.provider.apply_items(mailbox.access, [_alone(stale, "task", "copy")])
    assert conflict.status == r.WRITE_STATUS_CONFLICT
    assert await carrying("copy") == []

    relink = _alone(refs[copied["id"]], "task", "copy")
    done = r.MailItem(ref=refs[bare["id"]], task=r.TaskItem(status=r.TASK_STATUS_COMPLETED))
    merged = Write(
        WriteOperation.UPDATE, "bare", refs[bare["id"]], done, update_mask=["status", "link_id"]
    )
    results = await mailbox.provider.apply_items(mailbox.access, [relink, merged])
    assert [x.status for x in results] == [r.WRITE_STATUS_OK, r.WRITE_STATUS_OK]
    assert await carrying("orig") == []
    assert await carrying("copy") == [(copied["id"], "Send the quote", r.TASK_STATUS_NOT_STARTED)]
    assert await carrying("bare") == [(bare["id"], "Call back", r.TASK_STATUS_COMPLETED)]
    linked = mailbox.graph("GET", f"todo/lists/{default}/tasks/{copied['id']}/linkedResources")
    assert [x["externalId"] for x in linked["value"]] == ["copy"]  # the one it had, updated
    # Each answer names the version a later listing shows.
    changes, _ = await mailbox.listing(Kind.TASK, token)
    listed = {c.ref.native_id: c.ref.version for c in changes}
    assert {x.ref.native_id: x.ref.version for x in results if x.ref} == listed
