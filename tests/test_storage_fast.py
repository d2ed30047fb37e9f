"""The database layer's hot-path tools (storage/database.py: `run`, `fetch`,
`write_prebuilt`, `upsert`) and the inline SQLite driver (storage/sqlite_inline.py):
the same results, errors and transaction boundaries as ordinary SQLAlchemy
execution, on SQLite and (with HOMESERVER_TEST_POSTGRES) PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError

from storage import sqlite_inline
from storage.database import Database, upsert
from storage.migrations import migrate
from storage.schema import event_to_state_group, presence, rooms
from tests.server import POSTGRES_ENV, fresh_postgres_database

_INSERT_ROOM = insert(rooms).values(
    room_id=bindparam("room_id"),
    room_version=bindparam("room_version"),
    creator=bindparam("creator"),
    created_ts=bindparam("created_ts"),
    is_public=bindparam("is_public"),
)
_ROOM = select(rooms.c.room_version, rooms.c.is_public).where(rooms.c.room_id == bindparam("room_id"))
_INSERT_GROUP_OF = insert(event_to_state_group).values(event_id=bindparam("event_id"), state_group=bindparam("group"))
_COUNT_GROUPS = select(func.count()).select_from(event_to_state_group)


def _room(room_id: str, public: bool = False) -> dict[str, object]:
    return {"room_id": room_id, "room_version": "10", "creator": "@a:x", "created_ts": 1, "is_public": public}


def _with_db(tmp_path: Path, body: Callable[[Database], Awaitable[None]]) -> None:
    postgres = os.environ.get(POSTGRES_ENV)
    url = fresh_postgres_database(postgres) if postgres else f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"

    async def run() -> None:
        db = Database.open(url)
        try:
            await migrate(db)
            await body(db)
        finally:
            await db.close()

    asyncio.run(run())


def test_sqlite_files_use_the_inline_driver(tmp_path: Path) -> None:
    if os.environ.get(POSTGRES_ENV):
        pytest.skip("SQLite only")

    async def body(db: Database) -> None:
        async with db.read() as conn:
            assert isinstance(conn, sqlite_inline.InlineConnection)
            assert isinstance(conn.raw, sqlite_inline.BufferingConnection)
            # WAL and the other settings reach these connections too.
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1

    _with_db(tmp_path, body)


def test_results_are_read_when_their_statement_runs(tmp_path: Path) -> None:
    """As through an async engine, a result holds its rows once executed: readable
    after its connection went back to the pool, and a half-read one holds no read
    snapshot that would keep the WAL from being checkpointed."""
    import sqlite3

    async def body(db: Database) -> None:
        async with db.write() as conn:
            for i in range(50):
                await conn.execute(insert(rooms).values(_room(f"!{i:02}:x")))
        async with db.read() as conn:
            result = await conn.execute(select(rooms.c.room_id).order_by(rooms.c.room_id))
            assert result.fetchone() == ("!00:x",)
        if not os.environ.get(POSTGRES_ENV):
            outside = sqlite3.connect(tmp_path / "test.db")
            busy, _, _ = outside.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            outside.close()
            assert busy == 0
        assert [row.room_id for row in result] == [f"!{i:02}:x" for i in range(1, 50)]

    _with_db(tmp_path, body)


def test_inline_sqlite_reads_and_writes_never_yield_to_the_loop(tmp_path: Path) -> None:
    """A busy server's loop turn is tens of milliseconds: a read or write that gives up
    the loop even once (SQLAlchemy's `async with engine.connect()` closes in a task of
    its own) made every sync response and every queued writer wait that long."""
    if os.environ.get(POSTGRES_ENV):
        pytest.skip("SQLite only: PostgreSQL connections do real I/O")

    async def body(db: Database) -> None:
        async with db.read():
            pass  # the pool's first connections are made (and may yield) here
        async with db.write():
            pass
        other_ran = False

        def other() -> None:
            nonlocal other_ran
            other_ran = True

        asyncio.get_running_loop().call_soon(other)
        async with db.read() as conn:
            await conn.execute(select(rooms.c.room_id))
        async with db.write() as conn:
            await db.run(conn, _INSERT_ROOM, _room("!a:x"))
        async with db.write_prebuilt() as conn:
            await db.run(conn, _INSERT_ROOM, _room("!b:x"))
        assert (await db.fetch(_COUNT_GROUPS, {}))[0][0] == 0
        assert not other_ran
        await asyncio.sleep(0)
        assert other_ran

    _with_db(tmp_path, body)


def test_run_and_fetch_round_trip(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        async with db.write_prebuilt() as conn:
            await db.run(conn, _INSERT_ROOM, _room("!a:x", public=True))
            await db.run(conn, _INSERT_GROUP_OF, [{"event_id": f"$e{i}", "group": i} for i in range(5)])
        async with db.write() as conn:
            await db.run(conn, _INSERT_ROOM, _room("!b:x"))
            # Visible to the transaction's own ordinary statements.
            found = (await conn.execute(select(rooms.c.room_id).where(rooms.c.room_id == "!b:x"))).scalar()
            assert found == "!b:x"
        # Booleans went through their type conversion, as through SQLAlchemy.
        async with db.read() as conn:
            rows = (await conn.execute(select(rooms.c.room_id, rooms.c.is_public).order_by(rooms.c.room_id))).all()
        assert [(r.room_id, r.is_public) for r in rows] == [("!a:x", True), ("!b:x", False)]
        version, public = (await db.fetch(_ROOM, {"room_id": "!a:x"}))[0]
        assert version == "10" and bool(public) is True
        assert await db.fetch(_ROOM, {"room_id": "!nothing:x"}) == []
        assert (await db.fetch(_COUNT_GROUPS, {}))[0][0] == 5
        # A conversion (the boolean), values SQLAlchemy binds itself (LIMIT, OFFSET)
        # and a parameter of ours in one statement.
        async with db.write_prebuilt() as conn:
            await db.run(conn, _INSERT_ROOM, [_room(f"!p{i}:x", public=True) for i in range(3)])
        public_rooms = (
            select(rooms.c.room_id)
            .where(rooms.c.is_public == bindparam("public"), rooms.c.room_id != bindparam("not"))
            .order_by(rooms.c.room_id)
            .limit(2)
            .offset(1)
        )
        assert await db.fetch(public_rooms, {"public": True, "not": "!p2:x"}) == [("!p0:x",), ("!p1:x",)]

    _with_db(tmp_path, body)


def test_write_prebuilt_rolls_back_on_error(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        with pytest.raises(RuntimeError):
            async with db.write_prebuilt() as conn:
                await db.run(conn, _INSERT_ROOM, _room("!gone:x"))
                raise RuntimeError("abort")
        assert await db.fetch(_ROOM, {"room_id": "!gone:x"}) == []
        # A constraint violation is SQLAlchemy's IntegrityError and undoes the whole
        # transaction, including the statements before it.
        async with db.write_prebuilt() as conn:
            await db.run(conn, _INSERT_ROOM, _room("!kept:x"))
        with pytest.raises(IntegrityError):
            async with db.write_prebuilt() as conn:
                await db.run(conn, _INSERT_GROUP_OF, {"event_id": "$x", "group": 1})
                await db.run(conn, _INSERT_ROOM, _room("!kept:x"))
        assert (await db.fetch(_COUNT_GROUPS, {}))[0][0] == 0
        # The writer is usable afterwards.
        async with db.write_prebuilt() as conn:
            await db.run(conn, _INSERT_GROUP_OF, {"event_id": "$y", "group": 2})
        assert (await db.fetch(_COUNT_GROUPS, {}))[0][0] == 1

    _with_db(tmp_path, body)


def test_upsert_inserts_then_updates(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        for state, ts in (("online", 1), ("unavailable", 2), ("offline", 3)):
            async with db.write() as conn:
                values = {"user_id": "@a:x", "state": state, "status_msg": None, "last_active_ts": ts, "stream_id": ts}
                await upsert(conn, presence, values, ["user_id"])
        async with db.read() as conn:
            rows = (await conn.execute(select(presence.c.state, presence.c.last_active_ts))).all()
        assert [(r.state, r.last_active_ts) for r in rows] == [("offline", 3)]

    _with_db(tmp_path, body)


def test_statements_whose_sql_depends_on_parameters_are_refused(tmp_path: Path) -> None:
    if os.environ.get(POSTGRES_ENV):
        pytest.skip("the fast path is SQLite's")

    async def body(db: Database) -> None:
        expanding = select(rooms.c.room_id).where(rooms.c.room_id.in_(bindparam("ids", expanding=True)))
        with pytest.raises(ValueError):
            await db.fetch(expanding, {"ids": ["!a:x"]})

    _with_db(tmp_path, body)


def test_concurrent_readers_and_writers_interleave(tmp_path: Path) -> None:
    """Writers through write() and write_prebuilt() and readers holding a read
    transaction open across awaits never wait on each other's SQLite locks (which,
    with statements on the loop's thread, would stall the whole process)."""

    async def body(db: Database) -> None:
        async def reader() -> int:
            async with db.read() as conn:
                first = (await conn.execute(_COUNT_GROUPS)).scalar_one()
                await asyncio.sleep(0.01)  # writers commit meanwhile
                second = (await conn.execute(_COUNT_GROUPS)).scalar_one()
                assert second >= first
                return int(second)

        async def writer(i: int) -> None:
            if i % 2:
                async with db.write_prebuilt() as conn:
                    await db.run(conn, _INSERT_GROUP_OF, {"event_id": f"$w{i}", "group": i})
            else:
                async with db.write() as conn:
                    await conn.execute(insert(event_to_state_group).values(event_id=f"$w{i}", state_group=i))
                    await asyncio.sleep(0.001)  # a transaction held across an await

        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(
            asyncio.gather(*(writer(i) for i in range(40)), *(reader() for _ in range(10))), timeout=20
        )
        assert asyncio.get_running_loop().time() - started < 10
        assert (await db.fetch(_COUNT_GROUPS, {}))[0][0] == 40

    _with_db(tmp_path, body)


