"""ArchiveItem: Exchange runs it as a move to the folder ArchiveSourceFolderId names (a FolderId,
or a DistinguishedFolderId with its mailbox, as exchangelib sends one), answered with the moved
items' ids; a mailbox without an archive refuses every item (the EWS reference's
ErrorInvalidOperation answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from exchangelib import DELEGATE, Account, Folder, Message  # type: ignore[import-untyped]
from exchangelib.errors import ErrorInvalidOperation  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


@pytest.fixture
def archived_account(make_config: Any, new_user: Callable[..., tuple[str, str]]) -> Any:
    address, password = new_user(archive=True)
    return Account(
        address, config=make_config(address, password), autodiscover=False, access_type=DELEGATE
    )


def _message(account: Any, subject: str) -> Any:
    return Message(account=account, folder=account.inbox, subject=subject).save()


def test_archived_items_move_to_the_named_folder_and_come_back_by_their_new_ids(
    archived_account: Any,
) -> None:
    account = archived_account
    item = _message(account, "to the archive")
    item_id, change_key = item.archive(to_folder=account.trash)
    assert item_id != item.id
    [moved] = list(account.fetch(ids=[(item_id, change_key)]))
    assert (moved.subject, moved.parent_folder_id.id) == ("to the archive", account.trash.id)

    _message(account, "by query")
    account.inbox.filter(subject="by query").archive(to_folder=account.trash)
    assert account.inbox.filter(subject="by query").count() == 0
    assert account.trash.filter(subject="by query").count() == 1

    kept = Folder(parent=account.inbox, name="Kept").save()
    _message(account, "by folder id")
    account.inbox.filter(subject="by folder id").archive(to_folder=kept)
    assert kept.filter(subject="by folder id").count() == 1


def test_a_mailbox_without_an_archive_refuses_and_keeps_the_item(account: Any) -> None:
    item = _message(account, "stays")
    with pytest.raises(ErrorInvalidOperation, match="Archive mailbox is not enabled"):
        item.archive(to_folder=account.trash)
    assert account.inbox.filter(subject="stays").count() == 1
