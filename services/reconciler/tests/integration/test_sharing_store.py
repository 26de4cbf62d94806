"""Email sharing exactly once, on SQLite and PostgreSQL: retries, lost answers, moves,
re-categorising, two mailboxes of one org, crashed writers and races between replicas.

crm-connector and the linker are concord_testing's in-memory peers here, which behave as the real
ones do on the points that matter (a create carrying a link id is an upsert by it; a lost answer
after a commit); the real crm-connector, emulator and linker are in test_sharing_stack.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2 as res
from concord.common.v1 import settings_pb2 as st
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.linker.v1 import linker_service_pb2 as linker
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mailboxes.domain.settings import (
    default_org_settings,
    effective_mailbox_settings,
)
from concord_reconciler.mirror.adapters.peers import GrpcCrmSide, GrpcLinker
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sharing.adapters.sharing import EmailSharing, share_emails
from concord_reconciler.sharing.adapters.store import EmailShareStore
from concord_reconciler.sharing.domain.ports import ShareReport
from concord_reconciler.sharing.domain.sharing import normalise_message_id, share_key
from concord_store import create_engine, migrate
from concord_testing.peers import CrmPeer, LinkerPeer, serving_peers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MIGRATIONS = "concord_reconciler.migrations"
PREFIXES = {"EmailMessage": "02s", "EmailMessageRelation": "0Rc", "Attachment": "00P"}


ANN = "003000000000001AAA"
BOB = "003000000000002AAA"
CARL = "003000000000003AAA"
# Whom the linker knows: the sender and two colleagues, as Contacts.
PEOPLE = {
    email: linker.LinkedRecord(sobject_type="Contact", id=contact)
    for email, contact in (
        ("ann@corp.example", ANN),
        ("bob@acme.com", BOB),
        ("carl@acme.com", CARL),
    )
}


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    await migrate(engine, MIGRATIONS)
    store = SqlStore(engine)
    for mailbox in MAILBOXES.values():
        await store.insert_mailbox(mailbox)
    yield engine
    await engine.dispose()


def _mailbox(mailbox_id: str, org_id: str, address: str) -> MailboxRecord:
    return MailboxRecord(
        mailbox_id=mailbox_id,
        org_id=org_id,
        owner_user_id=mailbox_id,
        crm_user_id="005000000000001AAA",
        address=address,
        provider=res.MAIL_PROVIDER_EXCHANGE_EWS,
    )


MAILBOXES = {
    "bob": _mailbox("bob", "acme", "bob@acme.com"),
    "carl": _mailbox("carl", "acme", "carl@acme.com"),
    "other": _mailbox("other", "globex", "bob@acme.com"),
}


@dataclass
class World:
    """Sharing over crm-connector and the linker in memory, through the reconciler's own gRPC
    clients (without channel retries: a lost answer reaches the sharing code)."""

    engine: AsyncEngine
    salesforce: CrmPeer
    linker: LinkerPeer
    crm_side: GrpcCrmSide
    linker_side: GrpcLinker

    def sharing(self, **options: Any) -> EmailSharing:
        return EmailSharing(self.engine, self.crm_side, self.linker_side, **options)

    async def share(
        self, mailbox_id: str, *changes: res.MailChange, sharing: EmailSharing | None = None
    ) -> ShareReport:
        mailbox = MAILBOXES[mailbox_id]
        org = default_org_settings(mailbox.org_id)
        return await share_emails(
            sharing or self.sharing(),
            mailbox,
            changes,
            org_settings=org,
            mailbox_settings=effective_mailbox_settings(mailbox_id, None, org, ""),
        )

    def writes(self) -> list[tuple[str, int]]:
        """(object, operation) of every write Salesforce received, in order."""
        return [
            (w.sobject_type, w.operation)
            for r in self.salesforce.received("ApplyBatch")
            for w in r.writes
        ]

    def batch_bytes(self) -> list[int]:
        return [r.ByteSize() for r in self.salesforce.received("ApplyBatch")]

    def queries(self) -> list[str]:
        """The objects queried, in order."""
        return [r.sobject_type for r in self.salesforce.received("QueryRecords")]

    def messages(self) -> list[dict[str, Any]]:
        return self.salesforce.of("EmailMessage")

    def relations(self) -> list[tuple[str, str, str]]:
        return sorted(
            (r["EmailMessageId"], r["RelationId"], r["RelationType"])
            for r in self.salesforce.of("EmailMessageRelation")
        )


@asynccontextmanager
async def serving_world(engine: AsyncEngine) -> AsyncIterator[World]:
    salesforce, people = CrmPeer(), LinkerPeer(PEOPLE)
    salesforce.describes["EmailMessage"] = crm.ObjectDescription(
        name="EmailMessage", fields=[crm.FieldDescription(name="TextBody", length=32000)]
    )
    async with (
        serving_peers(salesforce, people) as served,
        served.channel("crm-connector") as crm_channel,
        served.channel("linker") as linker_channel,
    ):
        yield World(
            engine,
            salesforce,
            people,
            GrpcCrmSide(crm_channel, timeout=10),
            GrpcLinker(linker_channel, timeout=10),
        )


@pytest.fixture
async def world(engine: AsyncEngine) -> AsyncIterator[World]:
    async with serving_world(engine) as world:
        yield world


def _email(
    native_id: str = "n1",
    *,
    message_id: str = "<deal-1@corp.example>",
    folder: str = "Inbox",
    categories: Sequence[str] = ("Salesforce",),
    to: Sequence[str] = ("bob@acme.com",),
    cc: Sequence[str] = (),
    mime: bytes = b"",
) -> res.MailChange:
    item = res.EmailItem(
        internet_message_id=message_id,
        subject="Renewal",
        from_address=res.EmailAddress(address="ann@corp.example", display_name="Ann"),
        to=[res.EmailAddress(address=a) for a in to],
        cc=[res.EmailAddress(address=a) for a in cc],
        body_text="Let's renew.",
        categories=categories,
        folder=folder,
        conversation_id=f"conv-{native_id}",
        mime_content=mime,
    )
    item.sent_time.FromSeconds(1_790_000_000)
    return res.MailChange(
        type=res.CHANGE_TYPE_UPSERT,
        ref=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id=native_id, collection=folder),
        item=res.MailItem(email=item),
    )


async def test_a_page_with_nothing_shared_or_failed_records_no_transaction(
    engine: AsyncEngine,
) -> None:
    """Every session's email pass ends its page with this: for a quiet mailbox, nothing."""
    transactions: list[object] = []
    listener = transactions.append
    event.listen(engine.sync_engine, "begin", listener)
    try:
        await EmailShareStore(engine).record_failures("bob", [], [])
    finally:
        event.remove(engine.sync_engine, "begin", listener)
    assert transactions == []


