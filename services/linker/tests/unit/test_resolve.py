from __future__ import annotations

import asyncio

import pytest

from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.memory import InMemoryCrm, InMemoryLinkerStore
from concord_linker.domain.model import (
    Account,
    AutoResolvePolicy,
    LinkedRecord,
    Opportunity,
    Outcome,
    Participant,
    Person,
    Role,
    UnknownAddressAction,
)
from concord_linker.domain.service import Linker, idempotency_key
from concord_linker.domain.signature import Signature

pytestmark = pytest.mark.unit

RULES = PublicSuffixRules()
USER = "005USER"
ORG = "demo"
CREATE_LEAD = AutoResolvePolicy(UnknownAddressAction.CREATE_LEAD)
CREATE_CONTACT = AutoResolvePolicy(UnknownAddressAction.CREATE_CONTACT)
CREATE_ALL = AutoResolvePolicy(UnknownAddressAction.CREATE_CONTACT, True)


def acme_crm() -> InMemoryCrm:
    crm = InMemoryCrm(RULES)
    crm.accounts += [
        Account("001ACME", "Acme", "https://www.acme.co.uk", "2026-01-01T00:00:00Z"),
        Account("001GLOBEX", "Globex", "globex.com", "2026-01-01T00:00:00Z"),
    ]
    crm.people += [
        Person("Contact", "003ANN", "Ann Smith", "ann@mail.acme.co.uk", "2026-01-02", "001ACME"),
        Person("Lead", "00QANN", "Ann Smith", "ann@mail.acme.co.uk", "2026-09-01"),
        Person("Lead", "00QBOB", "Bob Jones", "bob@globex.com", "2026-01-01"),
        Person("Contact", "003GUS", "Gus Globex", "gus@globex.com", "2026-01-01", "001GLOBEX"),
    ]
    return crm


def linker(crm: InMemoryCrm, store: InMemoryLinkerStore | None = None) -> Linker:
    return Linker(store or InMemoryLinkerStore(), crm, RULES, claim_poll_seconds=0.001)


def p(email: str, role: Role = Role.TO_RECIPIENT, name: str = "") -> Participant:
    return Participant(email, name, role)


async def test_contact_before_lead_and_account_as_what() -> None:
    crm = acme_crm()
    got = await linker(crm).resolve(ORG, USER, [p("Ann@Mail.Acme.co.uk", Role.SENDER)])
    assert got.who == LinkedRecord("Contact", "003ANN", "Ann Smith")
    assert got.what == LinkedRecord("Account", "001ACME", "Acme")
    (decision,) = got.decisions
    assert decision.outcome == Outcome.MATCHED_CONTACT
    assert "Contact preferred over 1 Lead" in decision.explanation
    assert "Account of Contact Ann Smith" in got.what_explanation
    assert "owns no open Opportunity" in got.what_explanation


async def test_several_contacts_most_recently_modified_then_lowest_id() -> None:
    crm = InMemoryCrm(RULES)
    crm.people += [
        Person("Contact", "003B", "Old", "x@acme.com", "2026-01-01T00:00:00Z"),
        Person("Contact", "003C", "New", "x@acme.com", "2026-05-01T00:00:00Z"),
        Person("Contact", "003A", "New too", "x@acme.com", "2026-05-01T00:00:00Z"),
    ]
    got = await linker(crm).resolve(ORG, USER, [p("x@acme.com")])
    assert got.who is not None
    assert got.who.id == "003A"
    assert got.decisions[0].outcome == Outcome.AMBIGUOUS
    assert "3 matches, most recently modified taken (ties: lowest Id)" in (
        got.decisions[0].explanation
    )


async def test_converted_leads_are_not_matched() -> None:
    crm = acme_crm()
    crm.converted_lead_ids.add("00QBOB")
    got = await linker(crm).resolve(ORG, USER, [p("bob@globex.com")])
    assert got.who is None
    assert got.decisions[0].outcome == Outcome.UNRESOLVED


