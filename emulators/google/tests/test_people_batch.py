"""People batch writes (batchCreateContacts, batchUpdateContacts, batchDeleteContacts) through
the real google-api-python-client: limits, whole-batch failures naming each bad contact,
etags, and the same sync-token change log as the single-contact calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]

from concord_google_emulator.testing import RunningEmulator

Builder = Callable[..., Any]


def _contact(name: str, **extra: Any) -> dict[str, Any]:
    return {"contactPerson": {"names": [{"givenName": name}], **extra}}


def _details(exc: HttpError) -> dict[str, Any]:
    [detail] = json.loads(exc.content)["error"]["details"]
    return dict(detail)


def _changes(people: Any, token: str) -> dict[str, Any]:
    answer = (
        people.people()
        .connections()
        .list(resourceName="people/me", personFields="names", syncToken=token)
        .execute()
    )
    return dict(answer)


def _token(people: Any) -> str:
    listed = (
        people.people()
        .connections()
        .list(resourceName="people/me", personFields="names", requestSyncToken=True)
        .execute()
    )
    return str(listed["nextSyncToken"])


def test_a_batch_create_answers_each_person_and_the_sync_token_lists_them(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people")
    token = _token(people)
    made = (
        people.people()
        .batchCreateContacts(
            body={"contacts": [_contact(f"Ada {n}") for n in range(3)], "readMask": "names"}
        )
        .execute()
    )
    answers = made["createdPeople"]
    assert [a["person"]["names"][0]["givenName"] for a in answers] == ["Ada 0", "Ada 1", "Ada 2"]
    assert {a["httpStatusCode"] for a in answers} == {200}
    assert all(a["requestedResourceName"] == a["person"]["resourceName"] for a in answers)
    listed = _changes(people, token)
    assert sorted(p["resourceName"] for p in listed["connections"]) == sorted(
        a["person"]["resourceName"] for a in answers
    )
    blind = people.people().batchCreateContacts(body={"contacts": [_contact("Bea")]}).execute()
    assert "createdPeople" not in blind  # an empty readMask skips the read back


def test_a_batch_create_with_a_bad_contact_creates_none_and_names_its_index(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people")
    token = _token(people)
    bad = _contact("Ada", biographies=[{"value": "a"}, {"value": "b"}])
    with pytest.raises(HttpError) as caught:
        people.people().batchCreateContacts(
            body={"contacts": [_contact("Bea"), bad, _contact("Cy")], "readMask": "names"}
        ).execute()
    assert caught.value.status_code == 400
    detail = _details(caught.value)
    assert detail["@type"].endswith("BatchCreateContactsErrorDetails")
    assert list(detail["contactErrors"]) == ["1"]
    assert detail["contactErrors"]["1"]["code"] == 3
    assert "connections" not in _changes(people, token)


def test_batch_limits_are_200_writes_and_500_deletes(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people").people()
    with pytest.raises(HttpError) as create:
        people.batchCreateContacts(
            body={"contacts": [_contact(str(n)) for n in range(201)], "readMask": "names"}
        ).execute()
    with pytest.raises(HttpError) as update:
        people.batchUpdateContacts(
            body={
                "contacts": {f"people/c{n}": {"etag": "x"} for n in range(201)},
                "updateMask": "names",
                "readMask": "names",
            }
        ).execute()
    with pytest.raises(HttpError) as delete:
        people.batchDeleteContacts(
            body={"resourceNames": [f"people/c{n}" for n in range(501)]}
        ).execute()
    with pytest.raises(HttpError) as empty:
        people.batchDeleteContacts(body={"resourceNames": []}).execute()
    for refused in (create, update, delete, empty):
        assert refused.value.status_code == 400
        assert json.loads(refused.value.content)["error"]["status"] == "INVALID_ARGUMENT"


def test_a_batch_update_checks_each_etag_and_writes_all_or_none(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people")
    made = [
        a["person"]
        for a in people.people()
        .batchCreateContacts(
            body={"contacts": [_contact("Ada"), _contact("Bea")], "readMask": "names"}
        )
        .execute()["createdPeople"]
    ]
    token = _token(people)
    first, second = made
    with pytest.raises(HttpError) as stale:
        people.people().batchUpdateContacts(
            body={
                "contacts": {
                    first["resourceName"]: {"etag": first["etag"], "names": [{"givenName": "A"}]},
                    second["resourceName"]: {"etag": "stale", "names": [{"givenName": "B"}]},
                },
                "updateMask": "names",
                "readMask": "names",
            }
        ).execute()
    detail = _details(stale.value)
    assert detail["@type"].endswith("BatchUpdateContactsErrorDetails")
    assert list(detail["contactErrors"]) == [second["resourceName"]]
    assert detail["contactErrors"][second["resourceName"]]["code"] == 9  # FAILED_PRECONDITION
    assert "connections" not in _changes(people, token)
    updated = (
        people.people()
        .batchUpdateContacts(
            body={
                "contacts": {
                    p["resourceName"]: {"etag": p["etag"], "names": [{"givenName": f"New {n}"}]}
                    for n, p in enumerate(made)
                },
                "updateMask": "names",
                "readMask": "names",
            }
        )
        .execute()["updateResult"]
    )
    assert {r: a["person"]["names"][0]["givenName"] for r, a in updated.items()} == {
        first["resourceName"]: "New 0",
        second["resourceName"]: "New 1",
    }
    assert all(updated[p["resourceName"]]["person"]["etag"] != p["etag"] for p in made)
    listed = _changes(people, token)
    assert sorted(p["names"][0]["givenName"] for p in listed["connections"]) == ["New 0", "New 1"]


def test_a_batch_delete_with_a_missing_contact_deletes_none(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people")
    made = [
        a["person"]["resourceName"]
        for a in people.people()
        .batchCreateContacts(
            body={"contacts": [_contact("Ada"), _contact("Bea")], "readMask": "names"}
        )
        .execute()["createdPeople"]
    ]
    token = _token(people)
    with pytest.raises(HttpError) as missing:
        people.people().batchDeleteContacts(
            body={"resourceNames": [*made, "people/c0000000000000000001"]}
        ).execute()
    assert missing.value.status_code == 404
    assert "connections" not in _changes(people, token)
    people.people().batchDeleteContacts(body={"resourceNames": made}).execute()
    gone = _changes(people, token)
    assert sorted(p["resourceName"] for p in gone["connections"]) == sorted(made)
    assert all(p["metadata"]["deleted"] for p in gone["connections"])


def test_a_batch_get_answers_each_name_a_missing_one_with_its_own_404(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    people = client("people").people()
    [made] = people.batchCreateContacts(
        body={"contacts": [_contact("Ada")], "readMask": "names"}
    ).execute()["createdPeople"]
    name = made["person"]["resourceName"]
    got = people.getBatchGet(
        resourceNames=[name, "people/c0000000000000000001"], personFields="names"
    ).execute()["responses"]
    assert got[0]["person"]["names"] == [{"givenName": "Ada"}]
    assert (got[1]["httpStatusCode"], got[1]["status"]["code"]) == (404, 5)
    assert "person" not in got[1]


def test_a_batch_get_of_200_names_goes_as_a_post_with_the_method_override(
    client: Builder, emulator: RunningEmulator, user: str
) -> None:
    """200 names make a URL past the client's 2,048 characters: it POSTs the query as a form
    with X-HTTP-Method-Override: GET, which Google takes as the GET."""
    people = client("people").people()
    made = people.batchCreateContacts(
        body={"contacts": [_contact(f"Ada {n}") for n in range(200)], "readMask": "names"}
    ).execute()["createdPeople"]
    names = [a["person"]["resourceName"] for a in made]
    got = people.getBatchGet(resourceNames=names, personFields="names").execute()["responses"]
    assert [g["person"]["resourceName"] for g in got] == names
