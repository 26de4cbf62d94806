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
