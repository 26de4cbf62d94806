"""Push: EWS notifications from the emulator become `concord.mail.changed.<mailbox>` on a real
nats-server, through the real supervisor, feed and publisher."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import uvicorn
from cryptography.fernet import Fernet
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Contact,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    FailFast,
    Folder,
    Task,
)
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from google.protobuf import timestamp_pb2
from nats.aio.client import Client
from nats.aio.msg import Msg

from concord.common.v1 import resources_pb2 as r
from concord.events.v1 import events_pb2
from concord.mail.v1 import mail_connector_service_pb2 as pb
from concord.mail.v1 import mail_connector_service_pb2_grpc as pb_grpc
from concord_exchange_emulator.testing import RunningEmulator
from concord_mail_connector.__main__ import MIGRATIONS, SERVICE_NAME
from concord_mail_connector.adapters.exchange import ExchangeProvider
from concord_mail_connector.adapters.push_accounts import SqlPushAccounts
from concord_mail_connector.adapters.push_exchange import ExchangeChangeFeed
from concord_mail_connector.adapters.push_nats import NatsChangePublisher
from concord_mail_connector.adapters.store import SqlAccountStore
from concord_mail_connector.api.servicer import MailConnectorServicer
from concord_mail_connector.domain.model import AccountUpdate, Kind, Provider
from concord_mail_connector.domain.own_writes import OwnWrites
from concord_mail_connector.domain.provider import Write, WriteOperation
from concord_mail_connector.domain.push import PushMode, PushSupervisor
from concord_mail_connector.domain.service import MailConnector
from concord_rpc import from_rpc_error
from concord_secrets import SecretBox
from concord_store import create_engine, migrate
from concord_testing import NatsServer, serving_in_process

pytestmark = pytest.mark.integration

WINDOW = 0.2
# Generous: the machine is shared; the assertions are on events, not on how fast they came.
WAIT = 10.0
SERVICE = ("svc-concord@concord.test", "svc-password")
SECRET_SUBJECT = "Quarterly pricing with ACME — confidential"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    emu = RunningEmulator(tmp_path_factory.mktemp("exchange")).start()
    yield emu
    emu.stop()


@dataclass
class Hints:
    """Every `MailChanged` seen on one mailbox's subject, with its raw bytes and headers."""

    messages: list[Msg] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # The hints sent once the watch's first subscription was in place, set aside by the rig.
    catch_up: list[events_pb2.MailChanged] = field(default_factory=list)

    async def add(self, msg: Msg) -> None:
        self.messages.append(msg)
        self.arrived.set()

    def parsed(self) -> list[events_pb2.MailChanged]:
        found = []
        for msg in self.messages:
            message = events_pb2.MailChanged()
            message.ParseFromString(msg.data)
            found.append(message)
        return found

    async def wait_count(self, count: int, within: float = WAIT) -> None:
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def settle(self, quiet: float = 1.0) -> None:
        """Until no hint arrived for `quiet` seconds (the window's trailing hint included)."""
        while True:
            seen = len(self.messages)
            await asyncio.sleep(quiet)
            if len(self.messages) == seen:
                return


