"""Sessions through the real peers: mail-connector, crm-connector, mapping and linker as
processes (`python -m ...`, as `make up` runs them), against the Exchange and Salesforce
emulators, driven through the reconciler's own API, queue and consumer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    Account,
    Attendee,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    Mailbox,
    Message,
    Task,
)
from exchangelib.protocol import close_connections  # type: ignore[import-untyped]
from exchangelib.recurrence import (  # type: ignore[import-untyped]
    TaskRecurrence,
    WeeklyPattern,
)
from google.protobuf import duration_pb2, field_mask_pb2
from lxml import etree
from simple_salesforce.api import Salesforce, SFType
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_exchange_emulator import items as emulated
from concord_exchange_emulator import xmlns
from concord_exchange_emulator.store import new_id
from concord_exchange_emulator.testing import RunningEmulator
from concord_google_emulator.testing import RunningEmulator as RunningGoogle
from concord_google_emulator.testing import build_service
from concord_graph_emulator.testing import RunningEmulator as RunningGraph
from concord_rpc import channel
from concord_rpc.identity import Identity
from concord_salesforce_emulator.app import Running, running_in_thread
from concord_salesforce_emulator.server import Settings as SalesforceSettings
from concord_testing import NatsServer, ServiceProcess, free_port, identity_env, vouched

from .conftest import reconciler_in_process
from .test_session_statements import consumer_statements

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ORG = "orgs/demo"
# The emulators a test may start beside Exchange's.
Cloud = TypeVar("Cloud", RunningGraph, RunningGoogle)
# Whom the test acts as: the demo org's admin (peers refuse callers for another org).
DEMO_ADMIN = Identity(subject="demo-admin", org="demo", role="admin")
FORCE = res.SESSION_TRIGGER_FORCE


@dataclass
class Peer:
    module: str
    addr: str
    process: ServiceProcess


@dataclass
class Stack:
    """Emulators, the four peers and the reconciler, for one test."""

    exchange: RunningEmulator
    salesforce: Running
    sf: Salesforce
    reconciler: api_grpc.ReconcilerServiceStub
    crm_user_id: str
    # The peers' addresses, by service name.
    peers: dict[str, str]
    # The reconciler's store.
    engine: AsyncEngine

    def new_mailbox_user(self) -> tuple[str, str]:
        address = f"u-{uuid.uuid4().hex[:10]}@concord.test"
        password = uuid.uuid4().hex
        self.exchange.admin("POST", "users", {"username": address, "password": password})
        return address, password

    async def create_mailbox(
        self, address: str, provider: res.MailProvider.ValueType, account: mail.MailboxAccount
    ) -> str:
        """Registers a mailbox of the demo org's user with the reconciler: its id."""
        mailbox_id = f"m-{uuid.uuid4().hex[:10]}"
        await self.reconciler.CreateMailbox(
            api.CreateMailboxRequest(
                mailbox_id=mailbox_id,
                mailbox=rres.Mailbox(
                    org=ORG,
                    owner_user_id="user-1",
                    crm_user_id=self.crm_user_id,
                    address=address,
                    provider=provider,
                ),
                account=account,
            )
        )
        return mailbox_id

    async def add_mailbox(self) -> tuple[str, Account]:
        address, password = self.new_mailbox_user()
        settings = mail.EwsSettings(
            service_url=self.exchange.endpoint, username=address, auth_type="basic"
        )
        mailbox_id = await self.create_mailbox(
            address,
            res.MAIL_PROVIDER_EXCHANGE_EWS,
            mail.MailboxAccount(ews=settings, secret=password.encode()),
        )
        config = Configuration(
            service_endpoint=self.exchange.endpoint,
            credentials=Credentials(address, password),
            auth_type=BASIC,
        )
        account = Account(address, config=config, autodiscover=False, access_type=DELEGATE)
        return mailbox_id, account

    async def session(self, mailbox_id: str) -> rres.Session:
        requested = await self.reconciler.RequestSession(
            api.RequestSessionRequest(mailbox=f"mailboxes/{mailbox_id}", trigger=FORCE)
        )
        timeout = duration_pb2.Duration(seconds=60)
        waited = await self.reconciler.WaitSession(
            api.WaitSessionRequest(name=requested.session.name, timeout=timeout)
        )
        session = waited.session
        assert session.state == rres.SESSION_STATE_COMPLETED, session.failure_reason
        return session

    async def set_org(self, **fields: Any) -> None:
        """Sets these org settings (by field name) and no other."""
        await self.reconciler.UpdateOrgSettings(
            api.UpdateOrgSettingsRequest(
                settings=st.OrgSettings(name=f"{ORG}/settings", **fields),
                update_mask=field_mask_pb2.FieldMask(paths=sorted(fields)),
            )
        )

    def fault(self, **body: Any) -> None:
        """An emulator fault (`/__admin/faults`): latency, throttling, errors, lost answers."""
        url = f"{self.salesforce.url}/__admin/faults"
        self.sf.session.post(url, json=body, timeout=10).raise_for_status()

    def calls(self, endpoint: str) -> int:
        """Calls the emulator has seen to `endpoint` (counted before any injected latency)."""
        url = f"{self.salesforce.url}/__admin/calls"
        return int(self.sf.session.get(url, timeout=10).json()["calls"].get(endpoint, 0))

    def crm_meeting(self, subject: str, start: dt.datetime, **fields: str) -> dict[str, Any]:
        """An hour's Event the mailbox's user owns, made in Salesforce: its create answer."""
        made: dict[str, Any] = self.sobject("Event").create(
            {
                "Subject": subject,
                "StartDateTime": start.isoformat(),
                "EndDateTime": (start + dt.timedelta(hours=1)).isoformat(),
                "OwnerId": self.crm_user_id,
                **fields,
            }
        )
        return made

    def sobject(self, name: str) -> SFType:
        sf = self.sf
        return SFType(name, sf.session_id, sf.sf_instance, "62.0", session=sf.session)

    def events(self, subject: str) -> list[dict[str, Any]]:
        soql = (
            "SELECT Id, Subject, Location, WhoId, WhatId, Concord_Link_Id__c, OwnerId "
            f"FROM Event WHERE Subject = '{subject}'"
        )
        found: list[dict[str, Any]] = self.sf.query_all(soql)["records"]
        return found


