"""A mailbox's folders, looked up for its exchangelib `Account` by that mailbox alone.

exchangelib keeps `account.root`, `account.calendar`, `account.inbox`, ... and a
`FolderCollection`'s folders in `threaded_cached_property`s, whose lock belongs to the property,
not to the account or the collection: whatever one mailbox computes under them, every other
mailbox of the process waits for. They compute a lot the first time: `account.calendar` the
version probe and a GetFolder or two; `folder / name` the mailbox's whole folder tree (a GetFolder
of every distinguished folder, a deep FindFolder and a GetFolder), read while the children's
collection is being made. When a company's mailboxes are added at once, their first listings and
push watches queued on those locks: with 30 mailboxes, a first listing waited up to 17 s, past
the reconciler's 10 s deadline, while no EWS request took over 0.2 s. Looked up here, a mailbox's
folders wait only for that mailbox's answers, and a folder found by name costs one small
FindFolder instead of a read of the whole tree (a new mailbox's dedicated folder took two).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from exchangelib import Account, Folder  # type: ignore[import-untyped]
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorFolderExists,
    ErrorFolderNotFound,
)
from exchangelib.folders import (  # type: ignore[import-untyped]
    SHALLOW,
    Calendar,
    FolderCollection,
    Inbox,
    MsgFolderRoot,
    Root,
    SentItems,
    SingleFolderQuerySet,
    Tasks,
)
from exchangelib.properties import DistinguishedFolderId, Mailbox  # type: ignore[import-untyped]
from exchangelib.services import CreateFolder  # type: ignore[import-untyped]

__all__ = ["DedicatedFolders", "find_child", "open_folders"]

# The Account attributes Concord reads its folders through, and their folder classes.
_WELL_KNOWN: tuple[tuple[str, Any], ...] = (
    ("calendar", Calendar),
    ("tasks", Tasks),
    ("msg_folder_root", MsgFolderRoot),
    ("inbox", Inbox),
    ("sent", SentItems),
)


def open_folders(account: Account) -> Account:
    """`account` with its root and well-known folders found, once: one GetFolder for the root,
    one for the rest, kept where exchangelib's properties keep what they compute (the instance's
    own attributes, which they then answer from without taking their lock). Blocks; call it from
    a worker thread. A folder the server does not hand over (absent, access denied) is left to
    exchangelib's property, with its own fallbacks and errors, rather than asked for at every
    call; an error about the call or the mailbox is raised, as the property would raise it, and
    the next call tries again."""
    held = vars(account)
    if "root" in held:
        return account
    root = Root.get_distinguished(account=account)
    folders = [
        cls(
            _distinguished_id=DistinguishedFolderId(
                id=cls.DISTINGUISHED_FOLDER_ID,
                mailbox=Mailbox(email_address=account.primary_smtp_address),
            ),
            root=root,
        )
        for _, cls in _WELL_KNOWN
    ]
    found = list(FolderCollection(account=account, folders=folders).resolve())
    # setdefault, as the properties do: what another thread kept first stays. The root last: it
    # says the account is open.
    for (name, cls), folder in zip(_WELL_KNOWN, found, strict=True):
        if type(folder) is cls:
            held.setdefault(name, folder)
    held.setdefault("root", root)
    return account


# What a folder found by name is read with: what Concord uses of it (its class decides the
# item fields a listing asks for). Not its permissions, which would cost a GetFolder more.
_FOUND_FIELDS = ("name", "folder_class", "parent_folder_id")


def find_child(account: Account, parent: Any, name: str) -> Any | None:
    """`parent`'s child folder named `name` (compared without case, as Exchange names folders),
    or None: one shallow FindFolder restricted on the name. Blocks."""
    query = SingleFolderQuerySet(account=account, folder=parent).depth(SHALLOW)
    for found in query.only(*_FOUND_FIELDS).filter(name__iexact=name):
        if isinstance(found, Exception):
            raise found
        return found
    return None


class DedicatedFolders:
    """The folders Concord files items in under a mailbox's message folder root, by name: found
    (or made) at their first use, then kept per account until `forget`."""

    def __init__(self) -> None:
        self._found: weakref.WeakKeyDictionary[Account, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def folder(self, account: Account, name: str, folder_class: str) -> tuple[Any, bool]:
        """The folder, and whether it was made just now. Blocks."""
        with self._lock:
            known = self._found.get(account, {}).get(name.lower())
        if known is not None:
            return known, False
        parent = account.msg_folder_root
        found = find_child(account, parent, name)
        created = False
        if found is None:
            # Not `Folder.save()`: it files the new folder in the account's folder cache, which
            # reads the whole folder tree first.
            made = Folder(parent=parent, name=name, folder_class=folder_class)
            try:
                CreateFolder(account=account).get(parent_folder=parent, folders=[made])
                created = True
            except ErrorFolderExists:
                pass  # made meanwhile (another call, another replica): it is there now
            # Read back as any folder is found: of the class its folder_class names.
            found = find_child(account, parent, name)
            if found is None:
                raise ErrorFolderNotFound(f"the folder {name!r} was made but is not found")
        with self._lock:
            self._found.setdefault(account, {})[name.lower()] = found
        return found, created

    def forget(self, account: Account) -> None:
        """The account's folders are looked for again at their next use (one was deleted)."""
        with self._lock:
            self._found.pop(account, None)
