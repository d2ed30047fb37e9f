"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing
keys and signatures, and the device-list change stream that tells other users to
re-fetch them."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from storage.database import Connection, Database, upsert
from storage.schema import (
    device_list_changes,
    e2e_cross_signing_keys,
    e2e_device_keys,
    e2e_fallback_keys,
    e2e_one_time_keys,
    e2e_signatures,
)
from storage.streams import next_position


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class KeyConflict(Exception):
    """A one-time key ID was uploaded again with different contents."""


async def mark_devices_changed(db: Database, conn: Connection, user_ids: Iterable[str]) -> int:
    """Record that these users' device lists changed; returns the stream position."""
    stream_id = await next_position(db, conn, "device_lists")
    await conn.execute(insert(device_list_changes), [{"stream_id": stream_id, "user_id": u} for u in set(user_ids)])
    return stream_id


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- device keys -----------------------------------------------------------------

    async def set_device_keys(self, user_id: str, device_id: str, keys: dict[str, Any]) -> int | None:
        """Store a device's keys; returns the device-list position if anything changed."""
        value = _dump(keys)
        async with self.db.write() as conn:
            old = (
                await conn.execute(
                    select(e2e_device_keys.c.key_json).where(
                        e2e_device_keys.c.user_id == user_id, e2e_device_keys.c.device_id == device_id
                    )
                )
            ).first()
            if old is not None and old[0] == value:
                return None
            await upsert(
                conn,
                e2e_device_keys,
                {"user_id": user_id, "device_id": device_id, "key_json": value},
                ["user_id", "device_id"],
            )
            return await mark_devices_changed(self.db, conn, [user_id])

    async def device_keys(self, user_id: str, device_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        query = select(e2e_device_keys.c.device_id, e2e_device_keys.c.key_json).where(e2e_device_keys.c.user_id == user_id)
        if device_ids:
            query = query.where(e2e_device_keys.c.device_id.in_(device_ids))
        async with self.db.read() as conn:
            return {row.device_id: json.loads(row.key_json) for row in await conn.execute(query)}

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> int:
        async with self.db.write() as conn:
            for table in (e2e_device_keys, e2e_one_time_keys, e2e_fallback_keys):
                await conn.execute(delete(table).where(table.c.user_id == user_id, table.c.device_id.in_(device_ids)))
            await conn.execute(
                delete(e2e_signatures).where(
                    e2e_signatures.c.target_user_id == user_id, e2e_signatures.c.target_key_id.in_(device_ids)
                )
            )
            return await mark_devices_changed(self.db, conn, [user_id])

    # --- one-time and fallback keys --------------------------------------------------

    async def add_one_time_keys(self, user_id: str, device_id: str, keys: list[tuple[str, str, Any]]) -> None:
        """(algorithm, key_id, key) triples; re-uploading an identical key is a no-op."""
        if not keys:
            return
        async with self.db.write() as conn:
            existing = {
                (row.algorithm, row.key_id): row.key_json
                for row in await conn.execute(
                    select(e2e_one_time_keys.c.algorithm, e2e_one_time_keys.c.key_id, e2e_one_time_keys.c.key_json).where(
                        e2e_one_time_keys.c.user_id == user_id,
                        e2e_one_time_keys.c.device_id == device_id,
                        e2e_one_time_keys.c.key_id.in_([k[1] for k in keys]),
                    )
                )
            }
            new_rows = []
            for algorithm, key_id, key in keys:
                value = _dump(key)
                if (algorithm, key_id) in existing:
                    if existing[(algorithm, key_id)] != value:
                        raise KeyConflict(f"One time key {algorithm}:{key_id} already exists with different contents")
                    continue
                existing[(algorithm, key_id)] = value
                new_rows.append(
                    {"user_id": user_id, "device_id": device_id, "algorithm": algorithm, "key_id": key_id, "key_json": value}
                )
            if new_rows:
                await conn.execute(insert(e2e_one_time_keys), new_rows)

    async def set_fallback_keys(self, user_id: str, device_id: str, keys: list[tuple[str, str, Any]]) -> None:
        if not keys:
            return
        async with self.db.write() as conn:
            for algorithm, key_id, key in keys:
                value = _dump(key)
                old = (
                    await conn.execute(
                        select(e2e_fallback_keys.c.key_id, e2e_fallback_keys.c.key_json).where(
                            e2e_fallback_keys.c.user_id == user_id,
                            e2e_fallback_keys.c.device_id == device_id,
                            e2e_fallback_keys.c.algorithm == algorithm,
                        )
                    )
                ).first()
                if old is not None and old.key_id == key_id and old.key_json == value:
                    continue  # the same key again keeps its "used" flag
                await upsert(
                    conn,
                    e2e_fallback_keys,
                    {
                        "user_id": user_id,
                        "device_id": device_id,
                        "algorithm": algorithm,
                        "key_id": key_id,
                        "key_json": value,
                        "used": False,
                    },
                    ["user_id", "device_id", "algorithm"],
                )

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        query = (
            select(e2e_one_time_keys.c.algorithm, func.count())
            .where(e2e_one_time_keys.c.user_id == user_id, e2e_one_time_keys.c.device_id == device_id)
            .group_by(e2e_one_time_keys.c.algorithm)
        )
        async with self.db.read() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        query = select(e2e_fallback_keys.c.algorithm).where(
            e2e_fallback_keys.c.user_id == user_id,
            e2e_fallback_keys.c.device_id == device_id,
            e2e_fallback_keys.c.used.is_(False),
        )
        async with self.db.read() as conn:
            return sorted(row[0] for row in await conn.execute(query))

    async def claim(self, user_id: str, device_id: str, algorithm: str) -> tuple[str, Any] | None:
        """Hand out one one-time key (each exactly once), else the fallback key."""
        for _ in range(10):
            async with self.db.write() as conn:
                row = (
                    await conn.execute(
                        select(e2e_one_time_keys.c.key_id, e2e_one_time_keys.c.key_json)
                        .where(
                            e2e_one_time_keys.c.user_id == user_id,
                            e2e_one_time_keys.c.device_id == device_id,
                            e2e_one_time_keys.c.algorithm == algorithm,
                        )
                        .order_by(e2e_one_time_keys.c.key_id)
                        .limit(1)
                    )
                ).first()
                if row is not None:
                    deleted = await conn.execute(
                        delete(e2e_one_time_keys).where(
                            e2e_one_time_keys.c.user_id == user_id,
                            e2e_one_time_keys.c.device_id == device_id,
                            e2e_one_time_keys.c.algorithm == algorithm,
                            e2e_one_time_keys.c.key_id == row.key_id,
                        )
                    )
                    if deleted.rowcount == 1:
                        return f"{algorithm}:{row.key_id}", json.loads(row.key_json)
                    continue  # another claim took it first (PostgreSQL): try the next one
                fallback = (
                    await conn.execute(
                        select(e2e_fallback_keys.c.key_id, e2e_fallback_keys.c.key_json).where(
                            e2e_fallback_keys.c.user_id == user_id,
                            e2e_fallback_keys.c.device_id == device_id,
                            e2e_fallback_keys.c.algorithm == algorithm,
                        )
                    )
                ).first()
                if fallback is None:
                    return None
                await conn.execute(
                    update(e2e_fallback_keys)
                    .where(
                        e2e_fallback_keys.c.user_id == user_id,
                        e2e_fallback_keys.c.device_id == device_id,
                        e2e_fallback_keys.c.algorithm == algorithm,
                    )
                    .values(used=True)
                )
                return f"{algorithm}:{fallback.key_id}", json.loads(fallback.key_json)
        return None

    # --- cross-signing ---------------------------------------------------------------

    async def cross_signing_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        query = select(e2e_cross_signing_keys.c.key_type, e2e_cross_signing_keys.c.key_json).where(
            e2e_cross_signing_keys.c.user_id == user_id
        )
        async with self.db.read() as conn:
            return {row.key_type: json.loads(row.key_json) for row in await conn.execute(query)}

    async def set_cross_signing_keys(self, user_id: str, keys: dict[str, dict[str, Any]]) -> int:
        async with self.db.write() as conn:
            for key_type, key in keys.items():
                await upsert(
                    conn,
                    e2e_cross_signing_keys,
                    {"user_id": user_id, "key_type": key_type, "key_json": _dump(key)},
                    ["user_id", "key_type"],
                )
            if "master" in keys:
                # A new master key invalidates every signature made for the old one.
                await conn.execute(delete(e2e_signatures).where(e2e_signatures.c.target_user_id == user_id))
            return await mark_devices_changed(self.db, conn, [user_id])

    async def add_signatures(self, signer_user_id: str, rows: list[tuple[str, str, str, str]]) -> int | None:
        """(signer_key_id, target_user_id, target_key_id, signature) rows."""
        if not rows:
            return None
        async with self.db.write() as conn:
            for signer_key_id, target_user_id, target_key_id, signature in rows:
                await upsert(
                    conn,
                    e2e_signatures,
                    {
                        "signer_user_id": signer_user_id,
                        "signer_key_id": signer_key_id,
                        "target_user_id": target_user_id,
                        "target_key_id": target_key_id,
                        "signature": signature,
                    },
                    ["signer_user_id", "signer_key_id", "target_user_id", "target_key_id"],
                )
            return await mark_devices_changed(self.db, conn, {r[1] for r in rows})

    async def signatures_for(self, target_user_ids: list[str]) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        """(target_user, target_key_id) -> [(signer_user, signer_key_id, signature)]."""
        found: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        if not target_user_ids:
            return found
        query = select(e2e_signatures).where(e2e_signatures.c.target_user_id.in_(target_user_ids))
        async with self.db.read() as conn:
            for row in await conn.execute(query):
                found[(row.target_user_id, row.target_key_id)].append(
                    (row.signer_user_id, row.signer_key_id, row.signature)
                )
        return found

    # --- device list stream ----------------------------------------------------------

    async def mark_changed(self, user_ids: Iterable[str]) -> int:
        async with self.db.write() as conn:
            return await mark_devices_changed(self.db, conn, user_ids)

    async def changed_users(self, after: int, upto: int, among: Iterable[str] | None = None) -> set[str]:
        query = select(device_list_changes.c.user_id).where(
            device_list_changes.c.stream_id > after, device_list_changes.c.stream_id <= upto
        )
        async with self.db.read() as conn:
            changed = {row[0] for row in await conn.execute(query.distinct())}
        return changed if among is None else changed & set(among)
