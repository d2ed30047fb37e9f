"""Account data as a sync stream: what changed for a user between two positions.

A thin extension of `AccountDataStore` (whose `put` already assigns a position) that
also tells a listener after each write, so waiting syncs wake.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from storage.account_data import GLOBAL, AccountDataStore
from storage.database import Database
from storage.schema import account_data

Listener = Callable[[str, int], Awaitable[None]]


class StreamedAccountDataStore(AccountDataStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.listeners: list[Listener] = []

    async def put(self, user_id: str, data_type: str, content: dict[str, Any], room_id: str = GLOBAL) -> int:
        stream_id = await super().put(user_id, data_type, content, room_id)
        for listener in self.listeners:
            await listener(user_id, stream_id)
        return stream_id

    async def changed(self, user_id: str, after: int, upto: int) -> list[tuple[str, str, dict[str, Any]]]:
        """(room_id, type, content) written in (after, upto]; room_id '' is global."""
        query = select(account_data.c.room_id, account_data.c.type, account_data.c.content).where(
            account_data.c.user_id == user_id,
            account_data.c.stream_id > after,
            account_data.c.stream_id <= upto,
        )
        async with self.db.read() as conn:
            return [(row.room_id, row.type, json.loads(row.content)) for row in await conn.execute(query)]
