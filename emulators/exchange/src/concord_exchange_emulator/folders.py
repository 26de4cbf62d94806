"""The folder tree a new Exchange 2016 mailbox has: the non-IPM root with its system folders, and
"Top of Information Store" (msgfolderroot) with the mail, calendar, contacts and tasks folders.

Names, folder classes and distinguished ids are those Exchange 2016 gives a mailbox (as EWS
FindFolder lists them under `root`); folders of Exchange Online only (AllItems, Companies, …)
are left out, as a 2016 server has none. A mailbox may be localized (Exchange's
`Set-MailboxRegionalConfiguration -LocalizeDefaultFolderName`): then its default folders carry
the names of that language.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WellKnownFolder:
    key: str  # unique within the tree: the distinguished id, else the English name
    parent: str | None  # key of the parent folder
    name: str
    element: str = "Folder"
    folder_class: str = ""
    distinguished: str | None = None


def _f(
    key: str,
    parent: str | None,
    name: str,
    element: str = "Folder",
    folder_class: str = "",
    *,
    distinguished: bool = True,
) -> WellKnownFolder:
    return WellKnownFolder(key, parent, name, element, folder_class, key if distinguished else None)


MAILBOX_TREE: tuple[WellKnownFolder, ...] = (
    # The root of the mailbox: EWS gives it an empty DisplayName.
    _f("root", None, ""),
    _f("msgfolderroot", "root", "Top of Information Store"),
    _f("inbox", "msgfolderroot", "Inbox", folder_class="IPF.Note"),
    _f("sentitems", "msgfolderroot", "Sent Items", folder_class="IPF.Note"),
    _f("deleteditems", "msgfolderroot", "Deleted Items", folder_class="IPF.Note"),
    _f("drafts", "msgfolderroot", "Drafts", folder_class="IPF.Note"),
    _f("outbox", "msgfolderroot", "Outbox", folder_class="IPF.Note"),
    _f("junkemail", "msgfolderroot", "Junk Email", folder_class="IPF.Note"),
    _f("calendar", "msgfolderroot", "Calendar", "CalendarFolder", "IPF.Appointment"),
    _f("contacts", "msgfolderroot", "Contacts", "ContactsFolder", "IPF.Contact"),
    _f("tasks", "msgfolderroot", "Tasks", "TasksFolder", "IPF.Task"),
    _f("notes", "msgfolderroot", "Notes", folder_class="IPF.StickyNote"),
    _f("journal", "msgfolderroot", "Journal", folder_class="IPF.Journal"),
    _f("conversationhistory", "msgfolderroot", "Conversation History"),
    _f("syncissues", "msgfolderroot", "Sync Issues", folder_class="IPF.Note"),
    _f("conflicts", "syncissues", "Conflicts"),
    _f("localfailures", "syncissues", "Local Failures"),
    _f("serverfailures", "syncissues", "Server Failures"),
    _f(
        "Conversation Action Settings",
        "msgfolderroot",
        "Conversation Action Settings",
        folder_class="IPF.Configuration",
        distinguished=False,
    ),
    _f(
        "RSS Feeds",
        "msgfolderroot",
        "RSS Feeds",
        folder_class="IPF.Note.OutlookHomepage",
        distinguished=False,
    ),
    _f(
        "ExternalContacts",
        "msgfolderroot",
        "ExternalContacts",
        "ContactsFolder",
        "IPF.Contact",
        distinguished=False,
    ),
    _f(
        "GAL Contacts",
        "contacts",
        "GAL Contacts",
        "ContactsFolder",
        "IPF.Contact.GalContacts",
        distinguished=False,
    ),
    _f(
        "recipientcache",
        "contacts",
        "Recipient Cache",
        "ContactsFolder",
        "IPF.Contact.RecipientCache",
    ),
    _f(
        "quickcontacts",
        "contacts",
        "{06967759-274D-40B2-A3EB-D7F9E73727D7}",
        "ContactsFolder",
        "IPF.Contact.MOC.QuickContacts",
    ),
    _f(
        "imcontactlist",
        "contacts",
        "{A9E2BC46-B3A0-4243-B315-60D991004455}",
        "ContactsFolder",
        "IPF.Contact.MOC.ImContactList",
    ),
    _f("Archive", "msgfolderroot", "Archive", folder_class="IPF.Note", distinguished=False),
    _f("Files", "msgfolderroot", "Files", folder_class="IPF.Files", distinguished=False),
    _f(
        "Organizational Contacts",
        "contacts",
        "Organizational Contacts",
        "ContactsFolder",
        "IPF.Contact.OrganizationalContacts",
        distinguished=False,
    ),
    _f("PersonMetadata", "root", "PersonMetadata", folder_class="IPF.Contact", distinguished=False),
    _f("DiscoveryHolds", "recoverableitemsroot", "DiscoveryHolds", distinguished=False),
    # Beside Top of Information Store, under root: what Outlook and the store keep for themselves.
    _f("Common Views", "root", "Common Views", distinguished=False),
    _f("Deferred Action", "root", "Deferred Action", distinguished=False),
    _f("ExchangeSyncData", "root", "ExchangeSyncData", distinguished=False),
    _f("favorites", "root", "Favorites", folder_class="IPF.Note"),
    _f("searchfolders", "root", "Finder"),
    _f("todosearch", "searchfolders", "To-Do Search", folder_class="IPF.Task"),
    _f("Freebusy Data", "root", "Freebusy Data", distinguished=False),
    _f("Location", "root", "Location", distinguished=False),
    _f("MailboxAssociations", "root", "MailboxAssociations", distinguished=False),
    _f("mycontacts", "root", "My Contacts", folder_class="IPF.Note"),
    _f("peopleconnect", "root", "PeopleConnect"),
    _f("recoverableitemsroot", "root", "Recoverable Items"),
    _f("recoverableitemsdeletions", "recoverableitemsroot", "Deletions"),
    _f("recoverableitemspurges", "recoverableitemsroot", "Purges"),
    _f("recoverableitemsversions", "recoverableitemsroot", "Versions"),
    _f("Calendar Logging", "recoverableitemsroot", "Calendar Logging", distinguished=False),
    _f(
        "Reminders",
        "root",
        "Reminders",
        folder_class="Outlook.Reminder",
        distinguished=False,
    ),
    _f("Schedule", "root", "Schedule", distinguished=False),
    _f("Sharing", "root", "Sharing", folder_class="IPF.Note", distinguished=False),
    _f("Shortcuts", "root", "Shortcuts", distinguished=False),
    _f("Spooler Queue", "root", "Spooler Queue", distinguished=False),
    _f("Views", "root", "Views", distinguished=False),
)

# Default folder names per mailbox language (those of Outlook/Exchange in that language).
LOCALIZED_NAMES: dict[str, dict[str, str]] = {
    "da-DK": {
        "inbox": "Indbakke",
        "sentitems": "Sendt post",
        "deleteditems": "Slettet post",
        "drafts": "Kladder",
        "outbox": "Udbakke",
        "junkemail": "Uønsket e-mail",
        "calendar": "Kalender",
        "contacts": "Kontaktpersoner",
        "tasks": "Opgaver",
        "notes": "Noter",
        "journal": "Journal",
        "Conversation Action Settings": "Indstillinger for samtalehandlinger",
        "Reminders": "Påmindelser",
        "Files": "Filer",
    },
}


# What Set-MailboxRegionalConfiguration saves for a language given alone: the language's short
# date and time patterns (.NET's culture data), kept as the dictionary of the mailbox's
# "OWA.UserOptions" configuration in its root folder, where Exchange keeps its regional settings.
REGIONAL_OPTIONS: dict[str, dict[str, str]] = {
    "da-DK": {"dateformat": "dd-MM-yyyy", "timeformat": "HH:mm"},
}


def folder_name(folder: WellKnownFolder, language: str | None) -> str:
    names = LOCALIZED_NAMES.get(language or "", {})
    return names.get(folder.key, folder.name)


def parents_first() -> list[WellKnownFolder]:
    """The tree in an order where every parent comes before its children."""
    placed: set[str | None] = {None}
    ordered: list[WellKnownFolder] = []
    pending = list(MAILBOX_TREE)
    while pending:
        ready = [f for f in pending if f.parent in placed]
        if not ready:
            raise ValueError(f"folders with unknown parents: {[f.key for f in pending]}")
        for folder in ready:
            ordered.append(folder)
            placed.add(folder.key)
            pending.remove(folder)
    return ordered


def system_folder_names() -> frozenset[str]:
    """Names (any language, lower case) of the well-known folders that have no distinguished id:
    Exchange refuses to delete them as it refuses the distinguished ones."""
    names = {f.name.lower() for f in MAILBOX_TREE if f.distinguished is None}
    for localized in LOCALIZED_NAMES.values():
        names |= {
            name.lower()
            for key, name in localized.items()
            if any(f.key == key and f.distinguished is None for f in MAILBOX_TREE)
        }
    return frozenset(names)
