"""Addresses, registrable domains, free-mail and blacklists, without any I/O.

The Public Suffix List and the free-mail list are data the adapters load; the domain only
sees them through `DomainRules`, so every rule here is testable with a literal list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Blacklist",
    "DomainRules",
    "domain_of",
    "normalize_address",
    "website_host",
]

# Deliberately loose: the connectors already parsed the headers; this only rejects what can
# never be a mailbox (no local part, no dot in the domain, spaces, control characters).
_ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")


def normalize_address(address: str) -> str | None:
    """The lowercased addr-spec, or None when it cannot be an address."""
    candidate = address.strip().strip("<>").lower()
    return candidate if _ADDRESS.fullmatch(candidate) else None


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1]


def website_host(website: str) -> str:
    """`https://www.Acme.co.uk/about` → `www.acme.co.uk`: Account websites are free text."""
    host = website.strip().lower()
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", host)
    host = re.split(r"[/?#:\s]", host, maxsplit=1)[0]
    return host.rstrip(".")


class DomainRules(Protocol):
    def registrable_domain(self, host: str) -> str:
        """`mail.acme.co.uk` → `acme.co.uk`; empty when the host has no registrable part."""

    def is_free_mail(self, domain: str) -> bool:
        """True for free-mail and ISP domains, which never identify an Account."""


@dataclass(frozen=True)
class Blacklist:
    """Addresses and domains never linked nor created; a domain covers its subdomains."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[str]) -> Blacklist:
        addresses: set[str] = set()
        domains: set[str] = set()
        for raw in entries:
            entry = raw.strip().lower().lstrip("@").lstrip("*.")
            if not entry:
                continue
            (addresses if "@" in entry else domains).add(entry.rstrip("."))
        return cls(frozenset(addresses), frozenset(domains))

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)

    def rule_for(self, address: str) -> str | None:
        """The entry that blacklists `address`, or None."""
        if address in self.addresses:
            return address
        labels = domain_of(address).split(".")
        for start in range(len(labels)):
            suffix = ".".join(labels[start:])
            if suffix in self.domains:
                return suffix
        return None
