"""Email sharing through the real crm-connector and linker processes, against the Salesforce
emulator: one EmailMessage with its relations and attachment, the same email from a second
mailbox, a lost answer, and two racing replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from cryptography.fernet import Fernet
from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
)
from concord_reconciler.mirror.adapters.peers import GrpcCrmSide, GrpcLinker
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sharing.adapters.sharing import EmailSharing, share_emails
from concord_reconciler.sharing.domain.ports import ShareReport
from concord_salesforce_emulator.app import Running, running_in_thread
from concord_salesforce_emulator.server import Settings as EmulatorSettings
from concord_store import create_engine, migrate
from concord_testing import ServiceProcess, free_port, identity_env, vouched

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MIGRATIONS = "concord_reconciler.migrations"


@dataclass
class Stack:
    emulator: Running
    crm_addr: str
    linker_addr: str
    admin: requests.Session
    contacts: dict[str, str]

    def soql(self, query: str) -> list[dict[str, Any]]:
        """Straight to the emulator, as an admin would check Salesforce."""
        token = self.admin.post(
            f"{self.emulator.url}/services/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": self.emulator.emulator.settings.client_id,
                "client_secret": self.emulator.emulator.settings.client_secret,
                "username": self.emulator.emulator.settings.username,
                "password": self.emulator.emulator.settings.password,
            },
        ).json()["access_token"]
        response = self.admin.get(
            f"{self.emulator.url}/services/data/v62.0/query",
            params={"q": query},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    def fault(self, **body: Any) -> None:
        self.admin.post(f"{self.emulator.url}/__admin/faults", json=body).raise_for_status()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Running]:
    with running_in_thread(tmp_path / "salesforce", EmulatorSettings(), demo=True) as running:
        yield running


@pytest.fixture
async def stack(
    emulator: Running, tmp_path: Path, service_process: Callable[..., ServiceProcess]
) -> AsyncIterator[Stack]:
    common = {"CONCORD_VAR_DIR": str(tmp_path / "var"), **identity_env()}
    crm_port, linker_port = free_port(), free_port()
    crm_addr, linker_addr = f"127.0.0.1:{crm_port}", f"127.0.0.1:{linker_port}"
    service_process(
        "concord_crm_connector",
        env={
            **common,
            "CRM_CONNECTOR_PORT": str(crm_port),
            "CRM_CONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path}/crm.db",
            "CRM_CONNECTOR_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "CRM_CONNECTOR_CA_BUNDLE": str(emulator.ca_cert),
            "CRM_CONNECTOR_RETRY_BASE_SECONDS": "0.01",
        },
    ).wait_serving(crm_addr, timeout=60)
    service_process(
        "concord_linker",
        env={
            **common,
            "LINKER_PORT": str(linker_port),
            "LINKER_DATABASE_URL": f"sqlite:///{tmp_path}/linker.db",
            "CRM_CONNECTOR_ADDR": crm_addr,
        },
    ).wait_serving(linker_addr, timeout=60)
    settings = emulator.emulator.settings
    async with grpc.aio.insecure_channel(crm_addr, interceptors=vouched()) as channel:
        stub = crm_grpc.CrmConnectorServiceStub(channel)
        await stub.UpsertOrgConnection(
            crm.UpsertOrgConnectionRequest(
                connection=crm.OrgConnection(
                    name="orgs/acme/connection",
                    login_url=emulator.url,
                    auth_flow=crm.AUTH_FLOW_PASSWORD,
                    client_id=settings.client_id,
                    username=settings.username,
                    secret=json.dumps(
                        {"client_secret": settings.client_secret, "password": settings.password}
                    ).encode(),
                )
            )
        )
        people = [("Ann", "ann@corp.example"), ("Carl", "carl@corp.example")]
        written = await stub.ApplyBatch(
            crm.ApplyBatchRequest(
                org="orgs/acme",
                writes=[
                    crm.CrmWrite(
                        operation=crm.CRM_WRITE_OPERATION_CREATE,
                        sobject_type="Contact",
                        fields=struct_pb2.Struct(
                            fields={
                                "LastName": struct_pb2.Value(string_value=name),
                                "Email": struct_pb2.Value(string_value=address),
                            }
                        ),
                    )
                    for name, address in people
                ],
            )
        )
    admin = requests.Session()
    admin.trust_env = False
    admin.verify = str(emulator.ca_cert)
    contacts = {address: r.id for (_, address), r in zip(people, written.results, strict=True)}
    try:
        yield Stack(emulator, crm_addr, linker_addr, admin, contacts)
    finally:
        admin.close()


EWS = res.MAIL_PROVIDER_EXCHANGE_EWS
MAILBOXES = {
    "bob": MailboxRecord("bob", "acme", "bob", "005000000000001AAA", "bob@acme.com", EWS),
    "dan": MailboxRecord("dan", "acme", "dan", "005000000000001AAA", "dan@acme.com", EWS),
}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite:///{tmp_path}/reconciler.db"
    engine = create_engine(url)
    await migrate(engine, MIGRATIONS)
    for mailbox in MAILBOXES.values():
        await SqlStore(engine).insert_mailbox(mailbox)
    yield engine
    await engine.dispose()


def _mime(size: int = 0) -> bytes:
    message = MimeMessage()
    message["From"] = "Ann <ann@corp.example>"
    message["To"] = "bob@acme.com"
    message["Message-ID"] = "<renewal-7@corp.example>"
    message["Subject"] = "Renewal"
    message.set_content("Quote attached.")
    message.add_attachment(
        b"%PDF-1.4 quote", maintype="application", subtype="pdf", filename="quote.pdf"
    )
    if size:
        message.add_attachment(
            b"z" * size, maintype="application", subtype="zip", filename="big.zip"
        )
    return message.as_bytes()


def _change(native_id: str, cc: tuple[str, ...] = (), size: int = 0) -> res.MailChange:
    item = res.EmailItem(
        internet_message_id="<renewal-7@corp.example>",
        subject="Renewal",
        from_address=res.EmailAddress(address="ann@corp.example", display_name="Ann\x07"),
        to=[res.EmailAddress(address="bob@acme.com")],
        cc=[res.EmailAddress(address=a) for a in cc],
        body_text="Quote attached.",
        body_html="<p>Quote attached.</p>",
        categories=["Salesforce"],
        folder="Inbox",
        has_attachments=True,
        mime_content=_mime(size),
    )
    item.sent_time.FromSeconds(1_790_000_000)
    return res.MailChange(
        type=res.CHANGE_TYPE_UPSERT,
        ref=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id=native_id, collection="Inbox"),
        item=res.MailItem(email=item),
    )


async def _share(
    stack: Stack, engine: AsyncEngine, mailbox_id: str, change: res.MailChange
) -> ShareReport:
    crm_channel = grpc.aio.insecure_channel(stack.crm_addr, interceptors=vouched())
    linker_channel = grpc.aio.insecure_channel(stack.linker_addr, interceptors=vouched())
    try:
        sharing = EmailSharing(
            engine, GrpcCrmSide(crm_channel, 30.0), GrpcLinker(linker_channel, 30.0)
        )
        org = default_org_settings("acme")
        return await share_emails(
            sharing,
            MAILBOXES[mailbox_id],
            [change],
            org_settings=org,
            mailbox_settings=effective_mailbox_settings(mailbox_id, None, org, ""),
        )
    finally:
        await crm_channel.close()
        await linker_channel.close()


async def test_one_email_message_with_relations_and_attachment_then_a_second_mailbox(
    stack: Stack, engine: AsyncEngine
) -> None:
    first = await _share(stack, engine, "bob", _change("b1"))
    assert first.failures == []
    assert (first.created, first.relations_created, first.attachments_created) == (1, 1, 1)
    (message,) = stack.soql(
        "SELECT Id, Subject, FromName, Status, Incoming, MessageIdentifier, ThreadIdentifier "
        "FROM EmailMessage"
    )
    assert message["FromName"] == "Ann"  # the bell character stayed behind
    assert message["MessageIdentifier"] == "<renewal-7@corp.example>"
    assert (message["Status"], message["Incoming"]) == ("1", True)
    (attachment,) = stack.soql(
        f"SELECT Name, BodyLength FROM Attachment WHERE ParentId = '{message['Id']}'"
    )
    assert attachment == {**attachment, "Name": "quote.pdf", "BodyLength": 14}

    again = await _share(stack, engine, "bob", _change("b1"))
    assert again.already_shared == 1
    second = await _share(stack, engine, "dan", _change("d1", cc=("carl@corp.example",)))
    assert (second.created, second.related, second.relations_created) == (0, 1, 1)
    assert len(stack.soql("SELECT Id FROM EmailMessage")) == 1
    assert len(stack.soql("SELECT Id FROM Attachment")) == 1
    relations = stack.soql("SELECT RelationId, RelationType FROM EmailMessageRelation")
    assert sorted((r["RelationId"], r["RelationType"]) for r in relations) == sorted(
        [
            (stack.contacts["ann@corp.example"], "FromAddress"),
            (stack.contacts["carl@corp.example"], "CcAddress"),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "composite/sobjects/EmailMessage/Concord_Link_Id__c"),  # the EmailMessage
        ("POST", "composite"),  # relations and attachment, in one Composite call
    ],
)
async def test_a_lost_answer_from_salesforce_leaves_one_of_everything(
    stack: Stack, engine: AsyncEngine, method: str, path: str
) -> None:
    # Salesforce commits, then the connection drops before the answer.
    stack.fault(kind="drop_response", path=f"/v62.0/{path}$", method=method, count=1)
    report = await _share(stack, engine, "bob", _change("b1"))
    retried_by_us = bool(report.failures)
    if retried_by_us:  # the connector gave up: the next session finishes the job
        assert report.failures[0].retryable
        report = await _share(stack, engine, "bob", _change("b1"))
    assert report.failures == []
    calls = stack.admin.get(f"{stack.emulator.url}/__admin/calls").json()["calls"]
    # The dropped call was sent again, by the connector or by the next share.
    assert calls[f"{method} {path}"] >= 2 or retried_by_us, calls
    assert len(stack.soql("SELECT Id FROM EmailMessage")) == 1
    assert len(stack.soql("SELECT Id FROM EmailMessageRelation")) == 1
    assert len(stack.soql("SELECT Id FROM Attachment")) == 1


async def test_two_replicas_racing_on_one_message_id_create_one_email_message(
    stack: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    replica = create_engine(f"sqlite:///{tmp_path}/reconciler.db")
    try:
        reports = await asyncio.gather(
            _share(stack, engine, "bob", _change("b1")),
            _share(stack, replica, "dan", _change("d1", cc=("carl@corp.example",))),
        )
    finally:
        await replica.dispose()
    assert [f for r in reports for f in r.failures] == []
    assert sorted((r.created, r.related) for r in reports) == [(0, 1), (1, 0)]
    assert len(stack.soql("SELECT Id FROM EmailMessage")) == 1
    assert len(stack.soql("SELECT Id FROM EmailMessageRelation")) == 2


async def test_a_file_near_the_cap_reaches_salesforce_through_grpc(
    stack: Stack, engine: AsyncEngine
) -> None:
    report = await _share(stack, engine, "bob", _change("b1", size=2_400_000))
    assert report.failures == []
    assert report.attachments_created == 2
    lengths = sorted(r["BodyLength"] for r in stack.soql("SELECT BodyLength FROM Attachment"))
    assert lengths == [14, 2_400_000]


async def test_a_page_of_twenty_emails_costs_a_handful_of_api_calls(
    stack: Stack, engine: AsyncEngine
) -> None:
    def api_calls() -> int:
        calls = stack.admin.get(f"{stack.emulator.url}/__admin/calls").json()["calls"]
        return sum(n for endpoint, n in calls.items() if "oauth2/token" not in endpoint)

    before = api_calls()
    changes = []
    for n in range(20):
        change = _change(f"b{n}")
        change.item.email.internet_message_id = f"<page-{n}@corp.example>"
        change.item.email.mime_content = b""  # attachments are counted elsewhere
        change.item.email.has_attachments = False
        changes.append(change)
    crm_channel = grpc.aio.insecure_channel(stack.crm_addr, interceptors=vouched())
    linker_channel = grpc.aio.insecure_channel(stack.linker_addr, interceptors=vouched())
    try:
        org = default_org_settings("acme")
        report = await share_emails(
            EmailSharing(engine, GrpcCrmSide(crm_channel, 30.0), GrpcLinker(linker_channel, 30.0)),
            MAILBOXES["bob"],
            changes,
            org_settings=org,
            mailbox_settings=effective_mailbox_settings("bob", None, org, ""),
        )
    finally:
        await crm_channel.close()
        await linker_channel.close()
    assert (report.created, report.failures) == (20, [])
    spent = api_calls() - before
    print(f"email sharing: {spent} Salesforce API calls for 20 emails ({spent / 20:.2f} each)")
    # Describe, the linker's lookups, one write of the EmailMessages, one of the relations.
    assert spent <= 6
    assert len(stack.soql("SELECT Id FROM EmailMessage")) == 20
    assert len(stack.soql("SELECT Id FROM EmailMessageRelation")) == 20
