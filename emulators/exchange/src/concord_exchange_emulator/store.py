"""SQLite storage: users, mailboxes (and which have an archive), folders, items (as EWS XML), a
change log, subscriptions, inbox rules, blocked senders.

Items are kept as the XML element a client sent (with the server's fields added), so every item
type and extended property round-trips without a column per field. The change log drives
SyncFolderItems and GetEvents: its sequence number is both the sync state and the watermark.
"""

from __future__ import annotations

import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password TEXT NOT NULL, mailbox TEXT NOT NULL,
    can_impersonate INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS mailboxes (address TEXT PRIMARY KEY, display_name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS archives (mailbox TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS delegates (
    mailbox TEXT NOT NULL, username TEXT NOT NULL, PRIMARY KEY (mailbox, username));
CREATE TABLE IF NOT EXISTS folders (
    id TEXT PRIMARY KEY, mailbox TEXT NOT NULL, parent_id TEXT, distinguished TEXT,
    display_name TEXT NOT NULL, folder_class TEXT NOT NULL, element TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1);
CREATE UNIQUE INDEX IF NOT EXISTS folders_distinguished
    ON folders (mailbox, distinguished) WHERE distinguished IS NOT NULL;
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, mailbox TEXT NOT NULL, folder_id TEXT NOT NULL, xml BLOB NOT NULL,
    version INTEGER NOT NULL, created_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS items_folder ON items (folder_id, created_seq);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL, folder_id TEXT NOT NULL,
    item_id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL DEFAULT (datetime('now')),
    version INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS changes_folder ON changes (folder_id, seq);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS folder_permissions (folder_id TEXT PRIMARY KEY, xml BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS push_targets (
    subscription_id TEXT PRIMARY KEY, url TEXT NOT NULL, status_minutes INTEGER NOT NULL,
    last_sent REAL NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, mailbox TEXT NOT NULL, folder_ids TEXT NOT NULL,
    event_types TEXT NOT NULL, watermark INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox_rules (
    id TEXT PRIMARY KEY, mailbox TEXT NOT NULL, priority INTEGER NOT NULL,
    created INTEGER NOT NULL, xml BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS inbox_rules_mailbox ON inbox_rules (mailbox, priority, created);
CREATE TABLE IF NOT EXISTS junk_rules (mailbox TEXT PRIMARY KEY, blocked TEXT NOT NULL);
"""


@dataclass(frozen=True)
class User:
    username: str
    password: str
    mailbox: str
    can_impersonate: bool


@dataclass(frozen=True)
class Folder:
    id: str
    mailbox: str
    parent_id: str | None
    distinguished: str | None
    display_name: str
    folder_class: str
    element: str
    version: int

    @property
    def change_key(self) -> str:
        return f"AQAAAB{self.version:08d}"


@dataclass(frozen=True)
class StoredItem:
    id: str
    mailbox: str
    folder_id: str
    xml: bytes
    version: int
    created_seq: int

    @property
    def change_key(self) -> str:
        return item_change_key(self.version)


def item_change_key(version: int) -> str:
    return f"CQAAAB{version:08d}"


@dataclass(frozen=True)
class Change:
    seq: int
    folder_id: str
    item_id: str
    kind: str  # create, update, readflag, delete
    at: str
    # The item's version the change left (its last one for a delete); 0 for folders and for
    # changes logged before versions were kept.
    version: int = 0

    @property
    def change_key(self) -> str | None:
        return item_change_key(self.version) if self.version else None


# Folder changes share the change log with item changes; item listings leave them out.
_ITEM_CHANGES = "kind NOT LIKE 'folder-%'"

# A subscription's folder list meaning "every folder of the mailbox" (SubscribeToAllFolders).
ALL_FOLDERS = "*"


def exceptions_of(master_id: str) -> str:
    """The pseudo folder holding a series' modified occurrences."""
    return f"exceptions:{master_id}"


def _version(db: sqlite3.Connection, item_id: str) -> int:
    return int(db.execute("SELECT version FROM items WHERE id = ?", (item_id,)).fetchone()[0])


def new_id(prefix: str) -> str:
    # Opaque, long and base64-looking like real EWS ids; clients must not parse them.
    return prefix + uuid.uuid4().hex.upper()


class Store:
    """One SQLite database; every method is a transaction under one lock (the emulator is small)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # Every item is its own transaction (an EWS batch succeeds item by item); a disk sync
        # per commit made a batch of 100 creates wait on 100 syncs, a third of the emulator's
        # bulk rate. Committed data still survives the emulator's crash (WAL), only not the
        # machine's: no test needs that.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(changes)")}
        if "version" not in columns:  # a database from before the log kept versions
            self._db.execute("ALTER TABLE changes ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # users and mailboxes

    def add_user(
        self, username: str, password: str, mailbox: str, *, can_impersonate: bool = False
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)",
                (username.lower(), password, mailbox.lower(), int(can_impersonate)),
            )

    def user(self, username: str) -> User | None:
        with self.lock:
            row = self._db.execute(
                "SELECT * FROM users WHERE username = ?", (username.lower(),)
            ).fetchone()
        if row is None:
            return None
        return User(row["username"], row["password"], row["mailbox"], bool(row["can_impersonate"]))

    def passwords(self) -> list[tuple[str, str]]:
        with self.lock:
            rows = self._db.execute("SELECT username, password FROM users").fetchall()
        return [(r["username"], r["password"]) for r in rows]

    def add_mailbox(self, address: str, display_name: str) -> bool:
        """Create the mailbox; False when it already existed."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO mailboxes VALUES (?, ?)", (address.lower(), display_name)
            )
            return cur.rowcount == 1

    def mailbox_exists(self, address: str) -> bool:
        with self.lock:
            row = self._db.execute(
                "SELECT 1 FROM mailboxes WHERE address = ?", (address.lower(),)
            ).fetchone()
        return row is not None

    def enable_archive(self, address: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO archives VALUES (?)", (address.lower(),))

    def has_archive(self, address: str) -> bool:
        with self.lock:
            row = self._db.execute(
                "SELECT 1 FROM archives WHERE mailbox = ?", (address.lower(),)
            ).fetchone()
        return row is not None

    def display_name(self, address: str) -> str:
        with self.lock:
            row = self._db.execute(
                "SELECT display_name FROM mailboxes WHERE address = ?", (address.lower(),)
            ).fetchone()
        return str(row["display_name"]) if row else address

    def add_delegate(self, mailbox: str, username: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO delegates VALUES (?, ?)", (mailbox.lower(), username.lower())
            )

    def delegates_of(self, mailbox: str) -> list[str]:
        with self.lock:
            rows = self._db.execute(
                "SELECT username FROM delegates WHERE mailbox = ? ORDER BY username",
                (mailbox.lower(),),
            ).fetchall()
        return [str(r["username"]) for r in rows]

    def is_delegate(self, mailbox: str, username: str) -> bool:
        with self.lock:
            row = self._db.execute(
                "SELECT 1 FROM delegates WHERE mailbox = ? AND username = ?",
                (mailbox.lower(), username.lower()),
            ).fetchone()
        return row is not None

    # folders

    def add_folder(
        self,
        mailbox: str,
        parent_id: str | None,
        display_name: str,
        folder_class: str,
        element: str,
        distinguished: str | None = None,
    ) -> Folder:
        folder = Folder(
            new_id("AQMkF"),
            mailbox.lower(),
            parent_id,
            distinguished,
            display_name,
            folder_class,
            element,
            1,
        )
        with self.transaction() as db:
            if parent_id:
                self._log(db, folder.mailbox, parent_id, folder.id, "folder-create")
            db.execute(
                "INSERT INTO folders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    folder.id,
                    folder.mailbox,
                    folder.parent_id,
                    folder.distinguished,
                    folder.display_name,
                    folder.folder_class,
                    folder.element,
                    folder.version,
                ),
            )
        return folder

    @staticmethod
    def _folder(row: sqlite3.Row | None) -> Folder | None:
        if row is None:
            return None
        return Folder(
            row["id"],
            row["mailbox"],
            row["parent_id"],
            row["distinguished"],
            row["display_name"],
            row["folder_class"],
            row["element"],
            row["version"],
        )

    def folder(self, folder_id: str) -> Folder | None:
        with self.lock:
            row = self._db.execute("SELECT * FROM folders WHERE id = ?", (folder_id,)).fetchone()
        return self._folder(row)

    def distinguished_folder(self, mailbox: str, name: str) -> Folder | None:
        with self.lock:
            row = self._db.execute(
                "SELECT * FROM folders WHERE mailbox = ? AND distinguished = ?",
                (mailbox.lower(), name),
            ).fetchone()
        return self._folder(row)

    def child_folders(self, parent_id: str) -> list[Folder]:
        with self.lock:
            rows = self._db.execute(
                "SELECT * FROM folders WHERE parent_id = ? ORDER BY rowid", (parent_id,)
            ).fetchall()
        return [f for f in (self._folder(r) for r in rows) if f is not None]

    def delete_folder(self, folder: Folder) -> None:
        """Remove a folder, its sub-folders and their items (each item logged as deleted)."""
        with self.transaction() as db:
            pending, ids = [folder.id], []
            while pending:
                current = pending.pop()
                ids.append(current)
                rows = db.execute("SELECT id FROM folders WHERE parent_id = ?", (current,))
                pending.extend(r["id"] for r in rows.fetchall())
            for folder_id in ids:
                items = db.execute(
                    "SELECT id, version FROM items WHERE folder_id = ?", (folder_id,)
                )
                for row in items.fetchall():
                    self._log(db, folder.mailbox, folder_id, row["id"], "delete", row["version"])
                    db.execute(
                        "DELETE FROM items WHERE id = ? OR folder_id = ?",
                        (row["id"], exceptions_of(row["id"])),
                    )
                gone = db.execute("SELECT parent_id FROM folders WHERE id = ?", (folder_id,))
                parent = gone.fetchone()
                if parent is not None and parent["parent_id"]:
                    self._log(db, folder.mailbox, parent["parent_id"], folder_id, "folder-delete")
                db.execute("DELETE FROM folders WHERE id = ?", (folder_id,))

    def folder_counts(self, folder_id: str) -> tuple[int, int]:
        """(items, child folders)."""
        with self.lock:
            items = self._db.execute(
                "SELECT COUNT(*) FROM items WHERE folder_id = ?", (folder_id,)
            ).fetchone()[0]
            children = self._db.execute(
                "SELECT COUNT(*) FROM folders WHERE parent_id = ?", (folder_id,)
            ).fetchone()[0]
        return int(items), int(children)

    # items

    def _log(
        self,
        db: sqlite3.Connection,
        mailbox: str,
        folder_id: str,
        item_id: str,
        kind: str,
        version: int = 0,
    ) -> int:
        cur = db.execute(
            "INSERT INTO changes (mailbox, folder_id, item_id, kind, version)"
            " VALUES (?, ?, ?, ?, ?)",
            (mailbox, folder_id, item_id, kind, version),
        )
        return int(cur.lastrowid or 0)

    def insert_item(self, item_id: str, mailbox: str, folder_id: str, xml: bytes) -> StoredItem:
        with self.transaction() as db:
            seq = self._log(db, mailbox, folder_id, item_id, "create", 1)
            db.execute(
                "INSERT INTO items VALUES (?, ?, ?, ?, 1, ?)",
                (item_id, mailbox, folder_id, xml, seq),
            )
        return StoredItem(item_id, mailbox, folder_id, xml, 1, seq)

    def item(self, item_id: str) -> StoredItem | None:
        with self.lock:
            row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            return None
        return StoredItem(
            row["id"],
            row["mailbox"],
            row["folder_id"],
            row["xml"],
            row["version"],
            row["created_seq"],
        )

    def items_in(self, folder_id: str) -> list[StoredItem]:
        with self.lock:
            rows = self._db.execute(
                "SELECT * FROM items WHERE folder_id = ? ORDER BY created_seq", (folder_id,)
            ).fetchall()
        return [
            StoredItem(
                r["id"], r["mailbox"], r["folder_id"], r["xml"], r["version"], r["created_seq"]
            )
            for r in rows
        ]

    def update_item(self, item: StoredItem, xml: bytes, *, read_flag_only: bool) -> StoredItem:
        with self.transaction() as db:
            kind = "readflag" if read_flag_only else "update"
            db.execute(
                "UPDATE items SET xml = ?, version = version + 1 WHERE id = ?", (xml, item.id)
            )
            self._log(db, item.mailbox, item.folder_id, item.id, kind, _version(db, item.id))
        return StoredItem(
            item.id, item.mailbox, item.folder_id, xml, item.version + 1, item.created_seq
        )

    def delete_item(self, item: StoredItem) -> None:
        with self.transaction() as db:
            self._log(db, item.mailbox, item.folder_id, item.id, "delete", item.version)
            db.execute("DELETE FROM items WHERE id = ?", (item.id,))
            db.execute("DELETE FROM items WHERE folder_id = ?", (exceptions_of(item.id),))

    def put_exception(
        self, occurrence_id: str, master: StoredItem, xml: bytes, master_xml: bytes
    ) -> StoredItem:
        """Store a modified occurrence beside its master. Clients see it as an update of the
        master (as Exchange reports an occurrence edit), never as an item of its own."""
        with self.transaction() as db:
            row = db.execute("SELECT version FROM items WHERE id = ?", (occurrence_id,)).fetchone()
            version = int(row["version"]) + 1 if row else 1
            db.execute(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                (occurrence_id, master.mailbox, exceptions_of(master.id), xml, version, 0),
            )
            db.execute(
                "UPDATE items SET xml = ?, version = version + 1 WHERE id = ?",
                (master_xml, master.id),
            )
            bumped = _version(db, master.id)
            self._log(db, master.mailbox, master.folder_id, master.id, "update", bumped)
        return StoredItem(occurrence_id, master.mailbox, master.folder_id, xml, version, 0)

    def put_unlisted(self, item_id: str, mailbox: str, folder_id: str, xml: bytes) -> None:
        """Keep an item no change log or subscription reports (a folder's user configurations,
        kept under their own folder key): written anew, or replaced with a new version."""
        with self.transaction() as db:
            row = db.execute("SELECT version FROM items WHERE id = ?", (item_id,)).fetchone()
            version = int(row["version"]) + 1 if row else 1
            db.execute(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                (item_id, mailbox, folder_id, xml, version, 0),
            )

    def drop_unlisted(self, item_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM items WHERE id = ?", (item_id,))

    def drop_exception(self, occurrence_id: str, master: StoredItem, master_xml: bytes) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM items WHERE id = ?", (occurrence_id,))
            db.execute(
                "UPDATE items SET xml = ?, version = version + 1 WHERE id = ?",
                (master_xml, master.id),
            )
            bumped = _version(db, master.id)
            self._log(db, master.mailbox, master.folder_id, master.id, "update", bumped)

    def move_item(self, item: StoredItem, new_id_: str, folder_id: str, xml: bytes) -> StoredItem:
        """Exchange gives a moved item a new id: the old one is deleted from the source folder."""
        with self.transaction() as db:
            self._log(db, item.mailbox, item.folder_id, item.id, "delete", item.version)
            seq = self._log(db, item.mailbox, folder_id, new_id_, "create", item.version + 1)
            db.execute("DELETE FROM items WHERE id = ?", (item.id,))
            # A series' exceptions follow it; their ids embed the master's id.
            old, new = item.id.encode(), new_id_.encode()
            xml = xml.replace(old, new)
            db.execute(
                "UPDATE items SET id = replace(id, ?, ?), folder_id = ?,"
                " xml = CAST(replace(CAST(xml AS TEXT), ?, ?) AS BLOB) WHERE folder_id = ?",
                (
                    item.id,
                    new_id_,
                    exceptions_of(new_id_),
                    item.id,
                    new_id_,
                    exceptions_of(item.id),
                ),
            )
            db.execute(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                (new_id_, item.mailbox, folder_id, xml, item.version + 1, seq),
            )
        return StoredItem(new_id_, item.mailbox, folder_id, xml, item.version + 1, seq)

    # change log

    def last_seq(self, folder_id: str | None = None) -> int:
        """The change log's head: the whole store's, or one folder's item changes' (what a
        SyncState of that folder stands at once every change of it is reported)."""
        with self.lock:
            if folder_id is None:
                row = self._db.execute("SELECT MAX(seq) FROM changes").fetchone()
            else:
                row = self._db.execute(
                    f"SELECT MAX(seq) FROM changes WHERE folder_id = ? AND {_ITEM_CHANGES}",
                    (folder_id,),
                ).fetchone()
        return int(row[0] or 0)

    def changes(
        self, folder_ids: list[str], after: int, mailbox: str | None = None
    ) -> list[Change]:
        """Changes after `after` in these folders (ALL_FOLDERS: every folder of `mailbox`)."""
        with self.lock:
            if folder_ids == [ALL_FOLDERS]:
                rows = self._db.execute(
                    "SELECT * FROM changes WHERE mailbox = ? AND seq > ?"
                    f" AND {_ITEM_CHANGES} ORDER BY seq",
                    ((mailbox or "").lower(), after),
                ).fetchall()
            else:
                marks = ",".join("?" for _ in folder_ids)
                rows = self._db.execute(
                    f"SELECT * FROM changes WHERE folder_id IN ({marks}) AND seq > ?"
                    f" AND {_ITEM_CHANGES} ORDER BY seq",
                    (*folder_ids, after),
                ).fetchall()
        return [
            Change(r["seq"], r["folder_id"], r["item_id"], r["kind"], r["at"], r["version"])
            for r in rows
        ]

    def folder_changes(self, mailbox: str, after: int) -> list[Change]:
        """Folders created, changed (renamed, moved) or deleted after `after`; `folder_id` is the
        parent the folder was under (its new one for a move), `item_id` the folder."""
        with self.lock:
            rows = self._db.execute(
                "SELECT * FROM changes WHERE mailbox = ? AND seq > ? AND kind LIKE 'folder-%'"
                " ORDER BY seq",
                (mailbox.lower(), after),
            ).fetchall()
        return [
            Change(
                r["seq"], r["folder_id"], r["item_id"], r["kind"].removeprefix("folder-"), r["at"]
            )
            for r in rows
        ]

    def sync_generation(self) -> int:
        with self.lock:
            row = self._db.execute(
                "SELECT value FROM settings WHERE name = 'sync_generation'"
            ).fetchone()
        return int(row["value"]) if row else 0

    def invalidate_sync_states(self) -> int:
        """Every sync state handed out so far becomes invalid; returns the new generation."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO settings VALUES ('sync_generation', 1)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
            row = db.execute("SELECT value FROM settings WHERE name = 'sync_generation'")
            return int(row.fetchone()["value"])

    # subscriptions

    def add_subscription(
        self, mailbox: str, folder_ids: list[str], event_types: list[str], watermark: int
    ) -> str:
        sub_id = new_id("SUB")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?)",
                (sub_id, mailbox, ",".join(folder_ids), ",".join(event_types), watermark),
            )
        return sub_id

    def subscription(self, sub_id: str) -> tuple[str, list[str], list[str], int] | None:
        with self.lock:
            row = self._db.execute("SELECT * FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
        if row is None:
            return None
        return (
            row["mailbox"],
            row["folder_ids"].split(","),
            row["event_types"].split(","),
            int(row["watermark"]),
        )

    def set_watermark(self, sub_id: str, watermark: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE subscriptions SET watermark = ? WHERE id = ?", (watermark, sub_id))

    def delete_subscription(self, sub_id: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,)).rowcount == 1

    # folder changes (UpdateFolder, MoveFolder)

    def update_folder(
        self, folder: Folder, *, display_name: str | None = None, parent_id: str | None = None
    ) -> Folder:
        """Rename or move a folder; its ChangeKey changes, its id stays (as in Exchange)."""
        with self.transaction() as db:
            new_parent = folder.parent_id if parent_id is None else parent_id
            if new_parent:
                self._log(db, folder.mailbox, new_parent, folder.id, "folder-update")
            db.execute(
                "UPDATE folders SET display_name = ?, parent_id = ?, version = version + 1"
                " WHERE id = ?",
                (
                    folder.display_name if display_name is None else display_name,
                    folder.parent_id if parent_id is None else parent_id,
                    folder.id,
                ),
            )
        found = self.folder(folder.id)
        assert found is not None
        return found

    # push subscriptions: where their notifications go

    def add_push_target(self, sub_id: str, url: str, status_minutes: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO push_targets (subscription_id, url, status_minutes) VALUES (?, ?, ?)",
                (sub_id, url, status_minutes),
            )

    def push_targets(self) -> list[tuple[str, str, int, float, int]]:
        """(subscription id, URL, status frequency in minutes, last sent, failures in a row)."""
        with self.lock:
            rows = self._db.execute("SELECT * FROM push_targets").fetchall()
        return [
            (r["subscription_id"], r["url"], r["status_minutes"], r["last_sent"], r["failures"])
            for r in rows
        ]

    def is_push(self, sub_id: str) -> bool:
        with self.lock:
            row = self._db.execute(
                "SELECT 1 FROM push_targets WHERE subscription_id = ?", (sub_id,)
            ).fetchone()
        return row is not None

    def push_sent(self, sub_id: str, at: float, *, failed: bool) -> None:
        with self.transaction() as db:
            if failed:
                db.execute(
                    "UPDATE push_targets SET failures = failures + 1 WHERE subscription_id = ?",
                    (sub_id,),
                )
            else:
                db.execute(
                    "UPDATE push_targets SET last_sent = ?, failures = 0 WHERE subscription_id = ?",
                    (at, sub_id),
                )

    def drop_push(self, sub_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM push_targets WHERE subscription_id = ?", (sub_id,))
            db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))

    # folder permissions (a folder's PermissionSet as last written)

    def folder_permissions(self, folder_id: str) -> bytes | None:
        with self.lock:
            row = self._db.execute(
                "SELECT xml FROM folder_permissions WHERE folder_id = ?", (folder_id,)
            ).fetchone()
        return bytes(row["xml"]) if row else None

    def set_folder_permissions(self, folder_id: str, xml: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO folder_permissions VALUES (?, ?)", (folder_id, xml))

    # inbox rules (each kept as the EWS Rule element; a table created by SCHEMA on open, so a
    # database from before rules existed gains it without a migration)

    def inbox_rules(self, mailbox: str) -> list[tuple[str, bytes]]:
        """(rule id, Rule XML) of a mailbox's rules in the order they run: by priority."""
        with self.lock:
            rows = self._db.execute(
                "SELECT id, xml FROM inbox_rules WHERE mailbox = ? ORDER BY priority, created",
                (mailbox,),
            ).fetchall()
        return [(row["id"], bytes(row["xml"])) for row in rows]

    def replace_inbox_rules(
        self,
        mailbox: str,
        upserts: list[tuple[str, int, bytes]],
        deletes: list[str],
    ) -> None:
        """Apply one UpdateInboxRules request at once: (id, priority, xml) written, ids removed."""
        with self.transaction() as db:
            for rule_id in deletes:
                db.execute(
                    "DELETE FROM inbox_rules WHERE id = ? AND mailbox = ?", (rule_id, mailbox)
                )
            for rule_id, priority, xml in upserts:
                updated = db.execute(
                    "UPDATE inbox_rules SET priority = ?, xml = ? WHERE id = ? AND mailbox = ?",
                    (priority, xml, rule_id, mailbox),
                ).rowcount
                if not updated:
                    created = db.execute(
                        "SELECT COALESCE(MAX(created), 0) + 1 FROM inbox_rules"
                    ).fetchone()[0]
                    db.execute(
                        "INSERT INTO inbox_rules VALUES (?, ?, ?, ?, ?)",
                        (rule_id, mailbox, priority, created, xml),
                    )

    # the Junk E-mail rule: one per mailbox, from the first sender blocked

    def blocked_senders(self, mailbox: str) -> list[str] | None:
        """The addresses the mailbox's Junk E-mail rule blocks; None while it has no rule."""
        with self.lock:
            row = self._db.execute(
                "SELECT blocked FROM junk_rules WHERE mailbox = ?", (mailbox.lower(),)
            ).fetchone()
        return None if row is None else [a for a in str(row["blocked"]).split("\n") if a]

    def set_blocked_senders(self, mailbox: str, blocked: list[str]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO junk_rules VALUES (?, ?)",
                (mailbox.lower(), "\n".join(blocked)),
            )
