"""What the linker needs from the outside world: the CRM and its own store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from concord_linker.domain.model import Account, Case, Opportunity, Outcome, Person

__all__ = [
    "AccountMatch",
    "CreationClaim",
    "CrmDirectory",
    "LinkerStore",
    "StoredDecision",
]


@dataclass(frozen=True)
class AccountMatch:
    """An Account found for a registrable domain, and the evidence."""

    account: Account
    domain: str
    # "website" (the Account's Website is on the domain) or "contact" (one of its Contacts'
    # addresses is); a website is the stronger evidence.
    via: str
    evidence: str


class CrmDirectory(Protocol):
    """The CRM as the linker reads and grows it; every method is one CRM call at most."""

    async def people_by_emails(self, org: str, emails: Sequence[str]) -> Sequence[Person]:
        """Contacts and unconverted Leads whose Email is one of `emails` (lowercase)."""

    async def accounts_by_domains(self, org: str, domains: Sequence[str]) -> Sequence[AccountMatch]:
        """Accounts whose Website, or one of whose Contacts' Email, is on one of `domains`
        (registrable domains; subdomains of them match)."""

    async def accounts_by_ids(self, org: str, ids: Sequence[str]) -> Sequence[Account]: ...

    async def open_opportunities(
        self, org: str, account_ids: Sequence[str], owner_id: str
    ) -> Sequence[Opportunity]:
        """Opportunities not closed on those Accounts; all owners when `owner_id` is empty."""

    async def cases(
        self,
        org: str,
        *,
        account_ids: Sequence[str] = (),
        contact_ids: Sequence[str] = (),
        case_numbers: Sequence[str] = (),
    ) -> Sequence[Case]:
        """Cases on those Accounts or Contacts (open only), or with those numbers (any)."""

    async def search(
        self, org: str, terms: Sequence[str]
    ) -> tuple[Sequence[Person], Sequence[Account]]:
        """Contacts, Leads and Accounts whose name, company or phone matches a term."""

    async def create(
        self, org: str, sobject_type: str, fields: Mapping[str, str], idempotency_key: str
    ) -> str:
        """Creates (or finds, when `idempotency_key` was already used) a record; its Id."""

    async def attach_to_account(self, org: str, contact: Person, account_id: str) -> None:
        """Sets a Contact's AccountId."""


@dataclass(frozen=True)
class CreationClaim:
    """The linker store's row that makes one auto-creation happen once per org and subject."""

    subject: str
    idempotency_key: str
    claimed_by_me: bool
    claim_time: datetime
    sobject_type: str = ""
    record_id: str = ""

    @property
    def done(self) -> bool:
        return bool(self.record_id)


@dataclass(frozen=True)
class StoredDecision:
    address: str
    outcome: Outcome
    sobject_type: str
    record_id: str
    explanation: str


class LinkerStore(Protocol):
    async def blacklist(self, org: str, user_id: str) -> frozenset[str]:
        """The org's and the user's blacklisted addresses and domains, lowercased."""

    async def add_blacklist_entry(self, org: str, user_id: str, entry: str) -> bool:
        """Adds an entry (`user_id` empty: org-wide); False when it was there already."""

    async def remove_blacklist_entry(self, org: str, user_id: str, entry: str) -> bool:
        """Removes an entry; False when there was none."""

    async def record_decisions(self, org: str, decisions: Sequence[StoredDecision]) -> None:
        """Keeps the latest decision per address, for the dashboard."""

    async def claim_creation(self, org: str, subject: str, idempotency_key: str) -> CreationClaim:
        """Inserts the claim row for `subject` unless one exists; returns the row either way."""

    async def complete_creation(
        self, org: str, subject: str, sobject_type: str, record_id: str
    ) -> None: ...

    async def release_creation(self, org: str, subject: str) -> None:
        """Drops an unfinished claim after a failed create, so a later session may retry."""
