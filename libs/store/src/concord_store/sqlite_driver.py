"""SQLite through aiosqlite in one trip to the connection's thread per statement (issue #18).

aiosqlite runs each sqlite3 call on the connection's own thread; every call is a trip there and
back (a queue, a thread wake-up, the event loop's self-pipe), about 50-70 us of the loop's CPU.
SQLAlchemy's aiosqlite adapter makes four per statement — make a cursor, execute, fetch, close
the cursor — and one more to roll back a connection that only read. A reconciler session ran 65
trips for its 15 statements, about 4 ms of CPU: more than the statements themselves.

This adapter keeps SQLAlchemy's aiosqlite dialect and aiosqlite's thread, and changes only how
a plain (buffered) cursor and the end of a transaction go there:

- a statement is made, executed, read and closed in one trip (its rows are buffered anyway);
- a commit or rollback with no transaction open (sqlite3 knows without a trip: a connection
  that only read has none) is not sent, as it would do nothing.

Server-side cursors (`stream_results`) are SQLAlchemy's own, unchanged.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

__all__ = ["dbapi"]

# What one statement leaves: its description, rows (None without a result set), rowcount and
# lastrowid, read before its cursor is closed.
_Outcome = tuple[Any, list[Any] | None, int, Any]


def _statement(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    """On the connection's thread: one statement, whole."""
    cursor = connection.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _statements(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    """On the connection's thread: one statement over many parameter sets."""
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, parameters)
        return cursor.description, None, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statements each take one trip (no aiosqlite cursor is kept)."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows: collections.deque[Any] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        lastrowid: int = self._lastrowid  # as sqlite3 has it (None before any insert)
        return lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open between statements

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(_statement, operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            return await_(self._run(_statements, operation, seq_of_parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, how: Any, operation: Any, parameters: Any) -> None:
        connection: Any = self._connection  # aiosqlite.Connection
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await connection._execute(
                how, connection._conn, operation, parameters
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows or ())


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    _cursor_cls = _Cursor  # type: ignore[assignment]

    def _in_transaction(self) -> bool:
        # A property of the sqlite3 connection (sqlite3_get_autocommit), safe to read from
        # this thread; a closed connection goes on to aiosqlite, which says so.
        raw: sqlite3.Connection | None = self._connection._connection
        return raw is None or raw.in_transaction

    def rollback(self) -> None:
        if self._in_transaction():
            super().rollback()

    def commit(self) -> None:
        if self._in_transaction():
            super().commit()


class _DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        adapted = super().connect(*arg, **kw)
        return _Connection(self, adapted._connection)


def dbapi() -> Any:
    """The DBAPI module for `create_async_engine(..., module=dbapi())` on sqlite+aiosqlite."""
    return _DBAPI(aiosqlite, sqlite3)
