from __future__ import annotations

import pytest

from concord_linker.adapters.crm_cache import CachingCrmDirectory
from concord_linker.adapters.domain_rules import PublicSuffixRules
from concord_linker.adapters.memory import InMemoryCrm, InMemoryLinkerStore
from concord_linker.domain.model import (
    Account,
    AutoResolvePolicy,
    Opportunity,
    Participant,
    Person,
    Role,
    UnknownAddressAction,
)
from concord_linker.domain.service import Linker

pytestmark = pytest.mark.unit

RULES = PublicSuffixRules()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def seeded() -> InMemoryCrm:
    crm = InMemoryCrm(RULES)
    crm.accounts.append(Account("001ACME", "Acme", "acme.com"))
    crm.people.append(Person("Contact", "003ANN", "Ann", "ann@acme.com", "", "001ACME"))
    crm.opportunities.append(Opportunity("006D", "Deal", "001ACME", "005U"))
    return crm


async def test_repeated_activities_cost_no_further_calls_until_the_ttl() -> None:
    crm, clock = seeded(), Clock()
    cached = CachingCrmDirectory(crm, ttl_seconds=60, clock=clock)
    linker = Linker(InMemoryLinkerStore(), cached, RULES)
    people = [Participant("ann@acme.com", "", Role.SENDER), Participant("x@acme.com")]
    first = await linker.resolve("demo", "005U", people)
    calls = crm.total_calls
    for _ in range(20):
        assert await linker.resolve("demo", "005U", people) == first
    assert crm.total_calls == calls
    clock.now = 61
    await linker.resolve("demo", "005U", people)
    assert crm.total_calls == 2 * calls


async def test_only_missing_keys_are_fetched_and_orgs_are_apart() -> None:
    crm = seeded()
    cached = CachingCrmDirectory(crm)
    await cached.people_by_emails("demo", ["ann@acme.com"])
    got = await cached.people_by_emails("demo", ["ANN@acme.com", "new@acme.com"])
    assert [p.id for p in got] == ["003ANN"]
    assert crm.calls["people_by_emails"] == 2
    await cached.people_by_emails("other", ["ann@acme.com"])
    assert crm.calls["people_by_emails"] == 3
    assert [a.id for a in await cached.accounts_by_ids("demo", ["001ACME", "001NONE"])] == [
        "001ACME"
    ]
    await cached.accounts_by_ids("demo", ["001ACME", "001NONE"])
    assert crm.calls["accounts_by_ids"] == 1


async def test_what_the_linker_creates_is_found_at_once() -> None:
    crm = seeded()
    cached = CachingCrmDirectory(crm)
    linker = Linker(InMemoryLinkerStore(), cached, RULES)
    people = [Participant("new@acme.com", "New Person")]
    assert (await linker.resolve("demo", "005U", people)).who is None
    policy = AutoResolvePolicy(UnknownAddressAction.CREATE_CONTACT)
    created = await linker.resolve("demo", "005U", people, policy)
    again = await linker.resolve("demo", "005U", people)
    assert again.who == created.who
    assert again.who is not None
