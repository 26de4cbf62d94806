"""Resolving participants to Salesforce records, auto-resolving, and initial search.

The deterministic rules (documented in the service README, tested in tests/unit):

- One address, several records: Contacts before unconverted Leads; among the same type the most
  recently modified (LastModifiedDate), then the lowest Id.
- WhoId: resolved Contacts before Leads, then by role (sender/organizer, to/required,
  unspecified, cc/optional, bcc), then input order. Every resolved person is a relation, once.
- WhatId: none when WhoId is a Lead (Salesforce refuses a WhatId beside a Lead WhoId). Else the
  Account of WhoId, else of the first other Contact with one, else the Account of the first
  corporate registrable domain among the participants (website evidence before Contact-email
  evidence, then most recently modified, then lowest Id). On that Account, the open Opportunity
  the user owns that was most recently active (LastActivityDate, then LastModifiedDate, then
  lowest Id), else the Account itself.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from concord_linker.domain.addresses import (
    Blacklist,
    DomainRules,
    domain_of,
    normalize_address,
    website_host,
)
from concord_linker.domain.model import (
    ROLE_RANK,
    Account,
    AutoResolvePolicy,
    EmailContent,
    LinkedRecord,
    Opportunity,
    Outcome,
    Participant,
    ParticipantDecision,
    Person,
    RelatedRecord,
    Resolution,
    Role,
    UnknownAddressAction,
)
from concord_linker.domain.ports import (
    AccountMatch,
    CrmDirectory,
    LinkerStore,
    StoredDecision,
)
from concord_linker.domain.signature import Signature, parse_signature

__all__ = [
    "DEFAULT_SEARCH_TYPES",
    "CreationInProgress",
    "Linker",
    "choose_domain_accounts",
    "clean_display_name",
    "idempotency_key",
    "pick_person",
    "split_name",
]

DEFAULT_SEARCH_TYPES = ("Contact", "Lead", "Account", "Opportunity", "Case")
_TYPE_ORDER = {name: index for index, name in enumerate(DEFAULT_SEARCH_TYPES)}
# A stable namespace, so the key of (org, subject) is the same in every process and release:
# a create retried after a crash upserts the record it may already have made.
_KEY_NAMESPACE = uuid.UUID("5b0f4a52-6a55-4c1e-9d7e-3c0f1b1f7a07")
T = TypeVar("T")
_NO_AUTO_RESOLVE = AutoResolvePolicy()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_CASE_NUMBER = re.compile(r"\bcase\s*(?:number|no\.?|#)?\s*[:#]?\s*(\d{4,10})\b", re.IGNORECASE)
# Salesforce's own placeholder when a Lead's company is unknown (web-to-lead uses it too).
_UNKNOWN_COMPANY = "[not provided]"


def idempotency_key(org: str, subject: str) -> str:
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{org}/{subject}"))


def _newest_then_lowest_id(
    items: Iterable[T], modified: Callable[[T], str], record_id: Callable[[T], str]
) -> list[T]:
    # Two stable sorts, because a descending timestamp and an ascending Id cannot share one
    # string key: Ids first, then timestamps newest first keeps the Id order among ties.
    ordered = sorted(items, key=record_id)
    ordered.sort(key=modified, reverse=True)
    return ordered


def pick_person(matches: Sequence[Person]) -> tuple[Person, Outcome, str]:
    """The record for one address among its matches, with the outcome and why."""
    contacts = [p for p in matches if p.sobject_type == "Contact"]
    pool = contacts or list(matches)
    kind = pool[0].sobject_type
    chosen = _newest_then_lowest_id(pool, lambda p: p.last_modified, lambda p: p.id)[0]
    explanation = f"{kind} by email"
    if len(pool) > 1:
        explanation += f", {len(pool)} matches, most recently modified taken (ties: lowest Id)"
    skipped_leads = len(matches) - len(pool)
    if contacts and skipped_leads:
        explanation += f"; Contact preferred over {skipped_leads} Lead(s)"
    if len(pool) > 1:
        outcome = Outcome.AMBIGUOUS
    else:
        outcome = Outcome.MATCHED_CONTACT if kind == "Contact" else Outcome.MATCHED_LEAD
    return chosen, outcome, explanation


def clean_display_name(display_name: str) -> str:
    """A display name fit for a record: no control characters, quotes, comments or addresses."""
    name = _CONTROL.sub(" ", display_name)
    name = re.sub(r"\(.*?\)", " ", name).replace('"', " ").replace("'", " ").strip()
    if "@" in name:
        return ""
    return " ".join(name.split())[:80]


def split_name(full_name: str) -> tuple[str, str]:
    """(FirstName, LastName); `Last, First` as mail clients write it is understood."""
    if "," in full_name:
        last, _, first = full_name.partition(",")
        return first.strip(), last.strip()
    words = full_name.split()
    if not words:
        return "", ""
    return " ".join(words[:-1]), words[-1]


@dataclass
class _Slot:
    """One participant on its way to a decision."""

    index: int
    participant: Participant
    address: str | None
    decision: ParticipantDecision | None = None
    person: Person | None = None


class CreationInProgress(Exception):
    """Another session claimed the creation and has not finished it yet."""


class Linker:
    def __init__(
        self,
        store: LinkerStore,
        crm: CrmDirectory,
        rules: DomainRules,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        claim_wait_seconds: float = 5.0,
        claim_stale_seconds: float = 120.0,
        claim_poll_seconds: float = 0.05,
        max_addresses: int = 500,
    ) -> None:
        self._store = store
        self._crm = crm
        self._rules = rules
        self._clock = clock
        self._sleep = sleep
        self._claim_wait = claim_wait_seconds
        self._claim_stale = claim_stale_seconds
        self._claim_poll = claim_poll_seconds
        self._max_addresses = max_addresses

    async def _blacklist(self, org: str, user_id: str, extra: Iterable[str]) -> Blacklist:
        # Read on every call, never cached: a change applies to the very next session.
        stored = await self._store.blacklist(org, user_id)
        return Blacklist.of([*stored, *extra])

    def _corporate_domain(self, address: str, policy: AutoResolvePolicy) -> str:
        domain = self._rules.registrable_domain(domain_of(address))
        if not domain or domain in policy.free_mail_domains or self._rules.is_free_mail(domain):
            return ""
        return domain

    async def resolve(
        self,
        org: str,
        user_id: str,
        participants: Sequence[Participant],
        policy: AutoResolvePolicy = _NO_AUTO_RESOLVE,
        blacklist: Iterable[str] = (),
        signatures: Mapping[str, Signature] | None = None,
    ) -> Resolution:
        if not participants:
            # Nobody to link: no Salesforce call, no blacklist read.
            return Resolution()
        rules = await self._blacklist(org, user_id, blacklist)
        slots = [_Slot(i, p, normalize_address(p.email)) for i, p in enumerate(participants)]
        for slot in slots:
            if slot.address is None:
                slot.decision = ParticipantDecision(
                    slot.participant, Outcome.UNRESOLVED, None, "not a valid email address"
                )
            elif (entry := rules.rule_for(slot.address)) is not None:
                slot.decision = ParticipantDecision(
                    slot.participant, Outcome.BLACKLISTED, None, f"blacklisted by {entry!r}"
                )
            elif slot.participant.role == Role.RESOURCE:
                slot.decision = ParticipantDecision(
                    slot.participant, Outcome.UNRESOLVED, None, "a room or equipment"
                )
        open_slots = [s for s in slots if s.decision is None and s.address]
        # A mailing to thousands is still linked, by its sender and first recipients; the cap
        # bounds one call's CRM query and the records an activity can be related to.
        for slot in _ranked(open_slots)[self._max_addresses :]:
            slot.decision = ParticipantDecision(
                slot.participant,
                Outcome.UNRESOLVED,
                None,
                f"beyond the first {self._max_addresses} addresses of the activity: not looked up",
            )
        open_slots = [s for s in open_slots if s.decision is None]
        addresses = list(dict.fromkeys(s.address for s in open_slots if s.address))
        matches: dict[str, list[Person]] = {}
        if addresses:
            for person in await self._crm.people_by_emails(org, addresses):
                matches.setdefault(person.email.lower(), []).append(person)
        created: list[LinkedRecord] = []
        domain_accounts: dict[str, tuple[Account, str]] | None = None
        for slot in open_slots:
            assert slot.address is not None
            found = matches.get(slot.address)
            if found:
                person, outcome, why = pick_person(found)
                domain = self._corporate_domain(slot.address, policy)
                if (
                    policy.create_accounts_from_domain
                    and person.sobject_type == "Contact"
                    and not person.account_id
                    and domain
                ):
                    if domain_accounts is None:
                        domain_accounts = await self._accounts_for(org, addresses, policy)
                    person, note = await self._give_account(
                        org, person, domain, domain_accounts, created
                    )
                    why += note
                slot.person = person
                slot.decision = ParticipantDecision(slot.participant, outcome, _linked(person), why)
                continue
            if not policy.creates:
                slot.decision = ParticipantDecision(
                    slot.participant,
                    Outcome.UNRESOLVED,
                    None,
                    "no Contact or Lead has this email; auto-resolving is off",
                )
                continue
            if domain_accounts is None:
                domain_accounts = await self._accounts_for(org, addresses, policy)
            signature = (signatures or {}).get(slot.address)
            await self._auto_create(org, slot, policy, domain_accounts, signature, created)
            # A later participant with the same address reuses this record, never a second one.
            if slot.person is not None:
                matches[slot.address] = [slot.person]
        who_slot = _who(slots)
        who = who_slot.decision.record if who_slot and who_slot.decision else None
        relations = list(
            dict.fromkeys(
                s.decision.record
                for s in slots
                if s.decision is not None and s.decision.record is not None
            )
        )
        what, what_why = await self._what(org, user_id, slots, who_slot, policy, domain_accounts)
        decisions = [s.decision for s in slots if s.decision is not None]
        await self._store.record_decisions(
            org,
            [
                StoredDecision(
                    s.address,
                    s.decision.outcome,
                    s.decision.record.sobject_type if s.decision.record else "",
                    s.decision.record.id if s.decision.record else "",
                    s.decision.explanation,
                )
                for s in slots
                if s.address and s.decision is not None
            ],
        )
        return Resolution(
            who=who,
            what=what,
            relations=tuple(relations),
            what_explanation=what_why,
            decisions=tuple(decisions),
            created=tuple(created),
        )

    async def _accounts_for(
        self, org: str, addresses: Sequence[str], policy: AutoResolvePolicy
    ) -> dict[str, tuple[Account, str]]:
        """The Account per corporate registrable domain, by the documented rule."""
        domains = list(
            dict.fromkeys(d for a in addresses if (d := self._corporate_domain(a, policy)))
        )
        if not domains:
            return {}
        found = await self._crm.accounts_by_domains(org, domains)
        return choose_domain_accounts(found)

    async def _what(
        self,
        org: str,
        user_id: str,
        slots: Sequence[_Slot],
        who_slot: _Slot | None,
        policy: AutoResolvePolicy,
        domain_accounts: dict[str, tuple[Account, str]] | None,
    ) -> tuple[LinkedRecord | None, str]:
        if who_slot is not None and who_slot.person and who_slot.person.sobject_type == "Lead":
            return None, "WhoId is a Lead: Salesforce allows no WhatId beside a Lead"
        account: Account | None = None
        why = ""
        people = [s.person for s in _ranked(slots) if s.person is not None]
        for person in people:
            if person.sobject_type == "Contact" and person.account_id:
                account = Account(person.account_id, person.account_name)
                why = f"Account of Contact {person.name or person.id}"
                break
        if account is None:
            usable = [
                s.address
                for s in _ranked(slots)
                if s.address
                and s.decision is not None
                and s.decision.outcome not in (Outcome.BLACKLISTED,)
                and s.participant.role != Role.RESOURCE
            ]
            if domain_accounts is None:
                domain_accounts = await self._accounts_for(org, usable, policy)
            for address in usable:
                domain = self._corporate_domain(address, policy)
                if domain in domain_accounts:
                    account, evidence = domain_accounts[domain]
                    why = f"Account by domain {domain} ({evidence})"
                    break
        if account is None:
            return None, "no Account: no Contact with an Account, no corporate domain matched"
        opportunities = await self._crm.open_opportunities(org, [account.id], user_id)
        mine = [o for o in opportunities if o.owner_id == user_id and not o.is_closed]
        if mine:
            chosen = _most_recently_active(mine)
            detail = f", {len(mine)} open" if len(mine) > 1 else ""
            return (
                LinkedRecord("Opportunity", chosen.id, chosen.name),
                f"open Opportunity the user owns on the {why}, most recently active{detail}",
            )
        return (
            LinkedRecord("Account", account.id, account.name),
            f"{why}; the user owns no open Opportunity on it",
        )

    async def _auto_create(
        self,
        org: str,
        slot: _Slot,
        policy: AutoResolvePolicy,
        domain_accounts: dict[str, tuple[Account, str]],
        signature: Signature | None,
        created: list[LinkedRecord],
    ) -> None:
        assert slot.address is not None
        address = slot.address
        name = clean_display_name(slot.participant.display_name)
        name_source = "display name"
        if not name and signature is not None and signature.name:
            name, name_source = signature.name, "signature"
        if not name:
            name, name_source = address.split("@", 1)[0], "address"
        first, last = split_name(name)
        domain = self._corporate_domain(address, policy)
        account = domain_accounts.get(domain) if domain else None
        fields: dict[str, str] = {"LastName": last or name, "Email": address}
        if first:
            fields["FirstName"] = first
        if signature is not None:
            if signature.title:
                fields["Title"] = signature.title
            if signature.phone:
                fields["Phone"] = signature.phone
        why_parts = [f"unknown address; name from {name_source}"]
        if policy.unknown_address_action == UnknownAddressAction.CREATE_LEAD:
            sobject_type, outcome = "Lead", Outcome.CREATED_LEAD
            if account is not None:
                fields["Company"] = account[0].name
                why_parts.append(f"company from Account by domain {domain}")
            elif signature is not None and signature.company:
                fields["Company"] = signature.company
                why_parts.append("company from signature")
            else:
                fields["Company"] = _UNKNOWN_COMPANY
        else:
            sobject_type, outcome = "Contact", Outcome.CREATED_CONTACT
            if account is not None:
                fields["AccountId"] = account[0].id
                why_parts.append(f"Account by domain {domain}")
            elif domain and policy.create_accounts_from_domain:
                company = signature.company if signature and signature.company else ""
                account_id = await self._create_account(
                    org, domain, company, domain_accounts, created
                )
                if account_id:
                    fields["AccountId"] = account_id
                    why_parts.append(f"Account created from corporate domain {domain}")
            elif not domain:
                why_parts.append("free-mail or unregistrable domain: no Account")
        explanation = "; ".join(why_parts)
        fields["Description"] = f"Created by Concord: {explanation}"
        try:
            record_id, by_me = await self._create_once(
                org, f"address:{address}", sobject_type, fields
            )
        except CreationInProgress:
            slot.decision = ParticipantDecision(
                slot.participant,
                Outcome.UNRESOLVED,
                None,
                "being created by another session; linked at the next session",
            )
            return
        record = LinkedRecord(sobject_type, record_id, name)
        slot.person = Person(
            sobject_type, record_id, name, address, account_id=fields.get("AccountId", "")
        )
        if by_me:
            created.append(record)
            slot.decision = ParticipantDecision(
                slot.participant, outcome, record, f"{sobject_type} created: {explanation}"
            )
        else:
            matched = Outcome.MATCHED_CONTACT if sobject_type == "Contact" else Outcome.MATCHED_LEAD
            slot.decision = ParticipantDecision(
                slot.participant,
                matched,
                record,
                f"{sobject_type} created for this address by another session",
            )

    async def _give_account(
        self,
        org: str,
        contact: Person,
        domain: str,
        domain_accounts: dict[str, tuple[Account, str]],
        created: list[LinkedRecord],
    ) -> tuple[Person, str]:
        """A matched Contact without an Account gets its domain's, created if need be."""
        if domain in domain_accounts:
            account = domain_accounts[domain][0]
            how = f"by domain {domain}"
        else:
            account_id = await self._create_account(org, domain, "", domain_accounts, created)
            if not account_id:
                return contact, ""
            account = domain_accounts[domain][0]
            how = f"created from corporate domain {domain}"
        await self._crm.attach_to_account(org, contact, account.id)
        note = f"; had no Account, given Account {account.name or account.id} ({how})"
        return replace(contact, account_id=account.id, account_name=account.name), note

    async def _create_account(
        self,
        org: str,
        domain: str,
        company: str,
        domain_accounts: dict[str, tuple[Account, str]],
        created: list[LinkedRecord],
    ) -> str:
        name = company or domain.split(".", 1)[0].capitalize()
        fields = {
            "Name": name,
            "Website": domain,
            "Description": f"Created by Concord from the corporate email domain {domain}",
        }
        try:
            account_id, by_me = await self._create_once(org, f"domain:{domain}", "Account", fields)
        except CreationInProgress:
            return ""
        if by_me:
            created.append(LinkedRecord("Account", account_id, name))
        # Later participants at the same domain join this Account without another claim.
        domain_accounts[domain] = (Account(account_id, name, domain), "created by Concord")
        return account_id

    async def _create_once(
        self, org: str, subject: str, sobject_type: str, fields: Mapping[str, str]
    ) -> tuple[str, bool]:
        """Creates the record for `subject` unless a session did or is doing it.

        The claim row is inserted before Salesforce is called, so two racing sessions cannot
        both create; the idempotency key makes a retry after a crash find, not duplicate.
        """
        key = idempotency_key(org, subject)
        claim = await self._store.claim_creation(org, subject, key)
        started = self._clock()
        while not claim.claimed_by_me and not claim.done:
            if (self._clock() - claim.claim_time).total_seconds() > self._claim_stale:
                # The claimer died between claim and create: take over with the same key.
                break
            if (self._clock() - started).total_seconds() > self._claim_wait:
                raise CreationInProgress(subject)
            await self._sleep(self._claim_poll)
            claim = await self._store.claim_creation(org, subject, key)
        if claim.done:
            return claim.record_id, False
        try:
            record_id = await self._crm.create(org, sobject_type, fields, claim.idempotency_key)
        except BaseException:
            if claim.claimed_by_me:
                await self._store.release_creation(org, subject)
            raise
        await self._store.complete_creation(org, subject, sobject_type, record_id)
        return record_id, True

    async def initial_search(
        self,
        org: str,
        user_id: str,
        email: EmailContent,
        *,
        sobject_types: Sequence[str] = (),
        page_size: int = 20,
        blacklist: Iterable[str] = (),
    ) -> list[RelatedRecord]:
        wanted = set(sobject_types or DEFAULT_SEARCH_TYPES)
        rules = await self._blacklist(org, user_id, blacklist)
        policy = _NO_AUTO_RESOLVE
        people_in: list[tuple[str, Participant]] = []
        for participant in [*([email.sender] if email.sender else []), *email.recipients]:
            address = normalize_address(participant.email)
            if address and rules.rule_for(address) is None:
                people_in.append((address, participant))
        sender_name = email.sender.display_name if email.sender else ""
        signature = parse_signature(email.body_text, clean_display_name(sender_name))
        signature_addresses = [
            a for e in signature.emails if (a := normalize_address(e)) and not rules.rule_for(a)
        ]
        found = _Ranking()
        addresses = list(dict.fromkeys([a for a, _ in people_in] + signature_addresses))
        by_email: dict[str, list[Person]] = {}
        if addresses:
            for person in await self._crm.people_by_emails(org, addresses):
                by_email.setdefault(person.email.lower(), []).append(person)
        role_of = {a: p.role for a, p in reversed(people_in)}
        for address in addresses:
            matches = by_email.get(address)
            if not matches:
                continue
            role = role_of.get(address, Role.UNSPECIFIED)
            label = _role_label(role) if address in role_of else "signature"
            chosen, _, why = pick_person(matches)
            base = _ROLE_SCORE.get(role, 50.0) if address in role_of else 55.0
            for person in matches:
                score = base - (10.0 if person.sobject_type == "Lead" else 0.0)
                detail = why if person is chosen else f"{person.sobject_type} by email, not chosen"
                if person is not chosen:
                    score -= 30.0
                found.add(
                    person.sobject_type,
                    person.id,
                    person.name,
                    score,
                    f"{label}'s {person.sobject_type} ({detail})",
                )
        account_ids: dict[str, float] = {}
        for address in addresses:
            for person in by_email.get(address, ()):
                if person.sobject_type == "Contact" and person.account_id:
                    score = found.score(person.id) - 5.0
                    found.add(
                        "Account",
                        person.account_id,
                        person.account_name,
                        score,
                        f"Account of Contact {person.name or person.id}",
                    )
                    account_ids[person.account_id] = max(
                        account_ids.get(person.account_id, 0.0), score
                    )
        hosts = [domain_of(a) for a in addresses] + [website_host(w) for w in signature.websites]
        domains = list(
            dict.fromkeys(
                d
                for h in hosts
                if (d := self._rules.registrable_domain(h))
                and d not in policy.free_mail_domains
                and not self._rules.is_free_mail(d)
            )
        )
        if domains and ("Account" in wanted or "Opportunity" in wanted or "Case" in wanted):
            for domain, (account, evidence) in choose_domain_accounts(
                await self._crm.accounts_by_domains(org, domains)
            ).items():
                score = 60.0 if "website" in evidence else 55.0
                found.add(
                    "Account",
                    account.id,
                    account.name,
                    score,
                    f"Account by domain {domain} ({evidence})",
                )
                account_ids[account.id] = max(account_ids.get(account.id, 0.0), score)
        terms = [t for t in (signature.company, signature.phone) if t]
        if signature.name and not any(
            p.sobject_type in ("Contact", "Lead") for ps in by_email.values() for p in ps
        ):
            terms.append(signature.name)
        if terms:
            people, accounts = await self._crm.search(org, terms)
            for person in people:
                found.add(
                    person.sobject_type,
                    person.id,
                    person.name,
                    45.0,
                    f"{person.sobject_type} matching the signature",
                )
            for account in accounts:
                found.add(
                    "Account",
                    account.id,
                    account.name,
                    50.0,
                    "Account matching the signature's company",
                )
                account_ids.setdefault(account.id, 50.0)
        subject = email.subject.lower()
        if account_ids and "Opportunity" in wanted:
            for opp in await self._crm.open_opportunities(org, list(account_ids), ""):
                score = account_ids.get(opp.account_id, 50.0) - (
                    0.0 if opp.owner_id == user_id else 20.0
                )
                why = "open Opportunity you own" if opp.owner_id == user_id else "open Opportunity"
                why += " on a related Account"
                if opp.name and opp.name.lower() in subject:
                    score += 20.0
                    why += ", named in the subject"
                found.add("Opportunity", opp.id, opp.name, score, why)
        numbers = list(dict.fromkeys(_CASE_NUMBER.findall(f"{email.subject}\n{email.body_text}")))
        contact_ids = [p.id for ps in by_email.values() for p in ps if p.sobject_type == "Contact"]
        if "Case" in wanted and (numbers or contact_ids or account_ids):
            cases = await self._crm.cases(
                org, account_ids=list(account_ids), contact_ids=contact_ids, case_numbers=numbers
            )
            for case in cases:
                if case.case_number in numbers:
                    where = "subject" if case.case_number in email.subject else "body"
                    found.add(
                        "Case",
                        case.id,
                        case.subject or case.case_number,
                        90.0,
                        f"Case number {case.case_number} in the {where}",
                    )
                elif not case.is_closed:
                    found.add(
                        "Case",
                        case.id,
                        case.subject or case.case_number,
                        40.0,
                        "open Case of a related Contact or Account",
                    )
        return [r for r in found.ranked() if r.sobject_type in wanted][: page_size or 20]


