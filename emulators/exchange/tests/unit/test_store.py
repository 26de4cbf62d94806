"""The emulator's store: what makes bulk writes as fast as the clients that make them."""

from __future__ import annotations

import pathlib

import pytest

from concord_exchange_emulator.store import Store

pytestmark = pytest.mark.unit


def test_a_commit_waits_for_no_disk_sync(tmp_path: pathlib.Path) -> None:
    """WAL with synchronous=NORMAL (1): a CreateItem of 100 items commits 100 times."""
    store = Store(tmp_path / "exchange.db")
    try:
        with store.transaction() as db:
            assert db.execute("PRAGMA synchronous").fetchone()[0] == 1
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_a_database_from_before_versions_were_logged_opens_and_logs_them(
    tmp_path: pathlib.Path,
) -> None:
    """A `make up` var/ kept from an older emulator has a change log without versions."""
    import sqlite3

    path = tmp_path / "exchange.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, mailbox TEXT NOT NULL,"
        " folder_id TEXT NOT NULL, item_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    old.execute(
        "INSERT INTO changes (mailbox, folder_id, item_id, kind) VALUES ('a', 'f', 'i', 'create')"
    )
    old.commit()
    old.close()
    store = Store(path)
    try:
        stored = store.insert_item("j", "a", "f", b"<t:Task/>")
        updated = store.update_item(stored, b"<t:Task/>", read_flag_only=False)
        logged = store.changes(["f"], 0)
        assert [(c.item_id, c.change_key) for c in logged] == [
            ("i", None),
            ("j", stored.change_key),
            ("j", updated.change_key),
        ]
    finally:
        store.close()


def test_a_delta_page_reads_only_the_items_it_answers(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SyncFolderItems pages a delta of 30 changes by 10: each page reads its own 10 items (and
    the one that tells more follow), not all 30 for every page: a first sync's walk of 10,000
    changes in pages of 512 cost the emulator 20 x 10,000 item reads."""
    from lxml import etree

    from concord_exchange_emulator import ews
    from concord_exchange_emulator.xmlns import M, T

    store = Store(tmp_path / "exchange.db")
    try:
        ews.ensure_mailbox(store, "u@concord.test", "U")
        ctx = ews.Context(store, "u@concord.test", "u@concord.test", impersonating=False)

        def sync(state: str) -> etree._Element:
            request = etree.fromstring(
                f'<m:SyncFolderItems xmlns:m="{M}" xmlns:t="{T}">'
                "<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
                '<m:SyncFolderId><t:DistinguishedFolderId Id="tasks"/></m:SyncFolderId>'
                f"<m:SyncState>{state}</m:SyncState><m:MaxChangesReturned>10</m:MaxChangesReturned>"
                "</m:SyncFolderItems>"
            )
            return ews.handle(ctx, "SyncFolderItems", request)

        first = sync("")
        state = first.findtext(f".//{{{M}}}SyncState") or ""
        folder = store.distinguished_folder("u@concord.test", "tasks")
        assert folder is not None
        for n in range(30):
            store.insert_item(
                f"task-{n}", "u@concord.test", folder.id, f'<t:Task xmlns:t="{T}"/>'.encode()
            )
        reads: list[str] = []
        read = Store.item

        def counted(self: Store, item_id: str) -> object:
            reads.append(item_id)
            return read(self, item_id)

        monkeypatch.setattr(Store, "item", counted)
        listed: list[str] = []
        for _ in range(3):
            page = sync(state)
            state = page.findtext(f".//{{{M}}}SyncState") or ""
            listed += [i.get("Id") or "" for i in page.iter(f"{{{T}}}ItemId")]
        assert listed == [f"task-{n}" for n in range(30)]
        assert page.findtext(f".//{{{M}}}IncludesLastItemInRange") == "true"
        assert len(reads) <= 33
    finally:
        store.close()


def test_a_database_from_before_inbox_rules_opens_and_keeps_them(tmp_path: pathlib.Path) -> None:
    """Inbox rules came with #18: an older database gains their table when it is opened, and
    each mailbox's rules are its own, kept across a restart in priority order."""
    import sqlite3

    path = tmp_path / "exchange.db"
    Store(path).close()
    old = sqlite3.connect(path)
    old.execute("DROP TABLE inbox_rules")
    old.commit()
    old.close()
    store = Store(path)
    try:
        store.replace_inbox_rules("a", [("r1", 5, b"<t:Rule/>"), ("r2", 2, b"<t:Rule/>")], [])
        store.replace_inbox_rules("b", [("r3", 1, b"<t:Rule/>")], [])
    finally:
        store.close()
    store = Store(path)
    try:
        assert [rule_id for rule_id, _ in store.inbox_rules("a")] == ["r2", "r1"]
        store.replace_inbox_rules("a", [("r1", 1, b"<t:Rule/>")], ["r2"])
        assert [rule_id for rule_id, _ in store.inbox_rules("a")] == ["r1"]
        assert [rule_id for rule_id, _ in store.inbox_rules("b")] == ["r3"]
    finally:
        store.close()