async def test_a_retry_after_success_writes_nothing(world: World) -> None:
    first = await world.share("bob", _email())
    assert (first.created, first.relations_created, first.failures) == (1, 2, [])
    writes = len(world.writes())
    again = await world.share("bob", _email())
    assert (again.created, again.already_shared) == (0, 1)
    assert len(world.writes()) == writes
    assert len(world.messages()) == 1


async def test_moves_and_recategorising_keep_one_email_message(world: World) -> None:
    await world.share("bob", _email("n1", folder="Salesforce Emails", categories=()))
    # Moved to another folder (a new native id on some providers), categorised, re-categorised.
    await world.share("bob", _email("n2", folder="Archive"))
    await world.share("bob", _email("n2", folder="Archive", categories=()))
    await world.share("bob", _email("n2", folder="Archive", message_id="deal-1@CORP.EXAMPLE"))
    assert len(world.messages()) == 1


async def test_a_second_mailbox_adds_its_relations_instead_of_a_second_email(
    world: World,
) -> None:
    await world.share("bob", _email())
    report = await world.share("carl", _email("c1", cc=["carl@acme.com"]))
    assert (report.created, report.related, report.relations_created) == (0, 1, 1)
    (message,) = world.messages()
    assert world.relations() == [
        (message["Id"], ANN, "FromAddress"),
        (message["Id"], BOB, "ToAddress"),
        (message["Id"], CARL, "CcAddress"),
    ]