_ROLE_SCORE = {
    Role.SENDER: 100.0,
    Role.ORGANIZER: 100.0,
    Role.TO_RECIPIENT: 80.0,
    Role.REQUIRED_ATTENDEE: 80.0,
    Role.UNSPECIFIED: 70.0,
    Role.CC_RECIPIENT: 60.0,
    Role.OPTIONAL_ATTENDEE: 60.0,
    Role.BCC_RECIPIENT: 50.0,
}


def _role_label(role: Role) -> str:
    return {
        Role.SENDER: "sender",
        Role.ORGANIZER: "organizer",
        Role.TO_RECIPIENT: "recipient",
        Role.REQUIRED_ATTENDEE: "attendee",
        Role.CC_RECIPIENT: "cc recipient",
        Role.OPTIONAL_ATTENDEE: "optional attendee",
        Role.BCC_RECIPIENT: "bcc recipient",
    }.get(role, "participant")


class _Ranking:
    """Related records by id; a record found several ways keeps its best score and reason."""

    def __init__(self) -> None:
        self._records: dict[str, RelatedRecord] = {}

    def score(self, record_id: str) -> float:
        found = self._records.get(record_id)
        return found.score if found else 0.0

    def add(self, sobject_type: str, record_id: str, name: str, score: float, why: str) -> None:
        current = self._records.get(record_id)
        if current is None or score > current.score:
            self._records[record_id] = RelatedRecord(
                sobject_type, record_id, name or (current.name if current else ""), score, why
            )
        elif not current.name and name:
            self._records[record_id] = RelatedRecord(
                current.sobject_type, record_id, name, current.score, current.explanation
            )

    def ranked(self) -> list[RelatedRecord]:
        return sorted(
            self._records.values(),
            key=lambda r: (-r.score, _TYPE_ORDER.get(r.sobject_type, 9), r.id),
        )


