"""The database layer: migrations match the schema the queries use, and an
acknowledged write survives kill -9."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.events import event_from_json
from storage.migrations import MIGRATIONS, migrate
from storage.push_actions import PushActionStore
from storage.schema import metadata
from tests.conftest import V3, Api, register_user
from tests.server import POSTGRES_ENV, ServerProcess, fresh_postgres_database


def _test_database_url(tmp_path: Path) -> str:
    if os.environ.get(POSTGRES_ENV):
        return fresh_postgres_database(os.environ[POSTGRES_ENV])
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


def test_migrations_create_exactly_the_schema(tmp_path: Path) -> None:
    url = _test_database_url(tmp_path)

    async def check() -> None:
        db = Database.open(url)
        try:
            assert await migrate(db) == MIGRATIONS[-1][0]
            assert await migrate(db) == MIGRATIONS[-1][0]  # running again is a no-op

            def columns(sync_conn):  # type: ignore[no-untyped-def]
                inspector = inspect(sync_conn)
                return {
                    table: {c["name"] for c in inspector.get_columns(table)}
                    for table in inspector.get_table_names()
                    if table != "schema_version"
                }

            async with db.read() as conn:
                found = await conn.run_sync(columns)
                if db.is_sqlite:
                    rows = await conn.execute(text("SELECT name FROM sqlite_schema WHERE sql LIKE '%WITHOUT ROWID'"))
                    without_rowid = {row.name for row in rows}
            expected = {table.name: {c.name for c in table.columns} for table in metadata.sorted_tables}
            assert found == expected
            if db.is_sqlite:
                declared = {t.name for t in metadata.sorted_tables if not t.dialect_options["sqlite"]["with_rowid"]}
                assert without_rowid == declared and "event_auth" in declared
        finally:
            await db.close()

    asyncio.run(check())


def test_tables_rebuilt_without_rowid_keep_rows_keys_and_indexes(tmp_path: Path) -> None:
    """Migration 14 (SQLite only; a no-op on PostgreSQL): the rows, the key's
    uniqueness and the secondary indexes of the rebuilt tables are as before."""
    url = _test_database_url(tmp_path)
    membership = ("!r:x", "@a:x", "join", "$m", 3, "@a:x", False)

    async def check() -> None:
        db = Database.open(url)
        try:
            await migrate(db, upto=13)
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO event_edges VALUES ('$b', '$a'), ('$c', '$b'), ('$c', '$x')"))
                await conn.execute(
                    text("INSERT INTO room_memberships VALUES (:r, :u, :m, :e, :s, :sender, :f)"),
                    dict(zip(("r", "u", "m", "e", "s", "sender", "f"), membership, strict=True)),
                )
            assert await migrate(db) == MIGRATIONS[-1][0]
            async with db.read() as conn:
                edges = {tuple(row) for row in await conn.execute(text("SELECT event_id, prev_event_id FROM event_edges"))}
                members = [tuple(row) for row in await conn.execute(text("SELECT * FROM room_memberships"))]
                if db.is_sqlite:
                    plan = " ".join(
                        str(row[-1])
                        for row in await conn.execute(
                            text("EXPLAIN QUERY PLAN SELECT event_id FROM event_edges WHERE prev_event_id = '$b'")
                        )
                    )
                    assert "event_edges_prev" in plan, plan
            assert edges == {("$b", "$a"), ("$c", "$b"), ("$c", "$x")}
            assert [(*m[:6], bool(m[6])) for m in members] == [membership]
            with pytest.raises(IntegrityError):
                async with db.write() as conn:
                    await conn.execute(text("INSERT INTO event_edges VALUES ('$b', '$a')"))
        finally:
            await db.close()

    asyncio.run(check())


def test_push_actions_move_to_one_row_per_event(tmp_path: Path) -> None:
    """Migration 12: rows of (user, event) become one row per event; what each user
    was notified of, and how, reads the same afterwards."""
    url = _test_database_url(tmp_path)
    odd = '@we"ird\\_%:x'  # a historical user ID: JSON escapes, LIKE wildcards

    async def check() -> None:
        db = Database.open(url)
        try:
            await migrate(db, upto=11)
            old_rows = [
                (5, "@alice:x", '["notify"]', True, False),
                (5, "@bob:x", '["notify", {"set_tweak": "highlight"}]', True, True),
                (5, odd, '["notify"]', True, False),
                (7, "@alice:x", '["notify", {"set_tweak": "sound", "value": "ding"}]', True, False),
                (8, "@bob:x", '[{"set_tweak": "highlight"}]', False, True),
            ]
            async with db.write() as conn:
                for position, user_id, actions, notify, highlight in old_rows:
                    await conn.execute(
                        text(
                            "INSERT INTO event_push_actions VALUES (:position, :user_id, '!r:x', :event_id, 'main',"
                            " :actions, :notify, :highlight, 1000)"
                        ),
                        {
                            "position": position,
                            "user_id": user_id,
                            "event_id": f"$e{position}",
                            "actions": actions,
                            "notify": notify,
                            "highlight": highlight,
                        },
                    )
            assert await migrate(db) == MIGRATIONS[-1][0]
            store = PushActionStore(db)

            async def seen(user_id: str) -> list[tuple[int, list[Any], bool]]:
                found, _ = await store.notifications(user_id, 100, 10, only_highlight=False)
                return [(row.stream_ordering, row.actions, row.highlight) for row, _read in found]

            assert await seen("@alice:x") == [
                (7, ["notify", {"set_tweak": "sound", "value": "ding"}], False),
                (5, ["notify"], False),
            ]
            # Position 8 gave bob a highlight without a notification: not listed.
            assert await seen("@bob:x") == [(5, ["notify", {"set_tweak": "highlight"}], True)]
            assert await seen(odd) == [(5, ["notify"], False)]
            assert await seen("@ALICE:x") == []
            assert [r.event_id for r in await store.pending("@alice:x", 5, 100, 10)] == ["$e7"]
        finally:
            await db.close()

    asyncio.run(check())


def test_migration_versions_are_ordered_and_unique() -> None:
    versions = [version for version, _, _ in MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[0] == 1


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.start()
    try:
        users = [register_user(server.base_url) for _ in range(3)]
        renamed = users[0].api.put(f"{V3}/profile/{users[0].user_id}/displayname", json={"displayname": "Durable"})
        assert renamed.status_code == 200
    finally:
        server.kill()
    server.start()
    try:
        api = Api(server.base_url)
        for user in users:
            login = api.post(f"{V3}/login", json={"type": "m.login.password", "user": user.user_id, "password": user.password})
            assert login.status_code == 200
            assert Api(server.base_url, user.access_token).get(f"{V3}/account/whoami").status_code == 200
        assert api.get(f"{V3}/profile/{users[0].user_id}").json()["displayname"] == "Durable"
    finally:
        server.stop()


def test_stored_event_json_parses_as_the_standard_library_does() -> None:
    """Stored events are parsed by msgspec, with the standard library for what msgspec
    refuses: either way the same value as `json.loads`, types included."""
    texts = [
        '{"type":"m.room.message","content":{"body":"h\\u00e9llo \\ud83d\\ude00","n":[1,-0,9007199254740991]}}',
        '{"content":{"big":123456789012345678901234567890,"neg":-9223372036854775809}}',
        '{"content":{"f":1.5,"e":1e400,"z":-0.0},"depth":1}',
        '{"content":{"lone":"\\ud800"}}',
        '{"a":1,"a":2}',
    ]
    for stored in texts:
        expected = json.loads(stored)
        parsed = event_from_json(stored)
        assert parsed == expected and repr(parsed) == repr(expected), stored