async def test_another_org_gets_its_own_email_message(world: World) -> None:
    await world.share("bob", _email())
    await world.share("other", _email())
    assert len(world.messages()) == 2


async def test_a_lost_answer_is_looked_up_before_writing_again(world: World) -> None:
    world.salesforce.lose_answers_after = 0
    failed = await world.share("bob", _email())
    assert [f.reason for f in failed.failures] == ["PEER_UNAVAILABLE"]
    assert failed.failures[0].retryable
    assert len(world.messages()) == 1  # Salesforce had it; the answer was lost
    creates = [w for w in world.writes() if w[0] == "EmailMessage"]
    store = SqlStore(world.engine)
    (error,), _ = await store.list_item_errors("bob", quarantined_only=False, after=None, limit=5)
    assert (error.reason, error.quarantined, error.side) == (
        "PEER_UNAVAILABLE",
        False,
        res.SYNC_SIDE_CRM,
    )
    retried = await world.share("bob", _email())
    assert await store.list_item_errors("bob", quarantined_only=False, after=None, limit=5) == (
        [],
        0,
    )
    assert retried.related == 1
    assert retried.relations_created == 2
    assert "EmailMessage" in world.queries()
    assert [w for w in world.writes() if w[0] == "EmailMessage"] == creates
    assert len(world.messages()) == 1
    assert len(world.relations()) == 2


async def test_a_crashed_writers_claim_expires_and_is_taken_over(world: World) -> None:
    crashed = world.sharing(claim_seconds=0.3)
    key = share_key("acme", _email().item.email)
    assert await crashed.store.claim(key) is not None  # then the process died
    waiting = world.sharing(claim_seconds=0.3, wait_seconds=5)
    report = await world.share("bob", _email(), sharing=waiting)
    assert report.created == 1
    assert len(world.messages()) == 1


async def test_a_held_claim_makes_others_wait_then_report_busy(world: World) -> None:
    holder = world.sharing(claim_seconds=60)
    assert await holder.store.claim(share_key("acme", _email().item.email)) is not None
    report = await world.share("bob", _email(), sharing=world.sharing(wait_seconds=0.2))
    assert [(f.reason, f.retryable) for f in report.failures] == [("SHARE_BUSY", True)]
    assert world.messages() == []


