"""Resource names: what the API accepts, and the INVALID_ARGUMENT for the rest."""

from __future__ import annotations

import pytest

from concord_gateway.domain import names
from concord_gateway.domain.errors import InvalidName

pytestmark = pytest.mark.unit


def test_valid_names_give_their_mailbox_or_org() -> None:
    assert names.mailbox_name("mailboxes/demo-1", "mailbox") == "mailboxes/demo-1"
    assert names.mailbox_of_child("mailboxes/demo/sessions/01J9Z", "name", "sessions") == (
        "mailboxes/demo"
    )
    assert names.mailbox_of_settings("mailboxes/demo/settings", "name") == "mailboxes/demo"
    assert names.org_of_settings("orgs/00D5g000004ABC/settings", "name") == "orgs/00D5g000004ABC"
    assert names.org_name("orgs/demo", "org") == "orgs/demo"


@pytest.mark.parametrize(
    "value",
    ["", "demo", "not a/mailbox name", "mailboxes/", "mailboxes/Demo", "mailboxes/a/b", "orgs/x"],
)
def test_a_malformed_mailbox_name_is_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidName) as raised:
        names.mailbox_name(value, "mailbox")
    assert raised.value.code == "INVALID_ARGUMENT"
    assert raised.value.field_violations == [("mailbox", "must be 'mailboxes/{mailbox}'")]


def test_children_must_be_of_the_named_collection() -> None:
    with pytest.raises(InvalidName):
        names.mailbox_of_child("mailboxes/demo/itemErrors/1", "name", "sessions")
    with pytest.raises(InvalidName):
        names.org_of_settings("orgs/demo", "name")
    with pytest.raises(InvalidName):
        names.check_mailbox_id("Demo Box", "mailbox_id")


def test_a_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidName) as raised:
        names.mailbox_name("x" * 500, "mailbox")
    assert len(raised.value.message) < 200