def writes(session: rres.Session) -> int:
    c = session.counts
    return sum((s.created + s.updated + s.deleted) for s in (c.mail, c.crm))


def _start_peers(
    start: Callable[..., ServiceProcess],
    var_dir: Path,
    ca_cert: Path,
    nats_url: str,
    mail_env: dict[str, str],
) -> dict[str, Peer]:
    ports = {name: free_port() for name in ("mail", "crm", "mapping", "linker")}
    crm_addr = f"127.0.0.1:{ports['crm']}"
    common = {
        "CONCORD_VAR_DIR": str(var_dir),
        "OTEL_TRACES_EXPORTER": "none",
        "NATS_URL": nats_url,
        "CRM_CONNECTOR_ADDR": crm_addr,
        **identity_env(),
    }
    specs = {
        "mail": (
            "concord_mail_connector",
            {"MAIL_CONNECTOR_PORT": str(ports["mail"]), **mail_env},
        ),
        "crm": (
            "concord_crm_connector",
            {"CRM_CONNECTOR_PORT": str(ports["crm"]), "CRM_CONNECTOR_CA_BUNDLE": str(ca_cert)},
        ),
        "mapping": ("concord_mapping", {"MAPPING_PORT": str(ports["mapping"])}),
        "linker": ("concord_linker", {"LINKER_PORT": str(ports["linker"])}),
    }
    return {
        name: Peer(module, f"127.0.0.1:{ports[name]}", start(module, env={**common, **env}))
        for name, (module, env) in specs.items()
    }


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[RunningEmulator]:
    (tmp_path / "exchange").mkdir()
    emulator = RunningEmulator(tmp_path / "exchange", seed=False).start()
    try:
        yield emulator
    finally:
        close_connections()
        emulator.stop()


@pytest.fixture
def salesforce(tmp_path: Path) -> Iterator[Running]:
    with running_in_thread(tmp_path / "salesforce", SalesforceSettings(), demo=True) as running:
        yield running


def _salesforce_client(running: Running) -> Salesforce:
    settings = running.emulator.settings
    http = requests.Session()
    http.trust_env = False
    http.verify = str(running.ca_cert)
    token = http.post(
        f"{running.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "username": settings.username,
            "password": settings.password,
        },
        timeout=10,
    ).json()
    return Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=http,
        version="62.0",
    )


@pytest.fixture
async def stack(
    tmp_path: Path,
    exchange: RunningEmulator,
    salesforce: Running,
    nats_server: NatsServer,
    service_process: Callable[..., ServiceProcess],
) -> AsyncIterator[Stack]:
    async with _stack(tmp_path, exchange, salesforce, nats_server, service_process) as made:
        yield made


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[RunningGraph]:
    yield from _running(RunningGraph(tmp_path / "graph"))


@pytest.fixture
def google(tmp_path: Path) -> Iterator[RunningGoogle]:
    yield from _running(RunningGoogle(tmp_path / "google"))


def _running(emulator: Cloud) -> Iterator[Cloud]:
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
async def cloud_stack(
    graph: RunningGraph,
    google: RunningGoogle,
    tmp_path: Path,
    exchange: RunningEmulator,
    salesforce: Running,
    nats_server: NatsServer,
    service_process: Callable[..., ServiceProcess],
) -> AsyncIterator[Stack]:
    """The stack, its mail-connector trusting the Graph and Google emulators too. They are
    asked for first, so they stop after the processes that hold connections to them."""
    trust = {
        "MAIL_CONNECTOR_GRAPH_CA_BUNDLE": graph.ca_cert,
        "MAIL_CONNECTOR_GOOGLE_CA_FILE": google.ca_file,
    }
    async with _stack(tmp_path, exchange, salesforce, nats_server, service_process, trust) as made:
        yield made


