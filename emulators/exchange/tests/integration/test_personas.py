"""Personas: FindPeople and GetPersona over a mailbox's contacts, through exchangelib (its live
test_find_people, test_fetch_personas and test_get_persona_failure), answers valid against the
schema."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib import Contact  # type: ignore[import-untyped]
from exchangelib.errors import ErrorInvalidIdMalformed  # type: ignore[import-untyped]
from exchangelib.items import Persona  # type: ignore[import-untyped]
from exchangelib.services import GetPersona  # type: ignore[import-untyped]
from lxml import etree

from concord_exchange_emulator import ews, schema
from concord_exchange_emulator.xmlns import S, local

pytestmark = pytest.mark.integration


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[etree._Element]:
    seen: list[etree._Element] = []
    original = ews.handle

    def recording(ctx: ews.Context, operation: str, request: etree._Element) -> etree._Element:
        env = original(ctx, operation, request)
        body = env.find(f"{{{S}}}Body")
        assert body is not None
        seen.append(body[0])
        return env

    monkeypatch.setattr(ews, "handle", recording)
    return seen


def test_contacts_are_found_as_people_and_read_as_personas(
    account: Any, answers: list[etree._Element]
) -> None:
    for given, surname in (("John", "Smith"), ("Ada", "Lovelace"), ("Johnny", "Cash")):
        Contact(
            account=account,
            folder=account.contacts,
            given_name=given,
            surname=surname,
            display_name=f"{given} {surname}",
            email_addresses=[],
        ).save()
    people = list(account.contacts.people())
    assert sorted(p.display_name for p in people) == ["Ada Lovelace", "John Smith", "Johnny Cash"]
    johns = list(
        account.contacts.people()
        .only("display_name")
        .filter(display_name="John Smith")
        .order_by("display_name")
    )
    assert [p.display_name for p in johns] == ["John Smith"]
    by_words = list(account.contacts.people().filter("john"))
    assert sorted(p.display_name for p in by_words) == ["John Smith", "Johnny Cash"]
    ada = account.contacts.people().filter(display_name="Ada Lovelace")
    [fetched] = account.fetch_personas(ada)
    assert fetched.display_name == "Ada Lovelace"
    assert fetched.surname == "Lovelace"
    for answer in answers:
        if local(answer.tag) in {"FindPeopleResponse", "GetPersonaResponseMessage"}:
            assert schema.validation_errors(answer) == [], etree.tostring(answer).decode()
    assert {"FindPeopleResponse", "GetPersonaResponseMessage"} <= {local(a.tag) for a in answers}


def test_a_persona_id_the_server_never_gave_is_malformed(account: Any) -> None:
    with pytest.raises(ErrorInvalidIdMalformed):
        GetPersona(account=account).get(personas=[Persona(id="AAA=", changekey="xxx")])
