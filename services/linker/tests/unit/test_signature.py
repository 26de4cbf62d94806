"""Signatures of real list posts (tests/data, from the notmuch test corpora)."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from concord_linker.domain.signature import parse_signature

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data"


def message(name: str) -> tuple[str, str]:
    with (DATA / name).open("rb") as file:
        parsed = email.message_from_binary_file(file, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    assert body is not None
    sender = parsed["From"].addresses[0].display_name
    return body.get_content(), sender


def test_name_title_company_and_phone_on_their_own_lines() -> None:
    body, sender = message("lkml-1382298793.003478.eml")
    signature = parse_signature(body, sender)
    assert signature.name == "Joel Becker"
    assert signature.title == "Senior Development Manager"
    assert signature.company == "Oracle"
    assert signature.phone == "(650) 506-8127"
    assert signature.emails == ("joel.becker@oracle.com",)


def test_title_at_company_on_one_line() -> None:
    signature = parse_signature(*message("lkml-1382298587.004582.eml"))
    assert (signature.name, signature.title, signature.company) == (
        "Timur Tabi",
        "Linux kernel developer",
        "Freescale",
    )


def test_legal_form_names_the_company() -> None:
    signature = parse_signature(*message("lkml-1382298793.003501.eml"))
    assert signature.name == "Jiri Kosina"
    assert signature.company == "Novell Inc"


def test_title_comma_company_and_website() -> None:
    signature = parse_signature(*message("lkml-1382298793.002432.eml"))
    assert signature.title == "Freelance Developer"
    assert signature.company == "SlimLogic Ltd"
    assert "http://www.slimlogic.co.uk" in signature.websites


def test_labelled_phone_beside_a_website() -> None:
    signature = parse_signature(*message("lkml-1382298793.002329.eml"))
    assert signature.name == "Michal Simek"
    assert signature.phone == "+42-0-721842854"
    assert "www.monstr.eu" in signature.websites


def test_closing_phrase_without_delimiter_and_no_footer_or_quote() -> None:
    body = (
        "> quoted text\n> Regards,\n> Someone Else\n\nSounds good.\n\nBest regards,\n"
        "Ann Smith\nVP Sales, Acme Ltd\nTel: +44 20 7946 0958\n"
        "--\nTo unsubscribe from this list: send the line\n"
    )
    signature = parse_signature(body)
    assert signature.name == "Ann Smith"
    assert signature.title == "VP Sales"
    assert signature.company == "Acme Ltd"
    assert signature.phone == "+44 20 7946 0958"


def test_version_lines_and_empty_bodies_are_no_signature() -> None:
    assert not parse_signature("patch\n-- \n1.6.5.3\n\n")
    assert not parse_signature("")
