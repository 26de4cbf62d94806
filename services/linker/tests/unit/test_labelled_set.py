"""Linking precision and recall on real mail, and what it costs in CRM calls.

The mail is the LKML corpus in tests/data/lkml (210 real list posts, real people at real
corporate domains; see tests/data/README.md). The org is seeded from the corpus itself,
deterministically: an Account for every other corporate domain, a Contact or a Lead for most
senders and recipients (some with two Contacts, to exercise the tie rule; some Leads
converted), open and closed Opportunities; the list hosts are on the org blacklist. The
expected links are derived from that seed by the documented rules, independently of the
linker's code, and compared with what it links.

Printed, in one run: precision and recall of the person links (WhoId + relations) and of WhatId,
resolutions per second, and CRM calls per email with the cache against the floor (an email that
brings an address or domain never seen before needs at least one call; none else does).
Part of `make test` (fails below the bars) and of `make bench` (which shows the figures).
"""

from __future__ import annotations

import email
import time
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path

import pytest

from concord_linker.adapters.crm_cache import CachingCrmDirectory
from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.memory import InMemoryCrm, InMemoryLinkerStore
from concord_linker.domain.model import Account, Opportunity, Participant, Person, Role
from concord_linker.domain.service import Linker

CORPUS = Path(__file__).resolve().parent.parent / "data" / "lkml" / "cur"
ORG, USER = "bench", "005BENCHUSER"
# Mailing-list hosts: every message goes to them; linking a list would be noise.
BLACKLIST = ["vger.kernel.org", "lists.infradead.org", "lists.ozlabs.org", "public.gmane.org"]
PRECISION_BAR, RECALL_BAR = 0.99, 0.95
RULES = PublicSuffixRules()

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Message:
    name: str
    participants: tuple[Participant, ...]


def corpus() -> list[Message]:
    messages = []
    for path in sorted(CORPUS.iterdir()):
        with path.open("rb") as file:
            parsed = email.message_from_binary_file(file)
        people: list[Participant] = []
        for header, role in (
            ("from", Role.SENDER),
            ("to", Role.TO_RECIPIENT),
            ("cc", Role.CC_RECIPIENT),
        ):
            for name, address in getaddresses([str(v) for v in parsed.get_all(header, [])]):
                if address:
                    people.append(Participant(address, name, role))
        messages.append(Message(path.name, tuple(people)))
    return messages


def blacklisted(address: str) -> bool:
    domain = address.lower().rsplit("@", 1)[-1]
    return any(domain == b or domain.endswith("." + b) for b in BLACKLIST)


def valid(address: str) -> bool:
    local, _, domain = address.partition("@")
    return bool(local) and "." in domain and " " not in address


@dataclass
class Seed:
    crm: InMemoryCrm
    # address → the record id the rules must pick (Contact newest, else Lead)
    expected_person: dict[str, str]
    # Contact id → Account id; Account id → the user's most recently active open Opportunity
    contact_account: dict[str, str]
    account_of_domain: dict[str, str]
    best_opportunity: dict[str, str]


def seed(messages: list[Message]) -> Seed:
    crm = InMemoryCrm(RULES)
    addresses = sorted(
        {
            p.email
            for m in messages
            for p in m.participants
            if valid(p.email) and not blacklisted(p.email)
        },
        key=str.lower,
    )
    domains = sorted(
        {
            d
            for a in addresses
            if (d := RULES.registrable_domain(a.rsplit("@", 1)[-1])) and not RULES.is_free_mail(d)
        }
    )
    account_of_domain: dict[str, str] = {}
    for index, domain in enumerate(domains):
        if index % 2 == 0:
            account_id = f"001{index:015d}"
            website = f"https://www.{domain}/" if index % 4 == 0 else domain
            crm.accounts.append(Account(account_id, domain.split(".")[0].title(), website))
            account_of_domain[domain] = account_id
    expected_person: dict[str, str] = {}
    contact_account: dict[str, str] = {}
    seen: set[str] = set()
    for index, address in enumerate(addresses):
        key = address.lower()
        if key in seen:
            continue  # the same address written in another case
        seen.add(key)
        domain = RULES.registrable_domain(key.rsplit("@", 1)[-1])
        account_id = account_of_domain.get(domain, "")
        kind = index % 6
        if kind == 0:
            continue  # unknown to the CRM
        if kind in (1, 2, 3):
            contact_id = f"003{index:015d}"
            # Addresses seeded in the case the corpus writes them: matching must ignore case.
            crm.people.append(
                Person("Contact", contact_id, address, address, "2026-01-01", account_id)
            )
            expected_person[key] = contact_id
            contact_account[contact_id] = account_id
            if kind == 3:
                newer = f"003{index + 500_000:015d}"
                crm.people.append(Person("Contact", newer, address, key, "2026-06-01", account_id))
                expected_person[key] = newer
                contact_account[newer] = account_id
        elif kind == 4:
            lead_id = f"00Q{index:015d}"
            crm.people.append(Person("Lead", lead_id, address, key, "2026-01-01"))
            expected_person[key] = lead_id
        else:
            converted = f"00Q{index:015d}"
            crm.people.append(Person("Lead", converted, address, key, "2026-01-01"))
            crm.converted_lead_ids.add(converted)
    best_opportunity: dict[str, str] = {}
    for index, account_id in enumerate(sorted(account_of_domain.values())):
        if index % 3 == 0:
            old, new = f"006{index:015d}", f"006{index + 500_000:015d}"
            crm.opportunities += [
                Opportunity(old, "Old", account_id, USER, last_activity="2025-01-01"),
                Opportunity(new, "New", account_id, USER, last_activity="2026-03-01"),
                Opportunity(
                    f"006{index + 700_000:015d}", "Won", account_id, USER, True, "2026-09-01"
                ),
                Opportunity(
                    f"006{index + 900_000:015d}", "Theirs", account_id, "005X", False, "2026-10-01"
                ),
            ]
            best_opportunity[account_id] = new
    return Seed(crm, expected_person, contact_account, account_of_domain, best_opportunity)


