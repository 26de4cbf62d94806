"""In-memory CRM and store: the unit tests' and the benchmark's adapters.

The CRM keeps Salesforce's semantics that linking depends on (converted Leads are not
returned, upserts by idempotency key find instead of duplicating) and counts its calls, which
stand for Salesforce API calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from concord_linker.domain.addresses import DomainRules, domain_of, website_host
from concord_linker.domain.model import Account, Case, Opportunity, Person
from concord_linker.domain.ports import AccountMatch, CreationClaim, StoredDecision

__all__ = ["InMemoryCrm", "InMemoryLinkerStore"]

_PREFIX = {"Contact": "003", "Lead": "00Q", "Account": "001", "Opportunity": "006", "Case": "500"}


@dataclass
class InMemoryCrm:
    rules: DomainRules
    people: list[Person] = field(default_factory=list)
    accounts: list[Account] = field(default_factory=list)
    opportunities: list[Opportunity] = field(default_factory=list)
    cases_: list[Case] = field(default_factory=list)
    converted_lead_ids: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    creates: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Simulated Salesforce latency, so racing callers really interleave.
    latency: float = 0.0
    _keys: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, sobject_type: str) -> str:
        return f"{_PREFIX.get(sobject_type, 'a00')}{next(self._ids):015d}"

    async def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.latency:
            await asyncio.sleep(self.latency)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def _account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)

    async def people_by_emails(self, org: str, emails: Sequence[str]) -> Sequence[Person]:
        await self._call("people_by_emails")
        wanted = {e.lower() for e in emails}
        found = []
        for person in self.people:
            if person.email.lower() in wanted and person.id not in self.converted_lead_ids:
                account = self._account(person.account_id) if person.account_id else None
                name = account.name if account else ""
                found.append(replace(person, email=person.email.lower(), account_name=name))
        return found

    def _on(self, host: str, domains: set[str]) -> str:
        domain = self.rules.registrable_domain(host)
        return domain if domain in domains else ""

    async def accounts_by_domains(self, org: str, domains: Sequence[str]) -> Sequence[AccountMatch]:
        await self._call("accounts_by_domains")
        wanted = set(domains)
        found = []
        for account in self.accounts:
            host = website_host(account.website)
            if host and (domain := self._on(host, wanted)):
                found.append(AccountMatch(account, domain, "website", f"website {host}"))
        for person in self.people:
            if person.sobject_type != "Contact" or not person.account_id:
                continue
            employer = self._account(person.account_id)
            if employer and (domain := self._on(domain_of(person.email), wanted)):
                evidence = f"Contact {person.name} at {domain_of(person.email)}"
                found.append(AccountMatch(employer, domain, "contact", evidence))
        return found

    async def accounts_by_ids(self, org: str, ids: Sequence[str]) -> Sequence[Account]:
        await self._call("accounts_by_ids")
        return [a for a in self.accounts if a.id in set(ids)]

    async def open_opportunities(
        self, org: str, account_ids: Sequence[str], owner_id: str
    ) -> Sequence[Opportunity]:
        await self._call("open_opportunities")
        return [
            o
            for o in self.opportunities
            if o.account_id in set(account_ids)
            and not o.is_closed
            and (not owner_id or o.owner_id == owner_id)
        ]

    async def cases(
        self,
        org: str,
        *,
        account_ids: Sequence[str] = (),
        contact_ids: Sequence[str] = (),
        case_numbers: Sequence[str] = (),
    ) -> Sequence[Case]:
        await self._call("cases")
        return [
            c
            for c in self.cases_
            if c.case_number in set(case_numbers)
            or (
                not c.is_closed
                and (c.account_id in set(account_ids) or c.contact_id in set(contact_ids))
            )
        ]

    async def search(
        self, org: str, terms: Sequence[str]
    ) -> tuple[Sequence[Person], Sequence[Account]]:
        await self._call("search")
        lowered = [t.lower() for t in terms if t]

        def hit(*values: str) -> bool:
            return any(t in v.lower() for t in lowered for v in values if v)

        people = [
            p
            for p in self.people
            if p.id not in self.converted_lead_ids and hit(p.name, p.company, p.phone)
        ]
        return people, [a for a in self.accounts if hit(a.name)]

    async def create(
        self, org: str, sobject_type: str, fields: Mapping[str, str], idempotency_key: str
    ) -> str:
        await self._call("create")
        if idempotency_key in self._keys:
            return self._keys[idempotency_key]
        record_id = self.new_id(sobject_type)
        self._keys[idempotency_key] = record_id
        self.creates.append((sobject_type, dict(fields)))
        now = datetime.now(UTC).isoformat()
        name = " ".join(filter(None, [fields.get("FirstName"), fields.get("LastName")]))
        if sobject_type in ("Contact", "Lead"):
            self.people.append(
                Person(
                    sobject_type,
                    record_id,
                    name,
                    fields.get("Email", "").lower(),
                    now,
                    account_id=fields.get("AccountId", ""),
                    company=fields.get("Company", ""),
                )
            )
        elif sobject_type == "Account":
            self.accounts.append(
                Account(record_id, fields.get("Name", ""), fields.get("Website", ""), now)
            )
        return record_id

    async def attach_to_account(self, org: str, contact: Person, account_id: str) -> None:
        await self._call("attach_to_account")
        self.people = [
            replace(p, account_id=account_id) if p.id == contact.id else p for p in self.people
        ]


@dataclass
class InMemoryLinkerStore:
    entries: set[tuple[str, str, str]] = field(default_factory=set)
    decisions: dict[tuple[str, str], StoredDecision] = field(default_factory=dict)
    claims: dict[tuple[str, str], CreationClaim] = field(default_factory=dict)
    blacklist_reads: int = 0

    async def blacklist(self, org: str, user_id: str) -> frozenset[str]:
        self.blacklist_reads += 1
        return frozenset(e for o, u, e in self.entries if o == org and u in ("", user_id))

    async def add_blacklist_entry(self, org: str, user_id: str, entry: str) -> bool:
        key = (org, user_id, entry.strip().lower())
        added = key not in self.entries
        self.entries.add(key)
        return added

    async def remove_blacklist_entry(self, org: str, user_id: str, entry: str) -> bool:
        key = (org, user_id, entry.strip().lower())
        removed = key in self.entries
        self.entries.discard(key)
        return removed

    async def record_decisions(self, org: str, decisions: Sequence[StoredDecision]) -> None:
        for decision in decisions:
            self.decisions[(org, decision.address)] = decision

    async def claim_creation(self, org: str, subject: str, idempotency_key: str) -> CreationClaim:
        # No await between the check and the insert: atomic within one event loop, like the
        # SQL store's unique row across processes.
        existing = self.claims.get((org, subject))
        if existing is not None:
            return replace(existing, claimed_by_me=False)
        claim = CreationClaim(subject, idempotency_key, True, datetime.now(UTC))
        self.claims[(org, subject)] = claim
        return claim

    async def complete_creation(
        self, org: str, subject: str, sobject_type: str, record_id: str
    ) -> None:
        claim = self.claims[(org, subject)]
        self.claims[(org, subject)] = replace(claim, sobject_type=sobject_type, record_id=record_id)

    async def release_creation(self, org: str, subject: str) -> None:
        self.claims.pop((org, subject), None)
