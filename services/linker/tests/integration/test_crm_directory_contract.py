"""One contract for every `CrmDirectory`: the in-memory one the unit tests and the benchmark
use, and the gRPC one over crm-connector (here a fake crm-connector served in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from concord.crm.v1 import crm_connector_service_pb2_grpc as crm_grpc
from concord_linker.adapters.crm_cache import CachingCrmDirectory
from concord_linker.adapters.crm_grpc import GrpcCrmDirectory
from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.memory import InMemoryCrm
from concord_linker.domain.model import Account, Case, Opportunity, Person
from concord_linker.domain.ports import CrmDirectory
from concord_testing.peers import CrmPeer
from concord_testing.peers import crm_record as record

pytestmark = pytest.mark.integration

RULES = PublicSuffixRules()
ORG = "demo"
ACCOUNTS = [
    Account("001ACME", "Acme", "https://www.acme.co.uk/", "2026-01-01T00:00:00Z"),
    Account("001INIT", "Initech Ltd", "", "2026-01-01T00:00:00Z"),
]
PEOPLE = [
    Person("Contact", "003ANN", "Ann Smith", "Ann@Mail.Acme.co.uk", "2026-01-01", "001ACME"),
    Person("Contact", "003PET", "Peter Gibbons", "peter@initech.com", "2026-01-01", "001INIT"),
    Person("Lead", "00QBOB", "Bob Jones", "bob@globex.com", "2026-01-01", company="Globex"),
    Person("Lead", "00QOLD", "Old Lead", "old@acme.co.uk", "2026-01-01"),
]
CONVERTED = {"00QOLD"}
OPPORTUNITIES = [
    Opportunity("006MINE", "Renewal", "001ACME", "005U", False, "2026-05-01"),
    Opportunity("006THEIRS", "Upsell", "001ACME", "005X", False, "2026-05-01"),
    Opportunity("006WON", "Won", "001ACME", "005U", True, "2026-05-01"),
]
CASES = [
    Case("500A", "00001026", "Broken", account_id="001ACME"),
    Case("500B", "00001027", "Fixed", account_id="001ACME", is_closed=True),
    Case("500C", "00001028", "Peter's", contact_id="003PET"),
]


def seed_fake(fake: CrmPeer) -> None:
    for a in ACCOUNTS:
        fake.add(
            record(
                "Account", a.id, Name=a.name, Website=a.website, LastModifiedDate=a.last_modified
            )
        )
    for p in PEOPLE:
        fields: dict[str, Any] = {
            "Name": p.name,
            "Email": p.email,
            "LastModifiedDate": p.last_modified,
        }
        if p.sobject_type == "Contact":
            account = next(a for a in ACCOUNTS if a.id == p.account_id)
            fields |= {"AccountId": p.account_id, "Account": {"Name": account.name}}
        else:
            fields |= {"Company": p.company, "IsConverted": p.id in CONVERTED}
        fake.add(record(p.sobject_type, p.id, **fields))
    for o in OPPORTUNITIES:
        fake.add(
            record("Opportunity", o.id, Name=o.name, AccountId=o.account_id, OwnerId=o.owner_id,
                   IsClosed=o.is_closed, LastActivityDate=o.last_activity)
        )  # fmt: skip
    for c in CASES:
        fake.add(
            record("Case", c.id, CaseNumber=c.case_number, Subject=c.subject,
                   AccountId=c.account_id, ContactId=c.contact_id, IsClosed=c.is_closed)
        )  # fmt: skip


@pytest.fixture(params=["memory", "grpc", "cached-grpc"])
async def directory(
    request: pytest.FixtureRequest,
    fake_crm: CrmPeer,
    crm_stub: crm_grpc.CrmConnectorServiceStub,
) -> AsyncIterator[CrmDirectory]:
    if request.param == "memory":
        memory = InMemoryCrm(RULES, list(PEOPLE), list(ACCOUNTS), list(OPPORTUNITIES), list(CASES))
        memory.converted_lead_ids |= CONVERTED
        yield memory
        return
    seed_fake(fake_crm)
    grpc_directory = GrpcCrmDirectory(crm_stub, RULES, timeout_seconds=5)
    yield grpc_directory if request.param == "grpc" else CachingCrmDirectory(grpc_directory)


async def test_people_by_emails_ignores_case_and_converted_leads(directory: CrmDirectory) -> None:
    got = await directory.people_by_emails(
        ORG, ["ann@mail.acme.co.uk", "bob@globex.com", "old@acme.co.uk", "nobody@x.com"]
    )
    assert sorted((p.sobject_type, p.id, p.email) for p in got) == [
        ("Contact", "003ANN", "ann@mail.acme.co.uk"),
        ("Lead", "00QBOB", "bob@globex.com"),
    ]
    ann = next(p for p in got if p.id == "003ANN")
    assert (ann.account_id, ann.account_name, ann.name) == ("001ACME", "Acme", "Ann Smith")


async def test_accounts_by_domains_by_website_and_by_contacts(directory: CrmDirectory) -> None:
    got = await directory.accounts_by_domains(ORG, ["acme.co.uk", "initech.com", "globex.com"])
    evidence = sorted((m.domain, m.account.id, m.via) for m in got)
    assert ("acme.co.uk", "001ACME", "website") in evidence
    assert ("initech.com", "001INIT", "contact") in evidence
    assert not any(domain == "globex.com" for domain, _, _ in evidence)


async def test_accounts_by_ids(directory: CrmDirectory) -> None:
    got = await directory.accounts_by_ids(ORG, ["001INIT", "001NONE"])
    assert [(a.id, a.name) for a in got] == [("001INIT", "Initech Ltd")]


async def test_open_opportunities_by_owner(directory: CrmDirectory) -> None:
    mine = await directory.open_opportunities(ORG, ["001ACME"], "005U")
    assert [o.id for o in mine] == ["006MINE"]
    everyone = await directory.open_opportunities(ORG, ["001ACME"], "")
    assert sorted(o.id for o in everyone) == ["006MINE", "006THEIRS"]


async def test_cases_by_number_or_open_on_account_or_contact(directory: CrmDirectory) -> None:
    by_number = await directory.cases(ORG, case_numbers=["00001027"])
    assert [c.id for c in by_number] == ["500B"]
    related = await directory.cases(ORG, account_ids=["001ACME"], contact_ids=["003PET"])
    assert sorted(c.id for c in related) == ["500A", "500C"]


async def test_search_by_name_and_company(directory: CrmDirectory) -> None:
    people, accounts = await directory.search(ORG, ["Initech"])
    assert [a.id for a in accounts] == ["001INIT"]
    people, _ = await directory.search(ORG, ["Globex"])
    assert [p.id for p in people] == ["00QBOB"]


async def test_create_is_idempotent_by_key_and_attach_sets_the_account(
    directory: CrmDirectory,
) -> None:
    fields = {"LastName": "New", "Email": "new@initech.com"}
    first = await directory.create(ORG, "Contact", fields, "key-1")
    assert await directory.create(ORG, "Contact", fields, "key-1") == first
    (created,) = await directory.people_by_emails(ORG, ["new@initech.com"])
    assert created.id == first
    await directory.attach_to_account(ORG, created, "001INIT")
    (attached,) = await directory.people_by_emails(ORG, ["new@initech.com"])
    assert attached.account_id == "001INIT"
