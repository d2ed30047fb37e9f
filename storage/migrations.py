"""Versioned schema migrations, run at start-up.

Each step is a list of SQL statements written once and never edited after it has
shipped; a later change to the schema is a new step. The words in braces
(`_DIALECT_WORDS`) are what differs between SQLite and PostgreSQL. All pending steps run in
one transaction, so a failed upgrade leaves the database as it was.
"""

from __future__ import annotations

import logging

from sqlalchemy import text

from storage.database import Connection, Database, execute_sql

logger = logging.getLogger(__name__)

_DIALECT_WORDS = {
    "sqlite": {
        "blob": "BLOB",
        "bigserial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        # The rowid itself: one B-tree for the table, not a second for its key.
        "bigint_pk": "INTEGER PRIMARY KEY",
        "json_object_agg": "json_group_object",
        "json_array": "json_array",
        "json_of_actions": "json(actions)",
    },
    "postgresql": {
        "blob": "BYTEA",
        "bigserial_pk": "BIGSERIAL PRIMARY KEY",
        "bigint_pk": "BIGINT PRIMARY KEY",
        # jsonb, not json: json_object_agg writes `{ "key" : value }`, which the
        # match on `"key":` would miss.
        "json_object_agg": "jsonb_object_agg",
        "json_array": "jsonb_build_array",
        "json_of_actions": "CAST(actions AS jsonb)",
    },
}

# An arbitrary constant: the PostgreSQL advisory lock that keeps two processes from
# migrating the same database at once.
_MIGRATION_LOCK_ID = 0x6D78_6873


class SqliteOnly(str):
    """A migration statement run on SQLite only: a storage layout PostgreSQL has no
    form of."""