def test_wal_checkpoints_run_off_the_loop_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our connections never checkpoint on commit (a stall of the whole server); the
    checkpointer thread copies the WAL back into the database file instead, and has
    the WAL started afresh once it is big (here: 4 MiB) while writers keep coming.
    The file is written over from its start, never cut back and grown again (on the
    loop's thread, with every write waiting)."""
    if os.environ.get(POSTGRES_ENV):
        pytest.skip("SQLite only")
    import sqlite3
    import struct
    import time

    from storage import sqlite_checkpoint

    monkeypatch.setattr(sqlite_checkpoint, "RESTART_WAL_BYTES", 4 * 2**20)
    main_file = tmp_path / "test.db"
    wal = main_file.with_name(main_file.name + "-wal")

    def wal_restarts() -> int:
        # The WAL header's checkpoint sequence number (bytes 12-15) counts the times
        # the WAL was started afresh.
        with wal.open("rb") as f:
            return int(struct.unpack(">I", f.read(16)[12:16])[0])

    async def body(db: Database) -> None:
        async with db.write() as conn:
            assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0
        outside = sqlite3.connect(main_file)
        outside.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        outside.close()
        size_before = main_file.stat().st_size
        # Writers never stop, as on a busy server, so a checkpoint is never complete
        # when the next write starts: without the RESTART step SQLite would never start
        # the WAL afresh and it would grow by every commit. How many commits a
        # checkpoint spans depends on the disk, so the test counts restarts rather than
        # bounding the file.
        commits = 0
        wal_sizes = [0]
        deadline = time.monotonic() + 60
        while commits < 6 * sqlite_checkpoint.EVERY_COMMITS or wal_restarts() < 3:
            assert time.monotonic() < deadline, (commits, wal_restarts(), wal.stat().st_size)
            async with db.write_prebuilt() as conn:
                await db.run(conn, _INSERT_ROOM, {**_room(f"!{commits}:x"), "creator": "@a:x" + "-" * 3000})
            commits += 1
            wal_sizes.append(wal.stat().st_size)
            assert wal_sizes[-1] >= wal_sizes[-2], f"the WAL file was cut back after {commits} commits"
            await asyncio.sleep(0)
        # The checkpoints copied the rows into the database file itself.
        while main_file.stat().st_size < size_before + 500 * 4096 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert main_file.stat().st_size >= size_before + 500 * 4096

    _with_db(tmp_path, body)
