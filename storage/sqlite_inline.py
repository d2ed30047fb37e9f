"""SQLite through SQLAlchemy's synchronous engine, run on the event loop's thread, behind
the small part of `AsyncConnection`'s interface that the stores use.

An async engine over aiosqlite gives every connection a worker thread and hands it
each call (cursor, execute, fetch, close, commit) through a queue and back through
the loop: about 80 µs of CPU per hand-off on our machines, and SQLAlchemy's adapter
makes three or four per statement. Running the calls on the loop's thread instead
still went through SQLAlchemy's async layer: a greenlet per statement and an adapter
per DBAPI call, and importing `sqlalchemy.ext.asyncio` brings in the whole ORM (about
a tenth of a second of every start-up and 6 MiB of memory). The statements are short
(a local file in WAL mode, no fsync per commit with synchronous=NORMAL), so a plain
synchronous connection is both cheaper and, for the loop, hardly longer.

What it relies on: no SQLite call of this process waits on a lock another connection
of this process holds. Readers never wait in WAL mode, and every write goes through
`Database.write()`, which serialises writers on an asyncio lock before BEGIN; only
another process writing the same file can make a call wait (up to busy_timeout).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy.engine import Connection, CursorResult, Dialect


class InlineConnection:
    """What `Database.read()` and `write()` yield for an SQLite file: `await
    conn.execute(...)` and the rest, as on an `AsyncConnection`, done synchronously."""

    __slots__ = ("sync_connection",)

    def __init__(self, sync_connection: Connection) -> None:
        self.sync_connection = sync_connection

    @property
    def dialect(self) -> Dialect:
        return self.sync_connection.dialect

    @property
    def raw(self) -> sqlite3.Connection:
        """The driver's connection, for statements run without SQLAlchemy."""
        return self.sync_connection.connection.driver_connection  # type: ignore[return-value]

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> CursorResult[Any]:
        return self.sync_connection.execute(statement, parameters, **kwargs)

    async def exec_driver_sql(self, sql: str, parameters: Any = None) -> CursorResult[Any]:
        return self.sync_connection.exec_driver_sql(sql, parameters)

    async def run_sync(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(self.sync_connection, *args, **kwargs)


class BufferedCursor:
    """A cursor that reads all its rows when it executes, as SQLAlchemy's async
    adapters do: results stay readable after their connection went back to the pool,
    and no half-read statement holds a read snapshot (which would keep the WAL from
    being checkpointed) open."""

    __slots__ = ("_cursor", "_rows", "description")

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self._rows: Iterator[Any] = iter(())
        self.description: Any = None

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    def execute(self, sql: str, parameters: Any = ()) -> BufferedCursor:
        cursor = self._cursor
        cursor.execute(sql, parameters)
        self.description = cursor.description
        self._rows = iter(cursor.fetchall() if self.description else ())
        return self

    def executemany(self, sql: str, parameters: Iterable[Any]) -> BufferedCursor:
        self._cursor.executemany(sql, parameters)
        self.description = None
        self._rows = iter(())
        return self

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return list(islice(self._rows, size if size is not None else self._cursor.arraysize))

    def fetchall(self) -> Sequence[Any]:
        return list(self._rows)

    def close(self) -> None:
        self._rows = iter(())
        self._cursor.close()


class BufferingConnection(sqlite3.Connection):
    """sqlite3's connection with `BufferedCursor`s for SQLAlchemy (which asks for
    `cursor()`); its own `execute`, which `Database.run` calls directly, keeps sqlite3's
    cursors."""

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        if factory is not None:
            return super().cursor(factory)
        return BufferedCursor(super().cursor())

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor().executemany(sql, parameters)


def connect(path: str, *, timeout: float) -> BufferingConnection:
    # check_same_thread off: the pool may close a connection from the garbage
    # collector's thread; all use is on the loop's thread.
    return sqlite3.connect(path, timeout=timeout, check_same_thread=False, factory=BufferingConnection)
