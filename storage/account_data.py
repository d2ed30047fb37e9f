"""Per-user account data, global (room_id '') and per room, e.g. m.direct, m.ignored_user_list."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from storage.database import Database, upsert
from storage.schema import account_data
from storage.streams import next_position

GLOBAL = ""


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: str, data_type: str, room_id: str = GLOBAL) -> dict[str, Any] | None:
        query = select(account_data.c.content).where(
            account_data.c.user_id == user_id, account_data.c.room_id == room_id, account_data.c.type == data_type
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return json.loads(row.content) if row else None

    async def put(self, user_id: str, data_type: str, content: dict[str, Any], room_id: str = GLOBAL) -> int:
        """Store and return the new position in the account data stream."""
        async with self.db.write() as conn:
            stream_id = await next_position(self.db, conn, "account_data")
            await upsert(
                conn,
                account_data,
                {
                    "user_id": user_id,
                    "room_id": room_id,
                    "type": data_type,
                    "content": json.dumps(content),
                    "stream_id": stream_id,
                },
                ["user_id", "room_id", "type"],
            )
        return stream_id

    async def all_for_user(self, user_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(room_id, type, content) of everything the user stored."""
        query = select(account_data.c.room_id, account_data.c.type, account_data.c.content).where(
            account_data.c.user_id == user_id
        )
        async with self.db.read() as conn:
            return [(row.room_id, row.type, json.loads(row.content)) for row in await conn.execute(query)]
