"""To-device messages: queued per device until the device syncs past them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, insert, select

from storage.database import Database
from storage.schema import to_device_messages, to_device_txns
from storage.streams import next_position


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def send(
        self,
        messages: list[tuple[str, str, dict[str, Any]]],
        txn: tuple[str, str, str] | None,
        now_ms: int,
    ) -> int | None:
        """Queue (user_id, device_id, message) triples; returns their stream position,
        or None when `txn` (sender user, device, txn ID) was seen before."""
        async with self.db.write() as conn:
            if txn is not None:
                seen = (
                    await conn.execute(
                        select(to_device_txns.c.txn_id).where(
                            to_device_txns.c.user_id == txn[0],
                            to_device_txns.c.device_id == txn[1],
                            to_device_txns.c.txn_id == txn[2],
                        )
                    )
                ).first()
                if seen is not None:
                    return None
                await conn.execute(
                    insert(to_device_txns).values(user_id=txn[0], device_id=txn[1], txn_id=txn[2], created_ts=now_ms)
                )
            if not messages:
                return None
            stream_id = await next_position(self.db, conn, "to_device")
            rows = {
                (user_id, device_id): json.dumps(message, separators=(",", ":"))
                for user_id, device_id, message in messages
            }
            await conn.execute(
                insert(to_device_messages),
                [
                    {"stream_id": stream_id, "user_id": u, "device_id": d, "message": m}
                    for (u, d), m in rows.items()
                ],
            )
        return stream_id

    async def pending(
        self, user_id: str, device_id: str, after: int, upto: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        query = (
            select(to_device_messages.c.stream_id, to_device_messages.c.message)
            .where(
                to_device_messages.c.user_id == user_id,
                to_device_messages.c.device_id == device_id,
                to_device_messages.c.stream_id > after,
                to_device_messages.c.stream_id <= upto,
            )
            .order_by(to_device_messages.c.stream_id)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [(int(row.stream_id), json.loads(row.message)) for row in await conn.execute(query)]

    async def has_pending(self, user_id: str, device_id: str, upto: int) -> bool:
        query = (
            select(to_device_messages.c.stream_id)
            .where(
                to_device_messages.c.user_id == user_id,
                to_device_messages.c.device_id == device_id,
                to_device_messages.c.stream_id <= upto,
            )
            .limit(1)
        )
        async with self.db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def acknowledge(self, user_id: str, device_id: str, upto: int) -> None:
        """The device synced with a token at `upto`: it has everything up to there."""
        async with self.db.write() as conn:
            await conn.execute(
                delete(to_device_messages).where(
                    to_device_messages.c.user_id == user_id,
                    to_device_messages.c.device_id == device_id,
                    to_device_messages.c.stream_id <= upto,
                )
            )

    async def delete_device(self, user_id: str, device_ids: list[str]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                delete(to_device_messages).where(
                    to_device_messages.c.user_id == user_id, to_device_messages.c.device_id.in_(device_ids)
                )
            )
