"""The linker's domain: participants, CRM records, decisions and their explanations."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from concord_rpc import InvalidArgument
from concord_rpc.requests import ResourceName

__all__ = [
    "LINKER_ISSUE",
    "Account",
    "AutoResolvePolicy",
    "Case",
    "EmailContent",
    "InvalidRequest",
    "LinkedRecord",
    "Opportunity",
    "Outcome",
    "Participant",
    "ParticipantDecision",
    "Person",
    "RelatedRecord",
    "Resolution",
    "Role",
    "UnknownAddressAction",
    "parse_org_name",
]

LINKER_ISSUE = 7


class InvalidRequest(InvalidArgument):
    """A malformed request; `field_violations` say which fields, as BadRequest."""


class Role(enum.IntEnum):
    """A participant's role; the values are the proto's `ParticipantRole` numbers."""

    UNSPECIFIED = 0
    ORGANIZER = 1
    REQUIRED_ATTENDEE = 2
    OPTIONAL_ATTENDEE = 3
    RESOURCE = 4
    SENDER = 5
    TO_RECIPIENT = 6
    CC_RECIPIENT = 7
    BCC_RECIPIENT = 8
    SUBJECT = 9


# Who speaks for an activity first: the person who wrote or called it, then those it was
# addressed to, then the copied. Rooms and equipment never become WhoId.
ROLE_RANK: dict[Role, int] = {
    Role.SENDER: 0,
    Role.ORGANIZER: 0,
    Role.SUBJECT: 0,
    Role.TO_RECIPIENT: 1,
    Role.REQUIRED_ATTENDEE: 1,
    Role.UNSPECIFIED: 2,
    Role.CC_RECIPIENT: 3,
    Role.OPTIONAL_ATTENDEE: 3,
    Role.BCC_RECIPIENT: 4,
    Role.RESOURCE: 9,
}


@dataclass(frozen=True)
class Participant:
    email: str
    display_name: str = ""
    role: Role = Role.UNSPECIFIED


class Outcome(enum.IntEnum):
    """How one participant was resolved; the values are the proto's `ResolutionOutcome`."""

    UNSPECIFIED = 0
    MATCHED_CONTACT = 1
    MATCHED_LEAD = 2
    CREATED_CONTACT = 3
    CREATED_LEAD = 4
    BLACKLISTED = 5
    AMBIGUOUS = 6
    UNRESOLVED = 7
    INTERNAL = 8


class UnknownAddressAction(enum.IntEnum):
    """The proto's `UnknownAddressAction`; UNSPECIFIED means NONE (off by default)."""

    UNSPECIFIED = 0
    NONE = 1
    CREATE_LEAD = 2
    CREATE_CONTACT = 3


@dataclass(frozen=True)
class AutoResolvePolicy:
    unknown_address_action: UnknownAddressAction = UnknownAddressAction.NONE
    create_accounts_from_domain: bool = False
    # Added to the maintained free-mail list, never replacing it.
    free_mail_domains: frozenset[str] = frozenset()

    @property
    def may_write(self) -> bool:
        """Whether resolving may create or change CRM records."""
        return self.creates or self.create_accounts_from_domain

    @property
    def creates(self) -> bool:
        return self.unknown_address_action in (
            UnknownAddressAction.CREATE_LEAD,
            UnknownAddressAction.CREATE_CONTACT,
        )


@dataclass(frozen=True)
class Person:
    """A Contact or an unconverted Lead, as far as linking needs it."""

    sobject_type: str  # "Contact" or "Lead"
    id: str
    name: str
    email: str
    # ISO 8601; compared as strings, which orders Salesforce's UTC timestamps correctly.
    last_modified: str = ""
    account_id: str = ""
    # The Contact's Account's Name, when the CRM returned it with the Contact.
    account_name: str = ""
    company: str = ""
    title: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    website: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class Opportunity:
    id: str
    name: str
    account_id: str
    owner_id: str
    is_closed: bool = False
    last_activity: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class Case:
    id: str
    case_number: str
    subject: str = ""
    account_id: str = ""
    contact_id: str = ""
    is_closed: bool = False
    last_modified: str = ""


@dataclass(frozen=True)
class LinkedRecord:
    sobject_type: str
    id: str
    name: str = ""


@dataclass(frozen=True)
class ParticipantDecision:
    participant: Participant
    outcome: Outcome
    record: LinkedRecord | None = None
    # Which rule decided and on what match, for the dashboard.
    explanation: str = ""


@dataclass(frozen=True)
class Resolution:
    """The links of one activity; empty when no participant resolved."""

    who: LinkedRecord | None = None
    what: LinkedRecord | None = None
    relations: Sequence[LinkedRecord] = field(default_factory=tuple)
    what_explanation: str = ""
    decisions: Sequence[ParticipantDecision] = field(default_factory=tuple)
    created: Sequence[LinkedRecord] = field(default_factory=tuple)


@dataclass(frozen=True)
class EmailContent:
    """What initial search reads from one email."""

    subject: str = ""
    sender: Participant | None = None
    recipients: Sequence[Participant] = field(default_factory=tuple)
    body_text: str = ""


@dataclass(frozen=True)
class RelatedRecord:
    sobject_type: str
    id: str
    name: str
    score: float
    explanation: str


_ORG = ResourceName("orgs/{org}", error=InvalidRequest)


def parse_org_name(name: str, field: str = "org") -> str:
    return _ORG.parse(name, field)