@pytest.mark.parametrize("mailboxes", [["bob"] * 4, ["bob", "carl", "bob", "carl"]])
async def test_racing_replicas_create_one_email_message(
    world: World, store_url: str, mailboxes: list[str]
) -> None:
    world.salesforce.delay = 0.02  # every call overlaps the others
    engines = [create_engine(store_url) for _ in mailboxes]  # one per replica
    try:
        reports = await asyncio.gather(
            *(
                world.share(
                    mailbox_id,
                    _email(f"{mailbox_id}-{i}", cc=["carl@acme.com"]),
                    sharing=EmailSharing(engine, world.crm_side, world.linker_side),
                )
                for i, (mailbox_id, engine) in enumerate(zip(mailboxes, engines, strict=True))
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert [f for r in reports for f in r.failures] == []
    assert len(world.messages()) == 1
    assert sum(r.created for r in reports) == 1
    assert len(world.relations()) == 3  # no duplicates either
    assert len([w for w in world.writes() if w[0] == "EmailMessage"]) == 1


async def test_bad_input_is_shared_as_far_as_it_goes_or_quarantined(world: World) -> None:
    broken = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno parts at all\r\n'
    crowd = [f"p{i}@crowd.example" for i in range(2000)]
    problem = res.MailChange(
        type=res.CHANGE_TYPE_UPSERT,
        ref=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id="unreadable"),
        problem=res.ItemProblem(reason="MALFORMED_MIME", message="EWS could not convert it"),
    )
    report = await world.share(
        "bob",
        _email("a", message_id="", to=["not-an-address", "bob@acme.com"]),
        _email("b", message_id="<big@corp.example>", to=crowd),
        _email("c", message_id="<broken@corp.example>", mime=broken),
        problem,
    )
    assert report.created == 2
    counts = report.kind_counts()
    assert (counts.mail_changes_seen, counts.crm.created, counts.crm.errors) == (4, 2, 2)
    assert (counts.quarantined, counts.skipped) == (2, 0)
    assert sorted((f.ref.native_id, f.reason, f.quarantine) for f in report.failures) == [
        ("c", "MALFORMED_MIME", True),
        ("unreadable", "MALFORMED_MIME", True),
    ]
    assert "no Message-ID" in report.notes["a"][0]
    assert any(loss.field == "ToAddress" for loss in report.losses["a"])
    assert max(len(r.participants) for r in world.linker.received("ResolveParticipants")) <= 500
    big = next(m for m in world.messages() if m.get("MessageIdentifier") == "<big@corp.example>")
    assert len(big["ToAddress"]) <= 4000
    # The hashed key is stable: the Message-ID-less email is not shared twice.
    again = await world.share("bob", _email("a", message_id="", to=["bob@acme.com"]))
    assert again.already_shared == 1
    # The dashboard shows both, quarantined, as unreadable on the mail side.
    errors, total = await SqlStore(world.engine).list_item_errors(
        "bob", quarantined_only=True, after=None, limit=10
    )
    assert total == 2
    assert sorted((e.native_id, e.reason, e.side, e.kind) for e in errors) == [
        ("c", "MALFORMED_MIME", res.SYNC_SIDE_MAIL, res.OBJECT_KIND_EMAIL),
        ("unreadable", "MALFORMED_MIME", res.SYNC_SIDE_MAIL, res.OBJECT_KIND_EMAIL),
    ]


async def test_a_page_of_emails_costs_two_writes_and_one_lookup(world: World) -> None:
    page = [_email(f"n{i}", message_id=f"<m{i}@corp.example>") for i in range(30)]
    page.append(_email("dup", message_id="<m0@corp.example>", folder="Salesforce Emails"))
    first = await world.share("bob", *page)
    assert (first.created, first.already_shared, first.failures) == (30, 1, [])
    assert len(world.batch_bytes()) == 2  # EmailMessages, then relations
    assert len(world.messages()) == 30
    # A second mailbox on the same page: one lookup of existing relations, one write.
    queried = len(world.queries())
    second = await world.share(
        "carl",
        *(
            _email(f"c{i}", message_id=f"<m{i}@corp.example>", cc=["carl@acme.com"])
            for i in range(30)
        ),
    )
    assert (second.related, second.relations_created) == (30, 30)
    assert world.queries()[queried:] == ["EmailMessageRelation"]
    assert len(world.batch_bytes()) == 3
    assert len(world.relations()) == 90


async def test_attachments_go_in_batches_that_fit_a_grpc_message(world: World) -> None:
    message = MimeMessage()
    message["From"] = "ann@corp.example"
    message["Message-ID"] = "<deal-1@corp.example>"
    message.set_content("three files")
    for n in range(3):
        payload = bytes([n]) * 2_400_000
        message.add_attachment(payload, maintype="application", subtype="zip", filename=f"{n}.zip")
    report = await world.share("bob", _email(mime=message.as_bytes()))
    assert (report.created, report.attachments_created) == (1, 3)
    assert len(world.batch_bytes()) == 5  # the EmailMessage, relations, 3 files
    assert max(world.batch_bytes()) < 4 * 1024 * 1024


async def test_a_categorised_draft_is_shared_from_sent_items_once(world: World) -> None:
    draft = await world.share("bob", _email("d", folder="Drafts"))
    assert draft.selected == 0
    assert draft.kind_counts().skipped == 1
    sent = await world.share("bob", _email("s", folder="Sent Items"))
    assert sent.created == 1
    assert len(world.messages()) == 1


async def test_thread_mode_shares_later_replies(world: World) -> None:
    org = default_org_settings("acme")
    settings = effective_mailbox_settings("bob", None, org, "")
    for sharing in settings.sharing:
        if sharing.kind == res.OBJECT_KIND_EMAIL:
            sharing.selection_modes.append(st.SELECTION_MODE_THREAD)
    await share_emails(
        world.sharing(), MAILBOXES["bob"], [_email()], org_settings=org, mailbox_settings=settings
    )
    reply = _email("r", message_id="<reply@corp.example>", categories=())
    reply.item.email.references.append("<deal-1@corp.example>")
    report = await share_emails(
        world.sharing(), MAILBOXES["bob"], [reply], org_settings=org, mailbox_settings=settings
    )
    assert report.created == 1
    assert len(world.messages()) == 2


_OPS = hs.lists(
    hs.tuples(
        hs.sampled_from(sorted(MAILBOXES)),
        hs.sampled_from(["<a@corp.example>", "<A@CORP.example>", "<b@corp.example>", ""]),
        hs.sampled_from(["Inbox", "Salesforce Emails", "Archive"]),
        hs.sampled_from([None, 0, 1]),  # which write's answer is lost, if any
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
async def test_any_history_of_shares_and_lost_answers_converges_to_one_of_each(
    tmp_path: Path, ops: list[tuple[str, str, str, int | None]]
) -> None:
    """Whatever order mailboxes share in and whatever answers get lost, once every share has
    been retried to success there is one EmailMessage per (org, email) and no relation twice."""
    engine = create_engine(f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db")
    try:
        await migrate(engine, MIGRATIONS)
        for mailbox in MAILBOXES.values():
            await SqlStore(engine).insert_mailbox(mailbox)
        async with serving_world(engine) as world:
            for mailbox_id, message_id, folder, lose in ops:
                world.salesforce.lose_answers_after = lose
                await world.share(mailbox_id, _email(folder=folder, message_id=message_id))
            world.salesforce.lose_answers_after = None
            for mailbox_id, message_id, folder, _ in ops:  # the next sessions retry what failed
                report = await world.share(mailbox_id, _email(folder=folder, message_id=message_id))
                assert report.failures == []
            expected = {
                (MAILBOXES[m].org_id, normalise_message_id(i) or "hash") for m, i, _, _ in ops
            }
            assert len(world.messages()) == len(expected)
            links = [m["Concord_Link_Id__c"] for m in world.messages()]
            assert len(set(links)) == len(links)
            relations = world.relations()
            assert len(set(relations)) == len(relations)
    finally:
        await engine.dispose()


async def test_a_refused_write_is_quarantined_without_quoting_the_content(world: World) -> None:
    world.salesforce.refuse(
        crm.CrmError(
            code="STRING_TOO_LONG",
            message="Subject: data value too large: Renewal",
            fields=["Subject"],
        )
    )
    report = await world.share("bob", _email())
    (failure,) = report.failures
    assert (failure.reason, failure.quarantine, failure.retryable) == (
        "STRING_TOO_LONG",
        True,
        False,
    )
    assert "Subject" in failure.message
    assert "Renewal" not in failure.message
    # Not recorded as shared: once the cause is fixed, the next try writes it.
    world.salesforce.refusals.clear()
    assert (await world.share("bob", _email())).created == 1
