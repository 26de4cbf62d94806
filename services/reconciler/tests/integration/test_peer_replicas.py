"""Two replicas of a peer behind the reconciler: its calls are spread over both (a mailbox's
calls to the mail-connector all to one of them), and the first stopping costs no call and no
session while the second serves (one connection to one replica took every call before)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from concord.common.v1 import resources_pb2 as res
from concord.mapping.v1 import mapping_service_pb2 as mapping_pb
from concord.reconciler.v1 import reconciler_service_pb2 as api
from concord.reconciler.v1 import resources_pb2 as rres
from concord_reconciler.app import build
from concord_reconciler.mirror.adapters.peers import PeerChannels
from concord_reconciler.settings import ReconcilerSettings
from concord_rpc.identity import IdentitySigner, acting_as
from concord_store import create_engine
from concord_testing import TEST_CALLER, TEST_IDENTITY_KEY, NatsServer
from concord_testing.peers import (
    CrmPeer,
    LinkerPeer,
    MailPeer,
    MappingPeer,
    Peer,
    serving_replicas,
)

from .conftest import add_mailbox, reconciler_in_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TABLE = "mappingTables/event"


def _replica(service: str) -> Peer:
    """One replica of `service`; replicas of one service answer alike (a shared store)."""
    if service == "mail-connector":
        return MailPeer()
    if service == "crm-connector":
        return CrmPeer()
    if service == "mapping":
        return MappingPeer(
            [mapping_pb.MappingTable(name=TABLE, kind=res.OBJECT_KIND_CALENDAR_ITEM)]
        )
    return LinkerPeer()


PEERS = ("mail-connector", "crm-connector", "mapping", "linker")

# Mailboxes in turn: a mailbox's calls all go to one mail-connector replica.
MAILBOXES = (f"mailboxes/m{n}" for n in itertools.count())

# One call the reconciler makes to each peer, through the port its sessions and API use.
CALLS: dict[str, Callable[[PeerChannels], Awaitable[object]]] = {
    "mail-connector": lambda peers: peers.mail.list_changes(
        next(MAILBOXES), res.OBJECT_KIND_CALENDAR_ITEM, res.Cursor()
    ),
    "crm-connector": lambda peers: peers.crm.get_budget("orgs/acme"),
    "mapping": lambda peers: peers.mapping.get_mapping_table(TABLE),
    "linker": lambda peers: peers.linker.resolve_participants(
        "orgs/acme", "005000000000001AAA", res.OBJECT_KIND_CALENDAR_ITEM, [], "request-1"
    ),
}


def _settings(addresses: dict[str, str]) -> ReconcilerSettings:
    return ReconcilerSettings(
        mail_connector_addr=addresses["mail-connector"],
        crm_connector_addr=addresses["crm-connector"],
        mapping_addr=addresses["mapping"],
        linker_addr=addresses["linker"],
        peer_timeout_seconds=5.0,
    )


@pytest.fixture
def engine_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'reconciler.db'}"


@pytest.mark.parametrize("peer", PEERS)
async def test_calls_to_a_peer_go_to_each_replica_that_serves_and_survive_one_stopping(
    peer: str, engine_url: str
) -> None:
    others = [_replica(other) for other in PEERS if other != peer]
    # As the real services do, each refuses a call nobody vouched for (health stays open).
    async with serving_replicas(
        _replica(peer), _replica(peer), *others, identity_keys=(TEST_IDENTITY_KEY,)
    ) as replicas:
        engine = create_engine(engine_url)
        # Wired as the process wires it: the peers' addresses from the settings.
        reconciler = build(
            _settings(replicas.addresses), engine, signer=IdentitySigner(TEST_IDENTITY_KEY)
        )
        call = CALLS[peer]

        async def calls(count: int) -> None:
            # Made for a caller, as the gateway vouches for one (or a session acts as itself).
            with acting_as(TEST_CALLER):
                for _ in range(count):
                    await call(reconciler.channels)

        try:
            await replicas.assert_balanced(calls)
        finally:
            await reconciler.close()
            await engine.dispose()


async def test_a_mailboxs_calls_go_to_one_mail_connector_replica_while_it_serves(
    engine_url: str,
) -> None:
    others = (CrmPeer(), _replica("mapping"), LinkerPeer())
    async with serving_replicas(
        MailPeer(), MailPeer(), *others, identity_keys=(TEST_IDENTITY_KEY,)
    ) as replicas:
        engine = create_engine(engine_url)
        reconciler = build(
            _settings(replicas.addresses), engine, signer=IdentitySigner(TEST_IDENTITY_KEY)
        )
        mail = reconciler.channels.mail
        first, second = replicas.first, replicas.second

        async def each_method(mailbox: str) -> None:
            """Every kind of call a session or the API makes for a mailbox."""
            await mail.list_changes(mailbox, res.OBJECT_KIND_CALENDAR_ITEM, res.Cursor())
            await mail.get_items(mailbox, link_ids=["link-1"], kind=res.OBJECT_KIND_TASK)
            await mail.apply_items(mailbox, [])
            await mail.push_state(mailbox)

        try:
            with acting_as(TEST_CALLER):
                for mailbox in ("mailboxes/a", "mailboxes/b", "mailboxes/c"):
                    was = len(first.calls), len(second.calls)
                    for _ in range(5):
                        await each_method(mailbox)
                    got = len(first.calls) - was[0], len(second.calls) - was[1]
                    # Its throttling and provider session live on the replica that has it.
                    assert sorted(got) == [0, 20], (mailbox, got)
        finally:
            await reconciler.close()
            await engine.dispose()


async def test_sessions_complete_while_a_mail_connector_replica_is_gone(
    nats_server: NatsServer, engine_url: str
) -> None:
    first, second = MailPeer(), MailPeer()
    others = (CrmPeer(), _replica("mapping"), LinkerPeer())
    keys = (TEST_IDENTITY_KEY,)
    async with (
        serving_replicas(first, second, *others, identity_keys=keys) as replicas,
        reconciler_in_process(
            nats_server.url,
            engine_url,
            replicas.addresses,
            peer_timeout=3.0,
            deadline_seconds=10.0,
            lease_ttl_seconds=2.0,
            busy_retry_seconds=0.1,
        ) as running,
    ):
        await add_mailbox(running.stub)
        await running.consumer.start()

        async def session() -> rres.Session:
            requested = await running.stub.RequestSession(
                api.RequestSessionRequest(
                    mailbox="mailboxes/demo", trigger=res.SESSION_TRIGGER_FORCE
                )
            )
            timeout = duration_pb2.Duration(seconds=10)
            waited = await running.stub.WaitSession(
                api.WaitSessionRequest(name=requested.session.name, timeout=timeout)
            )
            return waited.session

        # Each session lists the mailbox three times (one per two-way pair), on the replica
        # that has the mailbox.
        assert (await session()).state == rres.SESSION_STATE_COMPLETED
        holder, other = (first, second) if first.received("ListChanges") else (second, first)
        assert len(holder.received("ListChanges")) == 3
        assert not other.received("ListChanges")

        # The mailbox's replica stops: the other takes its sessions, and none fails.
        await (replicas.one if holder is first else replicas.two).stop(replicas.service)
        for _ in range(3):
            done = await session()
            assert done.state == rres.SESSION_STATE_COMPLETED, done.failure_reason
        assert len(other.received("ListChanges")) == 9
