"""The folder tree of an Exchange 2016 mailbox, as exchangelib walks it (issue #15)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import DELEGATE, Account, Folder  # type: ignore[import-untyped]
from exchangelib.errors import ErrorFolderExists  # type: ignore[import-untyped]
from exchangelib.folders import (  # type: ignore[import-untyped]
    Calendar,
    CommonViews,
    GALContacts,
    JunkEmail,
    Messages,
    Outbox,
    RecoverableItemsRoot,
)

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Any]


def test_root_sits_above_top_of_information_store(account: Account) -> None:
    parts = [p.name for p in account.calendar.parts]
    assert parts == ["root", "Top of Information Store", "Calendar"]
    assert account.calendar.absolute == "/root/Top of Information Store/Calendar"
    assert account.root.tree().startswith("root")


def test_the_distinguished_and_system_folders_of_a_2016_mailbox(account: Account) -> None:
    assert isinstance(account.outbox, Outbox)
    assert isinstance(account.junk, JunkEmail)
    assert isinstance(account.recoverable_items_root, RecoverableItemsRoot)
    assert isinstance(account.root / "Common Views", CommonViews)
    assert len(list(account.contacts.glob("gal*"))) == 1
    assert isinstance(account.contacts / "GAL Contacts", GALContacts)
    # A real mailbox holds some 45 folders before the user makes any.
    assert len(list(account.root.walk())) > 40
    # The IPM subtree's root has no folder class; a generic folder gets none either.
    assert account.msg_folder_root.folder_class is None
    plain = Folder(parent=account.inbox, name="plain").save()
    plain.refresh()
    assert plain.folder_class is None
    assert type(Messages(parent=account.inbox, name="mail").save()) is Messages


def test_folder_names_are_unique_regardless_of_case(account: Account) -> None:
    Folder(parent=account.inbox, name="CASE").save()
    with pytest.raises(ErrorFolderExists, match="Could not create folder 'case'"):
        Folder(parent=account.inbox, name="case").save()


def test_a_localized_mailbox_names_its_default_folders_in_its_language(
    make_config: MakeConfig, new_user: Callable[..., tuple[str, str]]
) -> None:
    address, password = new_user(language="da-DK")
    account = Account(
        address,
        config=make_config(address, password),
        autodiscover=False,
        access_type=DELEGATE,
        locale="da_DK",
    )
    calendar = account.root.get_default_folder(Calendar)
    assert calendar.name == "Kalender"
    assert account.inbox.name == "Indbakke"