async def test_who_is_one_record_and_relations_name_everyone_once() -> None:
    crm = acme_crm()
    participants = [
        p("me@myco.example", Role.SENDER),
        p("bob@globex.com", Role.TO_RECIPIENT),
        p("gus@globex.com", Role.CC_RECIPIENT),
        p("ann@mail.acme.co.uk", Role.CC_RECIPIENT),
        p("GUS@globex.com", Role.BCC_RECIPIENT),
    ]
    got = await linker(crm).resolve(ORG, USER, participants)
    # Contacts before Leads, then by role: Gus (cc) beats Ann (cc, later) and Bob (a Lead).
    assert got.who is not None
    assert got.who.id == "003GUS"
    assert [r.id for r in got.relations] == ["00QBOB", "003GUS", "003ANN"]
    assert [d.outcome for d in got.decisions] == [
        Outcome.UNRESOLVED,
        Outcome.MATCHED_LEAD,
        Outcome.MATCHED_CONTACT,
        Outcome.MATCHED_CONTACT,
        Outcome.MATCHED_CONTACT,
    ]
    assert got.what is not None
    assert got.what.id == "001GLOBEX"
    assert crm.calls["create"] == 0


async def test_what_is_the_users_most_recently_active_open_opportunity() -> None:
    crm = acme_crm()
    crm.opportunities += [
        Opportunity("006OLD", "Old deal", "001ACME", USER, last_activity="2026-01-01"),
        Opportunity("006NEW", "New deal", "001ACME", USER, last_activity="2026-06-01"),
        Opportunity("006CLOSED", "Won", "001ACME", USER, True, last_activity="2026-09-01"),
        Opportunity("006OTHER", "Theirs", "001ACME", "005OTHER", last_activity="2026-10-01"),
    ]
    got = await linker(crm).resolve(ORG, USER, [p("ann@mail.acme.co.uk")])
    assert got.what == LinkedRecord("Opportunity", "006NEW", "New deal")
    assert "most recently active, 2 open" in got.what_explanation


async def test_a_lead_who_gets_no_what() -> None:
    got = await linker(acme_crm()).resolve(ORG, USER, [p("bob@globex.com")])
    assert got.who is not None
    assert got.who.sobject_type == "Lead"
    assert got.what is None
    assert "Lead" in got.what_explanation


async def test_account_by_registrable_domain_when_nobody_matched() -> None:
    crm = acme_crm()
    got = await linker(crm).resolve(ORG, USER, [p("new.person@eu.mail.acme.co.uk")])
    assert got.who is None
    assert got.what == LinkedRecord("Account", "001ACME", "Acme")
    assert "Account by domain acme.co.uk (website www.acme.co.uk)" in got.what_explanation


async def test_account_by_the_domain_of_its_contacts() -> None:
    crm = InMemoryCrm(RULES)
    crm.accounts.append(Account("001INIT", "Initech", ""))
    crm.people.append(Person("Contact", "003P", "Peter", "peter@initech.com", "", "001INIT"))
    got = await linker(crm).resolve(ORG, USER, [p("bill@initech.com")])
    assert got.what is not None
    assert got.what.id == "001INIT"
    assert "Contact Peter at initech.com" in got.what_explanation


async def test_free_mail_never_maps_to_an_account() -> None:
    crm = InMemoryCrm(RULES)
    crm.accounts.append(Account("001G", "Google", "gmail.com"))
    got = await linker(crm).resolve(ORG, USER, [p("someone@gmail.com")], CREATE_ALL)
    assert got.what is None
    assert [c.sobject_type for c in got.created] == ["Contact"]
    assert "AccountId" not in crm.creates[0][1]
    assert "free-mail" in got.decisions[0].explanation


async def test_blacklists_org_user_and_request_apply_at_the_next_call() -> None:
    crm = acme_crm()
    store = InMemoryLinkerStore()
    subject = linker(crm, store)
    people = [p("ann@mail.acme.co.uk"), p("gus@globex.com"), p("bob@globex.com")]
    first = await subject.resolve(ORG, USER, people)
    assert len(first.relations) == 3
    await store.add_blacklist_entry(ORG, "", "acme.co.uk")  # org-wide, covers mail.acme.co.uk
    await store.add_blacklist_entry(ORG, USER, "GUS@globex.com")
    await store.add_blacklist_entry(ORG, "005SOMEONE_ELSE", "bob@globex.com")
    second = await subject.resolve(ORG, USER, people, blacklist=["nobody@nowhere.org"])
    assert [d.outcome for d in second.decisions] == [
        Outcome.BLACKLISTED,
        Outcome.BLACKLISTED,
        Outcome.MATCHED_LEAD,
    ]
    assert "'acme.co.uk'" in second.decisions[0].explanation
    third = await subject.resolve(ORG, USER, people, blacklist=["globex.com"])
    assert third.who is None
    assert third.relations == ()
    await store.remove_blacklist_entry(ORG, "", "acme.co.uk")
    fourth = await subject.resolve(ORG, USER, people[:1])
    assert fourth.who is not None
    assert fourth.who.id == "003ANN"