@contextlib.asynccontextmanager
async def _stack(
    tmp_path: Path,
    exchange: RunningEmulator,
    salesforce: Running,
    nats_server: NatsServer,
    service_process: Callable[..., ServiceProcess],
    mail_env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    peers = _start_peers(
        service_process, tmp_path / "var", salesforce.ca_cert, nats_server.url, mail_env or {}
    )
    await asyncio.gather(
        *(asyncio.to_thread(p.process.wait_serving, p.addr, 60.0) for p in peers.values())
    )
    settings = salesforce.emulator.settings
    async with channel(
        peers["crm"].addr, retry=False, interceptors=vouched(caller=DEMO_ADMIN)
    ) as crm_channel:
        secret = (
            f'{{"client_secret": "{settings.client_secret}", "password": "{settings.password}"}}'
        )
        await crm_grpc.CrmConnectorServiceStub(crm_channel).UpsertOrgConnection(
            crm.UpsertOrgConnectionRequest(
                connection=crm.OrgConnection(
                    name=f"{ORG}/connection",
                    login_url=salesforce.url,
                    auth_flow=crm.AUTH_FLOW_PASSWORD,
                    client_id=settings.client_id,
                    username=settings.username,
                    secret=secret.encode(),
                )
            )
        )
    addrs = {
        "mail-connector": peers["mail"].addr,
        "crm-connector": peers["crm"].addr,
        "mapping": peers["mapping"].addr,
        "linker": peers["linker"].addr,
    }
    async with reconciler_in_process(
        nats_server.url,
        f"sqlite+aiosqlite:///{tmp_path / 'reconciler.db'}",
        addrs,
        peer_timeout=30.0,
        deadline_seconds=120.0,
        lease_ttl_seconds=30.0,
        busy_retry_seconds=0.2,
        share_emails=True,
        caller=DEMO_ADMIN,
    ) as running:
        await running.consumer.start()
        yield Stack(
            exchange,
            salesforce,
            _salesforce_client(salesforce),
            running.stub,
            salesforce.emulator.admin_user_id,
            addrs,
            running.store.engine,
        )


async def test_an_email_tagged_salesforce_is_shared_once_by_the_session(stack: Stack) -> None:
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Proposal {uuid.uuid4().hex[:6]}"
    mime = (
        f"From: Ann Buyer <ann@acme.example>\r\nTo: {account.primary_smtp_address}\r\n"
        f"Subject: {subject}\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@acme.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHere is our proposal.\r\n"
    ).encode()
    await asyncio.to_thread(
        Message(
            account=account, folder=account.inbox, mime_content=mime, categories=["Salesforce"]
        ).save
    )
    first = await stack.session(mailbox_id)
    emails = {k.kind: k for k in first.counts.kinds}[res.OBJECT_KIND_EMAIL]
    assert emails.crm.created == 1, first.counts
    shared = stack.sf.query_all(f"SELECT Id, Subject FROM EmailMessage WHERE Subject = '{subject}'")
    assert [r["Subject"] for r in shared["records"]] == [subject]
    # The next session finds nothing new to share: still one EmailMessage.
    second = await stack.session(mailbox_id)
    assert {k.kind: k for k in second.counts.kinds}[res.OBJECT_KIND_EMAIL].crm.created == 0
    again = stack.sf.query_all(f"SELECT Id FROM EmailMessage WHERE Subject = '{subject}'")
    assert again["totalSize"] == 1


def _plant_unreadable_meeting(exchange: RunningEmulator, address: str) -> str:
    """A calendar item the server holds but no client could write (its start is no date), as
    a damaged store leaves one; shared like any other."""
    node = etree.Element(xmlns.t("CalendarItem"), nsmap={"t": xmlns.T})
    xmlns.sub(node, xmlns.t("Subject"), "Damaged")
    categories = xmlns.sub(node, xmlns.t("Categories"))
    xmlns.sub(categories, xmlns.t("String"), "Salesforce")
    xmlns.sub(node, xmlns.t("Start"), "not-a-date")
    xmlns.sub(node, xmlns.t("End"), "2031-06-02T09:00:00Z")
    xmlns.sub(node, xmlns.t("IsAllDayEvent"), "false")
    item, _ = emulated.prepare_new(node, owner=address, owner_name=address)
    calendar = exchange.store.distinguished_folder(address, "calendar")
    assert calendar is not None
    native = new_id("AAMkI")
    exchange.store.insert_item(native, address, calendar.id, etree.tostring(item))
    return native


def _meeting(account: Account, subject: str, *attendees: str) -> CalendarItem:
    zone = EWSTimeZone("Europe/Berlin")
    start = EWSDateTime.from_datetime(
        (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0, second=0)
    ).astimezone(zone)
    item = CalendarItem(
        account=account,
        folder=account.calendar,
        subject=subject,
        start=start,
        end=start + dt.timedelta(hours=1),
        location="Room 1",
        body="agenda",
        categories=["Salesforce"],
        required_attendees=[Attendee(mailbox=Mailbox(email_address=a)) for a in attendees] or None,
    )
    item.save(send_meeting_invitations="SendToNone")
    return item


async def test_a_meeting_goes_to_salesforce_comes_back_edited_and_then_nothing_moves(
    stack: Stack,
) -> None:
    mailbox_id, account = await stack.add_mailbox()
    contact = stack.sf.query("SELECT Id, Email FROM Contact WHERE Email != null LIMIT 1")
    lead = stack.sf.query("SELECT Id, Email FROM Lead WHERE Email != null LIMIT 1")
    attendees = (contact["records"][0]["Email"], lead["records"][0]["Email"])
    subject = f"Pipeline review {uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(_meeting, account, subject, *attendees)

    first = await stack.session(mailbox_id)
    assert first.counts.crm.created == 1, first.counts
    (event,) = stack.events(subject)
    assert event["Concord_Link_Id__c"]
    assert event["Location"] == "Room 1"
    assert event["OwnerId"] == stack.crm_user_id
    # Linked to the attendee's Contact: a CRM-only field, never listed back as a change.
    assert event["WhoId"] == contact["records"][0]["Id"]
    # The other attendee is related to the Event too (EventRelation), not given a copy.
    relations = stack.sf.query(
        f"SELECT RelationId FROM EventRelation WHERE EventId = '{event['Id']}'"
    )["records"]
    assert lead["records"][0]["Id"] in {r["RelationId"] for r in relations}
    kinds = {k.kind: k for k in first.counts.kinds}
    assert kinds[res.OBJECT_KIND_CALENDAR_ITEM].crm.created == 1

    second = await stack.session(mailbox_id)
    assert writes(second) == 0, second.counts

    stack.sobject("Event").update(
        event["Id"], {"Subject": subject + " (moved)", "Location": "Room 2"}
    )
    third = await stack.session(mailbox_id)
    assert third.counts.mail.updated == 1, third.counts
    items = await asyncio.to_thread(
        lambda: list(account.calendar.filter(subject=subject + " (moved)"))
    )
    assert [i.location for i in items] == ["Room 2"]

    fourth = await stack.session(mailbox_id)
    assert writes(fourth) == 0, fourth.counts

    # A meeting deleted in the mailbox deletes its Event (the org's default).
    await asyncio.to_thread(items[0].delete, send_meeting_cancellations="SendToNone")
    fifth = await stack.session(mailbox_id)
    assert fifth.counts.crm.deleted == 1, fifth.counts
    assert stack.events(subject + " (moved)") == []


def tasks(stack: Stack, subject: str) -> list[dict[str, Any]]:
    soql = (
        "SELECT Id, Subject, Status, ActivityDate, Concord_Link_Id__c "
        f"FROM Task WHERE Subject = '{subject}' ORDER BY ActivityDate"
    )
    found: list[dict[str, Any]] = stack.sf.query_all(soql)["records"]
    return found


def weekly_task(account: Account, subject: str, start: dt.date) -> Any:
    """A task of five weekly occurrences from `start`, shared, as a user makes it in Outlook."""
    recurrence = TaskRecurrence(
        pattern=WeeklyPattern(interval=1, weekdays=[start.isoweekday()]), start=start, number=5
    )
    task = Task(
        account=account,
        folder=account.tasks,
        subject=subject,
        recurrence=recurrence,
        categories=["Salesforce"],
    )
    task.save()
    return task


def in_mailbox(account: Account, subject: str) -> list[tuple[str, str]]:
    """The tasks of that subject in the mailbox: (due date, status), by date."""
    found = account.tasks.filter(subject=subject)
    return sorted((t.due_date.isoformat(), t.status) for t in found)


async def test_a_completed_recurring_task_occurrence_is_a_task_of_its_own_both_ways(
    stack: Stack,
) -> None:
    """Exchange splits a completed occurrence off a recurring task as a new item (UpdateItem
    answers its id) and moves the task on to its next occurrence. Completed in the mailbox, the
    one-off is a new item, a Task of its own; completed in Salesforce, the Task follows the
    one-off and the moved-on task is a new Task: no duplicate, no completion undone."""
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Weekly report {uuid.uuid4().hex[:6]}"
    start = dt.date.today() + dt.timedelta(days=1)
    master = await asyncio.to_thread(weekly_task, account, subject, start)
    first = await stack.session(mailbox_id)
    assert first.counts.crm.created == 1, first.counts
    (original,) = tasks(stack, subject)
    assert original["ActivityDate"] == start.isoformat()

    # Completed in Outlook: the occurrence is split off, the task moves on a week.
    def complete_in_mailbox() -> None:
        master.refresh()
        master.status = Task.COMPLETED
        master.save(update_fields=["status"])

    await asyncio.to_thread(complete_in_mailbox)
    assert await settle(stack, mailbox_id) == {"crm.created": 1, "crm.updated": 1}
    found = tasks(stack, subject)
    assert len(found) == 2, found
    week = (start + dt.timedelta(days=7)).isoformat()
    [moved] = [t for t in found if t["Id"] == original["Id"]]
    [done] = [t for t in found if t["Id"] != original["Id"]]
    assert (moved["ActivityDate"], moved["Status"]) == (week, "Not Started")
    assert (done["ActivityDate"], done["Status"]) == (start.isoformat(), "Completed")
    assert done["Concord_Link_Id__c"] not in ("", None, original["Concord_Link_Id__c"])

    # Completed in Salesforce: Concord completes the occurrence in the mailbox and Exchange
    # splits it off again, answering the one-off's id; the Task stays the one-off's, and the
    # task, moved on to its next occurrence, is new to Concord: a Task of its own (it was
    # created under the Task's own link id, undoing its completion, before).
    # The completing update stores the Task's link id in the task, so the one-off carries it
    # (the link follows it) and so does the task moved on, which gets its own written into
    # it: no two items carry one link id, and a look-up by one finds its own item.
    stack.sobject("Task").update(original["Id"], {"Status": "Completed"})
    assert await settle(stack, mailbox_id) == {"mail.updated": 2, "crm.created": 1}
    found = tasks(stack, subject)
    assert len(found) == 3, found
    by_id = {t["Id"]: t for t in found}
    completed = by_id[original["Id"]]
    assert (completed["ActivityDate"], completed["Status"]) == (week, "Completed")
    [following] = [t for t in found if t["Id"] not in (original["Id"], done["Id"])]
    two_weeks = (start + dt.timedelta(days=14)).isoformat()
    assert (following["ActivityDate"], following["Status"]) == (two_weeks, "Not Started")
    assert len({t["Concord_Link_Id__c"] for t in found}) == 3
    assert await asyncio.to_thread(in_mailbox, account, subject) == [
        (start.isoformat(), "Completed"),
        (week, "Completed"),
        (two_weeks, "NotStarted"),
    ]
    # The one-off split off in the mailbox copied nothing (Concord had never written into
    # the task); the other two carry their own Tasks' link ids.
    carried = task_link_ids(stack.exchange, account.primary_smtp_address)
    assert sorted(carried.values()) == sorted(
        t["Concord_Link_Id__c"] for t in (completed, following)
    ), carried


async def test_a_completion_whose_answer_was_lost_completes_no_second_occurrence(
    stack: Stack,
) -> None:
    """Completed in Salesforce, the occurrence is completed in the mailbox and split off, but
    the answer naming the one-off is lost (the connection dies mid-response, as a crash after
    the write loses it): the next session finds where the update went, and the task, moved on,
    is not completed again."""
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Weekly check {uuid.uuid4().hex[:6]}"
    start = dt.date.today() + dt.timedelta(days=1)
    await asyncio.to_thread(weekly_task, account, subject, start)
    await stack.session(mailbox_id)
    (original,) = tasks(stack, subject)

    stack.exchange.admin(
        "POST",
        "faults",
        {
            "kind": "drop_response",
            "operation": "UpdateItem",
            "mailbox": account.primary_smtp_address,
            "times": 1,
        },
    )
    stack.sobject("Task").update(original["Id"], {"Status": "Completed"})
    lost = await stack.session(mailbox_id)
    assert lost.counts.mail.errors == 1, lost.counts
    # Its answer lost, the completion is found where it went (the one-off carries the link
    # id the update stored), and the task moved on becomes a Task of its own, once.
    assert await settle(stack, mailbox_id) == {"mail.updated": 1, "crm.created": 1}

    week = (start + dt.timedelta(days=7)).isoformat()
    assert await asyncio.to_thread(in_mailbox, account, subject) == [
        (start.isoformat(), "Completed"),
        (week, "NotStarted"),
    ]
    found = tasks(stack, subject)
    assert sorted((t["ActivityDate"], t["Status"]) for t in found) == [
        (start.isoformat(), "Completed"),
        (week, "Not Started"),
    ]
    carried = task_link_ids(stack.exchange, account.primary_smtp_address)
    assert sorted(carried.values()) == sorted(t["Concord_Link_Id__c"] for t in found)


def task_link_ids(exchange: RunningEmulator, address: str) -> dict[str, str]:
    """The link id Concord stored in each task of the mailbox (by item id), read from the
    emulator's store: the extended property the mail-connector writes."""
    folder = exchange.store.distinguished_folder(address, "tasks")
    assert folder is not None
    found: dict[str, str] = {}
    for stored in exchange.store.items_in(folder.id):
        for prop in etree.fromstring(stored.xml).iterfind(xmlns.t("ExtendedProperty")):
            uri = prop.find(xmlns.t("ExtendedFieldURI"))
            if uri is not None and uri.get("PropertyName") == "concord_link_id":
                found[stored.id] = prop.findtext(xmlns.t("Value")) or ""
    return found


async def settle(stack: Stack, mailbox_id: str) -> dict[str, int]:
    """Sessions until one writes nothing (a push heard mid-session may take a write into the
    session it interrupts, or leave it to the next); what they wrote, by side and count."""
    total: dict[str, int] = {}
    for _ in range(4):
        session = await stack.session(mailbox_id)
        if writes(session) == 0:
            return total
        for side in ("mail", "crm"):
            counts = getattr(session.counts, side)
            for name in ("created", "updated", "deleted"):
                if getattr(counts, name):
                    key = f"{side}.{name}"
                    total[key] = total.get(key, 0) + getattr(counts, name)
    raise AssertionError(f"still writing after 4 sessions: {total}")


async def test_a_quiet_session_writes_nothing_but_its_own_record(stack: Stack) -> None:
    mailbox_id, account = await stack.add_mailbox()
    await asyncio.to_thread(_meeting, account, f"Quiet {uuid.uuid4().hex[:6]}")
    assert writes(await stack.session(mailbox_id)) > 0  # the first sync, both ways
    assert writes(await stack.session(mailbox_id)) == 0
    ran = await consumer_statements(stack.engine, stack.session(mailbox_id))
    # Its record (RUNNING, COMPLETED) and the end of a back-off, if any: no cursor, although
    # every side was listed again (a Salesforce cursor's `checked` time moved with every
    # listing, so every quiet session wrote the three Salesforce cursors, issue #18).
    assert [r.head for r in ran if not r.head.startswith("SELECT")] == [
        "UPDATE sessions SET",
        "UPDATE sessions SET",
        "UPDATE mailboxes SET",
    ], ran


async def test_an_item_that_cannot_be_mapped_is_quarantined_and_the_session_completes(
    stack: Stack,
) -> None:
    mailbox_id, account = await stack.add_mailbox()
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    good = f"Good {uuid.uuid4().hex[:6]}"
    stack.crm_meeting(good, start)
    bad = stack.crm_meeting(
        f"Bad {uuid.uuid4().hex[:6]}",
        start,
        # Text Salesforce stores as given, but no recurrence mapping can read.
        Recurrence2PatternText="RRULE:FREQ=SOMETIMES;INTERVAL=x",
    )
    damaged = _plant_unreadable_meeting(stack.exchange, account.primary_smtp_address)
    session = await stack.session(mailbox_id)
    assert session.counts.quarantined == 2, session.counts
    # The org's contacts owned by the mailbox's user arrive in its contacts folder too.
    kinds = {k.kind: k for k in session.counts.kinds}
    contacts = kinds[res.OBJECT_KIND_CONTACT]
    assert contacts.crm_changes_seen > 0
    assert (contacts.mail.created, contacts.mail.errors) == (contacts.crm_changes_seen, 0)
    assert kinds[res.OBJECT_KIND_CALENDAR_ITEM].mail.created == 1
    errors = await stack.reconciler.ListItemErrors(
        api.ListItemErrorsRequest(parent=f"mailboxes/{mailbox_id}")
    )
    found = {(e.side, e.ref.native_id): e for e in errors.item_errors}
    assert sorted(found) == sorted([(res.SYNC_SIDE_CRM, bad["id"]), (res.SYNC_SIDE_MAIL, damaged)])
    assert found[(res.SYNC_SIDE_MAIL, damaged)].reason == "CONVERSION_FAILED"
    assert all(e.reason and e.quarantined for e in errors.item_errors)
    items = await asyncio.to_thread(lambda: list(account.calendar.filter(subject=good)))
    assert len(items) == 1
    assert "Salesforce" in (items[0].categories or [])


# An all-day meeting in a zone no Windows table knows, as another client can write it over raw
# SOAP; shared like any other. exchangelib cannot parse it.
MARS_ALL_DAY = (
    "<t:CalendarItem><t:Subject>All day on Mars</t:Subject>"
    "<t:Categories><t:String>Salesforce</t:String></t:Categories>"
    "<t:Start>2031-03-18T00:00:00Z</t:Start><t:End>2031-03-19T00:00:00Z</t:End>"
    "<t:IsAllDayEvent>true</t:IsAllDayEvent>"
    '<t:StartTimeZone Id="Mars Standard Time"/><t:EndTimeZone Id="Mars Standard Time"/>'
    "</t:CalendarItem>"
)


# The single-value extended property Concord keeps a Graph item's link id in, and the
# private extended property of a Google event's.
GRAPH_LINK_ID = "String {7d1b4a5e-1f7b-4c5e-9a51-6b3e1c2f0a11} Name concordLinkId"
GOOGLE_LINK_ID = "concord_link_id"


@dataclass
class GraphUser:
    """A Graph mailbox's own client (Outlook)."""

    graph: RunningGraph
    address: str
    token: str

    def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        answer = requests.request(
            method,
            f"{self.graph.graph_url}/users/{self.address}/{path}",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=self.graph.ca_cert,
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def events(self, subject: str) -> dict[str, str]:
        """The events of that subject: id -> the link id each carries."""
        expand = f"singleValueExtendedProperties($filter=id eq '{GRAPH_LINK_ID}')"
        found = self.call("GET", "events", **{"$expand": expand})["value"]
        return {
            e["id"]: next((p["value"] for p in e.get("singleValueExtendedProperties") or ()), "")
            for e in found
            if e["subject"] == subject
        }

    def copy(self, native_id: str, subject: str) -> str:
        """What Outlook's copy makes: the event's content and extended properties."""
        expand = f"singleValueExtendedProperties($filter=id eq '{GRAPH_LINK_ID}')"
        made = self.call("GET", f"events/{native_id}", **{"$expand": expand})
        kept = ("start", "end", "categories", "body", "location", "singleValueExtendedProperties")
        copied = self.call("POST", "events", {**{k: made[k] for k in kept}, "subject": subject})
        return str(copied["id"])


@dataclass
class GoogleUser:
    """A Google mailbox's own client (Calendar)."""

    events_api: Any

    def events(self, subject: str) -> dict[str, str]:
        found = self.events_api.list(calendarId="primary", maxResults=2500).execute()["items"]
        return {
            e["id"]: e.get("extendedProperties", {}).get("private", {}).get(GOOGLE_LINK_ID, "")
            for e in found
            if e.get("summary") == subject
        }

    def copy(self, native_id: str, subject: str) -> str:
        made = self.events_api.get(calendarId="primary", eventId=native_id).execute()
        kept = ("start", "end", "description", "location", "extendedProperties")
        body = {**{k: made[k] for k in kept if k in made}, "summary": subject}
        return str(self.events_api.insert(calendarId="primary", body=body).execute()["id"])


async def add_graph_mailbox(stack: Stack, graph: RunningGraph) -> tuple[str, GraphUser]:
    app = graph.new_app()
    address = graph.new_mailbox("r")
    account = mail.MailboxAccount(
        graph=mail.GraphSettings(
            tenant_id=app.tenant_id,
            client_id=app.client_id,
            authority_url=graph.base,
            graph_url=graph.graph_url,
        ),
        secret=app.client_secret.encode(),
    )
    mailbox_id = await stack.create_mailbox(address, res.MAIL_PROVIDER_GRAPH, account)
    token = await asyncio.to_thread(
        lambda: requests.post(
            graph.token_url(app.tenant_id),
            data={
                "grant_type": "client_credentials",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "scope": "https://graph.microsoft.com/.default",
            },
            verify=graph.ca_cert,
            timeout=10,
        ).json()["access_token"]
    )
    return mailbox_id, GraphUser(graph, address, str(token))


async def add_google_mailbox(
    stack: Stack, google: RunningGoogle, services: list[Any]
) -> tuple[str, GoogleUser]:
    key = google.service_account()
    address = google.add_user(f"r-{uuid.uuid4().hex[:10]}@concord.test")
    account = mail.MailboxAccount(
        google=mail.GoogleSettings(service_account_email=key["client_email"], api_url=google.base),
        secret=json.dumps(key).encode(),
    )
    mailbox_id = await stack.create_mailbox(address, res.MAIL_PROVIDER_GOOGLE, account)
    service = build_service(google, key, "calendar", address)
    services.append(service)
    return mailbox_id, GoogleUser(service.events())


@pytest.mark.parametrize("provider", ["graph", "google"])
async def test_a_copy_of_a_meeting_concord_wrote_gets_a_link_id_of_its_own(
    cloud_stack: Stack, graph: RunningGraph, google: RunningGoogle, provider: str
) -> None:
    """Outlook copies an event's extended properties (and a Calendar client may copy its
    private ones): a copy of a meeting Concord wrote carries its link id. The copy becomes an
    Event of its own and gets its own link id written into it, so no two items carry one
    link id (a look-up by the first's, a create replayed or an item recreated under it,
    finds the first meeting only)."""
    stack = cloud_stack
    services: list[Any] = []
    user: GraphUser | GoogleUser
    if provider == "graph":
        mailbox_id, user = await add_graph_mailbox(stack, graph)
    else:
        mailbox_id, user = await add_google_mailbox(stack, google, services)
    subject = f"Board {uuid.uuid4().hex[:6]}"
    stack.crm_meeting(subject, dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    try:
        first = await stack.session(mailbox_id)
        assert first.counts.mail.created >= 1, first.counts
        ((original, link),) = user.events(subject).items()
        assert link

        copy = user.copy(original, f"Copy: {subject}")
        assert user.events(f"Copy: {subject}") == {copy: link}
        second = await stack.session(mailbox_id)
        assert second.counts.crm.created == 1, second.counts
        (event,) = stack.events(f"Copy: {subject}")
        own = event["Concord_Link_Id__c"]
        assert own not in ("", link)
        assert user.events(f"Copy: {subject}") == {copy: own}
        assert user.events(subject) == {original: link}

        third = await stack.session(mailbox_id)
        assert writes(third) == 0, third.counts
    finally:
        for service in services:
            service.close()


async def test_a_poison_item_is_quarantined_and_the_mailbox_syncs_on(stack: Stack) -> None:
    # Issue #17, case 2: every session of such a mailbox failed in ListChanges, and nothing
    # else synced until the item was deleted.
    mailbox_id, account = await stack.add_mailbox()
    before = f"Before {uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(_meeting, account, before)
    password = account.protocol.credentials.password
    poison = stack.exchange.create_raw(account.primary_smtp_address, password, MARS_ALL_DAY)
    first = await stack.session(mailbox_id)
    assert first.counts.quarantined == 1, first.counts
    assert len(stack.events(before)) == 1
    errors = await stack.reconciler.ListItemErrors(
        api.ListItemErrorsRequest(parent=f"mailboxes/{mailbox_id}")
    )
    [error] = errors.item_errors
    assert (error.side, error.ref.native_id) == (res.SYNC_SIDE_MAIL, poison)
    assert error.reason == "CONVERSION_FAILED"
    assert error.quarantined
    # A retry reads it again by reference: it fails alone, the session completes.
    retried = await stack.reconciler.RetryItem(api.RetryItemRequest(name=error.name))
    waited = await stack.reconciler.WaitSession(
        api.WaitSessionRequest(name=retried.session.name, timeout=duration_pb2.Duration(seconds=60))
    )
    assert waited.session.state == rres.SESSION_STATE_COMPLETED, waited.session.failure_reason
    # And what comes after it syncs.
    after = f"After {uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(_meeting, account, after)
    await stack.session(mailbox_id)
    assert len(stack.events(after)) == 1


async def test_a_salesforce_delete_unshares_the_mailbox_item_by_default(stack: Stack) -> None:
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Demo {uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(_meeting, account, subject)
    assert (await stack.session(mailbox_id)).counts.crm.created == 1
    (event,) = stack.events(subject)
    stack.sobject("Event").delete(event["Id"])
    unshared = await stack.session(mailbox_id)
    assert unshared.counts.mail.deleted == 1, unshared.counts
    # The user's meeting stays; only the category that shared it is gone.
    (item,) = await asyncio.to_thread(lambda: list(account.calendar.filter(subject=subject)))
    assert "Salesforce" not in (item.categories or [])
    assert writes(await stack.session(mailbox_id)) == 0


async def _subject_edited_on_both_sides(
    stack: Stack, mail_first_by: float = 0.0
) -> tuple[str, Account, str, dict[str, Any]]:
    """A synced meeting whose subject then changes to "<subject> (mailbox)" in the mailbox
    and to "<subject> (salesforce)" in Salesforce."""
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Kick-off {uuid.uuid4().hex[:6]}"
    item = await asyncio.to_thread(_meeting, account, subject)
    assert (await stack.session(mailbox_id)).counts.crm.created == 1
    (event,) = stack.events(subject)
    item.subject = subject + " (mailbox)"
    await asyncio.to_thread(item.save, update_fields=["subject"])
    await asyncio.sleep(mail_first_by)
    stack.sobject("Event").update(event["Id"], {"Subject": subject + " (salesforce)"})
    return mailbox_id, account, subject, event


async def test_a_true_conflict_goes_to_the_newest_edit_by_the_servers_clocks(
    stack: Stack,
) -> None:
    mailbox_id, account, subject, _event = await _subject_edited_on_both_sides(
        stack,
        mail_first_by=1.1,  # Salesforce's SystemModstamp counts whole seconds
    )
    merged = await stack.session(mailbox_id)
    assert merged.counts.conflicts == 1, merged.counts
    assert merged.counts.mail.updated == 1, merged.counts
    items = await asyncio.to_thread(lambda: list(account.calendar.all()))
    assert [i.subject for i in items] == [subject + " (salesforce)"]
    assert writes(await stack.session(mailbox_id)) == 0


async def test_mark_instead_of_delete_follows_the_org_setting(stack: Stack) -> None:
    await stack.set_org(mail_delete_action=st.MAIL_DELETE_ACTION_MARK_RECORD)
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Offsite {uuid.uuid4().hex[:6]}"
    item = await asyncio.to_thread(_meeting, account, subject)
    assert (await stack.session(mailbox_id)).counts.crm.created == 1
    await asyncio.to_thread(item.delete, send_meeting_cancellations="SendToNone")
    marked = await stack.session(mailbox_id)
    assert marked.counts.crm.updated == 1, marked.counts
    assert [e["Subject"] for e in stack.events("Cancelled: " + subject)] == [
        "Cancelled: " + subject
    ]


async def test_a_manual_conflict_waits_for_the_user_and_their_choice_is_written(
    stack: Stack,
) -> None:
    await stack.set_org(conflict_policy=st.CONFLICT_POLICY_MANUAL)
    mailbox_id, _account, subject, event = await _subject_edited_on_both_sides(stack)

    held = await stack.session(mailbox_id)
    assert (held.counts.conflicts, writes(held)) == (1, 0), held.counts
    assert len(stack.events(subject + " (salesforce)")) == 1
    parent = f"mailboxes/{mailbox_id}"
    (conflict,) = (
        await stack.reconciler.ListConflicts(api.ListConflictsRequest(parent=parent))
    ).conflicts
    assert conflict.crm_record_id == event["Id"]
    assert [
        (f.field, f.mail_value.string_value, f.crm_value.string_value) for f in conflict.fields
    ] == [("Subject", subject + " (mailbox)", subject + " (salesforce)")]

    request = api.ResolveConflictRequest(
        name=conflict.name, take=res.SYNC_SIDE_MAIL, request_id=str(uuid.uuid4())
    )
    resolved = await stack.reconciler.ResolveConflict(request)
    assert resolved.conflict.resolution_pending
    assert resolved.session.trigger == res.SESSION_TRIGGER_RETRY
    assert await stack.reconciler.ResolveConflict(request) == resolved
    applied = (
        await stack.reconciler.WaitSession(
            api.WaitSessionRequest(
                name=resolved.session.name, timeout=duration_pb2.Duration(seconds=60)
            )
        )
    ).session
    assert applied.state == rres.SESSION_STATE_COMPLETED, applied.failure_reason
    assert (applied.counts.crm.updated, applied.counts.mail.updated) == (1, 0), applied.counts
    assert len(stack.events(subject + " (mailbox)")) == 1
    left = await stack.reconciler.ListConflicts(api.ListConflictsRequest(parent=parent))
    assert list(left.conflicts) == []
    assert writes(await stack.session(mailbox_id)) == 0


async def test_a_salesforce_edit_made_while_concords_update_is_in_flight_is_a_held_conflict(
    stack: Stack,
) -> None:
    """Issue #17 case 1, end to end: Concord's update of an Event waits 800 ms at
    Salesforce's door (after crm-connector's version check) and someone edits the Event in
    Salesforce meanwhile. The edit is not overwritten: the write is refused by its
    precondition, the next session sees both edits, and the org's policy (manual here) holds
    the conflict with both values."""
    await stack.set_org(conflict_policy=st.CONFLICT_POLICY_MANUAL)
    mailbox_id, account = await stack.add_mailbox()
    subject = f"Race {uuid.uuid4().hex[:6]}"
    item = await asyncio.to_thread(_meeting, account, subject)
    assert (await stack.session(mailbox_id)).counts.crm.created == 1
    (event,) = stack.events(subject)
    # Salesforce's conditional requests compare to the second.
    await asyncio.sleep(1.1)
    item.subject = subject + " (mailbox)"
    await asyncio.to_thread(item.save, update_fields=["subject"])
    # Every Composite request waits 800 ms at Salesforce's door: the session's listings and
    # its update, which crm-connector sends right after its version check (a query).
    stack.fault(kind="latency", path="composite$", method="POST", latency_ms=800, count=20)
    checked = stack.calls("GET query")
    requested = await stack.reconciler.RequestSession(
        api.RequestSessionRequest(mailbox=f"mailboxes/{mailbox_id}", trigger=FORCE)
    )
    deadline = asyncio.get_running_loop().time() + 60
    while stack.calls("GET query") == checked:
        assert asyncio.get_running_loop().time() < deadline, "the update never reached Salesforce"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    # The update is waiting at the door: the person in Salesforce saves first.
    stack.sobject("Event").update(event["Id"], {"Subject": subject + " (salesforce)"})
    raced = (
        await stack.reconciler.WaitSession(
            api.WaitSessionRequest(
                name=requested.session.name, timeout=duration_pb2.Duration(seconds=60)
            )
        )
    ).session
    assert raced.counts.crm.updated == 0, raced.counts
    assert len(stack.events(subject + " (salesforce)")) == 1
    # The next session sees both edits (or a push's session did so first, on a loaded machine).
    await stack.session(mailbox_id)
    (conflict,) = (
        await stack.reconciler.ListConflicts(
            api.ListConflictsRequest(parent=f"mailboxes/{mailbox_id}")
        )
    ).conflicts
    assert [
        (f.field, f.mail_value.string_value, f.crm_value.string_value) for f in conflict.fields
    ] == [("Subject", subject + " (mailbox)", subject + " (salesforce)")]
    # Nothing lost: Salesforce keeps its edit, the mailbox its own, until the user chooses.
    assert len(stack.events(subject + " (salesforce)")) == 1
    items = await asyncio.to_thread(lambda: list(account.calendar.all()))
    assert [i.subject for i in items] == [subject + " (mailbox)"]


async def test_a_spent_salesforce_allocation_fails_the_session_at_once_and_holds_the_org(
    stack: Stack,
) -> None:
    """Issue #17 case 3: crm-connector answers RESOURCE_EXHAUSTED (retry after 300 s) in
    milliseconds; the session must fail as fast, saying so, not stall into "deadline exceeded"
    while the channel waits out the pushback. Every mailbox of the org is then held."""
    mailbox_id, _account = await stack.add_mailbox()
    sibling_id, _ = await stack.add_mailbox()
    # The org's rolling 24-hour allocation is spent: every call is REQUEST_LIMIT_EXCEEDED.
    stack.fault(kind="throttle", count=10_000)
    loop = asyncio.get_running_loop()
    began = loop.time()
    requested = await stack.reconciler.RequestSession(
        api.RequestSessionRequest(mailbox=f"mailboxes/{mailbox_id}", trigger=FORCE)
    )
    failed = (
        await stack.reconciler.WaitSession(
            api.WaitSessionRequest(
                name=requested.session.name, timeout=duration_pb2.Duration(seconds=60)
            )
        )
    ).session
    seconds = loop.time() - began
    assert failed.state == rres.SESSION_STATE_FAILED
    assert failed.failure_code == "SALESFORCE_API_LIMIT", failed.failure_reason
    assert "retry after 300 s" in failed.failure_reason
    print(f"\nspent allocation: session failed in {seconds:.2f} s: {failed.failure_reason}")
    assert seconds < 8, f"the session took {seconds:.1f} s to fail"
    # The sibling never met the limit, but its next sync waits for the org's retry-after.
    sibling = (
        await stack.reconciler.GetMailbox(api.GetMailboxRequest(name=f"mailboxes/{sibling_id}"))
    ).mailbox
    assert sibling.HasField("next_sync_time")
    wait = sibling.next_sync_time.ToDatetime(dt.UTC) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=250) < wait <= dt.timedelta(seconds=300)


async def test_ews_throttling_fails_the_session_at_once_and_backs_the_mailbox_off_by_it(
    stack: Stack,
) -> None:
    """Issue #17 case 3: a mail server asking for a back-off longer than the caller's deadline
    (EWS ErrorServerBusy, 60 s) made the session stall into "mail-connector deadline
    exceeded". It fails at once now, saying when to retry, and the mailbox's next sync waits
    that long."""
    mailbox_id, _account = await stack.add_mailbox()
    await stack.session(mailbox_id)  # the account's folders and version are known
    stack.exchange.admin(
        "POST",
        "faults",
        {"kind": "server_busy", "operation": "SyncFolderItems", "back_off_ms": 60_000},
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    requested = await stack.reconciler.RequestSession(
        api.RequestSessionRequest(mailbox=f"mailboxes/{mailbox_id}", trigger=FORCE)
    )
    failed = (
        await stack.reconciler.WaitSession(
            api.WaitSessionRequest(
                name=requested.session.name, timeout=duration_pb2.Duration(seconds=60)
            )
        )
    ).session
    seconds = loop.time() - began
    assert failed.state == rres.SESSION_STATE_FAILED
    assert failed.failure_code == "PROVIDER_THROTTLED", failed.failure_reason
    assert failed.failure_reason.count("retry after 60") == 1, failed.failure_reason
    print(f"\nEWS throttling: session failed in {seconds:.2f} s: {failed.failure_reason}")
    assert seconds < 5, f"the session took {seconds:.1f} s to fail"
    mailbox = (
        await stack.reconciler.GetMailbox(api.GetMailboxRequest(name=f"mailboxes/{mailbox_id}"))
    ).mailbox
    wait = mailbox.next_sync_time.ToDatetime(dt.UTC) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=50) < wait <= dt.timedelta(seconds=60)
