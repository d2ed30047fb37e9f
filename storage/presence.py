"""Presence: one row per user with their newest state and its stream position."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import select

from storage.database import Database
from storage.schema import presence
from storage.streams import upsert_at_next_position


class PresenceRow(msgspec.Struct, frozen=True):
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    stream_id: int


def _row(row: Any) -> PresenceRow:
    return PresenceRow(row.user_id, row.state, row.status_msg, int(row.last_active_ts), int(row.stream_id))


class PresenceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, user_id: str, state: str, status_msg: str | None, last_active_ts: int) -> PresenceRow:
        values = {"user_id": user_id, "state": state, "status_msg": status_msg, "last_active_ts": last_active_ts}
        stream_id = await upsert_at_next_position(self.db, "presence", presence, values, ("user_id",))
        return PresenceRow(user_id, state, status_msg, last_active_ts, stream_id)

    async def get(self, user_id: str) -> PresenceRow | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(presence).where(presence.c.user_id == user_id))).first()
        return _row(row) if row else None

    async def changed(self, user_ids: list[str], after: int, upto: int) -> list[PresenceRow]:
        found: list[PresenceRow] = []
        for start in range(0, len(user_ids), 500):
            query = select(presence).where(
                presence.c.user_id.in_(user_ids[start : start + 500]),
                presence.c.stream_id > after,
                presence.c.stream_id <= upto,
            )
            async with self.db.read() as conn:
                found.extend(_row(row) for row in await conn.execute(query))
        return found

    async def all_active(self) -> list[PresenceRow]:
        """Users not offline, for the inactivity sweep after a restart."""
        async with self.db.read() as conn:
            return [_row(row) for row in await conn.execute(select(presence).where(presence.c.state != "offline"))]
