from __future__ import annotations

import re

import pytest

from concord_rpc import InvalidArgument
from concord_rpc.requests import RESOURCE_ID, ResourceName, Violations

pytestmark = pytest.mark.unit


class InvalidRequest(InvalidArgument):
    pass


CONNECTION = ResourceName("orgs/{org}/connection", error=InvalidRequest)
SHAPE = "must look like `orgs/{org}/connection`"


def test_a_name_gives_its_id() -> None:
    assert CONNECTION.parse("orgs/acme-1/connection", "name") == "acme-1"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is required"),
        (
            "orgs/Acme/connection",
            "must look like `orgs/{org}/connection`, got 'orgs/Acme/connection'",
        ),
        (
            "orgs/a.b/connection",
            "must look like `orgs/{org}/connection`, got 'orgs/a.b/connection'",
        ),
        ("orgs/acme", "must look like `orgs/{org}/connection`, got 'orgs/acme'"),
    ],
)
def test_a_bad_name_is_the_service_error_naming_the_field(value: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        CONNECTION.parse(value, "connection.name")
    assert raised.value.message == f"connection.name {problem}"
    assert raised.value.field_violations == [("connection.name", problem)]
    assert raised.value.reason == "INVALID_ARGUMENT"


def test_the_id_rule() -> None:
    assert re.fullmatch(RESOURCE_ID, "a" * 63)
    assert not re.fullmatch(RESOURCE_ID, "a" * 64)
    assert not re.fullmatch(RESOURCE_ID, "-a")
    assert not re.fullmatch(RESOURCE_ID, "a-")


def test_violations_name_every_bad_field_in_one_error() -> None:
    checks = Violations(InvalidRequest)
    assert checks.name(CONNECTION, "nope", "name") == ""
    assert not checks.require("user_id", "")
    assert checks.require("client_id", "x")
    assert not checks.check("page_size", False, "must not be negative")
    assert checks.check("kind", True, "is required")
    assert checks
    with pytest.raises(InvalidRequest) as raised:
        checks.raise_if_any()
    assert raised.value.message == "invalid request: name, user_id, page_size"
    assert [field for field, _ in raised.value.field_violations] == ["name", "user_id", "page_size"]


def test_no_violations_raise_nothing() -> None:
    checks = Violations()
    assert checks.name(CONNECTION.parse, "orgs/a/connection", "name") == "a"
    checks.raise_if_any()
    assert not checks
    assert type(checks.error()) is InvalidArgument
