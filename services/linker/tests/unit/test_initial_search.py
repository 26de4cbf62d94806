from __future__ import annotations

import pytest

from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.memory import InMemoryCrm, InMemoryLinkerStore
from concord_linker.domain.model import (
    Account,
    Case,
    EmailContent,
    Opportunity,
    Participant,
    Person,
    Role,
)
from concord_linker.domain.service import Linker

pytestmark = pytest.mark.unit

RULES = PublicSuffixRules()
USER = "005USER"


def crm() -> InMemoryCrm:
    crm = InMemoryCrm(RULES)
    crm.accounts += [
        Account("001ACME", "Acme", "acme.co.uk"),
        Account("001INIT", "Initech Ltd", ""),
        Account("001GMAIL", "Gmail fans", "gmail.com"),
    ]
    crm.people += [
        Person("Contact", "003ANN", "Ann Smith", "ann@acme.co.uk", "2026-01-01", "001ACME"),
        Person("Lead", "00QBOB", "Bob Jones", "bob@globex.com", "2026-01-01"),
        Person("Contact", "003CAT", "Cat Lee", "cat@acme.co.uk", "2026-01-01", "001ACME"),
    ]
    crm.opportunities += [
        Opportunity("006MINE", "Acme renewal", "001ACME", USER),
        Opportunity("006THEIRS", "Acme upsell", "001ACME", "005OTHER"),
        Opportunity("006SHUT", "Old", "001ACME", USER, is_closed=True),
    ]
    crm.cases_ += [
        Case("500A", "00001026", "Broken widget", account_id="001ACME"),
        Case("500B", "00009999", "Closed one", account_id="001OTHER", is_closed=True),
    ]
    return crm


def email(**kwargs: object) -> EmailContent:
    defaults: dict[str, object] = {
        "subject": "Acme renewal: Case #00009999",
        "sender": Participant("ann@acme.co.uk", "Ann Smith", Role.SENDER),
        "recipients": (
            Participant("bob@globex.com", "", Role.TO_RECIPIENT),
            Participant("cat@acme.co.uk", "", Role.CC_RECIPIENT),
        ),
        "body_text": "Numbers attached.\n\n-- \nAnn Smith\nHead of Sales, Initech Ltd\n",
    }
    defaults.update(kwargs)
    return EmailContent(**defaults)  # type: ignore[arg-type]


async def search(directory: InMemoryCrm, content: EmailContent, **kwargs: object) -> list[str]:
    linker = Linker(InMemoryLinkerStore(), directory, RULES)
    found = await linker.initial_search("demo", USER, content, **kwargs)  # type: ignore[arg-type]
    return [f"{r.sobject_type}:{r.id}:{r.score:g}:{r.explanation}" for r in found]


async def test_related_records_ranked_with_why() -> None:
    got = await search(crm(), email())
    assert got == [
        "Opportunity:006MINE:115:open Opportunity you own on a related Account, named in the"
        " subject",
        "Contact:003ANN:100:sender's Contact (Contact by email)",
        "Account:001ACME:95:Account of Contact Ann Smith",
        "Case:500B:90:Case number 00009999 in the subject",
        "Opportunity:006THEIRS:75:open Opportunity on a related Account",
        "Lead:00QBOB:70:recipient's Lead (Lead by email)",
        "Contact:003CAT:60:cc recipient's Contact (Contact by email)",
        "Account:001INIT:50:Account matching the signature's company",
        "Case:500A:40:open Case of a related Contact or Account",
    ]
    assert not any("006SHUT" in line for line in got)


async def test_types_page_size_and_blacklist() -> None:
    only = await search(crm(), email(), sobject_types=["Contact"], page_size=1)
    assert only == ["Contact:003ANN:100:sender's Contact (Contact by email)"]
    blacklisted = await search(crm(), email(), blacklist=["acme.co.uk"], sobject_types=["Contact"])
    assert blacklisted == []


async def test_free_mail_senders_find_no_account_by_domain() -> None:
    content = email(
        subject="hello",
        sender=Participant("someone@gmail.com", "", Role.SENDER),
        recipients=(),
        body_text="hi",
    )
    assert await search(crm(), content) == []


async def test_signature_website_finds_the_account_of_a_free_mail_sender() -> None:
    content = email(
        subject="hello",
        sender=Participant("someone@gmail.com", "Some One", Role.SENDER),
        recipients=(),
        body_text="hi\n-- \nSome One\nhttps://www.acme.co.uk\n",
    )
    got = await search(crm(), content, sobject_types=["Account"])
    assert got == ["Account:001ACME:60:Account by domain acme.co.uk (website acme.co.uk)"]
