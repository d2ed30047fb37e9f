"""Sync filters that users store (spec: "Filtering"); IDs count up per user."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select

from storage.database import Database
from storage.schema import user_filters


_CACHE_SIZE = 10_000


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Filters never change once stored, and clients send the same filter ID with
        # every /sync: keep their JSON and spare the database the lookup.
        self._cache: dict[tuple[str, int], str] = {}

    async def add(self, user_id: str, definition: dict[str, Any]) -> int:
        async with self.db.write() as conn:
            current = (
                await conn.execute(select(func.max(user_filters.c.filter_id)).where(user_filters.c.user_id == user_id))
            ).scalar()
            filter_id = int(current or 0) + 1
            await conn.execute(
                insert(user_filters).values(
                    user_id=user_id, filter_id=filter_id, filter_json=json.dumps(definition, separators=(",", ":"))
                )
            )
        return filter_id

    async def get(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        cached = self._cache.get((user_id, filter_id))
        if cached is not None:
            return dict(json.loads(cached))
        query = select(user_filters.c.filter_json).where(
            user_filters.c.user_id == user_id, user_filters.c.filter_id == filter_id
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[(user_id, filter_id)] = row[0]
        return dict(json.loads(row[0]))
