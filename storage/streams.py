"""Positions of the non-room sync streams (receipts, to_device, presence, device_lists).

Each stream has one row in `stream_positions`; a write that adds to a stream bumps it
in its own transaction, so positions survive restarts and (on PostgreSQL, where the row
lock is held until commit) commit in position order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select, update

from storage.database import Database
from storage.schema import account_data, events, stream_positions

STREAMS = ("receipts", "to_device", "presence", "device_lists")

# Prebuilt for `Database.run`: receipts and presence take a position on every write.
_NEXT_POSITION = (
    update(stream_positions)
    .where(stream_positions.c.stream == bindparam("stream_name"))
    .values(position=stream_positions.c.position + 1)
    .returning(stream_positions.c.position)
)


async def next_position(db: Database, conn: Any, stream: str) -> int:
    """The stream's next position, taken inside the transaction of `conn` (from
    `db.write()` or `db.write_prebuilt()`)."""
    rows = await db.run(conn, _NEXT_POSITION, {"stream_name": stream})
    return int(rows[0][0])


async def upsert_at_next_position(
    db: Database, stream: str, table: Any, values: dict[str, Any], key_columns: tuple[str, ...]
) -> int:
    """Insert or replace (by `key_columns`) the row `values` with its `stream_id` the
    stream's next position, in one transaction of prebuilt statements; returns the
    position. Receipts and presence write this way, often."""
    async with db.write_prebuilt() as conn:
        position = await next_position(db, conn, stream)
        row = {**values, "stream_id": position}
        await db.run(conn, db.upsert_statement(table, tuple(row), key_columns), row)
    return position


async def current_positions(db: Database) -> dict[str, int]:
    """Every stream's newest position, including room events and account data."""
    async with db.read() as conn:
        found = {row.stream: int(row.position) for row in await conn.execute(select(stream_positions))}
        found["room"] = int((await conn.execute(select(func.max(events.c.stream_ordering)))).scalar() or 0)
        found["account_data"] = int((await conn.execute(select(func.max(account_data.c.stream_id)))).scalar() or 0)
    return found