async def test_blacklisted_addresses_are_never_created() -> None:
    crm = InMemoryCrm(RULES)
    got = await linker(crm).resolve(
        ORG, USER, [p("x@competitor.com", name="X Y")], CREATE_ALL, blacklist=["competitor.com"]
    )
    assert got.created == ()
    assert crm.calls["create"] == 0


async def test_auto_resolving_is_off_by_default() -> None:
    crm = InMemoryCrm(RULES)
    got = await linker(crm).resolve(ORG, USER, [p("new@initech.com", name="New Person")])
    assert got.created == ()
    assert crm.calls["create"] == 0
    assert "auto-resolving is off" in got.decisions[0].explanation


async def test_create_lead_with_name_from_display_name_and_company_from_account() -> None:
    crm = acme_crm()
    got = await linker(crm).resolve(
        ORG, USER, [p("carol@acme.co.uk", Role.SENDER, '"Carol\x07 Danvers"')], CREATE_LEAD
    )
    ((sobject_type, fields),) = crm.creates
    assert sobject_type == "Lead"
    assert (fields["FirstName"], fields["LastName"], fields["Company"]) == (
        "Carol",
        "Danvers",
        "Acme",
    )
    assert fields["Email"] == "carol@acme.co.uk"
    assert fields["Description"].startswith("Created by Concord: unknown address")
    assert got.who is not None
    assert got.who.sobject_type == "Lead"
    assert got.decisions[0].outcome == Outcome.CREATED_LEAD
    assert got.created == (got.who,)


async def test_create_contact_with_signature_and_account_from_corporate_domain() -> None:
    crm = InMemoryCrm(RULES)
    signature = Signature(name="Dana Scully", title="Special Agent", company="FBI Labs")
    got = await linker(crm).resolve(
        ORG,
        USER,
        [p("dana@hq.fbi-example.co.uk", Role.SENDER), p("fox@fbi-example.co.uk")],
        CREATE_ALL,
        signatures={"dana@hq.fbi-example.co.uk": signature},
    )
    assert [c.sobject_type for c in got.created] == ["Account", "Contact", "Contact"]
    account_fields = crm.creates[0][1]
    assert account_fields["Name"] == "FBI Labs"
    assert account_fields["Website"] == "fbi-example.co.uk"
    dana = crm.creates[1][1]
    assert (dana["FirstName"], dana["LastName"], dana["Title"]) == (
        "Dana",
        "Scully",
        "Special Agent",
    )
    fox = crm.creates[2][1]
    assert (fox["LastName"], fox["AccountId"]) == ("fox", dana["AccountId"])
    assert got.what is not None
    assert got.what.sobject_type == "Account"
    # The Account was created once, for both.
    assert sum(1 for t, _ in crm.creates if t == "Account") == 1


async def test_same_unknown_address_twice_in_one_activity_is_one_record() -> None:
    crm = InMemoryCrm(RULES)
    got = await linker(crm).resolve(
        ORG,
        USER,
        [p("z@initech.com", Role.SENDER), p("Z@initech.com", Role.CC_RECIPIENT)],
        CREATE_CONTACT,
    )
    assert len(crm.creates) == 1
    assert len(got.relations) == 1


async def test_two_racing_sessions_create_one_record() -> None:
    crm = InMemoryCrm(RULES, latency=0.02)
    store = InMemoryLinkerStore()
    one, two = linker(crm, store), linker(crm, store)
    people = [p("race@initech.com", Role.SENDER, "Race Condition")]
    first, second = await asyncio.gather(
        one.resolve(ORG, USER, people, CREATE_CONTACT),
        two.resolve(ORG, USER, people, CREATE_CONTACT),
    )
    assert len(crm.creates) == 1
    assert first.who == second.who
    assert first.who is not None
    outcomes = sorted([first.decisions[0].outcome, second.decisions[0].outcome])
    assert outcomes == [Outcome.MATCHED_CONTACT, Outcome.CREATED_CONTACT]
    # The next session finds it in the CRM and creates nothing.
    third = await one.resolve(ORG, USER, people, CREATE_CONTACT)
    assert third.decisions[0].outcome == Outcome.MATCHED_CONTACT
    assert len(crm.creates) == 1