@dataclass
class Rig:
    emulator: RunningEmulator
    supervisor: PushSupervisor
    client: Client
    store: SqlAccountStore
    # The mail-connector's write path, sharing what its writes left with the push path.
    connector: MailConnector

    async def mailbox(
        self, mode: PushMode = PushMode.STREAMING, *, impersonated: bool = False
    ) -> tuple[str, Account, Hints]:
        """A new emulator user registered as a mailbox (reached with its own credentials, or by
        the org's service account impersonating it), its exchangelib account, its hints."""
        address = f"u-{uuid.uuid4().hex[:10]}@concord.test"
        password = uuid.uuid4().hex
        self.emulator.admin("POST", "users", {"username": address, "password": password})
        mailbox = f"m-{uuid.uuid4().hex[:12]}"
        hints = Hints()
        await self.client.subscribe(f"concord.mail.changed.{mailbox}", cb=hints.add)
        await self.client.flush()
        await self.store.upsert(
            AccountUpdate(
                mailbox=mailbox,
                address=address,
                provider=Provider.EXCHANGE_EWS,
                settings={
                    "service_url": self.emulator.endpoint,
                    "username": SERVICE[0] if impersonated else address,
                    "auth_type": "basic",
                },
                secret=(SERVICE[1] if impersonated else password).encode(),
            )
        )
        config = Configuration(
            service_endpoint=self.emulator.endpoint,
            credentials=Credentials(address, password),
            auth_type=BASIC,
            retry_policy=FailFast(),
        )
        account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
        await self.supervisor.rescan()
        await self.wait_mode(mailbox, mode)
        if mode != PushMode.DEGRADED:
            await hints.wait_count(1)
            await hints.settle(WINDOW * 2)
            hints.catch_up = hints.parsed()
            hints.messages.clear()
        return mailbox, account, hints

    @contextlib.asynccontextmanager
    async def api(self) -> AsyncIterator[pb_grpc.MailConnectorServiceStub]:
        servicer = MailConnectorServicer(MailConnector(self.store, {}), push=self.supervisor)
        async with serving_in_process(
            "mail-connector",
            SERVICE_NAME,
            lambda s: pb_grpc.add_MailConnectorServiceServicer_to_server(servicer, s),
        ) as channel:
            yield pb_grpc.MailConnectorServiceStub(channel)

    async def listed(self, mailbox: str) -> list[pb.Subscription]:
        return list((await self.listing(mailbox)).subscriptions)

    async def listing(self, mailbox: str) -> pb.ListSubscriptionsResponse:
        async with self.api() as stub:
            return await stub.ListSubscriptions(
                pb.ListSubscriptionsRequest(parent=f"mailboxes/{mailbox}")
            )

    async def wait_mode(self, mailbox: str, mode: PushMode) -> None:
        def reached() -> bool:
            state = self.supervisor.state(mailbox)
            return state is not None and state.mode == mode

        await eventually(reached)


async def eventually(check: Callable[[], bool], within: float = WAIT) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def rig(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[Rig]:
    async with _rig(emulator, nats_server, tmp_path) as made:
        yield made


@contextlib.asynccontextmanager
async def _rig(
    emulator: RunningEmulator,
    nats_server: NatsServer,
    tmp_path: Path,
    window: float = WINDOW,
    **feed: Any,
) -> AsyncIterator[Rig]:
    engine = create_engine(f"sqlite:///{tmp_path}/mail.db")
    await migrate(engine, MIGRATIONS)
    store = SqlAccountStore(engine, SecretBox(Fernet.generate_key()))
    client = await nats.connect(nats_server.url)
    options: dict[str, Any] = {
        "stream_minutes": 1,
        "max_back_off": 1.0,
        "degrade_after": 2,
        "healthy_stream_seconds": 1.0,
        "folder_recheck_seconds": 0.5,
    }
    own_writes = OwnWrites()
    exchange = ExchangeProvider()
    options["sessions"] = exchange.sessions_per_credential
    changes = ExchangeChangeFeed(**(options | feed))
    # As the service wires them: the folders the connector makes are watched at once.
    exchange.on_folder_created(changes.folder_created)
    supervisor = PushSupervisor(
        SqlPushAccounts(engine, store),
        {Provider.EXCHANGE_EWS: changes},
        NatsChangePublisher(client),
        window=window,
        rescan_seconds=3600,
        poll_seconds=0.5,
        own_writes=own_writes,
    )
    connector = MailConnector(store, {Provider.EXCHANGE_EWS: exchange}, own_writes=own_writes)
    try:
        yield Rig(emulator, supervisor, client, store, connector)
    finally:
        await exchange.close()
        await supervisor.stop()
        await client.drain()
        await engine.dispose()
        close_connections()


def _meeting(account: Account, subject: str = SECRET_SUBJECT) -> CalendarItem:
    start = EWSDateTime(2026, 12, 1, 9, tzinfo=EWSTimeZone("UTC"))
    return CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        body="call the CFO on +1 555 0100",
        start=start,
        end=start + dt.timedelta(hours=1),
    )