RANK = {Role.SENDER: 0, Role.TO_RECIPIENT: 1, Role.CC_RECIPIENT: 3}


def expected_links(message: Message, s: Seed) -> tuple[set[str], str | None]:
    """The relations and the WhatId the documented rules give, from the seed alone."""
    people = []
    for order, participant in enumerate(message.participants):
        key = participant.email.lower()
        if valid(key) and not blacklisted(key) and key in s.expected_person:
            people.append((RANK[participant.role], order, s.expected_person[key]))
    relations = {record for _, _, record in people}
    contacts = sorted(p for p in people if p[2].startswith("003"))
    ranked = contacts or sorted(people)
    if ranked and ranked[0][2].startswith("00Q"):
        return relations, None  # a Lead WhoId: no WhatId
    account = next((s.contact_account[c] for _, _, c in contacts if s.contact_account[c]), None)
    if account is None:
        ordered = sorted(
            (RANK[p.role], i, p.email.lower()) for i, p in enumerate(message.participants)
        )
        for _, _, key in ordered:
            if not valid(key) or blacklisted(key):
                continue
            domain = RULES.registrable_domain(key.rsplit("@", 1)[-1])
            if domain in s.account_of_domain:
                account = s.account_of_domain[domain]
                break
    if account is None:
        return relations, None
    return relations, s.best_opportunity.get(account, account)


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return corpus()


async def test_linking_precision_recall_and_crm_calls(messages: list[Message]) -> None:
    s = seed(messages)
    store = InMemoryLinkerStore()
    for entry in BLACKLIST:
        await store.add_blacklist_entry(ORG, "", entry)
    cached = CachingCrmDirectory(s.crm, ttl_seconds=3600)
    linker = Linker(store, cached, RULES)

    true_pos = false_pos = false_neg = 0
    what_right = what_wrong = what_missed = 0
    seen_keys: set[str] = set()
    floor = 0
    for message in messages:
        before = s.crm.total_calls
        got = await linker.resolve(ORG, USER, message.participants)
        keys = {
            k for p in message.participants if valid(k := p.email.lower()) and not blacklisted(k)
        }
        domains = {RULES.registrable_domain(k.rsplit("@", 1)[-1]) for k in keys}
        new = (keys | domains) - seen_keys
        seen_keys |= keys | domains
        floor += 1 if new else 0
        assert s.crm.total_calls - before <= 3
        want_relations, want_what = expected_links(message, s)
        have = {r.id for r in got.relations}
        true_pos += len(have & want_relations)
        false_pos += len(have - want_relations)
        false_neg += len(want_relations - have)
        have_what = got.what.id if got.what else None
        if have_what == want_what and want_what is not None:
            what_right += 1
        elif have_what is not None:
            what_wrong += 1
        elif want_what is not None:
            what_missed += 1
    calls_cached = s.crm.total_calls

    cold = InMemoryCrm(RULES, s.crm.people, s.crm.accounts, s.crm.opportunities)
    cold.converted_lead_ids = s.crm.converted_lead_ids
    uncached = Linker(store, cold, RULES)
    for message in messages:
        await uncached.resolve(ORG, USER, message.participants)

    rounds = 10
    warm_before = s.crm.total_calls
    started = time.perf_counter()
    for _ in range(rounds):
        for message in messages:
            await linker.resolve(ORG, USER, message.participants)
    per_second = rounds * len(messages) / (time.perf_counter() - started)
    warm_calls = s.crm.total_calls - warm_before

    precision = true_pos / max(1, true_pos + false_pos)
    recall = true_pos / max(1, true_pos + false_neg)
    what_precision = what_right / max(1, what_right + what_wrong)
    what_recall = what_right / max(1, what_right + what_wrong + what_missed)
    n = len(messages)
    print()
    print(f"linking: {n} LKML emails, {len(s.crm.people)} people, {len(s.crm.accounts)} Accounts")
    print(
        f"  person links: precision {precision:.4f}, recall {recall:.4f} "
        f"({true_pos} right, {false_pos} wrong, {false_neg} missed)"
    )
    print(
        f"  WhatId: precision {what_precision:.4f}, recall {what_recall:.4f} "
        f"({what_right} right, {what_wrong} wrong, {what_missed} missed)"
    )
    print(
        f"  CRM calls per email: {cold.total_calls / n:.2f} uncached, "
        f"{calls_cached / n:.3f} cached; floor {floor / n:.3f} "
        f"(cached/floor {calls_cached / max(1, floor):.2f}); "
        f"per 100 emails linked: {100 * calls_cached / n:.1f}"
    )
    print(
        f"  later sessions over the same mail (cache warm, within its TTL): "
        f"{warm_calls} CRM calls for {rounds * n} resolutions"
    )
    print(f"  resolutions per second (one core, warm cache, in-memory CRM): {per_second:.0f}")
    assert precision >= PRECISION_BAR
    assert recall >= RECALL_BAR
    assert what_precision >= PRECISION_BAR
