"""The database connection: one SQLAlchemy engine over SQLite or PostgreSQL.

Stores call `read()` for a connection and `write()` for a transaction, and use it as
an `AsyncConnection` (`await conn.execute(...)`). On PostgreSQL it is one, from an
async engine over asyncpg; on an SQLite file it is an `InlineConnection` over a
synchronous engine, whose statements run on the event loop's thread
(storage/sqlite_inline.py). On SQLite every write transaction of this process is
serialised by one lock, because SQLite has a single writer anyway and waiting on our
own lock is cheaper than retrying on "database is locked".

Hot paths (persisting a room event, looking up a transaction ID) run prebuilt Core
statements through `run()` and `fetch()`: on SQLite they go straight to the driver with
SQL compiled once, skipping SQLAlchemy's per-execution work (statement cache key,
execution context, result wrapping), which costs several times what SQLite spends on a
small INSERT. On PostgreSQL they are ordinary `execute` calls.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import CursorResult, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from storage import sqlite_inline
from storage.sqlite_checkpoint import WAL_FILE_LIMIT, WalCheckpointer

if TYPE_CHECKING:
    # Imported only for PostgreSQL (and SQLite in memory): sqlalchemy.ext.asyncio
    # imports the ORM, a tenth of a second of start-up.
    from sqlalchemy.ext.asyncio import AsyncEngine

Params = Mapping[str, Any]


class Connection(Protocol):
    """What `Database.read()` and `write()` yield: an `AsyncConnection`, or an
    `InlineConnection` with the same methods."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> CursorResult[Any]: ...