async def _blocking(call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(call)


async def test_a_created_updated_deleted_item_each_give_one_hint_without_content(rig: Rig) -> None:
    mailbox, account, hints = await rig.mailbox()
    item = _meeting(account)

    await _blocking(item.save)
    await hints.wait_count(1)
    await hints.settle()
    assert len(hints.messages) == 1

    item.subject = "moved to Thursday"
    await _blocking(lambda: item.save(update_fields=["subject"]))
    await hints.wait_count(2)
    await hints.settle()
    assert len(hints.messages) == 2

    item_id = item.id
    await _blocking(item.delete)
    await hints.wait_count(3)
    await hints.settle()
    assert len(hints.messages) == 3

    for message, msg in zip(hints.parsed(), hints.messages, strict=True):
        assert message.mailbox == mailbox
        assert message.kind == r.OBJECT_KIND_CALENDAR_ITEM
        assert message.hint == "ews-streaming"
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"].startswith(f"mail-changed-{mailbox}-")
        # Nothing of the item: not its subject, body, id or the mailbox's address.
        for leak in (SECRET_SUBJECT, "CFO", "Thursday", item_id, account.primary_smtp_address):
            assert leak.encode() not in msg.data
    assert len({msg.headers["Nats-Msg-Id"] for msg in hints.messages if msg.headers}) == 3


async def test_concords_own_writes_are_not_hinted_and_a_users_edit_between_them_is(
    rig: Rig,
) -> None:
    """Issue #18: the events of Concord's creates, updates and deletes name the ChangeKeys their
    answers carried, so they start no session; a user's edit of the same item is hinted."""
    mailbox, account, hints = await rig.mailbox()
    start = EWSDateTime(2026, 12, 1, 9, tzinfo=EWSTimeZone("UTC"))
    creates = [
        Write(
            WriteOperation.CREATE,
            f"link-{n}",
            r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM),
            r.MailItem(
                ref=r.ItemRef(kind=r.OBJECT_KIND_CALENDAR_ITEM),
                calendar_item=r.CalendarItem(
                    subject=f"from Salesforce {n}",
                    start=timestamp_pb2.Timestamp(seconds=int(start.timestamp()) + 3600 * n),
                    end=timestamp_pb2.Timestamp(seconds=int(start.timestamp()) + 3600 * n + 1800),
                ),
            ),
        )
        for n in range(30)
    ]
    created = await rig.connector.apply_items(mailbox, creates)
    assert [c.status for c in created] == [r.WRITE_STATUS_OK] * 30
    first = created[0].ref
    assert first is not None
    renamed = r.MailItem()
    renamed.CopyFrom(creates[0].item)
    renamed.calendar_item.subject = "from Salesforce, renamed"
    [updated] = await rig.connector.apply_items(
        mailbox,
        [
            Write(
                WriteOperation.UPDATE,
                "link-0",
                first,
                renamed,
                update_mask=["subject"],
            )
        ],
    )
    assert updated.status == r.WRITE_STATUS_OK
    await hints.settle(WINDOW * 5)
    assert hints.messages == []

    # The user edits the item Concord just wrote: someone's change, hinted.
    item = await _blocking(lambda: account.calendar.get(id=first.native_id))
    item.location = "Room 4"
    await _blocking(lambda: item.save(update_fields=["location"]))
    await hints.wait_count(1)
    await hints.settle()
    assert len(hints.messages) == 1

    gone = [
        Write(WriteOperation.DELETE, f"link-{n}", c.ref, r.MailItem())
        for n, c in enumerate(created[1:], start=1)
        if c.ref is not None
    ]
    deleted = await rig.connector.apply_items(mailbox, gone)
    assert {d.status for d in deleted} == {r.WRITE_STATUS_OK}
    await hints.settle(WINDOW * 5)
    assert len(hints.messages) == 1


async def test_a_new_watch_sends_one_catch_up_hint_once_subscribed(rig: Rig) -> None:
    # Whatever changed between the mailbox's last session and the subscription reached no one.
    _, _, hints = await rig.mailbox()
    assert [(m.hint, m.kind) for m in hints.catch_up] == [("subscribed", r.OBJECT_KIND_UNSPECIFIED)]


async def test_a_mailbox_reached_by_impersonation_is_watched_too(rig: Rig) -> None:
    mailbox, account, hints = await rig.mailbox(impersonated=True)
    await _blocking(_meeting(account).save)
    await hints.wait_count(1)
    assert hints.parsed()[0].mailbox == mailbox


async def test_a_task_is_hinted_as_a_task(rig: Rig) -> None:
    _, account, hints = await rig.mailbox()
    await _blocking(Task(account=account, folder=account.tasks, subject="follow up").save)
    await hints.wait_count(1)
    assert hints.parsed()[0].kind == r.OBJECT_KIND_TASK


