"""The in-memory peers keep the promises their docstrings make, over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from concord.common.v1 import resources_pb2 as res
from concord.crm.v1 import crm_connector_service_pb2 as crm
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.mail.v1 import mail_connector_service_pb2 as mail
from concord.mail.v1 import mail_connector_service_pb2_grpc as mail_grpc
from concord.mapping.v1 import mapping_service_pb2 as mapping
from concord.mapping.v1 import mapping_service_pb2_grpc as mapping_grpc
from concord.reconciler.v1 import reconciler_service_pb2 as rec
from concord.reconciler.v1 import reconciler_service_pb2_grpc as rec_grpc
from concord.reconciler.v1 import resources_pb2 as rres
from concord_rpc import FailedPrecondition, from_rpc_error
from concord_testing import TEST_CALLER, TEST_IDENTITY_KEY, vouched
from concord_testing.peers import (
    CrmPeer,
    MailPeer,
    MappingPeer,
    ReconcilerPeer,
    serving_peers,
    serving_peers_in_thread,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

EVENT = res.OBJECT_KIND_CALENDAR_ITEM


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def _contact(link_id: str, last_name: str) -> crm.CrmWrite:
    fields = struct_pb2.Struct()
    fields.update({"LastName": last_name, "Email": f"{link_id}@acme.example"})
    return crm.CrmWrite(
        operation=crm.CRM_WRITE_OPERATION_UPSERT,
        sobject_type="Contact",
        link_id=link_id,
        fields=fields,
    )


async def test_crm_upserts_by_link_id_and_can_lose_an_answer_after_committing() -> None:
    peer = CrmPeer()
    async with serving_peers(peer) as served, served.channel("crm-connector") as channel:
        stub = crm_grpc.CrmConnectorServiceStub(channel)
        first = await stub.ApplyBatch(
            crm.ApplyBatchRequest(org="orgs/acme", writes=[_contact("l1", "Smith")])
        )
        again = await stub.ApplyBatch(
            crm.ApplyBatchRequest(org="orgs/acme", writes=[_contact("l1", "Smyth")])
        )
        assert [(r.created, r.id[:3]) for r in first.results] == [(True, "003")]
        assert (again.results[0].created, again.results[0].id) == (False, first.results[0].id)
        assert [c["LastName"] for c in peer.of("Contact")] == ["Smyth"]
        missing = await stub.ApplyBatch(
            crm.ApplyBatchRequest(org="orgs/acme", writes=[_contact("l2", "")])
        )
        assert missing.results[0].errors[0].code == "REQUIRED_FIELD_MISSING"

        peer.lose_answers_after = 0
        lost = await _refused(
            stub.ApplyBatch(crm.ApplyBatchRequest(org="orgs/acme", writes=[_contact("l3", "Lost")]))
        )
        assert lost.code() == grpc.StatusCode.UNAVAILABLE
        assert "Lost" in [c["LastName"] for c in peer.of("Contact")]  # committed all the same

        peer.unconnected.add("globex")
        refused = await _refused(
            stub.DescribeObject(crm.DescribeObjectRequest(org="orgs/globex", sobject_type="Event"))
        )
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_mail_replays_creates_refuses_stale_updates_and_keeps_unmasked_fields() -> None:
    peer = MailPeer()
    item = res.MailItem(
        ref=res.ItemRef(kind=EVENT),
        calendar_item=res.CalendarItem(subject="Review", location="Room 1"),
    )
    create = mail.MailWrite(operation=mail.MAIL_WRITE_OPERATION_CREATE, link_id="L1", item=item)
    async with serving_peers(peer) as served, served.channel("mail-connector") as channel:
        stub = mail_grpc.MailConnectorServiceStub(channel)
        (created,) = (await stub.ApplyItems(mail.ApplyItemsRequest(writes=[create]))).results
        (replayed,) = (await stub.ApplyItems(mail.ApplyItemsRequest(writes=[create]))).results
        assert (replayed.already_applied, replayed.ref) == (True, created.ref)
        assert len(peer.items) == 1

        changed = res.MailItem()
        changed.CopyFrom(item)
        changed.calendar_item.subject, changed.calendar_item.location = "Changed", "Room 2"
        update = mail.MailWrite(
            operation=mail.MAIL_WRITE_OPERATION_UPDATE,
            link_id="L1",
            ref=created.ref,
            item=changed,
            update_mask=field_mask_pb2.FieldMask(paths=["location"]),
        )
        (updated,) = (await stub.ApplyItems(mail.ApplyItemsRequest(writes=[update]))).results
        stored = peer.items[created.ref.native_id].calendar_item
        assert (stored.subject, stored.location) == ("Review", "Room 2")
        assert updated.ref.version != created.ref.version
        (stale,) = (await stub.ApplyItems(mail.ApplyItemsRequest(writes=[update]))).results
        assert stale.status == res.WRITE_STATUS_CONFLICT

        missing = await _refused(
            stub.DeleteMailboxAccount(mail.DeleteMailboxAccountRequest(name="mailboxes/x/account"))
        )
        assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_mapping_keeps_versions_and_says_it_does_not_translate() -> None:
    peer = MappingPeer()
    table = mapping.MappingTable(name="orgs/acme/mappingTables/task", target_sobject="Task")
    async with serving_peers(peer) as served, served.channel("mapping") as channel:
        stub = mapping_grpc.MappingServiceStub(channel)
        for _ in range(2):
            await stub.UpdateMappingTable(mapping.UpdateMappingTableRequest(table=table))
        got = await stub.GetMappingTable(mapping.GetMappingTableRequest(name=table.name))
        assert got.table.version == 2
        listed = await stub.ListMappingTableVersions(
            mapping.ListMappingTableVersionsRequest(name=table.name)
        )
        assert [t.version for t in listed.tables] == [2, 1]
        # An org without a stored table has the default, as the real service answers.
        default = await stub.GetMappingTable(
            mapping.GetMappingTableRequest(name="orgs/other/mappingTables/contact")
        )
        assert (default.table.version, default.table.is_default) == (0, True)
        assert default.table.target_sobject == "Contact"
        missing = await _refused(
            stub.GetMappingTable(
                mapping.GetMappingTableRequest(name="orgs/other/mappingTables/contact", version=3)
            )
        )
        assert missing.code() == grpc.StatusCode.NOT_FOUND
        refused = await _refused(stub.MapToCrm(mapping.MapToCrmRequest(org="orgs/acme")))
        assert refused.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reconciler_replays_mutations_pages_and_moves_sessions_on() -> None:
    peer = ReconcilerPeer(
        [rres.Mailbox(name=f"mailboxes/m{n}", org="orgs/acme", owner_user_id="u") for n in range(3)]
    )
    async with (
        serving_peers(peer, identity_keys=(TEST_IDENTITY_KEY,)) as served,
        served.channel("reconciler") as unsigned,
        served.channel("reconciler", interceptors=vouched()) as channel,
    ):
        refused = await _refused(
            rec_grpc.ReconcilerServiceStub(unsigned).GetMailbox(
                rec.GetMailboxRequest(name="mailboxes/m0")
            )
        )
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert peer.calls == []

        stub = rec_grpc.ReconcilerServiceStub(channel)
        request = rec.RequestSessionRequest(mailbox="mailboxes/m0", request_id="r1")
        first = await stub.RequestSession(request)
        assert await stub.RequestSession(request) == first
        assert peer.acted == {"RequestSession": 1}
        joined = await stub.RequestSession(rec.RequestSessionRequest(mailbox="mailboxes/m0"))
        assert (joined.coalesced, joined.session.name) == (True, first.session.name)
        states = [
            (await stub.GetSession(rec.GetSessionRequest(name=first.session.name))).session.state
            for _ in range(3)
        ]
        assert states == [
            rres.SESSION_STATE_QUEUED,
            rres.SESSION_STATE_RUNNING,
            rres.SESSION_STATE_COMPLETED,
        ]
        page = await stub.ListMailboxes(rec.ListMailboxesRequest(org="orgs/acme", page_size=2))
        rest = await stub.ListMailboxes(
            rec.ListMailboxesRequest(org="orgs/acme", page_token=page.next_page_token)
        )
        assert [m.name for m in [*page.mailboxes, *rest.mailboxes]] == [
            "mailboxes/m0",
            "mailboxes/m1",
            "mailboxes/m2",
        ]
        assert rest.next_page_token == ""
        assert {c.caller for c in peer.calls} == {TEST_CALLER}

        peer.fail_next("GetMailbox", FailedPrecondition("held"))
        failed = await _refused(stub.GetMailbox(rec.GetMailboxRequest(name="mailboxes/m0")))
        assert from_rpc_error(failed).domain == "reconciler.concord.dev"
        assert (await stub.GetMailbox(rec.GetMailboxRequest(name="mailboxes/m0"))).mailbox.name
        peer.down = True
        down = await _refused(stub.GetMailbox(rec.GetMailboxRequest(name="mailboxes/m0")))
        assert down.code() == grpc.StatusCode.UNAVAILABLE


def test_peers_in_a_thread_answer_a_caller_on_another_loop() -> None:
    peer = ReconcilerPeer([rres.Mailbox(name="mailboxes/m0", org="orgs/acme")])

    async def read(address: str) -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            got = await rec_grpc.ReconcilerServiceStub(channel).GetMailbox(
                rec.GetMailboxRequest(name="mailboxes/m0"), timeout=5
            )
            return got.mailbox.name

    with serving_peers_in_thread(peer) as (served, _):
        assert asyncio.run(read(served.address("reconciler"))) == "mailboxes/m0"
    assert peer.methods() == ["GetMailbox"]
