"""GetFolder, FindFolder and CreateFolder: distinguished and custom folders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import Account, Folder  # type: ignore[import-untyped]
from exchangelib.errors import ErrorFolderExists  # type: ignore[import-untyped]
from exchangelib.folders import (  # type: ignore[import-untyped]
    Calendar,
    Contacts,
    Tasks,
)

from concord_exchange_emulator.seed import DEMO_MAILBOX, SERVICE_ACCOUNT, SERVICE_PASSWORD
from concord_exchange_emulator.testing import RunningEmulator

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Any]


def test_distinguished_folders(account: Account) -> None:
    assert isinstance(account.calendar, Calendar)
    assert isinstance(account.tasks, Tasks)
    assert isinstance(account.contacts, Contacts)
    names = {
        account.inbox.name,
        account.sent.name,
        account.trash.name,
        account.root.name,
        account.msg_folder_root.name,
    }
    # Exchange gives the mailbox root an empty DisplayName, which exchangelib names "root".
    assert names == {"Inbox", "Sent Items", "Deleted Items", "Top of Information Store", "root"}


def test_create_then_find_custom_folders(account: Account) -> None:
    emails = Folder(parent=account.msg_folder_root, name="Salesforce Emails")
    emails.save()
    contacts = Contacts(parent=account.msg_folder_root, name="Salesforce Contacts")
    contacts.save()
    assert emails.id
    assert contacts.id
    account.root.refresh()
    found = account.msg_folder_root / "Salesforce Emails"
    assert found.id == emails.id
    found_contacts = account.msg_folder_root / "Salesforce Contacts"
    assert isinstance(found_contacts, Contacts)
    children = {f.name for f in account.msg_folder_root.children}
    assert {"Salesforce Emails", "Salesforce Contacts", "Calendar", "Inbox"} <= children


def test_a_duplicate_folder_name_is_refused(account: Account) -> None:
    Folder(parent=account.msg_folder_root, name="Twice").save()
    with pytest.raises(ErrorFolderExists):
        Folder(parent=account.msg_folder_root, name="Twice").save()


def test_demo_seed_has_the_salesforce_folders(
    emulator: RunningEmulator, make_config: MakeConfig
) -> None:
    from exchangelib import IMPERSONATION

    config = make_config(SERVICE_ACCOUNT, SERVICE_PASSWORD)
    account = Account(DEMO_MAILBOX, config=config, autodiscover=False, access_type=IMPERSONATION)
    emails = account.msg_folder_root / "Salesforce Emails"
    contacts = account.msg_folder_root / "Salesforce Contacts"
    # Two written for the demo, three real posts of a mail thread.
    assert emails.all().count() == 5
    assert contacts.all().count() == 3
    # FindFolder with paging (exchangelib pages deep traversals itself).
    folders = list(account.root.walk())
    assert len(folders) >= 10


def test_delete_folder_and_its_items(account: Account) -> None:
    from exchangelib import Task
    from exchangelib.errors import (
        ErrorDeleteDistinguishedFolder,
        ErrorFolderNotFound,
    )

    folder = Folder(parent=account.msg_folder_root, name="Going away")
    folder.save()
    Task(account=account, folder=folder, subject="inside").save()
    list(folder.sync_items())
    state = folder.item_sync_state
    folder_id = folder.id
    folder.delete()
    vanished = Folder(root=account.root, id=folder_id)
    # A sync of a folder that vanished meanwhile is refused, not answered with nothing.
    vanished.item_sync_state = state
    with pytest.raises(ErrorFolderNotFound):
        list(vanished.sync_items())
    with pytest.raises(ErrorDeleteDistinguishedFolder):
        account.calendar.delete()
    account.root.refresh()
    assert "Going away" not in {f.name for f in account.msg_folder_root.children}
