from __future__ import annotations

import pytest

from concord_linker.adapters.domain_rules import PublicSuffixRules, free_mail_domains
from concord_linker.domain.addresses import Blacklist, normalize_address, website_host

pytestmark = pytest.mark.unit

RULES = PublicSuffixRules()


@pytest.mark.parametrize(
    ("host", "registrable"),
    [
        ("mail.acme.co.uk", "acme.co.uk"),
        ("acme.co.uk", "acme.co.uk"),
        ("opensource.wolfsonmicro.com", "wolfsonmicro.com"),
        ("linux.vnet.ibm.com", "ibm.com"),
        ("s5r6.in-berlin.de", "in-berlin.de"),
        ("Mail.Example.COM.", "example.com"),
        ("co.uk", ""),
        ("localhost", ""),
        ("192.168.1.1", ""),
    ],
)
def test_registrable_domain_is_public_suffix_aware(host: str, registrable: str) -> None:
    assert RULES.registrable_domain(host) == registrable


def test_free_mail_comes_from_the_maintained_list() -> None:
    domains = free_mail_domains()
    assert len(domains) > 4000
    for domain in ("gmail.com", "yahoo.co.uk", "comcast.net", "t-online.de", "proton.me"):
        assert RULES.is_free_mail(domain), domain
    for domain in ("oracle.com", "suse.de", "acme.co.uk"):
        assert not RULES.is_free_mail(domain), domain
    assert PublicSuffixRules(frozenset({"corp-mail.example"})).is_free_mail("corp-mail.example")


def test_addresses_are_normalized_or_refused() -> None:
    assert normalize_address(" <Ann@Example.COM> ") == "ann@example.com"
    for bad in ("nobody", "a@b", "two@@x.com", "a b@x.com", "ann@exa\x07mple.com", "@x.com"):
        assert normalize_address(bad) is None, bad


def test_website_host_reads_free_text_websites() -> None:
    assert website_host("https://www.Acme.co.uk/about?x=1") == "www.acme.co.uk"
    assert website_host("acme.com") == "acme.com"
    assert website_host("http://acme.com:8080") == "acme.com"


def test_blacklist_covers_addresses_and_subdomains() -> None:
    blacklist = Blacklist.of(["Ann@Example.com", "competitor.com", "*.spam.org", "@noise.net", ""])
    assert blacklist.rule_for("ann@example.com") == "ann@example.com"
    assert blacklist.rule_for("bob@example.com") is None
    assert blacklist.rule_for("x@competitor.com") == "competitor.com"
    assert blacklist.rule_for("x@eu.mail.competitor.com") == "competitor.com"
    assert blacklist.rule_for("x@notcompetitor.com") is None
    assert blacklist.rule_for("x@a.spam.org") == "spam.org"
    assert blacklist.rule_for("x@noise.net") == "noise.net"
    assert not Blacklist.of([])
