"""A mailbox's well-known folders, looked up for its exchangelib `Account` by that mailbox alone.

exchangelib keeps `account.root`, `account.calendar`, `account.inbox`, ... in
`threaded_cached_property`s, whose lock belongs to the property, not to the account: the first
`account.calendar` of any mailbox in the process waits while any other mailbox computes its
own (the version probe and a GetFolder or two, each). When a company's mailboxes are added at
once, their first listings and push watches queued on those locks: with 30 mailboxes, a first
calendar listing waited up to 17 s for the `calendar` lock, past the reconciler's 10 s deadline,
while no EWS request took over 0.2 s. Looked up here, a mailbox's folders wait only for that
mailbox's answers (and cost two GetFolder calls, not one per folder).
"""

from __future__ import annotations

from typing import Any

from exchangelib import Account  # type: ignore[import-untyped]
from exchangelib.folders import (  # type: ignore[import-untyped]
    Calendar,
    FolderCollection,
    Inbox,
    MsgFolderRoot,
    Root,
    SentItems,
    Tasks,
)
from exchangelib.properties import DistinguishedFolderId, Mailbox  # type: ignore[import-untyped]

__all__ = ["open_folders"]

# The Account attributes Concord reads its folders through, and their folder classes.
_WELL_KNOWN: tuple[tuple[str, Any], ...] = (
    ("calendar", Calendar),
    ("tasks", Tasks),
    ("msg_folder_root", MsgFolderRoot),
    ("inbox", Inbox),
    ("sent", SentItems),
)


def open_folders(account: Account) -> Account:
    """`account` with its root and well-known folders found: one GetFolder for the root, one for
    the rest, kept where exchangelib's properties keep what they compute (the instance's own
    attributes, which they then answer from without taking their lock). Blocks; call it from a
    worker thread. A folder the server does not hand over (absent, access denied) is left to
    exchangelib's property, with its own fallbacks and errors; an error about the call or the
    mailbox is raised, as the property would raise it."""
    held = vars(account)
    if "root" not in held:
        # setdefault, as the property does: a value another thread kept first stays.
        held.setdefault("root", Root.get_distinguished(account=account))
    wanted = [(name, cls) for name, cls in _WELL_KNOWN if name not in held]
    if not wanted:
        return account
    folders = [
        cls(
            _distinguished_id=DistinguishedFolderId(
                id=cls.DISTINGUISHED_FOLDER_ID,
                mailbox=Mailbox(email_address=account.primary_smtp_address),
            ),
            root=held["root"],
        )
        for _, cls in wanted
    ]
    found = FolderCollection(account=account, folders=folders).resolve()
    for (name, cls), folder in zip(wanted, found, strict=True):
        if type(folder) is cls:
            held.setdefault(name, folder)
    return account