async def test_a_claim_left_by_a_crashed_session_is_taken_over_with_the_same_key() -> None:
    crm = InMemoryCrm(RULES)
    store = InMemoryLinkerStore()
    key = idempotency_key(ORG, "address:lost@initech.com")
    await store.claim_creation(ORG, "address:lost@initech.com", key)
    impatient = Linker(store, crm, RULES, claim_wait_seconds=0.01, claim_poll_seconds=0.001)
    waiting = await impatient.resolve(ORG, USER, [p("lost@initech.com")], CREATE_CONTACT)
    assert waiting.decisions[0].outcome == Outcome.UNRESOLVED
    assert "another session" in waiting.decisions[0].explanation
    taking_over = Linker(store, crm, RULES, claim_stale_seconds=0.0)
    got = await taking_over.resolve(ORG, USER, [p("lost@initech.com")], CREATE_CONTACT)
    assert got.decisions[0].outcome == Outcome.CREATED_CONTACT
    assert crm.calls["create"] == 1


async def test_a_failed_create_releases_its_claim() -> None:
    crm = InMemoryCrm(RULES)
    store = InMemoryLinkerStore()

    async def refuse(*args: object) -> str:
        raise RuntimeError("validation rule")

    crm.create = refuse  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await linker(crm, store).resolve(ORG, USER, [p("v@initech.com")], CREATE_CONTACT)
    assert store.claims == {}


async def test_invalid_addresses_rooms_and_decisions_are_recorded() -> None:
    store = InMemoryLinkerStore()
    got = await linker(acme_crm(), store).resolve(
        ORG,
        USER,
        [p("ann@mail.acme.co.uk"), p("bad@@x"), p("room1@acme.co.uk", Role.RESOURCE)],
    )
    assert [d.outcome for d in got.decisions] == [
        Outcome.MATCHED_CONTACT,
        Outcome.UNRESOLVED,
        Outcome.UNRESOLVED,
    ]
    assert "not a valid email address" in got.decisions[1].explanation
    assert store.decisions[(ORG, "ann@mail.acme.co.uk")].record_id == "003ANN"
    assert store.decisions[(ORG, "room1@acme.co.uk")].outcome == Outcome.UNRESOLVED


async def test_one_crm_call_finds_everyone() -> None:
    crm = acme_crm()
    many = [p(f"person{i}@example{i}.com") for i in range(300)] + [p("ann@mail.acme.co.uk")]
    await linker(crm).resolve(ORG, USER, many)
    assert crm.calls["people_by_emails"] == 1


async def test_enormous_recipient_lists_are_linked_by_their_first_addresses() -> None:
    crm = acme_crm()
    many = [p(f"person{i}@example{i}.com", Role.CC_RECIPIENT) for i in range(600)]
    many.append(p("ann@mail.acme.co.uk", Role.SENDER))
    got = await Linker(InMemoryLinkerStore(), crm, RULES, max_addresses=100).resolve(
        ORG, USER, many
    )
    assert got.who is not None
    assert got.who.id == "003ANN"
    skipped = [d for d in got.decisions if "beyond the first 100" in d.explanation]
    assert len(skipped) == 501
    assert len(got.decisions) == 601


async def test_a_matched_contact_without_account_gets_its_domains_account() -> None:
    crm = acme_crm()
    crm.people += [
        Person("Contact", "003LONE", "Lone Ranger", "lone@acme.co.uk", "2026-01-01"),
        Person("Contact", "003NEW", "New Co", "ceo@newco.com", "2026-01-01"),
        Person("Contact", "003FREE", "Free Mailer", "free@gmail.com", "2026-01-01"),
    ]
    people = [p("lone@acme.co.uk"), p("ceo@newco.com"), p("free@gmail.com")]
    off = await linker(crm).resolve(ORG, USER, people)
    assert off.created == ()
    assert crm.calls["attach_to_account"] == 0
    got = await linker(crm).resolve(ORG, USER, people, CREATE_ALL)
    assert [(c.sobject_type, c.name) for c in got.created] == [("Account", "Newco")]
    assert "given Account Acme (by domain acme.co.uk)" in got.decisions[0].explanation
    assert "created from corporate domain newco.com" in got.decisions[1].explanation
    assert "given Account" not in got.decisions[2].explanation
    assert crm.calls["attach_to_account"] == 2
    accounts = {p.id: p.account_id for p in crm.people}
    assert accounts["003LONE"] == "001ACME"
    assert accounts["003NEW"] == got.created[0].id
    assert accounts["003FREE"] == ""
    assert got.what == LinkedRecord("Account", "001ACME", "Acme")
