"""A read-through cache in front of a `CrmDirectory`, per org, with a time to live.

Linking the mail of one session asks about the same few hundred addresses and domains over
and over; Salesforce's daily API allocation is the scarce resource. Answers are cached for
`ttl_seconds` (absences too: an unknown address stays unknown for the TTL unless the linker
itself creates it, which invalidates the entry). Initial search and cases are not cached: a
user looking at the sidebar expects what the CRM holds now.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from concord_linker.domain.model import Account, Case, Opportunity, Person
from concord_linker.domain.ports import AccountMatch, CrmDirectory

__all__ = ["CachingCrmDirectory"]

V = TypeVar("V")


class _Expiring(Generic[V]):
    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            self._entries.pop(key, None)
            return False, None
        self._entries.move_to_end(key)
        return True, entry[1]

    def put(self, key: Hashable, value: V) -> None:
        self._entries[key] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def drop_where(self, predicate: Callable[[Hashable], bool]) -> None:
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]


class CachingCrmDirectory:
    def __init__(
        self,
        inner: CrmDirectory,
        *,
        ttl_seconds: float = 600.0,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._people: _Expiring[tuple[Person, ...]] = _Expiring(ttl_seconds, max_entries, clock)
        self._domains: _Expiring[tuple[AccountMatch, ...]] = _Expiring(
            ttl_seconds, max_entries, clock
        )
        self._accounts: _Expiring[Account | None] = _Expiring(ttl_seconds, max_entries, clock)
        self._opportunities: _Expiring[tuple[Opportunity, ...]] = _Expiring(
            ttl_seconds, max_entries, clock
        )

    async def people_by_emails(self, org: str, emails: Sequence[str]) -> Sequence[Person]:
        found: list[Person] = []
        missing: list[str] = []
        for email in dict.fromkeys(e.lower() for e in emails):
            hit, people = self._people.get((org, email))
            if hit and people is not None:
                found += people
            else:
                missing.append(email)
        if missing:
            fetched = await self._inner.people_by_emails(org, missing)
            for email in missing:
                people = tuple(p for p in fetched if p.email.lower() == email)
                self._people.put((org, email), people)
                found += people
        return found

    async def accounts_by_domains(self, org: str, domains: Sequence[str]) -> Sequence[AccountMatch]:
        found: list[AccountMatch] = []
        missing: list[str] = []
        for domain in dict.fromkeys(domains):
            hit, matches = self._domains.get((org, domain))
            if hit and matches is not None:
                found += matches
            else:
                missing.append(domain)
        if missing:
            fetched = await self._inner.accounts_by_domains(org, missing)
            for domain in missing:
                matches = tuple(m for m in fetched if m.domain == domain)
                self._domains.put((org, domain), matches)
                found += matches
        return found

    async def accounts_by_ids(self, org: str, ids: Sequence[str]) -> Sequence[Account]:
        found: list[Account] = []
        missing: list[str] = []
        for account_id in dict.fromkeys(ids):
            hit, account = self._accounts.get((org, account_id))
            if hit:
                if account is not None:
                    found.append(account)
            else:
                missing.append(account_id)
        if missing:
            fetched = {a.id: a for a in await self._inner.accounts_by_ids(org, missing)}
            for account_id in missing:
                self._accounts.put((org, account_id), fetched.get(account_id))
                if account_id in fetched:
                    found.append(fetched[account_id])
        return found

    async def open_opportunities(
        self, org: str, account_ids: Sequence[str], owner_id: str
    ) -> Sequence[Opportunity]:
        found: list[Opportunity] = []
        missing: list[str] = []
        for account_id in dict.fromkeys(account_ids):
            hit, opportunities = self._opportunities.get((org, account_id, owner_id))
            if hit and opportunities is not None:
                found += opportunities
            else:
                missing.append(account_id)
        if missing:
            fetched = await self._inner.open_opportunities(org, missing, owner_id)
            for account_id in missing:
                mine = tuple(o for o in fetched if o.account_id == account_id)
                self._opportunities.put((org, account_id, owner_id), mine)
                found += mine
        return found

    async def cases(
        self,
        org: str,
        *,
        account_ids: Sequence[str] = (),
        contact_ids: Sequence[str] = (),
        case_numbers: Sequence[str] = (),
    ) -> Sequence[Case]:
        return await self._inner.cases(
            org, account_ids=account_ids, contact_ids=contact_ids, case_numbers=case_numbers
        )

    async def search(
        self, org: str, terms: Sequence[str]
    ) -> tuple[Sequence[Person], Sequence[Account]]:
        return await self._inner.search(org, terms)

    async def create(
        self, org: str, sobject_type: str, fields: Mapping[str, str], idempotency_key: str
    ) -> str:
        record_id = await self._inner.create(org, sobject_type, fields, idempotency_key)
        # What the linker just created must be found by the very next activity.
        if email := fields.get("Email", "").lower():
            self._people.drop((org, email))
        if sobject_type in ("Account", "Contact"):
            self._domains.drop_where(lambda key: isinstance(key, tuple) and key[0] == org)
        return record_id

    async def attach_to_account(self, org: str, contact: Person, account_id: str) -> None:
        await self._inner.attach_to_account(org, contact, account_id)
        self._people.drop((org, contact.email.lower()))
        self._domains.drop_where(lambda key: isinstance(key, tuple) and key[0] == org)