def _without_rowid(table: str, columns: str, key: str, *indexes: str) -> list[str]:
    """Statements that rebuild `table` (its `columns`, in their order, as declared)
    as a WITHOUT ROWID table on `key`, with its `indexes` (dropped with the old
    table) made again. Used by shipped migrations: never change what it writes.

    The rows wait in a temporary table rather than the new table being renamed:
    SQLite's ALTER TABLE ... RENAME reparses the whole schema, 4 ms a table here
    (35 ms on every new database's first start for migration 14, against 5)."""
    names = ", ".join(column.split()[0] for column in columns.split(","))
    return [
        SqliteOnly(f"CREATE TEMP TABLE old_{table} AS SELECT {names} FROM {table}"),
        SqliteOnly(f"DROP TABLE {table}"),
        SqliteOnly(f"CREATE TABLE {table} ({columns}, PRIMARY KEY ({key})) WITHOUT ROWID"),
        SqliteOnly(f"INSERT INTO {table} ({names}) SELECT {names} FROM temp.old_{table}"),
        SqliteOnly(f"DROP TABLE temp.old_{table}"),
        *(SqliteOnly(index) for index in indexes),
    ]


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
    (
        2,
        "media: content blobs, local media IDs, thumbnails",
        [
            # One row per distinct file in the content-addressed store. What the
            # thumbnailer learnt about it is kept here, so broken or oversized images are
            # examined once, not on every thumbnail request.
            """CREATE TABLE media_content (
                sha256 TEXT PRIMARY KEY,
                size BIGINT NOT NULL,
                created_ts BIGINT NOT NULL,
                image_status TEXT,
                image_width INTEGER,
                image_height INTEGER
            )""",
            # One row per mxc://<us>/<media_id>. sha256 is NULL while an ID made by
            # POST /media/v1/create waits for its upload (until unused_expires_at).
            """CREATE TABLE local_media (
                media_id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                created_ts BIGINT NOT NULL,
                unused_expires_at BIGINT,
                sha256 TEXT REFERENCES media_content(sha256),
                size BIGINT,
                content_type TEXT,
                upload_name TEXT,
                uploaded_ts BIGINT
            )""",
            "CREATE INDEX local_media_user ON local_media (user_id, created_ts)",
            "CREATE INDEX local_media_sha256 ON local_media (sha256)",
            # Thumbnails belong to content, not to a media ID: identical uploads share
            # them. (width, height, method) is the size that was asked for; the image
            # itself may be smaller (never upscaled) and lives in the same store.
            """CREATE TABLE media_thumbnails (
                source_sha256 TEXT NOT NULL REFERENCES media_content(sha256),
                width INTEGER NOT NULL,
                height INTEGER NOT NULL,
                method TEXT NOT NULL,
                content_type TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                size BIGINT NOT NULL,
                actual_width INTEGER NOT NULL,
                actual_height INTEGER NOT NULL,
                created_ts BIGINT NOT NULL,
                PRIMARY KEY (source_sha256, width, height, method)
            )""",
            "CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256)",
        ],
    ),
    (
        3,
        "rooms: events, graph edges, state groups, current state, memberships, aliases",
        [
            """CREATE TABLE rooms (
                room_id TEXT PRIMARY KEY,
                room_version TEXT NOT NULL,
                creator TEXT,
                created_ts BIGINT NOT NULL,
                is_public BOOLEAN NOT NULL DEFAULT FALSE
            )""",
            # stream_ordering is the global position every sync token is built from.
            """CREATE TABLE events (
                stream_ordering {bigserial_pk},
                event_id TEXT NOT NULL UNIQUE,
                room_id TEXT NOT NULL,
                depth BIGINT NOT NULL,
                type TEXT NOT NULL,
                state_key TEXT,
                sender TEXT NOT NULL,
                origin_server_ts BIGINT NOT NULL,
                outlier BOOLEAN NOT NULL DEFAULT FALSE,
                rejected_reason TEXT,
                redacted_by TEXT,
                json TEXT NOT NULL
            )""",
            "CREATE INDEX events_room_stream ON events (room_id, stream_ordering)",
            "CREATE INDEX events_room_type ON events (room_id, type, stream_ordering)",
            """CREATE TABLE event_edges (
                event_id TEXT NOT NULL,
                prev_event_id TEXT NOT NULL,
                PRIMARY KEY (event_id, prev_event_id)
            )""",
            "CREATE INDEX event_edges_prev ON event_edges (prev_event_id)",
            """CREATE TABLE event_auth (
                event_id TEXT NOT NULL,
                auth_id TEXT NOT NULL,
                PRIMARY KEY (event_id, auth_id)
            )""",
            """CREATE TABLE room_forward_extremities (
                room_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                PRIMARY KEY (room_id, event_id)
            )""",
            # A state group is a snapshot (prev_group NULL) or a delta on prev_group.
            """CREATE TABLE state_groups (
                id {bigserial_pk},
                room_id TEXT NOT NULL,
                prev_group BIGINT,
                delta_depth INTEGER NOT NULL
            )""",
            """CREATE TABLE state_group_entries (
                group_id BIGINT NOT NULL,
                type TEXT NOT NULL,
                state_key TEXT NOT NULL,
                event_id TEXT NOT NULL,
                PRIMARY KEY (group_id, type, state_key)
            )""",
            # The state after each event (for a state event: including itself).
            """CREATE TABLE event_to_state_group (
                event_id TEXT PRIMARY KEY,
                state_group BIGINT NOT NULL
            )""",
            """CREATE TABLE current_state (
                room_id TEXT NOT NULL,
                type TEXT NOT NULL,
                state_key TEXT NOT NULL,
                event_id TEXT NOT NULL,
                PRIMARY KEY (room_id, type, state_key)
            )""",
            """CREATE TABLE room_memberships (
                room_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                membership TEXT NOT NULL,
                event_id TEXT NOT NULL,
                stream_ordering BIGINT NOT NULL,
                sender TEXT NOT NULL,
                forgotten BOOLEAN NOT NULL DEFAULT FALSE,
                PRIMARY KEY (room_id, user_id)
            )""",
            "CREATE INDEX room_memberships_user ON room_memberships (user_id, membership)",
            """CREATE TABLE event_txn_ids (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                txn_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                created_ts BIGINT NOT NULL,
                PRIMARY KEY (user_id, device_id, txn_id)
            )""",
            """CREATE TABLE event_relations (
                event_id TEXT PRIMARY KEY,
                room_id TEXT NOT NULL,
                relates_to_id TEXT NOT NULL,
                rel_type TEXT NOT NULL,
                stream_ordering BIGINT NOT NULL
            )""",
            "CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type, stream_ordering)",
            """CREATE TABLE room_aliases (
                alias TEXT PRIMARY KEY,
                room_id TEXT NOT NULL,
                creator TEXT NOT NULL
            )""",
            "CREATE INDEX room_aliases_room ON room_aliases (room_id)",
            """CREATE TABLE account_data (
                user_id TEXT NOT NULL,
                room_id TEXT NOT NULL,
                type TEXT NOT NULL,
                content TEXT NOT NULL,
                stream_id BIGINT NOT NULL,
                PRIMARY KEY (user_id, room_id, type)
            )""",
            """CREATE TABLE event_reports (
                id {bigserial_pk},
                room_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                reason TEXT,
                score INTEGER,
                received_ts BIGINT NOT NULL
            )""",
        ],
    ),
    (
        4,
        "sync streams: receipts, to-device, presence, filters, device lists, E2EE keys, key backup",
        [
            # The last position handed out in each non-room stream (receipts, to_device,
            # presence, device_lists); bumped in the transaction that writes the row.
            """CREATE TABLE stream_positions (
                stream TEXT PRIMARY KEY,
                position BIGINT NOT NULL
            )""",
            "INSERT INTO stream_positions (stream, position) VALUES ('receipts', 0)",
            "INSERT INTO stream_positions (stream, position) VALUES ('to_device', 0)",
            "INSERT INTO stream_positions (stream, position) VALUES ('presence', 0)",
            "INSERT INTO stream_positions (stream, position) VALUES ('device_lists', 0)",
            """CREATE TABLE user_filters (
                user_id TEXT NOT NULL,
                filter_id BIGINT NOT NULL,
                filter_json TEXT NOT NULL,
                PRIMARY KEY (user_id, filter_id)
            )""",
            # thread_id '' is the unthreaded receipt.
            """CREATE TABLE receipts (
                room_id TEXT NOT NULL,
                receipt_type TEXT NOT NULL,
                user_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                data TEXT NOT NULL,
                stream_id BIGINT NOT NULL,
                PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
            )""",
            "CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id)",
            """CREATE TABLE to_device_messages (
                stream_id BIGINT NOT NULL,
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                message TEXT NOT NULL,
                PRIMARY KEY (user_id, device_id, stream_id)
            )""",
            """CREATE TABLE to_device_txns (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                txn_id TEXT NOT NULL,
                created_ts BIGINT NOT NULL,
                PRIMARY KEY (user_id, device_id, txn_id)
            )""",
            """CREATE TABLE presence (
                user_id TEXT PRIMARY KEY,
                state TEXT NOT NULL,
                status_msg TEXT,
                last_active_ts BIGINT NOT NULL,
                stream_id BIGINT NOT NULL
            )""",
            "CREATE INDEX presence_stream ON presence (stream_id)",
            """CREATE TABLE device_list_changes (
                stream_id BIGINT NOT NULL,
                user_id TEXT NOT NULL,
                PRIMARY KEY (stream_id, user_id)
            )""",
            "CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id)",
            """CREATE TABLE e2e_device_keys (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                key_json TEXT NOT NULL,
                PRIMARY KEY (user_id, device_id)
            )""",
            """CREATE TABLE e2e_one_time_keys (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                algorithm TEXT NOT NULL,
                key_id TEXT NOT NULL,
                key_json TEXT NOT NULL,
                PRIMARY KEY (user_id, device_id, algorithm, key_id)
            )""",
            """CREATE TABLE e2e_fallback_keys (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                algorithm TEXT NOT NULL,
                key_id TEXT NOT NULL,
                key_json TEXT NOT NULL,
                used BOOLEAN NOT NULL DEFAULT FALSE,
                PRIMARY KEY (user_id, device_id, algorithm)
            )""",
            # key_type: master, self_signing, user_signing.
            """CREATE TABLE e2e_cross_signing_keys (
                user_id TEXT NOT NULL,
                key_type TEXT NOT NULL,
                key_json TEXT NOT NULL,
                PRIMARY KEY (user_id, key_type)
            )""",
            # Signatures uploaded through /keys/signatures/upload, on a device key
            # (target_key_id = device ID) or a cross-signing key (its public key).
            """CREATE TABLE e2e_signatures (
                signer_user_id TEXT NOT NULL,
                signer_key_id TEXT NOT NULL,
                target_user_id TEXT NOT NULL,
                target_key_id TEXT NOT NULL,
                signature TEXT NOT NULL,
                PRIMARY KEY (signer_user_id, signer_key_id, target_user_id, target_key_id)
            )""",
            "CREATE INDEX e2e_signatures_target ON e2e_signatures (target_user_id)",
            """CREATE TABLE room_key_backup_versions (
                user_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                algorithm TEXT NOT NULL,
                auth_data TEXT NOT NULL,
                etag BIGINT NOT NULL,
                deleted BOOLEAN NOT NULL DEFAULT FALSE,
                PRIMARY KEY (user_id, version)
            )""",
            """CREATE TABLE room_key_backup_keys (
                user_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                room_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                first_message_index BIGINT NOT NULL,
                forwarded_count BIGINT NOT NULL,
                is_verified BOOLEAN NOT NULL,
                session_data TEXT NOT NULL,
                PRIMARY KEY (user_id, version, room_id, session_id)
            )""",
        ],
    ),
    (
        6,
        "operator: blocked rooms, quarantined media",
        [
            # Rooms an admin deleted with block: true; joining them is refused.
            """CREATE TABLE blocked_rooms (
                room_id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                blocked_ts BIGINT NOT NULL
            )""",
            # Media an admin quarantined: downloads and thumbnails answer 404. The
            # files stay on disk (unquarantining brings them back).
            """CREATE TABLE quarantined_media (
                server_name TEXT NOT NULL,
                media_id TEXT NOT NULL,
                quarantined_by TEXT NOT NULL,
                quarantined_ts BIGINT NOT NULL,
                PRIMARY KEY (server_name, media_id)
            )""",
        ],
    ),
    (
        7,
        "federation: the outgoing event queue per destination",
        [
            """CREATE TABLE federation_outbox (
                destination TEXT NOT NULL,
                event_id TEXT NOT NULL,
                stream_ordering BIGINT NOT NULL,
                PRIMARY KEY (destination, event_id)
            )""",
            "CREATE INDEX federation_outbox_order ON federation_outbox (destination, stream_ordering)",
        ],
    ),
    (
        8,
        "media: the cache of other servers' media",
        [
            # One row per mxc://<other server>/<media_id> fetched over federation; the
            # bytes are a file of the content store like any upload.
            """CREATE TABLE remote_media (
                server_name TEXT NOT NULL,
                media_id TEXT NOT NULL,
                sha256 TEXT NOT NULL REFERENCES media_content(sha256),
                size BIGINT NOT NULL,
                content_type TEXT NOT NULL,
                upload_name TEXT,
                fetched_ts BIGINT NOT NULL,
                PRIMARY KEY (server_name, media_id)
            )""",
            "CREATE INDEX remote_media_sha256 ON remote_media (sha256)",
        ],
    ),
    (
        9,
        "push rules: users' own rules and their settings of the server-default rules",
        [
            # A user's own rules; `position` orders the rules of one kind, lowest first
            # (the most important). conditions (override/underride) and actions are
            # JSON; pattern is for content rules.
            """CREATE TABLE push_rules (
                user_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                rule_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                conditions TEXT,
                pattern TEXT,
                actions TEXT NOT NULL,
                enabled BOOLEAN NOT NULL,
                PRIMARY KEY (user_id, kind, rule_id)
            )""",
            # A user's changes to a server-default rule: NULL means "as the default".
            """CREATE TABLE push_rule_defaults (
                user_id TEXT NOT NULL,
                rule_id TEXT NOT NULL,
                enabled BOOLEAN,
                actions TEXT,
                PRIMARY KEY (user_id, rule_id)
            )""",
        ],
    ),
    (
        10,
        "push: notification actions, read marks of own events, pushers",
        [
            # One row per (user, event) that push rules gave actions, for
            # /notifications and pusher delivery. Keyed by stream position first, so
            # the thousand rows of a message in a big room are appended together
            # (a user-first key would dirty a page per recipient).
            """CREATE TABLE event_push_actions (
                stream_ordering BIGINT NOT NULL,
                user_id TEXT NOT NULL,
                room_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                actions TEXT NOT NULL,
                notify BOOLEAN NOT NULL,
                highlight BOOLEAN NOT NULL,
                ts BIGINT NOT NULL,
                PRIMARY KEY (stream_ordering, user_id)
            )""",
            # The unread counts themselves, per user, room and thread: incremented
            # with each notification, recounted when a read receipt moves, zeroed by
            # the user's own event. Small (a row per user, room and thread), so the
            # per-message increments touch few pages.
            """CREATE TABLE event_push_summary (
                user_id TEXT NOT NULL,
                room_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                notifications BIGINT NOT NULL,
                highlights BIGINT NOT NULL,
                PRIMARY KEY (user_id, room_id, thread_id)
            )""",
            # A user's own newest event in a room reads everything before it.
            """CREATE TABLE push_own_events (
                user_id TEXT NOT NULL,
                room_id TEXT NOT NULL,
                stream_ordering BIGINT NOT NULL,
                PRIMARY KEY (user_id, room_id)
            )""",
            """INSERT INTO push_own_events (user_id, room_id, stream_ordering)
                SELECT sender, room_id, max(stream_ordering) FROM events GROUP BY sender, room_id""",
            # last_stream_ordering: the newest action delivered to the gateway, so a
            # restart resumes from there.
            """CREATE TABLE pushers (
                user_id TEXT NOT NULL,
                app_id TEXT NOT NULL,
                pushkey TEXT NOT NULL,
                device_id TEXT,
                kind TEXT NOT NULL,
                app_display_name TEXT NOT NULL,
                device_display_name TEXT NOT NULL,
                profile_tag TEXT,
                lang TEXT NOT NULL,
                data TEXT NOT NULL,
                pushkey_ts BIGINT NOT NULL,
                last_stream_ordering BIGINT NOT NULL,
                PRIMARY KEY (user_id, app_id, pushkey)
            )""",
            "CREATE INDEX pushers_key ON pushers (app_id, pushkey)",
            # Read positions of one user across rooms (push badge counts, /notifications).
            "CREATE INDEX receipts_user ON receipts (user_id, room_id)",
        ],
    ),
    (
        11,
        "federation: other servers' users' device lists, cached",
        [
            # One row per remote user whose device list we hold: the stream_id of
            # their server's last m.device_list_update we applied, and `stale` once an
            # update arrived that we could not apply (a gap): the next query refetches.
            """CREATE TABLE remote_device_lists (
                user_id TEXT PRIMARY KEY,
                stream_id BIGINT NOT NULL,
                stale BOOLEAN NOT NULL DEFAULT FALSE,
                master_key TEXT,
                self_signing_key TEXT,
                updated_ts BIGINT NOT NULL
            )""",
            """CREATE TABLE remote_devices (
                user_id TEXT NOT NULL,
                device_id TEXT NOT NULL,
                display_name TEXT,
                key_json TEXT,
                PRIMARY KEY (user_id, device_id)
            )""",
            # The device-list positions at which a local user's devices changed (what
            # m.device_list_update numbers stream_id/prev_id by; cross-signing and
            # signature-only changes of device_list_changes are not among them).
            """CREATE TABLE local_device_list_updates (
                user_id TEXT NOT NULL,
                stream_id BIGINT NOT NULL,
                PRIMARY KEY (user_id, stream_id)
            )""",
        ],
    ),
    (
        12,
        "push: one row of actions per event, for all its recipients",
        [
            # A message in a room of N members wrote N rows of event_push_actions
            # (for 19 recipients ~100 µs of CPU more than one row, some 4% of a
            # message); one row holds them all now:
            # {user_id: [notify 0/1, highlight 0/1, actions]}. A user's rows are
            # found by a window of positions and a match on the JSON key.
            """CREATE TABLE event_push_recipients (
                stream_ordering {bigint_pk},
                room_id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                ts BIGINT NOT NULL,
                recipients TEXT NOT NULL
            )""",
            """INSERT INTO event_push_recipients (stream_ordering, room_id, event_id, thread_id, ts, recipients)
            SELECT stream_ordering, MIN(room_id), MIN(event_id), MIN(thread_id), MIN(ts),
                CAST({json_object_agg}(
                    user_id,
                    {json_array}(
                        CASE WHEN notify THEN 1 ELSE 0 END, CASE WHEN highlight THEN 1 ELSE 0 END, {json_of_actions}
                    )
                ) AS TEXT)
            FROM event_push_actions GROUP BY stream_ordering""",
            "DROP TABLE event_push_actions",
        ],
    ),
    (
        13,
        "account data: positions from stream_positions",
        [
            # Positions were the table's highest stream_id + 1: once a deactivation
            # deleted the newest rows, the next write took a position clients already
            # had a token past, and their syncs never showed it.
            """INSERT INTO stream_positions (stream, position)
            SELECT 'account_data', COALESCE(MAX(stream_id), 0) FROM account_data""",
        ],
    ),
    (
        14,
        "SQLite: tables keyed by event and room IDs stored in their key's B-tree",
        [
            # A rowid table with a text primary key is two B-trees: the rows by rowid
            # and the key's index. A room message wrote a page of each for five of
            # these tables; WITHOUT ROWID keeps the rows in the key's B-tree: 16.7
            # instead of 21.7 pages a message, and about a fifth less file per event.
            # PostgreSQL keeps its heap and index as they are.
            *_without_rowid(
                "event_edges",
                "event_id TEXT NOT NULL, prev_event_id TEXT NOT NULL",
                "event_id, prev_event_id",
                "CREATE INDEX event_edges_prev ON event_edges (prev_event_id)",
            ),
            *_without_rowid("event_auth", "event_id TEXT NOT NULL, auth_id TEXT NOT NULL", "event_id, auth_id"),
            *_without_rowid("room_forward_extremities", "room_id TEXT NOT NULL, event_id TEXT NOT NULL", "room_id, event_id"),
            *_without_rowid(
                "state_group_entries",
                "group_id BIGINT NOT NULL, type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT NOT NULL",
                "group_id, type, state_key",
            ),
            *_without_rowid("event_to_state_group", "event_id TEXT NOT NULL, state_group BIGINT NOT NULL", "event_id"),
            *_without_rowid(
                "current_state",
                "room_id TEXT NOT NULL, type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT NOT NULL",
                "room_id, type, state_key",
            ),
            *_without_rowid(
                "room_memberships",
                "room_id TEXT NOT NULL, user_id TEXT NOT NULL, membership TEXT NOT NULL, event_id TEXT NOT NULL,"
                " stream_ordering BIGINT NOT NULL, sender TEXT NOT NULL, forgotten BOOLEAN NOT NULL DEFAULT FALSE",
                "room_id, user_id",
                "CREATE INDEX room_memberships_user ON room_memberships (user_id, membership)",
            ),
            *_without_rowid(
                "event_txn_ids",
                "user_id TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL, event_id TEXT NOT NULL,"
                " created_ts BIGINT NOT NULL",
                "user_id, device_id, txn_id",
            ),
        ],
    ),
]


async def _current_version(conn: Connection) -> int:
    await conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
    row = (await conn.execute(text("SELECT max(version) FROM schema_version"))).first()
    return int(row[0]) if row and row[0] is not None else 0


async def migrate(db: Database, upto: int | None = None) -> int:
    """Bring the schema up to the newest version (or `upto`, for tests of a
    migration); returns that version."""
    words = _DIALECT_WORDS[db.dialect]
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
        current = await _current_version(conn)
        known = MIGRATIONS[-1][0]
        if current > known:
            raise RuntimeError(
                f"the database schema is version {current}, newer than this server knows"
                f" ({known}): run a newer release"
            )
        newest = known if upto is None else upto
        for version, description, statements in MIGRATIONS:
            if version <= current or version > newest:
                continue
            logger.info("Applying schema migration %d: %s", version, description)
            for statement in statements:
                if isinstance(statement, SqliteOnly) and not db.is_sqlite:
                    continue
                await execute_sql(conn, statement.format(**words))
            await conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})
        return newest