class Database:
    def __init__(self, engine: AsyncEngine | Engine, inline_path: str | None = None) -> None:
        # A synchronous engine exactly when `inline_path` is set.
        self.engine = engine
        self.sync_engine: Engine = engine if isinstance(engine, Engine) else engine.sync_engine
        self.dialect: str = engine.dialect.name
        self._dialect = engine.dialect  # a property of the engine, read on hot paths
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # The SQLite file when its connections are `InlineConnection`s (the fast path
        # of run() and fetch()); None otherwise.
        self._inline_path = inline_path
        # fetch()'s own connection: autocommit, used without awaiting between execute
        # and fetch, so no other task ever sees it mid-statement.
        self._reader: sqlite3.Connection | None = None
        # write_prebuilt()'s connection, used only under the write lock.
        self._writer: sqlite3.Connection | None = None
        # Inline connections leave WAL checkpoints to a thread (storage/sqlite_checkpoint.py).
        self._checkpointer = (
            WalCheckpointer(inline_path, self._write_lock)
            if inline_path is not None and self._write_lock is not None
            else None
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @classmethod
    def open(cls, url: str) -> Database:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        inline_path: str | None = None
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = 4
            if parsed.database and parsed.database != ":memory:" and not parsed.query:
                # SQLite calls run on the loop's thread instead of aiosqlite's worker
                # threads (see storage/sqlite_inline.py for why and what that relies on).
                inline_path = parsed.database
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
        engine: AsyncEngine | Engine
        if inline_path is not None:
            path = inline_path
            engine = create_engine(
                parsed.set(drivername="sqlite+pysqlite"),
                creator=lambda: sqlite_inline.connect(path, timeout=30),
                pool_size=kwargs["pool_size"],
            )
        else:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(url, **kwargs)
        db = cls(engine, inline_path)
        if db.is_sqlite:
            event.listen(db.sync_engine, "connect", _configure_sqlite)
            if inline_path is not None:
                event.listen(db.sync_engine, "connect", _no_autocheckpoint)
            # SQLAlchemy's own BEGIN handling for pysqlite is off by default; we issue
            # BEGIN ourselves so transactions really start where we say.
            event.listen(db.sync_engine, "begin", _begin_sqlite)
        return db

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        engine = self.engine
        if isinstance(engine, Engine):
            # Nothing here suspends: a read never gives up the loop, not even to
            # close (an `AsyncConnection` closes in a task of its own, a whole loop
            # turn, tens of milliseconds under load).
            with engine.connect() as sync_connection:
                yield sqlite_inline.InlineConnection(sync_connection)
            return
        async with engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A transaction: committed when the block exits normally, rolled back otherwise."""
        engine = self.engine
        if self._write_lock is None:
            assert not isinstance(engine, Engine)
            async with engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            if isinstance(engine, Engine):
                with engine.connect() as sync_connection, sync_connection.begin():
                    yield sqlite_inline.InlineConnection(sync_connection)
            else:
                async with engine.begin() as conn:
                    yield conn
            if self._checkpointer is not None:
                self._checkpointer.committed()

    @asynccontextmanager
    async def write_prebuilt(self) -> AsyncIterator[Any]:
        """A transaction for `run` alone (prebuilt statements, nothing else): on SQLite
        this process's own writer connection, without SQLAlchemy's connection and
        transaction handling (several hundred µs per transaction); elsewhere the same
        as `write()`. Committed when the block exits normally, rolled back otherwise."""
        if self._inline_path is None or self._write_lock is None:
            async with self.write() as conn:
                yield conn
            return
        async with self._write_lock:
            if self._writer is None:
                self._writer = _open_raw(self._inline_path)
            raw = self._writer
            raw.execute("BEGIN")
            try:
                yield _RawTransaction(raw)
                raw.commit()
            except BaseException:
                if raw.in_transaction:
                    raw.rollback()
                raise
            if self._checkpointer is not None:
                self._checkpointer.committed()

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.close()
        for raw in (self._reader, self._writer):
            if raw is not None:
                raw.close()
        self._reader = self._writer = None
        if isinstance(self.engine, Engine):
            self.engine.dispose()
        else:
            await self.engine.dispose()

    # --- prebuilt statements on the hot paths -------------------------------------

    def upsert_statement(self, table: Any, columns: Sequence[str], key_columns: Sequence[str]) -> Executable:
        """INSERT ... ON CONFLICT (key) DO UPDATE of `columns`, bound by column name and
        built once, for `run`."""
        return _upsert_statement(self.dialect, table, tuple(columns), tuple(key_columns))

    async def run(
        self, conn: Connection | _RawTransaction, statement: Executable, params: Params | Sequence[Params]
    ) -> list[tuple[Any, ...]]:
        """Execute a prebuilt statement (bound parameters by name; a list of parameter
        sets runs it once per set) inside the transaction of `conn` (from `write()`,
        `read()` or `write_prebuilt()`); returns its rows as plain tuples of driver
        values (no result type conversion)."""
        raw = conn.raw if isinstance(conn, _RawTransaction) else _raw_sqlite(conn)
        if raw is None:
            if isinstance(params, dict) or isinstance(params, Mapping):
                result = await conn.execute(statement, params)
                return [tuple(row) for row in result] if result.returns_rows else []
            await conn.execute(statement, list(params))
            return []
        return _run_raw(raw, statement, self._dialect, params)

    async def fetch(self, statement: Executable, params: Params) -> list[tuple[Any, ...]]:
        """Run one prebuilt query outside any transaction; rows as in `run`."""
        if self._inline_path is None:
            async with self.read() as conn:
                return [tuple(row) for row in await conn.execute(statement, params)]
        if self._reader is None:
            self._reader = _open_raw(self._inline_path)
        return _run_raw(self._reader, statement, self._dialect, params)


class _RawTransaction:
    """What `write_prebuilt()` yields on SQLite: only `Database.run` takes it."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw


def _open_raw(path: str) -> sqlite3.Connection:
    raw = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    _configure_sqlite(raw, None)
    _no_autocheckpoint(raw, None)
    return raw


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    # WalCheckpointer checkpoints on its own thread instead of a committing writer.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    # When a writer starts the WAL afresh (after the checkpointer's RESTART), it cuts
    # the file back to this size: above the size the WAL works at, so it never does.
    cursor.execute(f"PRAGMA journal_size_limit={WAL_FILE_LIMIT}")
    cursor.close()


# A statement's bound parameters in order: (name, type conversion or None, the value
# of a parameter SQLAlchemy set itself or _NO_DEFAULT).
_NO_DEFAULT: Any = object()
_Binds = tuple[tuple[str, Callable[[Any], Any] | None, Any], ...]
# A statement's parameters in order, from one parameter set.
_Values = Callable[[Params], Sequence[Any]]
# id(statement) -> (statement, SQL, its parameters); only SQLite statements, so the
# dialect is always the same.
_compiled: dict[int, tuple[Executable, str, _Values]] = {}
_MAX_COMPILED = 2000
_upserts: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Executable] = {}