async def test_a_burst_of_100_changes_coalesces_into_few_hints(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    # A window long against the emulator's 50 ms notification batches, so that hints per
    # window and notifications per burst are far apart whatever the machine's speed.
    window = 0.5
    async with _rig(emulator, nats_server, tmp_path, window=window) as rig:
        _, account, hints = await rig.mailbox()
        loop = asyncio.get_running_loop()

        def burst() -> float:
            started = loop.time()
            for index in range(100):
                _meeting(account, f"burst {index}").save()
            return loop.time() - started

        took = await _blocking(burst)
        await hints.wait_count(1)
        await hints.settle(window * 3)
    count = len(hints.messages)
    # One hint when the burst starts, then at most one per window while it lasts (plus the
    # window's trailing hint for the last changes).
    assert 1 <= count <= took / window + 2
    assert count < 100 / 4


async def test_list_subscriptions_shows_the_live_subscription_per_kind(rig: Rig) -> None:
    mailbox, _, _ = await rig.mailbox()
    listed = await rig.listed(mailbox)
    # A new mailbox has no dedicated contact/email folders yet; inbox and sent cover email.
    assert [s.name for s in listed] == [
        f"mailboxes/{mailbox}/subscriptions/calendar-item",
        f"mailboxes/{mailbox}/subscriptions/email",
        f"mailboxes/{mailbox}/subscriptions/task",
    ]
    assert {s.kind for s in listed} == {
        r.OBJECT_KIND_CALENDAR_ITEM,
        r.OBJECT_KIND_EMAIL,
        r.OBJECT_KIND_TASK,
    }
    for subscription in listed:
        assert subscription.expire_time.ToDatetime() > subscription.create_time.ToDatetime()
    listing = await rig.listing(mailbox)
    assert (listing.push_state, listing.push_state_reason) == (r.PUSH_STATE_ACTIVE, "")

    async with rig.api() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ListSubscriptions(pb.ListSubscriptionsRequest(parent="mailboxes/nobody"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as create:
            await stub.CreateSubscription(
                pb.CreateSubscriptionRequest(parent=f"mailboxes/{mailbox}")
            )
        assert create.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert from_rpc_error(create.value).metadata["issue"] == "8"


async def test_a_dedicated_folder_created_later_is_watched_once_it_exists(rig: Rig) -> None:
    mailbox, account, hints = await rig.mailbox()
    state = rig.supervisor.state(mailbox)
    assert state is not None
    assert Kind.CONTACT not in state.kinds
    # What the first sync of contacts does in a new mailbox.
    folder = Folder(
        parent=account.msg_folder_root, name="Salesforce Contacts", folder_class="IPF.Contact"
    )
    await _blocking(folder.save)

    def covered() -> bool:
        state = rig.supervisor.state(mailbox)
        return state is not None and Kind.CONTACT in state.kinds

    await eventually(covered)
    await rig.wait_mode(mailbox, PushMode.STREAMING)
    await hints.settle()
    seen = len(hints.messages)
    await _blocking(
        Contact(account=account, folder=folder, display_name="Ada", given_name="Ada").save
    )
    await hints.wait_count(seen + 1)
    assert hints.parsed()[-1].kind == r.OBJECT_KIND_CONTACT


async def test_a_dedicated_folder_the_connector_makes_is_watched_at_once(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    # The watch's own look for the folder is an hour away: only the connector's word can make
    # it subscribe anew (it waited up to a minute for its look: a new mailbox's first sync
    # made the folder, and a push session came a minute after that sync, issue #18).
    async with _rig(emulator, nats_server, tmp_path, folder_recheck_seconds=3600) as rig:
        mailbox, _, hints = await rig.mailbox()
        state = rig.supervisor.state(mailbox)
        assert state is not None
        assert Kind.CONTACT not in state.kinds
        # A first sync of contacts makes the mailbox's `Salesforce Contacts` folder.
        await rig.connector.list_changes(mailbox, Kind.CONTACT, "", "", 0)

        def covered() -> bool:
            state = rig.supervisor.state(mailbox)
            return state is not None and Kind.CONTACT in state.kinds

        await eventually(covered)
        # Subscribed anew: one catch-up hint for what the folder held before.
        await hints.wait_count(1)
        assert [h.hint for h in hints.parsed()] == ["resubscribed"]


async def test_watch_follows_added_changed_and_removed_accounts(rig: Rig) -> None:
    mailbox, account, hints = await rig.mailbox()
    first = rig.supervisor.state(mailbox)
    assert first is not None
    stored = await rig.store.get(mailbox)
    assert stored is not None
    # New credentials (here the same ones, stored again): the watch starts over with them.
    await rig.store.upsert(
        AccountUpdate(
            mailbox=mailbox,
            address=stored.address,
            provider=stored.provider,
            settings=stored.settings,
            secret=await rig.store.secret(mailbox),
        )
    )
    await rig.supervisor.rescan()
    await rig.wait_mode(mailbox, PushMode.STREAMING)
    again = rig.supervisor.state(mailbox)
    assert again is not None
    assert first.create_time is not None
    assert again.create_time is not None
    assert again.create_time > first.create_time
    # The new watch's subscription is a new start: one catch-up hint.
    await hints.wait_count(1)
    await hints.settle(WINDOW * 2)
    assert [m.hint for m in hints.parsed()] == ["subscribed"]
    hints.messages.clear()

    await rig.store.delete(mailbox, None)
    await rig.supervisor.rescan()
    assert rig.supervisor.state(mailbox) is None
    await _blocking(_meeting(account).save)
    await asyncio.sleep(1.0)
    assert hints.messages == []


@dataclass
class Restartable:
    """A rig on an emulator of its own, which the test restarts on the same port and data."""

    rig: Rig
    data_dir: Path

    async def restart(self, *, lose_subscriptions: bool) -> None:
        """With `lose_subscriptions`, the subscriptions are gone after the restart (as after a
        mailbox server failover)."""
        self.rig.emulator = await _blocking(lambda: self._restart(lose_subscriptions))

    def _restart(self, lose_subscriptions: bool) -> RunningEmulator:
        port = self.rig.emulator.port
        self.rig.emulator.stop()
        if lose_subscriptions:
            with sqlite3.connect(self.data_dir / "exchange.db") as db:
                db.execute("DELETE FROM subscriptions")
        again = RunningEmulator(self.data_dir, seed=False)
        again.port = port
        again.base = f"http://127.0.0.1:{port}"
        again.endpoint = f"{again.base}/EWS/Exchange.asmx"
        again.server = uvicorn.Server(
            uvicorn.Config(again.app, host="127.0.0.1", port=port, log_level="critical")
        )
        again.thread = threading.Thread(target=again.server.run, daemon=True)
        return again.start()


@pytest.fixture
async def restartable(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Restartable]:
    data_dir = tmp_path / "exchange"
    data_dir.mkdir()
    emulator = RunningEmulator(data_dir).start()
    made: Restartable | None = None
    try:
        async with _rig(emulator, nats_server, tmp_path) as rig:
            made = Restartable(rig, data_dir)
            yield made
    finally:
        (made.rig.emulator if made else emulator).stop()


async def test_a_lost_subscription_is_recreated_and_hints_flow_again(
    restartable: Restartable,
) -> None:
    rig = restartable.rig
    mailbox, account, hints = await rig.mailbox()
    first = rig.supervisor.state(mailbox)
    assert first is not None
    assert first.create_time is not None

    await restartable.restart(lose_subscriptions=True)
    # The stream broke and its subscription is gone: the watch subscribes again and says so
    # (a catch-up hint for what happened meanwhile).
    await eventually(lambda: any(m.hint == "resubscribed" for m in hints.parsed()))
    await rig.wait_mode(mailbox, PushMode.STREAMING)
    again = rig.supervisor.state(mailbox)
    assert again is not None
    assert again.create_time is not None
    assert again.create_time > first.create_time
    await hints.settle()

    seen = len(hints.messages)
    await _blocking(_meeting(account).save)
    await hints.wait_count(seen + 1)
    assert hints.parsed()[-1].hint == "ews-streaming"


async def test_a_dropped_connection_reconnects_to_its_subscription_and_misses_nothing(
    restartable: Restartable,
) -> None:
    rig = restartable.rig
    mailbox, account, hints = await rig.mailbox()
    first = rig.supervisor.state(mailbox)
    assert first is not None

    await restartable.restart(lose_subscriptions=False)
    # Made whenever the watch happens to reconnect: the subscription kept it queued.
    await _blocking(_meeting(account).save)
    await eventually(lambda: "ews-streaming" in _hints_sent(hints))
    # The broken stream may have taken events the server had sent with it: once the new
    # connection holds, one catch-up hint (#17 case 7), however many attempts failed before.
    await eventually(lambda: "reconnected" in _hints_sent(hints))
    await hints.settle()
    assert sorted(_hints_sent(hints)) == ["ews-streaming", "reconnected"]
    await rig.wait_mode(mailbox, PushMode.STREAMING)
    again = rig.supervisor.state(mailbox)
    assert again is not None
    assert again.create_time == first.create_time  # the same subscription


async def test_streaming_that_keeps_failing_falls_back_to_pull(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    async with _rig(
        emulator, nats_server, tmp_path, pull_seconds=0.2, stream_failures_before_pull=2
    ) as rig:
        emulator.admin(
            "POST",
            "faults",
            # A proxy in front of the server that refuses long-lived responses.
            {"kind": "http_error", "operation": "GetStreamingEvents", "status": 502, "times": 50},
        )
        try:
            _, account, hints = await rig.mailbox(PushMode.PULLING)
            await hints.settle(0.5)
            seen = len(hints.messages)
            await _blocking(_meeting(account).save)
            await hints.wait_count(seen + 1)
            assert "ews-pull" in hints.parsed()[-1].hint
        finally:
            emulator.admin("DELETE", "faults")


async def test_push_that_cannot_be_kept_up_is_degraded_and_polled_until_it_recovers(
    emulator: RunningEmulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    async with _rig(emulator, nats_server, tmp_path) as rig:
        emulator.admin(
            "POST", "faults", {"kind": "http_error", "operation": "Subscribe", "times": 10_000}
        )
        try:
            mailbox, _, hints = await rig.mailbox(PushMode.DEGRADED)
            state = rig.supervisor.state(mailbox)
            assert state is not None
            assert state.kinds == frozenset()
            assert state.reason
            assert await rig.listed(mailbox) == []
            listing = await rig.listing(mailbox)
            assert listing.push_state == r.PUSH_STATE_DEGRADED
            assert listing.push_state_reason
            # Polled: hints keep coming with no change at all.
            await hints.wait_count(2)
            assert {m.hint for m in hints.parsed()} == {"poll"}
            assert all(m.kind == r.OBJECT_KIND_UNSPECIFIED for m in hints.parsed())
        finally:
            emulator.admin("DELETE", "faults")
        await rig.wait_mode(mailbox, PushMode.STREAMING)
        assert len(await rig.listed(mailbox)) == 3


def _hints_sent(hints: Hints) -> list[str]:
    """Each source of each hint, as the coalescer may join two sent in one window."""
    return [source for m in hints.parsed() for source in m.hint.split(",")]


async def test_a_watch_opened_first_leaves_the_provider_its_sessions(
    rig: Rig, emulator: RunningEmulator
) -> None:
    """exchangelib shares one session pool per endpoint and credential, sized by whichever
    Configuration opened it first. When the watches of a service account's mailboxes opened it
    (as on a fresh stack, before the first sync), the provider's listings went one at a time
    through the one session the streams left: a first sync's first ListChanges overran the
    reconciler's peer timeout. Whichever opens first, a slow listing must not hold a quick one."""
    slow, _, _ = await rig.mailbox(impersonated=True)
    quick, _, _ = await rig.mailbox(impersonated=True)
    # Both mailboxes opened by the provider too (the credential's version already probed).
    for mailbox in (slow, quick):
        await rig.connector.list_changes(mailbox, Kind.CALENDAR_ITEM, "", "", 0)
    slow_address = (await rig.store.get(slow)).address  # type: ignore[union-attr]
    emulator.admin("DELETE", "calls")
    emulator.slow("SyncFolderItems", slow_address, latency_ms=3000)
    finished: list[str] = []

    async def listed(mailbox: str, name: str) -> None:
        await rig.connector.list_changes(mailbox, Kind.CALENDAR_ITEM, "", "", 0)
        finished.append(name)

    try:
        held = asyncio.create_task(listed(slow, "slow"))
        await eventually(lambda: bool(emulator.admin("GET", "calls").get("SyncFolderItems")))
        await listed(quick, "quick")
        await held
    finally:
        emulator.admin("DELETE", "faults")
    assert finished == ["quick", "slow"]
