from __future__ import annotations

import pytest

from concord_reconciler.kernel.errors import InvalidRequest
from concord_reconciler.kernel.names import (
    parse_mailbox_name,
    parse_org_settings_name,
    parse_session_name,
)

pytestmark = pytest.mark.unit

SESSION = "0b6f8f3e-6a0c-4e47-9c2e-6d1f7f0d2a11"


def test_valid_names_parse() -> None:
    assert parse_mailbox_name("mailboxes/demo-1") == "demo-1"
    assert parse_session_name(f"mailboxes/demo/sessions/{SESSION}") == ("demo", SESSION)
    assert parse_org_settings_name("orgs/acme/settings") == "acme"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "demo",
        "mailbox/demo",
        "mailboxes/",
        "mailboxes/Demo",
        "mailboxes/a.b",
        "mailboxes/a/b",
        "mailboxes/-x",
        "mailboxes/*",
        "mailboxes/>",
    ],
)
def test_malformed_mailbox_names_are_invalid_arguments(name: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_mailbox_name(name, "mailbox")
    assert raised.value.field_violations[0][0] == "mailbox"


@pytest.mark.parametrize(
    "name", ["mailboxes/demo/sessions/x", "mailboxes/demo/runs/" + SESSION, "mailboxes/demo"]
)
def test_malformed_session_names_are_invalid_arguments(name: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_session_name(name)
