"""SQLite for SQLAlchemy's `sqlite+aiosqlite` dialect, run on the event loop's thread.

aiosqlite gives every connection a worker thread and hands it each call (cursor,
execute, fetch, close, commit) through a queue and back through the loop: about 80 µs
of CPU per hand-off on our machines, and SQLAlchemy's adapter makes three or four per
statement. A write transaction of a room event (nine statements) spent more time
crossing threads than SQLite spent executing it. The statements themselves are short
(a local file in WAL mode, no fsync per commit with synchronous=NORMAL), so running
them directly is both cheaper and, for the loop, hardly longer.

This module is the small subset of aiosqlite's interface that SQLAlchemy's adapter
uses (`sqlalchemy/dialects/sqlite/aiosqlite.py`), over the standard `sqlite3` module,
plugged in through `create_async_engine(async_creator=...)`. The dialect, SQL
compilation and pooling stay SQLAlchemy's.

What it relies on: no SQLite call of this process waits on a lock another connection
of this process holds. Readers never wait in WAL mode, and every write goes through
`Database.write()`, which serialises writers on an asyncio lock before BEGIN; only
another process writing the same file can make a call wait (up to busy_timeout).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any


class InlineCursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _RunNow:
    """Stands in for aiosqlite's request queue, which SQLAlchemy's adapter uses directly
    to set `isolation_level`: the call runs at once and settles its future."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Any]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(exc)
        else:
            future.set_result(result)


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._tx = _RunNow()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        cursor = await self.cursor()
        return await cursor.execute(sql, parameters)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        # SQLAlchemy's "terminate" of a connection it gave up on.
        self._conn.close()


async def connect(path: str, *, timeout: float) -> InlineConnection:
    # check_same_thread off: the pool may close a connection from the garbage
    # collector's thread; all use is on the loop's thread.
    return InlineConnection(sqlite3.connect(path, timeout=timeout, check_same_thread=False))
