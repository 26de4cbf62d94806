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