def choose_domain_accounts(found: Iterable[AccountMatch]) -> dict[str, tuple[Account, str]]:
    """One Account per domain: website evidence first, then most recently modified, lowest Id."""
    by_domain: dict[str, list[AccountMatch]] = {}
    for match in found:
        by_domain.setdefault(match.domain, []).append(match)
    chosen: dict[str, tuple[Account, str]] = {}
    for domain, matches in by_domain.items():
        websites = [m for m in matches if m.via == "website"]
        pool = websites or matches
        ordered = _newest_then_lowest_id(
            pool, lambda m: m.account.last_modified, lambda m: m.account.id
        )
        distinct = len({m.account.id for m in pool})
        evidence = ordered[0].evidence
        if distinct > 1:
            evidence += f"; {distinct} Accounts matched, most recently modified taken"
        chosen[domain] = (ordered[0].account, evidence)
    return chosen


def _most_recently_active(opportunities: Sequence[Opportunity]) -> Opportunity:
    ordered = sorted(opportunities, key=lambda o: o.id)
    ordered.sort(key=lambda o: (o.last_activity, o.last_modified), reverse=True)
    return ordered[0]


def _ranked(slots: Sequence[_Slot]) -> list[_Slot]:
    return sorted(slots, key=lambda s: (ROLE_RANK.get(s.participant.role, 2), s.index))


def _who(slots: Sequence[_Slot]) -> _Slot | None:
    resolved = [s for s in _ranked(slots) if s.person is not None]
    contacts = [s for s in resolved if s.person is not None and s.person.sobject_type == "Contact"]
    pool = contacts or resolved
    return pool[0] if pool else None


def _linked(person: Person) -> LinkedRecord:
    return LinkedRecord(person.sobject_type, person.id, person.name)