def _raw_sqlite(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `conn` when it is an `InlineConnection`."""
    return conn.raw if isinstance(conn, sqlite_inline.InlineConnection) else None


def _prepared(statement: Executable, dialect: Any) -> tuple[str, _Values]:
    entry = _compiled.get(id(statement))
    if entry is not None and entry[0] is statement:
        return entry[1], entry[2]
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    # No IN lists expanded at execution time: their SQL depends on the parameters.
    if compiled.post_compile_params or compiled.positiontup is None:
        raise ValueError(f"not a statement for the fast path: {compiled.string}")
    processors = compiled._bind_processors
    binds = tuple(
        (name, processors.get(name), _NO_DEFAULT if compiled.binds[name].required else compiled.binds[name].effective_value)
        for name in compiled.positiontup
    )
    if len(_compiled) >= _MAX_COMPILED:
        # Only prebuilt statements belong here; a caller passing new ones each time
        # would otherwise grow this forever.
        _compiled.clear()
    values = _values_of(binds)
    _compiled[id(statement)] = (statement, compiled.string, values)
    return compiled.string, values


def _values_of(binds: _Binds) -> _Values:
    """How to put one parameter set in the statement's order: an itemgetter when no
    parameter needs a conversion or a default (most statements), otherwise a function
    made for the statement with each parameter's conversion and default written in.
    A message's push actions run one of those per recipient: the general loop over
    the parameters cost three times as much."""
    if not binds:
        return lambda params: ()
    if all(convert is None and default is _NO_DEFAULT for _, convert, default in binds):
        if len(binds) == 1:
            name = binds[0][0]
            return lambda params: (params[name],)
        getter = operator.itemgetter(*(name for name, _, _ in binds))
        return getter  # type: ignore[return-value]

    namespace: dict[str, Any] = {}
    items: list[str] = []
    for i, (name, convert, default) in enumerate(binds):
        # Parameters SQLAlchemy adds itself (such as SQLite's OFFSET after a LIMIT)
        # carry their value; ours must be given.
        item = f"p[{name!r}]"
        if default is not _NO_DEFAULT:
            namespace[f"default{i}"] = default
            item = f"({item} if {name!r} in p else default{i})"
        if convert is not None:
            namespace[f"convert{i}"] = convert
            item = f"convert{i}({item})"
        items.append(item)
    # Names come from the compiled statement (bind parameter names), quoted by repr.
    return eval(f"lambda p: ({', '.join(items)},)", namespace)  # type: ignore[no-any-return]


def _run_raw(
    raw: sqlite3.Connection, statement: Executable, dialect: Any, params: Params | Sequence[Params]
) -> list[tuple[Any, ...]]:
    sql, values = _prepared(statement, dialect)
    try:
        # dict first: isinstance against the Mapping ABC is slow.
        if isinstance(params, dict) or isinstance(params, Mapping):
            cursor = raw.execute(sql, values(params))
        else:
            cursor = raw.executemany(sql, map(values, params))
        rows = cursor.fetchall() if cursor.description else []
        cursor.close()
        return rows
    except sqlite3.Error as exc:
        # The same exception classes as through SQLAlchemy (IntegrityError, ...).
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


def _upsert_statement(dialect: str, table: Any, columns: tuple[str, ...], key_columns: tuple[str, ...]) -> Executable:
    cache_key = (dialect, table.name, columns, key_columns)
    statement = _upserts.get(cache_key)
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        base = dialect_insert(table).values({c: bindparam(c) for c in columns})
        # The proposed row's values (`excluded`), so the statement is the same for
        # every call and can be compiled once.
        updates = {c: base.excluded[c] for c in columns if c not in key_columns}
        if updates:
            statement = base.on_conflict_do_update(index_elements=list(key_columns), set_=updates)
        else:
            statement = base.on_conflict_do_nothing(index_elements=list(key_columns))
        _upserts[cache_key] = statement
    return statement


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
    driver = conn.connection.driver_connection
    if isinstance(driver, sqlite_inline.BufferingConnection):
        # Straight to the driver: a full SQLAlchemy execution per transaction costs
        # more than the statements of most transactions.
        driver.execute("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN")


async def execute_sql(conn: Connection, sql: str) -> None:
    """Run one statement of plain SQL without parameters (a schema change) in the
    transaction of `conn`. On an SQLite file it goes straight to the driver: a fresh
    database's migrations took ~30 ms of start-up through SQLAlchemy, ~17 ms this way."""
    raw = _raw_sqlite(conn)
    if raw is None:
        await conn.execute(text(sql))
    else:
        raw.execute(sql).close()


async def upsert(conn: Connection, table: Any, values: dict[str, Any], key_columns: list[str]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE, in the dialect of `conn`.

    SQLAlchemy cannot cache ON CONFLICT statements and compiled each one anew (about
    a millisecond); this builds one statement per table and column set, and on SQLite
    runs it with SQL compiled once."""
    statement = _upsert_statement(conn.dialect.name, table, tuple(values), tuple(key_columns))
    raw = _raw_sqlite(conn)
    if raw is None:
        await conn.execute(statement, values)
    else:
        _run_raw(raw, statement, conn.dialect, values)
