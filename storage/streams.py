"""Positions of the non-room sync streams (account data, receipts, to_device, presence,
device_lists).

Each stream has one row in `stream_positions`; a write that adds to a stream bumps it
in its own transaction, so positions survive restarts and (on PostgreSQL, where the row
lock is held until commit) commit in position order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select, update

from storage.database import Database, upsert
from storage.schema import events, stream_positions

STREAMS = ("account_data", "receipts", "to_device", "presence", "device_lists")

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


# The `stream_positions` row that keeps room events' highest position once given out,
# when the events themselves are gone (a purged room): positions are never reused, or
# a client holding a token past them would never see the events that took them again.
EVENTS_HIGH_WATER = "events"


async def highest_event_position(conn: Any) -> int:
    """The highest room event position ever given out (in `conn`'s transaction)."""
    stored = (await conn.execute(select(func.max(events.c.stream_ordering)))).scalar()
    purged = (
        await conn.execute(select(stream_positions.c.position).where(stream_positions.c.stream == EVENTS_HIGH_WATER))
    ).scalar()
    return max(int(stored or 0), int(purged or 0))


async def keep_event_high_water(conn: Any) -> None:
    """Before events are deleted: remember the highest position (see EVENTS_HIGH_WATER)."""
    await upsert(conn, stream_positions, {"stream": EVENTS_HIGH_WATER, "position": await highest_event_position(conn)}, ["stream"])


async def current_positions(db: Database) -> dict[str, int]:
    """Every stream's newest position, including room events."""
    async with db.read() as conn:
        found = {row.stream: int(row.position) for row in await conn.execute(select(stream_positions))}
        found.pop(EVENTS_HIGH_WATER, None)
        found["room"] = await highest_event_position(conn)
    return found
