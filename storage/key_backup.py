"""Server-side room key backup (spec: "Server-side key backups")."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from sqlalchemy import delete, func, insert, select, update

from storage.database import Database, upsert
from storage.schema import room_key_backup_keys, room_key_backup_versions


class BackupVersion(msgspec.Struct, frozen=True):
    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int


class BackedUpKey(msgspec.Struct, frozen=True):
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> int:
        async with self.db.write() as conn:
            current = (
                await conn.execute(
                    select(func.max(room_key_backup_versions.c.version)).where(
                        room_key_backup_versions.c.user_id == user_id
                    )
                )
            ).scalar()
            version = int(current or 0) + 1
            await conn.execute(
                insert(room_key_backup_versions).values(
                    user_id=user_id,
                    version=version,
                    algorithm=algorithm,
                    auth_data=json.dumps(auth_data),
                    etag=0,
                    deleted=False,
                )
            )
        return version

    async def get_version(self, user_id: str, version: int | None = None) -> BackupVersion | None:
        """A version, or the newest one when `version` is None (deleted ones never)."""
        query = select(room_key_backup_versions).where(
            room_key_backup_versions.c.user_id == user_id, room_key_backup_versions.c.deleted.is_(False)
        )
        if version is not None:
            query = query.where(room_key_backup_versions.c.version == version)
        query = query.order_by(room_key_backup_versions.c.version.desc()).limit(1)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return BackupVersion(int(row.version), row.algorithm, json.loads(row.auth_data), int(row.etag))

    async def update_version(self, user_id: str, version: int, auth_data: dict[str, Any]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(room_key_backup_versions)
                .where(room_key_backup_versions.c.user_id == user_id, room_key_backup_versions.c.version == version)
                .values(auth_data=json.dumps(auth_data))
            )

    async def delete_version(self, user_id: str, version: int) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                update(room_key_backup_versions)
                .where(
                    room_key_backup_versions.c.user_id == user_id,
                    room_key_backup_versions.c.version == version,
                    room_key_backup_versions.c.deleted.is_(False),
                )
                .values(deleted=True)
            )
            await conn.execute(
                delete(room_key_backup_keys).where(
                    room_key_backup_keys.c.user_id == user_id, room_key_backup_keys.c.version == version
                )
            )
        return result.rowcount > 0

    async def count(self, user_id: str, version: int) -> int:
        query = select(func.count()).where(
            room_key_backup_keys.c.user_id == user_id, room_key_backup_keys.c.version == version
        )
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> list[BackedUpKey]:
        query = select(room_key_backup_keys).where(
            room_key_backup_keys.c.user_id == user_id, room_key_backup_keys.c.version == version
        )
        if room_id is not None:
            query = query.where(room_key_backup_keys.c.room_id == room_id)
        if session_id is not None:
            query = query.where(room_key_backup_keys.c.session_id == session_id)
        async with self.db.read() as conn:
            return [
                BackedUpKey(
                    row.room_id,
                    row.session_id,
                    int(row.first_message_index),
                    int(row.forwarded_count),
                    bool(row.is_verified),
                    json.loads(row.session_data),
                )
                for row in await conn.execute(query)
            ]

    async def put_keys(self, user_id: str, version: int, keys: list[BackedUpKey]) -> None:
        """Store keys, keeping an existing key when it is better than the new one
        (verified beats unverified, then lower first index, then fewer forwards)."""
        async with self.db.write() as conn:
            changed = False
            for key in keys:
                old = (
                    await conn.execute(
                        select(room_key_backup_keys).where(
                            room_key_backup_keys.c.user_id == user_id,
                            room_key_backup_keys.c.version == version,
                            room_key_backup_keys.c.room_id == key.room_id,
                            room_key_backup_keys.c.session_id == key.session_id,
                        )
                    )
                ).first()
                if old is not None:
                    old_rank = (not old.is_verified, old.first_message_index, old.forwarded_count)
                    new_rank = (not key.is_verified, key.first_message_index, key.forwarded_count)
                    if new_rank >= old_rank:
                        continue
                changed = True
                await upsert(
                    conn,
                    room_key_backup_keys,
                    {
                        "user_id": user_id,
                        "version": version,
                        "room_id": key.room_id,
                        "session_id": key.session_id,
                        "first_message_index": key.first_message_index,
                        "forwarded_count": key.forwarded_count,
                        "is_verified": key.is_verified,
                        "session_data": json.dumps(key.session_data),
                    },
                    ["user_id", "version", "room_id", "session_id"],
                )
            if changed:
                await self._bump_etag(conn, user_id, version)

    async def delete_keys(self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None) -> None:
        async with self.db.write() as conn:
            query = delete(room_key_backup_keys).where(
                room_key_backup_keys.c.user_id == user_id, room_key_backup_keys.c.version == version
            )
            if room_id is not None:
                query = query.where(room_key_backup_keys.c.room_id == room_id)
            if session_id is not None:
                query = query.where(room_key_backup_keys.c.session_id == session_id)
            await conn.execute(query)
            await self._bump_etag(conn, user_id, version)

    async def _bump_etag(self, conn: Any, user_id: str, version: int) -> None:
        await conn.execute(
            update(room_key_backup_versions)
            .where(room_key_backup_versions.c.user_id == user_id, room_key_backup_versions.c.version == version)
            .values(etag=room_key_backup_versions.c.etag + 1)
        )
