"""Versioned schema migrations, run at start-up.

Each step is a list of SQL statements written once and never edited after it has
shipped; a later change to the schema is a new step. `{blob}` and `{bigserial_pk}`
are the only words that differ between SQLite and PostgreSQL. All pending steps run in
one transaction, so a failed upgrade leaves the database as it was.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database

logger = logging.getLogger(__name__)

_DIALECT_WORDS = {
    "sqlite": {"blob": "BLOB", "bigserial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"blob": "BYTEA", "bigserial_pk": "BIGSERIAL PRIMARY KEY"},
}

# An arbitrary constant: the PostgreSQL advisory lock that keeps two processes from
# migrating the same database at once.
_MIGRATION_LOCK_ID = 0x6D78_6873

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "accounts, devices, access tokens, registration tokens, UIA sessions",
        [
            """CREATE TABLE users (
                user_id TEXT PRIMARY KEY,
                password_hash TEXT,
                is_admin BOOLEAN NOT NULL DEFAULT FALSE,
                deactivated BOOLEAN NOT NULL DEFAULT FALSE,
                created_ts BIGINT NOT NULL,
                displayname TEXT,
                avatar_url TEXT
            )""",
            """CREATE TABLE devices (
                user_id TEXT NOT NULL REFERENCES users(user_id),
                device_id TEXT NOT NULL,
                display_name TEXT,
                created_ts BIGINT NOT NULL,
                last_seen_ts BIGINT,
                last_seen_ip TEXT,
                PRIMARY KEY (user_id, device_id)
            )""",
            """CREATE TABLE access_tokens (
                token_hash TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                created_ts BIGINT NOT NULL,
                FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id)
                    ON DELETE CASCADE
            )""",
            "CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id)",
            """CREATE TABLE registration_tokens (
                token TEXT PRIMARY KEY,
                uses_allowed INTEGER,
                pending INTEGER NOT NULL DEFAULT 0,
                completed INTEGER NOT NULL DEFAULT 0,
                expiry_time BIGINT
            )""",
            """CREATE TABLE uia_sessions (
                session_id TEXT PRIMARY KEY,
                created_ts BIGINT NOT NULL,
                user_id TEXT,
                completed TEXT NOT NULL,
                request_summary TEXT NOT NULL
            )""",
        ],
    ),
]


async def _current_version(conn: AsyncConnection) -> int:
    await conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
    row = (await conn.execute(text("SELECT max(version) FROM schema_version"))).first()
    return int(row[0]) if row and row[0] is not None else 0


async def migrate(db: Database) -> int:
    """Bring the schema up to the newest version; returns that version."""
    words = _DIALECT_WORDS[db.dialect]
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
        current = await _current_version(conn)
        newest = MIGRATIONS[-1][0]
        if current > newest:
            raise RuntimeError(
                f"the database schema is version {current}, newer than this server knows"
                f" ({newest}): run a newer release"
            )
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            logger.info("Applying schema migration %d: %s", version, description)
            for statement in statements:
                await conn.execute(text(statement.format(**words)))
            await conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})
        return newest
