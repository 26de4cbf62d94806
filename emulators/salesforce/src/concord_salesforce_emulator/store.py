"""Org state in SQLite, mirrored in memory.

Every write goes to SQLite in one transaction before memory changes, so a restart (or a crash
after the commit) sees exactly what clients were told. Reads come from memory: the emulator
filters and sorts in Python anyway (SOQL is evaluated in `soql.py`), and tens of thousands of
records fit easily. One process owns a data dir.

Requests are served on worker threads, so the SQLite connection and the mirror are changed
under `lock`, and a reader copies under it whatever it will iterate. A stored record is never
changed in place (a write stores a new `StoredRecord`), so a reader holding one holds one whole
version of it. While an all-or-none Composite runs, its writes are in the mirror (its own later
subrequests read them) but every other thread reads the records as they were before it
(`hide`), as Salesforce shows no one a transaction before it commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    sobject TEXT NOT NULL,
    fields TEXT NOT NULL,
    deleted_at TEXT
);
CREATE TABLE IF NOT EXISTS sequences (sobject TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, user_id TEXT NOT NULL,
                                   expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_usage (minute INTEGER PRIMARY KEY, calls INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class StoredRecord:
    id: str
    sobject: str
    fields: dict[str, Any]
    deleted_at: str | None = None


@dataclass
class Change:
    """One record write inside a transaction: the record's new state, or a hard delete."""

    record: StoredRecord
    purge: bool = False


@dataclass
class Memory:
    records: dict[str, StoredRecord] = field(default_factory=dict)
    # Per type, in insertion order: the order queries without ORDER BY return.
    by_type: dict[str, dict[str, StoredRecord]] = field(default_factory=dict)
    # Each record's place in that order, so rows read through an index come back in it too.
    position: dict[str, int] = field(default_factory=dict)
    next_position: int = 0


class OrgStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: requests are served on worker threads; every use of the
        # connection holds `lock`, so one thread's transaction never takes in another's statement.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()
        # An open all-or-none transaction: the thread running it and, by id, the records it
        # wrote as they were before it (None: it created the record).
        self._hidden: tuple[int, dict[str, StoredRecord | None]] | None = None
        self._hidings = 0  # bumped by every hide and reveal
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.memory = Memory()
        for record_id, sobject, fields, deleted_at in self._db.execute(
            "SELECT id, sobject, fields, deleted_at FROM records ORDER BY rowid"
        ):
            self._remember(StoredRecord(record_id, sobject, json.loads(fields), deleted_at))

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def get(self, record_id: str) -> StoredRecord | None:
        hidings = self._hidings
        record = self.memory.records.get(record_id)
        if self._hidden is None and self._hidings == hidings:
            # No transaction was open while the record was read: it is the committed version.
            return record
        # Under the lock a transaction's record and what it hides change together.
        with self.lock:
            record = self.memory.records.get(record_id)
            hidden = self.hidden_from_me()
        if hidden and record_id in hidden:
            return hidden[record_id]
        return record

    def of_type(self, sobject: str) -> list[StoredRecord]:
        """The type's records, in insertion order, as they are now (a copy)."""
        with self.lock:
            records = list(self.memory.by_type.get(sobject, {}).values())
            hidden = self.hidden_from_me()
        return _visible(records, hidden)

    def every_record(self) -> list[StoredRecord]:
        with self.lock:
            records = list(self.memory.records.values())
            hidden = self.hidden_from_me()
        return _visible(records, hidden)

    def position(self, record_id: str) -> int:
        """The record's place in its type's insertion order (last if it was just purged)."""
        return self.memory.position.get(record_id, self.memory.next_position)

    def hide(self, before: dict[str, StoredRecord | None]) -> None:
        """From now until `reveal`, other threads read the records in `before` (which the
        calling thread fills as it writes) as `before` holds them."""
        with self.lock:
            self._hidden = (threading.get_ident(), before)
            self._hidings += 1

    def reveal(self) -> None:
        with self.lock:
            self._hidden = None
            self._hidings += 1

    def hidden_from_me(self) -> dict[str, StoredRecord | None] | None:
        """The records another thread's open transaction hides from this one, by id."""
        hidden = self._hidden
        if hidden is None or hidden[0] == threading.get_ident():
            return None
        return hidden[1]

    def apply(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self.lock:
            self._apply(changes)

    def _apply(self, changes: list[Change]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                record = change.record
                if change.purge:
                    self._db.execute("DELETE FROM records WHERE id = ?", (record.id,))
                else:
                    self._db.execute(
                        "INSERT INTO records (id, sobject, fields, deleted_at) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT(id) DO UPDATE SET fields = excluded.fields,"
                        " deleted_at = excluded.deleted_at",
                        (record.id, record.sobject, json.dumps(record.fields), record.deleted_at),
                    )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for change in changes:
            if change.purge:
                self.memory.records.pop(change.record.id, None)
                self.memory.by_type.get(change.record.sobject, {}).pop(change.record.id, None)
                self.memory.position.pop(change.record.id, None)
            else:
                self._remember(change.record)

    def next_sequence(self, sobject: str, count: int = 1) -> int:
        """Reserves `count` sequence numbers for new ids; returns the first."""
        row = self._one(
            "INSERT INTO sequences (sobject, next) VALUES (?, ?)"
            " ON CONFLICT(sobject) DO UPDATE SET next = next + ? RETURNING next",
            (sobject, 1 + count, count),
        )
        return int(row[0]) - count

    def save_token(self, token: str, user_id: str, expires_at: float) -> None:
        self._one(
            "INSERT INTO tokens (token, user_id, expires_at) VALUES (?, ?, ?)",
            (token, user_id, expires_at),
        )

    def token(self, token: str) -> tuple[str, float] | None:
        row = self._one("SELECT user_id, expires_at FROM tokens WHERE token = ?", (token,))
        return (str(row[0]), float(row[1])) if row else None

    def expire_tokens(self) -> None:
        self._one("UPDATE tokens SET expires_at = 0")

    def count_call(self, minute: int) -> None:
        self._one(
            "INSERT INTO api_usage (minute, calls) VALUES (?, 1)"
            " ON CONFLICT(minute) DO UPDATE SET calls = calls + 1",
            (minute,),
        )

    def calls_since(self, minute: int) -> int:
        with self.lock:
            self._one("DELETE FROM api_usage WHERE minute < ?", (minute,))
            row = self._one("SELECT COALESCE(SUM(calls), 0) FROM api_usage")
        return int(row[0])

    def reset_usage(self) -> None:
        self._one("DELETE FROM api_usage")

    def setting(self, key: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row[0]) if row else None

    def set_setting(self, key: str, value: str) -> None:
        self._one(
            "INSERT INTO settings (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _one(self, sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        """One statement's first row (None when it has none)."""
        with self.lock:
            return self._db.execute(sql, parameters).fetchone()

    def _remember(self, record: StoredRecord) -> None:
        memory = self.memory
        if record.id not in memory.position:
            # A rewrite keeps the record's place in `by_type`; only a new record goes last.
            memory.position[record.id] = memory.next_position
            memory.next_position += 1
        memory.records[record.id] = record
        self.memory.by_type.setdefault(record.sobject, {})[record.id] = record


def _visible(
    records: list[StoredRecord], hidden: dict[str, StoredRecord | None] | None
) -> list[StoredRecord]:
    """`records` as a reader outside an open transaction sees them."""
    if not hidden:
        return records
    seen = (hidden.get(r.id, r) for r in records)
    return [r for r in seen if r is not None]
