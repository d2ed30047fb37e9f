"""The database connection: one async SQLAlchemy engine over SQLite or PostgreSQL.

Stores call `read()` for a connection and `write()` for a transaction. On SQLite every
write transaction of this process is serialised by one lock, because SQLite has a
single writer anyway and waiting on our own lock is cheaper than retrying on
"database is locked".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @classmethod
    def open(cls, url: str) -> Database:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
            # aiosqlite runs each connection on a thread: a few let reads overlap writes.
            kwargs["pool_size"] = 4
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
        engine = create_async_engine(url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine.sync_engine, "connect", _configure_sqlite)
            # SQLAlchemy's own BEGIN handling for pysqlite is off by default; we issue
            # BEGIN ourselves so transactions really start where we say.
            event.listen(engine.sync_engine, "begin", _begin_sqlite)
        return cls(engine)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction: committed when the block exits normally, rolled back otherwise."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            async with self.engine.begin() as conn:
                yield conn

    async def close(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Let us control transactions (see _begin_sqlite) instead of the driver's guesswork.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. synchronous=NORMAL in WAL mode keeps every
    # committed transaction across a crash of this process (kill -9); only a power loss
    # can roll back the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_sqlite(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


async def upsert(
    conn: AsyncConnection, table: Any, values: dict[str, Any], key_columns: list[str]
) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE, in the dialect of `conn`."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    statement = dialect_insert(table).values(**values)
    updates = {k: v for k, v in values.items() if k not in key_columns}
    if updates:
        statement = statement.on_conflict_do_update(index_elements=key_columns, set_=updates)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=key_columns)
    await conn.execute(statement)
