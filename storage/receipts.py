"""Read receipts: the newest receipt per (room, type, user, thread); one stream."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from sqlalchemy import select

from storage.database import Database
from storage.schema import events, receipts
from storage.streams import upsert_at_next_position

UNTHREADED = ""
_RECEIPT_KEY = ("room_id", "receipt_type", "user_id", "thread_id")


class Receipt(msgspec.Struct, frozen=True):
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    data: dict[str, Any]
    stream_id: int


def _receipt(row: Any) -> Receipt:
    return Receipt(
        row.room_id, row.receipt_type, row.user_id, row.thread_id, row.event_id, json.loads(row.data), int(row.stream_id)
    )


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str, event_id: str, data: dict[str, Any]
    ) -> int:
        values = {
            "room_id": room_id,
            "receipt_type": receipt_type,
            "user_id": user_id,
            "thread_id": thread_id,
            "event_id": event_id,
            "data": json.dumps(data),
        }
        return await upsert_at_next_position(self.db, "receipts", receipts, values, _RECEIPT_KEY)

    async def get(self, room_id: str, receipt_type: str, user_id: str, thread_id: str = UNTHREADED) -> Receipt | None:
        query = select(receipts).where(
            receipts.c.room_id == room_id,
            receipts.c.receipt_type == receipt_type,
            receipts.c.user_id == user_id,
            receipts.c.thread_id == thread_id,
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return _receipt(row) if row else None

    async def changed(self, room_ids: list[str], after: int, upto: int) -> list[Receipt]:
        """Receipts in these rooms with after < stream_id <= upto."""
        if not room_ids:
            return []
        found: list[Receipt] = []
        for start in range(0, len(room_ids), 500):
            query = select(receipts).where(
                receipts.c.room_id.in_(room_ids[start : start + 500]),
                receipts.c.stream_id > after,
                receipts.c.stream_id <= upto,
            )
            async with self.db.read() as conn:
                found.extend(_receipt(row) for row in await conn.execute(query))
        return found

    async def read_up_to(self, room_id: str, user_id: str) -> int | None:
        """The stream ordering of the newest event the user's read receipts point at."""
        query = (
            select(events.c.stream_ordering)
            .join(receipts, receipts.c.event_id == events.c.event_id)
            .where(
                receipts.c.room_id == room_id,
                receipts.c.user_id == user_id,
                receipts.c.receipt_type.in_(("m.read", "m.read.private")),
            )
            .order_by(events.c.stream_ordering.desc())
            .limit(1)
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).first()
        return int(row[0]) if row else None
