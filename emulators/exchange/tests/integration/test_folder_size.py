"""A folder's size, PR_MESSAGE_SIZE_EXTENDED (0x0E08, Long), asked for as an extended property:
the bytes of the messages it holds, its hidden (folder-associated) ones included — user
configurations (a localized mailbox's regional settings in its root among them), and in the
Inbox the inbox rules and the Junk E-mail rule that MarkAsJunk keeps the blocked senders in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from exchangelib import (  # type: ignore[import-untyped]
    DELEGATE,
    Account,
    ExtendedProperty,
    Folder,
    Message,
)
from exchangelib.folders import RootOfHierarchy  # type: ignore[import-untyped]
from exchangelib.properties import Actions, Conditions, Exceptions, Rule  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


class FolderSize(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0E08
    property_type = "Long"


@pytest.fixture(autouse=True)
def _size_registered() -> Iterator[None]:
    Folder.register("size", FolderSize)
    RootOfHierarchy.register("size", FolderSize)
    try:
        yield
    finally:
        Folder.deregister("size")
        RootOfHierarchy.deregister("size")


def _size(folder: Any) -> int:
    folder.refresh()
    return int(folder.size)


def test_a_folder_weighs_its_items_and_its_hidden_configurations(account: Any) -> None:
    folder = Folder(parent=account.inbox, name="Weighed").save()
    assert _size(folder) == 0

    item = Message(account=account, folder=folder, subject="weighed", body="x" * 500).save()
    item.refresh()
    assert _size(folder) == item.size > 500

    folder.create_user_configuration(name="Weighed.Settings", dictionary={"theme": "dark"})
    with_config = _size(folder)
    assert with_config > item.size
    assert folder.total_count == 1  # the configuration is hidden, not an item
    [listed] = [f for f in account.inbox.children if f.id == folder.id]  # FindFolder
    assert listed.size == with_config

    assert _size(account.root) == 0
    account.root.create_user_configuration(name="Weighed.Root", dictionary={"a": "b"})
    assert _size(account.root) > 0


def test_the_inbox_weighs_its_rules_and_the_blocked_senders(account: Any) -> None:
    assert _size(account.inbox) == 0
    Rule(
        account=account,
        display_name="Quotes",
        priority=1,
        is_enabled=True,
        conditions=Conditions(contains_sender_strings=["quotes@acme.example"]),
        exceptions=Exceptions(),
        actions=Actions(mark_as_read=True),
    ).save()
    with_rule = _size(account.inbox)
    assert with_rule > 0

    item = Message(
        account=account, folder=account.junk, subject="offer", author="deals@offers.example"
    ).save()
    item.mark_as_junk(is_junk=True, move_item=False)
    blocking = _size(account.inbox)
    assert blocking > with_rule
    item.mark_as_junk(is_junk=False, move_item=True)
    item.refresh()
    # The rule stays, without the sender; the message is back in the Inbox.
    assert with_rule < _size(account.inbox) - item.size < blocking


def test_a_localized_mailbox_keeps_its_regional_settings_hidden_in_its_root(
    make_config: Any, new_user: Callable[..., tuple[str, str]]
) -> None:
    address, password = new_user(language="da-DK")
    account = Account(
        address, config=make_config(address, password), autodiscover=False, access_type=DELEGATE
    )
    options = account.root.get_user_configuration(name="OWA.UserOptions")
    assert options.dictionary == {"dateformat": "dd-MM-yyyy", "timeformat": "HH:mm"}
    assert _size(account.root) > 0
    assert account.root.total_count == 0
