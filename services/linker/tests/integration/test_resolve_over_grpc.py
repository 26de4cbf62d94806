"""The linker served over gRPC, its CRM adapter talking to a fake crm-connector in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.common.v1 import resources_pb2, settings_pb2
from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord.linker.v1 import linker_service_pb2 as pb
from concord.linker.v1 import linker_service_pb2_grpc as pb_grpc
from concord_linker.__main__ import MIGRATIONS, SERVICE_NAME
from concord_linker.adapters.crm_grpc import GrpcCrmDirectory
from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.store import SqlLinkerStore
from concord_linker.adapters.tables import resolutions
from concord_linker.api.servicer import LinkerServicer
from concord_linker.domain.model import AutoResolvePolicy, Participant, UnknownAddressAction
from concord_linker.domain.service import Linker
from concord_rpc import RpcFailure, from_rpc_error
from concord_store import create_engine, migrate
from concord_testing import serving_in_process
from concord_testing.peers import CrmPeer
from concord_testing.peers import crm_record as record

pytestmark = pytest.mark.integration

Stub = pb_grpc.LinkerServiceStub
USER = "005USER"
EMAIL = resources_pb2.OBJECT_KIND_EMAIL
SENDER = resources_pb2.PARTICIPANT_ROLE_SENDER
TO = resources_pb2.PARTICIPANT_ROLE_TO_RECIPIENT
RULES = PublicSuffixRules()


def seed(crm: CrmPeer) -> None:
    crm.add(*[
        record("Account", "001ACME", Name="Acme", Website="https://www.acme.co.uk"),
        record(
            "Contact",
            "003ANN",
            Name="Ann Smith",
            Email="Ann@mail.acme.co.uk",
            AccountId="001ACME",
            LastModifiedDate="2026-01-01T00:00:00Z",
        ),
        record("Lead", "00QANN", Name="Ann Smith", Email="ann@mail.acme.co.uk", IsConverted=False),
        record("Lead", "00QOLD", Name="Old Lead", Email="old@acme.co.uk", IsConverted=True),
        record(
            "Opportunity",
            "006DEAL",
            Name="Acme renewal",
            AccountId="001ACME",
            OwnerId=USER,
            IsClosed=False,
            LastActivityDate="2026-05-01",
        ),
        record("Opportunity", "006WON", Name="Won", AccountId="001ACME", OwnerId=USER,
               IsClosed=True),
        record(
            "Case", "500C", CaseNumber="00001026", Subject="Broken widget", AccountId="001ACME",
            IsClosed=False,
        ),
    ])  # fmt: skip


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path}/linker.db")
    await migrate(engine, MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def linker_stub(
    engine: AsyncEngine, crm_stub: crm_grpc.CrmConnectorServiceStub
) -> AsyncIterator[Stub]:
    linker = Linker(SqlLinkerStore(engine), GrpcCrmDirectory(crm_stub, RULES), RULES)
    servicer = LinkerServicer(linker)
    async with serving_in_process(
        "linker", SERVICE_NAME, lambda s: pb_grpc.add_LinkerServiceServicer_to_server(servicer, s)
    ) as chan:
        yield pb_grpc.LinkerServiceStub(chan)


def request(
    *participants: resources_pb2.Participant, **kwargs: object
) -> pb.ResolveParticipantsRequest:
    return pb.ResolveParticipantsRequest(
        org="orgs/demo",
        user_id=USER,
        kind=EMAIL,
        participants=participants,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_resolve_over_grpc_explains_every_decision(
    linker_stub: Stub, fake_crm: CrmPeer, engine: AsyncEngine
) -> None:
    seed(fake_crm)
    got = await linker_stub.ResolveParticipants(
        request(
            resources_pb2.Participant(email="ann@mail.acme.co.uk", role=SENDER),
            resources_pb2.Participant(email="old@acme.co.uk", role=TO),
            resources_pb2.Participant(email="spam@junk.example.com", role=TO),
            policy=pb.ResolutionPolicy(blacklist=["example.com"]),
        )
    )
    assert (got.who.sobject_type, got.who.id, got.who.name) == ("Contact", "003ANN", "Ann Smith")
    assert (got.what.sobject_type, got.what.id) == ("Opportunity", "006DEAL")
    assert "most recently active" in got.what_explanation
    assert [r.id for r in got.relations] == ["003ANN"]
    assert [r.outcome for r in got.resolutions] == [
        pb.RESOLUTION_OUTCOME_MATCHED_CONTACT,
        pb.RESOLUTION_OUTCOME_UNRESOLVED,
        pb.RESOLUTION_OUTCOME_BLACKLISTED,
    ]
    assert all(r.explanation for r in got.resolutions)
    assert got.resolutions[0].record.id == "003ANN"
    # One Search for the people, one query for the Opportunities: the Account came with them.
    assert sorted(fake_crm.methods()) == ["QueryRecords", "Search"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(resolutions))).mappings().all()
    stored = {row["address"]: row for row in rows}
    assert stored["ann@mail.acme.co.uk"]["who_id"] == "003ANN"
    assert stored["spam@junk.example.com"]["outcome"] == "BLACKLISTED"
    assert "Contact by email" in stored["ann@mail.acme.co.uk"]["explanation"]


async def test_auto_create_over_grpc_upserts_with_the_idempotency_key(
    linker_stub: Stub, fake_crm: CrmPeer
) -> None:
    seed(fake_crm)
    policy = pb.ResolutionPolicy(
        auto_resolve=settings_pb2.AutoResolve(
            unknown_address_action=settings_pb2.UNKNOWN_ADDRESS_ACTION_CREATE_CONTACT,
            create_accounts_from_domain=True,
        )
    )
    participant = resources_pb2.Participant(
        email="new@initech.com", display_name="Peter Gibbons", role=SENDER
    )
    missing_id = await _failure(
        linker_stub.ResolveParticipants(request(participant, policy=policy))
    )
    assert missing_id.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in missing_id.field_violations] == ["request_id"]
    got = await linker_stub.ResolveParticipants(
        request(participant, policy=policy, request_id="r1")
    )
    assert [c.sobject_type for c in got.created] == ["Account", "Contact"]
    assert got.resolutions[0].outcome == pb.RESOLUTION_OUTCOME_CREATED_CONTACT
    assert "Account created from corporate domain initech.com" in got.resolutions[0].explanation
    writes = [w for r in fake_crm.received("ApplyBatch") for w in r.writes]
    assert all(w.link_id for w in writes)
    assert {w.sobject_type for w in writes} == {"Account", "Contact"}
    again = await linker_stub.ResolveParticipants(
        request(participant, policy=policy, request_id="r2")
    )
    assert again.resolutions[0].outcome == pb.RESOLUTION_OUTCOME_MATCHED_CONTACT
    assert again.created == []


async def test_crm_connector_down_is_unavailable_naming_the_peer(
    linker_stub: Stub, fake_crm: CrmPeer
) -> None:
    fake_crm.down = True
    got = await _failure(
        linker_stub.ResolveParticipants(request(resources_pb2.Participant(email="a@acme.co.uk")))
    )
    assert got.code == grpc.StatusCode.UNAVAILABLE


async def test_initial_search_over_grpc(linker_stub: Stub, fake_crm: CrmPeer) -> None:
    seed(fake_crm)
    email = resources_pb2.EmailItem(
        subject="Re: Case 00001026 widget",
        from_address=resources_pb2.EmailAddress(address="ann@mail.acme.co.uk", display_name="Ann"),
        body_text="It broke again.\n\n-- \nAnn Smith\nHead of IT, Acme Ltd\n",
    )
    got = await linker_stub.InitialSearch(
        pb.InitialSearchRequest(org="orgs/demo", user_id=USER, email=email)
    )
    kinds = [(r.sobject_type, r.id) for r in got.records]
    assert kinds[0] == ("Contact", "003ANN")
    assert ("Case", "500C") in kinds
    assert ("Opportunity", "006DEAL") in kinds
    assert ("Account", "001ACME") in kinds
    assert all(r.explanation for r in got.records)
    assert [r.score for r in got.records] == sorted((r.score for r in got.records), reverse=True)
    only = await linker_stub.InitialSearch(
        pb.InitialSearchRequest(
            org="orgs/demo", user_id=USER, email=email, sobject_types=["Case"], page_size=1
        )
    )
    assert [(r.sobject_type, r.explanation) for r in only.records] == [
        ("Case", "Case number 00001026 in the subject")
    ]


async def test_two_sessions_racing_over_sql_create_one_record(
    store_url: str, crm_stub: crm_grpc.CrmConnectorServiceStub, fake_crm: CrmPeer
) -> None:
    engines = [create_engine(store_url), create_engine(store_url)]
    await migrate(engines[0], MIGRATIONS)
    try:
        linkers = [
            Linker(
                SqlLinkerStore(e), GrpcCrmDirectory(crm_stub, RULES), RULES, claim_poll_seconds=0.01
            )
            for e in engines
        ]
        policy = AutoResolvePolicy(UnknownAddressAction.CREATE_LEAD)
        people = [Participant("race@initech.example", "Race Condition")]
        results = await asyncio.gather(
            *(linker.resolve("demo", USER, people, policy) for linker in linkers * 3)
        )
        assert fake_crm.methods().count("ApplyBatch") == 1
        assert len({r.who for r in results}) == 1
        assert sum(len(r.created) for r in results) == 1
    finally:
        for e in engines:
            await e.dispose()


async def test_blacklist_store_edits(engine: AsyncEngine) -> None:
    store = SqlLinkerStore(engine)
    assert await store.add_blacklist_entry("demo", "", "Competitor.com")
    assert not await store.add_blacklist_entry("demo", "", "competitor.com")
    assert await store.add_blacklist_entry("demo", "005U", "ann@x.org")
    assert await store.blacklist("demo", "005U") == {"competitor.com", "ann@x.org"}
    assert await store.blacklist("demo", "005V") == {"competitor.com"}
    assert await store.remove_blacklist_entry("demo", "", "competitor.com")
    assert not await store.remove_blacklist_entry("demo", "", "competitor.com")
    assert await store.blacklist("demo", "005U") == {"ann@x.org"}


async def _failure(call: Awaitable[object]) -> RpcFailure:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return from_rpc_error(err)
    raise AssertionError("the call succeeded")


async def test_contact_without_account_is_attached_over_grpc(
    linker_stub: Stub, fake_crm: CrmPeer
) -> None:
    seed(fake_crm)
    fake_crm.add(record("Contact", "003LONE", Name="Lone", Email="lone@acme.co.uk"))
    policy = pb.ResolutionPolicy(
        auto_resolve=settings_pb2.AutoResolve(create_accounts_from_domain=True)
    )
    got = await linker_stub.ResolveParticipants(
        request(resources_pb2.Participant(email="lone@acme.co.uk"), policy=policy, request_id="r")
    )
    assert got.what.id == "006DEAL"
    assert "given Account Acme" in got.resolutions[0].explanation
    (update,) = [w for r in fake_crm.received("ApplyBatch") for w in r.writes]
    assert (update.operation, update.id) == (2, "003LONE")
    assert dict(update.fields) == {"AccountId": "001ACME"}


async def test_initial_search_validation_names_every_field(linker_stub: Stub) -> None:
    got = await _failure(
        linker_stub.InitialSearch(pb.InitialSearchRequest(org="demo", page_size=1000))
    )
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in got.field_violations] == [
        "org",
        "user_id",
        "email",
        "page_size",
    ]


async def test_control_characters_and_bad_addresses_do_not_fail_the_activity(
    linker_stub: Stub, fake_crm: CrmPeer
) -> None:
    seed(fake_crm)
    got = await linker_stub.ResolveParticipants(
        request(
            resources_pb2.Participant(
                email="ann@mail.acme.co.uk", display_name="Ann\x00\x1b[31m Smith", role=SENDER
            ),
            resources_pb2.Participant(email="broken@@acme", role=TO),
        )
    )
    assert got.who.id == "003ANN"
    assert got.resolutions[1].outcome == pb.RESOLUTION_OUTCOME_UNRESOLVED
    assert got.resolutions[1].explanation == "not a valid email address"
