"""ShareEmail, the Save button: immediate, exactly once, and clear about what went wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from concord.common.v1 import resources_pb2 as res
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import reconciler_service_pb2_grpc as api_grpc
from concord_events import EventBus
from concord_reconciler.api.base import ApiPorts
from concord_reconciler.api.servicer import SERVICE_NAME, ReconcilerServicer
from concord_reconciler.mailboxes.domain.model import MailboxRecord
from concord_reconciler.mirror.adapters.links import SqlLinkStore
from concord_reconciler.mirror.adapters.peers import GrpcMailSide
from concord_reconciler.sessions.adapters.messaging import NatsSessionMessaging
from concord_reconciler.sessions.adapters.store import SqlStore
from concord_reconciler.sharing.adapters.sharing import EmailSharing
from concord_reconciler.sharing.domain.sharing import share_key
from concord_rpc import GrpcService, from_rpc_error
from concord_store import create_engine, migrate
from concord_testing.peers import CrmPeer, MailPeer, serving_peers

from .test_sharing_store import ANN, serving_world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BROKEN_MIME = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno parts\r\n'


def _no_bus() -> EventBus:
    raise AssertionError("ShareEmail needs no NATS")


@dataclass
class Harness:
    stub: api_grpc.ReconcilerServiceStub
    salesforce: CrmPeer
    mailbox: MailPeer
    sharing: EmailSharing

    async def save(
        self, mailbox: str, native_id: str, request_id: str = "", chosen: tuple[str, ...] = ()
    ) -> Any:
        return await self.stub.ShareEmail(
            api.ShareEmailRequest(
                mailbox=f"mailboxes/{mailbox}",
                message=res.ItemRef(kind=res.OBJECT_KIND_EMAIL, native_id=native_id),
                request_id=request_id,
                related_record_ids=chosen,
            )
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    engine = create_engine(f"sqlite:///{tmp_path}/reconciler.db")
    await migrate(engine, "concord_reconciler.migrations")
    store = SqlStore(engine)
    for mailbox_id in ("bob", "carl"):
        await store.insert_mailbox(
            MailboxRecord(
                mailbox_id,
                "acme",
                mailbox_id,
                "005000000000001AAA",
                f"{mailbox_id}@acme.com",
                res.MAIL_PROVIDER_EXCHANGE_EWS,
            )
        )
    peers = AsyncExitStack()
    mail = MailPeer()
    served = await peers.enter_async_context(serving_peers(mail))
    mail_channel = await peers.enter_async_context(served.channel("mail-connector"))
    world = await peers.enter_async_context(serving_world(engine))
    sharing = world.sharing(wait_seconds=0.2)
    servicer = ReconcilerServicer(
        ApiPorts(
            mailboxes=store,
            session_store=store,
            sessions=store,
            answers=store,
            messaging=NatsSessionMessaging(_no_bus),
            accounts=GrpcMailSide(mail_channel, 5.0),
            conflicts=SqlLinkStore(engine),
            sharing=sharing,
        )
    )
    service = GrpcService("reconciler", port=0)
    service.add_service(
        SERVICE_NAME, lambda s: api_grpc.add_ReconcilerServiceServicer_to_server(servicer, s)
    )
    port = await service.start()
    client = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(api_grpc.ReconcilerServiceStub(client), world.salesforce, mail, sharing)
    finally:
        await client.close()
        await service.shutdown()
        await peers.aclose()
        await engine.dispose()


def _email(cc: tuple[str, ...] = (), mime: bytes = b"") -> res.EmailItem:
    # Not categorised, not in a shared folder: Save shares it regardless.
    return res.EmailItem(
        internet_message_id="<offer-3@corp.example>",
        subject="Offer",
        from_address=res.EmailAddress(address="ann@corp.example"),
        to=[res.EmailAddress(address="bob@acme.com")],
        cc=[res.EmailAddress(address=a) for a in cc],
        body_text="Our offer.",
        folder="Inbox",
        mime_content=mime,
    )


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call
    return excinfo.value


async def test_save_shares_now_and_once(harness: Harness) -> None:
    harness.mailbox.add_email("b1", _email())
    first = await harness.save("bob", "b1", request_id="r1")
    assert first.already_shared is False
    assert len(harness.salesforce.of("EmailMessage")) == 1
    assert len(harness.salesforce.of("EmailMessageRelation")) == 2
    assert await harness.save("bob", "b1", request_id="r1") == first  # replayed
    assert (await harness.save("bob", "b1")).already_shared is True
    harness.mailbox.add_email("c1", _email(cc=("carl@acme.com",)))
    assert (await harness.save("carl", "c1")).already_shared is True
    assert len(harness.salesforce.of("EmailMessage")) == 1
    assert len(harness.salesforce.of("EmailMessageRelation")) == 3


async def test_save_links_what_the_user_chose(harness: Harness) -> None:
    harness.mailbox.add_email("b1", _email())
    opportunity = "006000000000042AAA"
    saved = await harness.save("bob", "b1", chosen=(ANN, opportunity))
    [message] = harness.salesforce.of("EmailMessage")
    assert saved.email_message_id == message["Id"]
    assert message["RelatedToId"] == opportunity
    # Bob resolves too, but the user chose only Ann: one relation, hers.
    relations = harness.salesforce.of("EmailMessageRelation")
    assert [r["RelationId"] for r in relations] == [ANN]


@pytest.mark.parametrize(
    ("native_id", "code", "reason", "cause"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "EMAIL_NOT_FOUND", None),
        (
            "unreadable",
            grpc.StatusCode.FAILED_PRECONDITION,
            "EMAIL_NOT_SHAREABLE",
            "MALFORMED_MIME",
        ),
        ("broken", grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_NOT_SHAREABLE", "MALFORMED_MIME"),
    ],
)
async def test_what_cannot_be_shared_says_why(
    harness: Harness, native_id: str, code: grpc.StatusCode, reason: str, cause: str | None
) -> None:
    harness.mailbox.make_unreadable("unreadable")
    harness.mailbox.add_email("broken", _email(mime=BROKEN_MIME))
    error = await _error(harness.save("bob", native_id))
    assert error.code() == code
    status = from_rpc_error(error)
    assert status.reason == reason
    if cause:
        assert status.metadata["cause"] == cause
    assert harness.salesforce.of("EmailMessage") == []


async def test_a_bad_reference_is_invalid(harness: Harness) -> None:
    request = api.ShareEmailRequest(
        mailbox="mailboxes/bob", message=res.ItemRef(kind=res.OBJECT_KIND_CONTACT, native_id="x")
    )
    error = await _error(harness.stub.ShareEmail(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await _error(harness.stub.ShareEmail(api.ShareEmailRequest(mailbox="mailboxes/bob")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_save_during_anothers_write_is_aborted_for_a_retry(harness: Harness) -> None:
    harness.mailbox.add_email("b1", _email())
    held = await harness.sharing.store.claim(share_key("acme", _email()))
    assert held is not None
    error = await _error(harness.save("bob", "b1"))
    assert error.code() == grpc.StatusCode.ABORTED
    assert from_rpc_error(error).reason == "EMAIL_SHARE_BUSY"
    await harness.sharing.store.release(share_key("acme", _email()), held)
    assert (await harness.save("bob", "b1")).already_shared is False
